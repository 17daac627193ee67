"""Pose-meta objects in pixels, as other node packs read them, and their Wan meta-dict form.

The reference node pack hands retargeted poses around as objects with ``width``, ``height``
and ``kps_*`` / ``kps_*_p`` attributes (pixels and scores); :class:`PoseMeta` is that object.
The detection stage's Wan meta dicts (:func:`wanprep_torch.wan.pose_metas`) hold the same
points normalised by the canvas (x / W, y / H, score); :meth:`PoseMeta.from_wan` and
:meth:`PoseMeta.to_wan` convert between the two.  :class:`WanBatch` stacks a list of Wan meta
dicts into (T, N, 3) arrays so the math over frames can be vectorised.

An unseen point is NaN (x and y) with score 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .skeleton import WAN_PARTS

__all__ = ["PoseMeta", "WanBatch", "PART_SIZES", "check_wan_meta"]

# Wan meta-dict key -> number of rows (the detection stage's layout; defined in skeleton).
PART_SIZES = WAN_PARTS
# Wan meta-dict key -> PoseMeta attribute stem (coordinates in ``stem``, scores in ``stem_p``).
_ATTR = {
    "keypoints_body": "kps_body",
    "keypoints_left_hand": "kps_lhand",
    "keypoints_right_hand": "kps_rhand",
    "keypoints_face": "kps_face",
}


def _canvas(meta: Mapping[str, Any], what: str) -> tuple[int, int]:
    """Positive integer width and height of a meta dict, or a ValueError naming ``what``."""
    try:
        w, h = meta["width"], meta["height"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{what}: a Wan meta dict needs 'width' and 'height' (got {type(meta).__name__})") from e
    if int(w) != w or int(h) != h or int(w) <= 0 or int(h) <= 0:
        raise ValueError(f"{what}: width and height must be positive integers, got {w!r} x {h!r}")
    return int(w), int(h)


def _part(meta: Mapping[str, Any], key: str, what: str, required: bool = True) -> np.ndarray | None:
    """One (N, 3) keypoint array of a meta dict as float64, shape-checked."""
    if key not in meta or meta[key] is None:
        if required:
            raise ValueError(f"{what}: missing {key!r} ({PART_SIZES[key]}, 3)")
        return None
    a = np.asarray(meta[key], dtype=np.float64)
    n = PART_SIZES[key]
    if a.shape != (n, 3):
        raise ValueError(f"{what}: {key!r} must have shape ({n}, 3) (x / W, y / H, score), got {a.shape}")
    return a


def check_wan_meta(meta: Mapping[str, Any], what: str = "meta", face: bool = False) -> None:
    """Raise ValueError unless ``meta`` is a Wan meta dict (canvas, body and hands; face if asked)."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"{what}: expected a Wan meta dict or PoseMeta, got {type(meta).__name__}")
    _canvas(meta, what)
    for key in PART_SIZES:
        _part(meta, key, what, required=face or key != "keypoints_face")


