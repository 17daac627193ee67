"""The pose container: T poses in Wan's layout, and every conversion in and out of it.

Poses circulate in several forms, each for a consumer: the pose model's (T, 133, 3)
COCO-wholebody pixels, Wan's meta dicts (normalised numpy arrays per part), :class:`PoseMeta`
objects (pixels, as other node packs read them), OpenPose JSON, DWPose's split (18 body
points, hands right then left, 68 face points) and the drawing's (T, 131, 3) stack.
:class:`Poses` holds one batch in Wan's layout (the drawing's stack, normalised) and converts
explicitly to and from each of them, so the layout rules live here and in
:mod:`wanprep_torch.skeleton` only.

Example::

    >>> import torch
    >>> kps = torch.zeros(2, 133, 3)
    >>> kps[:, 5] = torch.tensor([300.0, 120.0, 0.9])   # left shoulder (COCO row 5)
    >>> kps[:, 6] = torch.tensor([340.0, 120.0, 0.8])   # right shoulder
    >>> poses = Poses.from_wholebody(kps, width=640, height=480)
    >>> poses.part("keypoints_body")[0, 1].tolist()     # Wan's neck: the shoulders' midpoint
    [0.5, 0.25, 0.8500000238418579]
    >>> meta = poses.to_wan()[0]
    >>> meta["width"], meta["keypoints_body"].shape, meta["keypoints_face"].shape
    (640, (20, 3), (69, 3))
    >>> poses.to_dwpose().hands.shape                    # (T, right/left, 21, xy)
    torch.Size([2, 2, 21, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from .posemeta import PoseMeta
from .skeleton import DWPOSE_HANDS, FACE, LEFT_HAND, OPENPOSE_NUM_BODY, RIGHT_HAND, WAN_BODY_A, WAN_BODY_B, WAN_FACE, WAN_PARTS, WAN_STACK

__all__ = ["Poses", "DwPoses", "wan_body"]


def wan_body(keypoints: torch.Tensor) -> torch.Tensor:
    """133 wholebody rows -> Wan's 20 body rows.

    Args:
        keypoints: (T, 133, C).

    Returns:
        (T, 20, C).
    """
    a = torch.as_tensor(WAN_BODY_A, device=keypoints.device)
    b = torch.as_tensor(WAN_BODY_B, device=keypoints.device)
    return (keypoints.index_select(1, a) + keypoints.index_select(1, b)) * 0.5


class DwPoses(NamedTuple):
    """N poses split as DWPose does, normalised coordinates (x / W, y / H)."""

    body: torch.Tensor  # (N, 18, 2)
    body_score: torch.Tensor  # (N, 18)
    body_present: torch.Tensor  # (N, 18) bool: score > 0 when detected (DWPose "subset")
    hands: torch.Tensor  # (N, 2, 21, 2): right hand, left hand
    hands_score: torch.Tensor  # (N, 2, 21)
    face: torch.Tensor  # (N, 68, 2)
    face_score: torch.Tensor  # (N, 68)


def _part_array(value: Any, n: int) -> np.ndarray:
    """(n, 3) float64 of one meta part; missing points (or a missing part) are zeros."""
    out = np.zeros((n, 3), np.float64)
    if value is None:
        return out
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        return out
    k, c = min(arr.shape[0], n), min(arr.shape[1], 3)
    out[:k, :c] = arr[:k, :c]
    return out


@dataclass(eq=False)
class Poses:
    """T poses on one ``width`` x ``height`` canvas in Wan's layout.

    Attributes:
        keypoints: (T, 131, 3) x / W, y / H, score; rows :data:`~wanprep_torch.skeleton.WAN_STACK`
            (body 20, left hand 21, right hand 21, face 69). An unseen point has score 0.
        width, height: the canvas in pixels.
    """

    keypoints: torch.Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    def part(self, key: str) -> torch.Tensor:
        """One Wan part (``"keypoints_body"``, ``"keypoints_left_hand"``, ...): (T, n, 3)."""
        return self.keypoints[:, WAN_STACK[key]]

    # ----------------------------------------------------------------- in

    @classmethod
    def from_wholebody(
        cls,
        keypoints: torch.Tensor,
        width: int,
        height: int,
        last_body: torch.Tensor | None = None,
    ) -> "Poses":
        """The pose model's (T, 133, 3) pixel keypoints -> Wan's layout, in their dtype.

        When every body row of a frame has a negative x or y (no person), the previous frame's
        body rows are reused, as the reference's Wan metas do; ``last_body`` (20, 3) is the
        body before the first frame (carried across chunks), else frame 0 keeps its own.
        """
        kp = keypoints.detach().clone()
        kp[..., 0] /= width
        kp[..., 1] /= height
        body = wan_body(kp)
        lost = body[..., :2].amin(-1).amax(-1) < 0
        if bool(lost.any()):
            source = ~lost
            if last_body is None:
                source[0] = True
            ids = torch.arange(body.shape[0], device=body.device)
            src = torch.where(source, ids, torch.full_like(ids, -1)).cummax(0).values
            if last_body is not None:
                body = torch.cat((torch.as_tensor(last_body, dtype=body.dtype, device=body.device)[None], body))
                src = src + 1
            body = body.index_select(0, src)
        stacked = torch.cat((body, kp[:, LEFT_HAND], kp[:, RIGHT_HAND], kp[:, WAN_FACE]), 1)
        return cls(stacked, int(width), int(height))

    @classmethod
    def from_metas(cls, metas: Sequence[Mapping[str, Any] | PoseMeta]) -> "Poses":
        """Wan meta dicts (or :class:`PoseMeta` objects) -> float64 poses on the CPU.

        Lenient, for drawing: a missing part or point counts as unseen (score 0); the canvas
        is the first meta's.
        """
        if len(metas) == 0:
            raise ValueError("pose_metas is empty")
        dicts = [m.to_wan() if isinstance(m, PoseMeta) else m for m in metas]
        width, height = int(dicts[0]["width"]), int(dicts[0]["height"])
        rows = [np.concatenate([_part_array(m.get(key), n) for key, n in WAN_PARTS.items()]) for m in dicts]
        return cls(torch.from_numpy(np.stack(rows)), width, height)

    # ----------------------------------------------------------------- out

    def to_wan(self) -> list[dict]:
        """T Wan meta dicts: ``width``, ``height`` and one (n, 3) numpy array per part, in the
        keypoints' dtype."""
        kp = self.keypoints.detach().cpu().numpy()
        return [
            {"width": self.width, "height": self.height, **{key: kp[t, rows].copy() for key, rows in WAN_STACK.items()}}
            for t in range(kp.shape[0])
        ]

    def to_pose_metas(self) -> list[PoseMeta]:
        """T :class:`PoseMeta` objects (pixels)."""
        return [PoseMeta.from_wan(m) for m in self.to_wan()]

    def to_openpose(self, min_score: float = 0.3) -> list[dict]:
        """One OpenPose JSON dict per frame (:func:`wanprep_torch.wan.openpose_frames`)."""
        from .wan import openpose_frames  # wan builds on this module, not the reverse

        return openpose_frames(self.to_wan(), min_score)

    def to_dwpose(self) -> DwPoses:
        """DWPose's split: 18 body points, the hands right then left, the 68 face points."""
        body = self.part("keypoints_body")[:, :OPENPOSE_NUM_BODY]
        wholebody_face = FACE.start - WAN_FACE.start  # Wan's face rows start one row early
        face = self.part("keypoints_face")[:, wholebody_face:]
        hands = torch.stack([self.part(key) for key in DWPOSE_HANDS], 1)
        return DwPoses(
            body[..., :2], body[..., 2], body[..., 2] > 0, hands[..., :2], hands[..., 2], face[..., :2], face[..., 2]
        )