def _xy_p(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) NaN points and (n,) zero scores: a part with nothing seen."""
    return np.full((n, 2), np.nan), np.zeros(n)


@dataclass(eq=False)
class PoseMeta:
    """One frame's pose in pixels of a ``width`` x ``height`` canvas.

    Attributes (float64 numpy arrays; unseen points NaN with score 0):
        kps_body (20, 2), kps_body_p (20,): Wan body order (OpenPose-18 + left, right toe).
        kps_lhand (21, 2), kps_lhand_p (21,): left hand (COCO-wholebody rows 91-111).
        kps_rhand (21, 2), kps_rhand_p (21,): right hand (rows 112-132).
        kps_face (69, 2), kps_face_p (69,): Wan face rows (COCO-wholebody rows 22-90).
    """

    width: int
    height: int
    kps_body: np.ndarray
    kps_body_p: np.ndarray
    kps_lhand: np.ndarray
    kps_lhand_p: np.ndarray
    kps_rhand: np.ndarray
    kps_rhand_p: np.ndarray
    kps_face: np.ndarray
    kps_face_p: np.ndarray

    def __post_init__(self) -> None:
        self.width, self.height = _canvas({"width": self.width, "height": self.height}, "PoseMeta")
        for key, n in PART_SIZES.items():
            stem = _ATTR[key]
            xy = np.asarray(getattr(self, stem), dtype=np.float64)
            p = np.asarray(getattr(self, stem + "_p"), dtype=np.float64)
            if xy.shape != (n, 2) or p.shape != (n,):
                raise ValueError(f"PoseMeta: {stem} must be ({n}, 2) and {stem}_p ({n},), got {xy.shape} and {p.shape}")
            setattr(self, stem, xy)
            setattr(self, stem + "_p", p)

    @classmethod
    def from_wan(cls, meta: Mapping[str, Any]) -> "PoseMeta":
        """A Wan meta dict (normalised x / W, y / H, score) -> pixels.

        A missing ``keypoints_face`` gives an all-unseen face.
        """
        check_wan_meta(meta, "PoseMeta.from_wan")
        w, h = _canvas(meta, "PoseMeta.from_wan")
        scale = np.array([w, h], dtype=np.float64)
        fields: dict[str, Any] = {}
        for key, n in PART_SIZES.items():
            a = _part(meta, key, "PoseMeta.from_wan", required=False)
            xy, p = _xy_p(n) if a is None else (a[:, :2] * scale, a[:, 2].copy())
            fields[_ATTR[key]] = xy
            fields[_ATTR[key] + "_p"] = p
        return cls(width=w, height=h, **fields)

    def to_wan(self) -> dict:
        """Pixels -> a Wan meta dict: ``width``, ``height`` and (N, 3) float32 arrays (x / W, y / H, score).

        Unseen points stay NaN with score 0 (the drawing code skips non-finite points).
        """
        scale = np.array([self.width, self.height], dtype=np.float64)
        out: dict[str, Any] = {"width": int(self.width), "height": int(self.height)}
        for key in PART_SIZES:
            stem = _ATTR[key]
            xy = getattr(self, stem) / scale
            out[key] = np.concatenate([xy, getattr(self, stem + "_p")[:, None]], axis=1).astype(np.float32)
        return out

    @classmethod
    def unseen(cls, width: int, height: int) -> "PoseMeta":
        """A pose with no point seen."""
        fields: dict[str, Any] = {}
        for key, n in PART_SIZES.items():
            fields[_ATTR[key]], fields[_ATTR[key] + "_p"] = _xy_p(n)
        return cls(width=width, height=height, **fields)


@dataclass
class WanBatch:
    """T Wan meta dicts stacked for math over frames (normalised coordinates, float64).

    Attributes:
        width, height: (T,) int64 canvas of each frame.
        body: (T, 20, 3); lhand, rhand: (T, 21, 3) (x / W, y / H, score).
    """

    width: np.ndarray
    height: np.ndarray
    body: np.ndarray
    lhand: np.ndarray
    rhand: np.ndarray

    @classmethod
    def stack(cls, metas: Sequence[Mapping[str, Any] | PoseMeta], what: str = "metas") -> "WanBatch":
        """Stack Wan meta dicts (or PoseMeta objects) after checking each one's layout."""
        if isinstance(metas, (Mapping, PoseMeta)) or not isinstance(metas, Sequence):
            raise ValueError(f"{what}: expected a list of Wan meta dicts or PoseMeta objects, got {type(metas).__name__}")
        if len(metas) == 0:
            raise ValueError(f"{what}: empty list (at least one frame is needed)")
        dicts = [m.to_wan() if isinstance(m, PoseMeta) else m for m in metas]
        for t, m in enumerate(dicts):
            check_wan_meta(m, f"{what}[{t}]")
        wh = np.array([_canvas(m, what) for m in dicts], dtype=np.int64)
        return cls(
            width=wh[:, 0],
            height=wh[:, 1],
            body=np.stack([np.asarray(m["keypoints_body"], dtype=np.float64) for m in dicts]),
            lhand=np.stack([np.asarray(m["keypoints_left_hand"], dtype=np.float64) for m in dicts]),
            rhand=np.stack([np.asarray(m["keypoints_right_hand"], dtype=np.float64) for m in dicts]),
        )
