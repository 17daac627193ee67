"""Pose retargeting: move a template video's poses onto the body proportions of a reference image.

The Wan 2.2 Animate preprocessing's retargeting (the reference node pack runs it when a
``retarget_image`` is connected), reimplemented as pure numpy math vectorised over frames.
The steps, in the reference's terms (see /work/shared/golden/RETARGET.md):

Once per video, from the template's frame 0 (``S``) and the reference image's pose (``D``):
  1. a global scale ``s`` (person heights nose-to-ankles, else nose-to-hips, else canvas areas);
  2. per-limb length ratios ``D / S`` (D measured on its canvas scaled by ``s``), paired limbs
     made equal to their larger member, face limbs averaged;
  3. an offset that puts the rebuilt S on D's ground line and hip centre (full bodies) or on
     D's neck (otherwise).
Every frame: rebuild the skeleton with the ratios (feet at most half a calf), shift by the
offset, divide by ``s``: pixels of the reference image's canvas. Hands are scaled about
their root and carried along with their wrist; faces are dropped.

Deliberate differences from the reference:
  * each output hand is labelled by the wrist it is attached to (``kps_rhand`` at the right
    wrist, body point 4); the reference's labels come out the other way round;
  * a source limb of zero length (its ratio would be infinite) takes the mean shoulder ratio,
    the reference's rule for a missing limb, instead of spreading inf / NaN over every frame;
  * a degenerate scale (zero or non-finite person height) raises ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Mapping, Sequence

import numpy as np

from .posemeta import PoseMeta, WanBatch, check_wan_meta

__all__ = [
    "LIMBS",
    "Extent",
    "RetargetPlan",
    "RetargetedPoses",
    "body_extent",
    "person_scale",
    "limb_ratios",
    "rebuild_skeleton",
    "plan_retarget",
    "retarget_arrays",
    "retarget",
]

# Limbs (parent, child) in Wan body order. Parents come before their children, so rebuilding
# in this order moves every chain after its (already moved) parent; the neck (1) stays.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19),
)  # fmt: skip
_PARENT = np.array([p for p, _ in LIMBS])
_CHILD = np.array([c for _, c in LIMBS])

# Left / right limb pairs take the larger ratio (the reference's "shorten" step), face pairs the mean.
PAIRS_MAX = ((0, 1), (2, 4), (3, 5), (6, 9), (7, 10), (8, 11), (17, 18))
PAIRS_MEAN = ((13, 15), (14, 16))
# (foot limb, its calf limb): a rebuilt foot is at most FOOT_PER_CALF of its calf (per frame).
FOOT_CALF = ((17, 11), (18, 8))
FOOT_PER_CALF = 0.5

SCALE_MIN_SCORE = 0.5  # strictly above: nose / ankles / hips used for the person height
EXTENT_MIN_SCORE = 0.4  # at or above: hips / ankles count for the body extent
HAND_MIN_SCORE = 0.4  # at or above: a hand point is kept

NOSE, NECK, R_WRIST, L_WRIST = 0, 1, 4, 7
R_HIP, R_ANKLE, L_HIP, L_ANKLE, L_TOE, R_TOE = 8, 10, 11, 13, 18, 19


class Extent(IntEnum):
    """How much of a body is in the picture; the video uses the smaller of template and reference."""

    HALF = 0
    THREE_QUARTER = 1
    FULL = 2


@dataclass(frozen=True)
class RetargetPlan:
    """What is fixed once per video.

    Attributes:
        scale: ``s`` = template person height / reference person height.
        ratios: (19,) per-limb length ratios, in :data:`LIMBS` order.
        offset: (2,) (dx, dy) subtracted from rebuilt points, in template pixels.
        extent: the video's body extent (decides the anchor: ground + hips, or neck).
        hand_scale: hands are scaled about their root by this (``max(ratios[0:2]) / s``).
        width, height: the output canvas (the reference image's own).
    """

    scale: float
    ratios: np.ndarray
    offset: np.ndarray
    extent: Extent
    hand_scale: float
    width: int
    height: int


@dataclass
class RetargetedPoses:
    """Retargeted poses of T frames, in pixels of the ``width`` x ``height`` canvas.

    Attributes:
        body (T, 20, 2), body_p (T, 20); rhand, lhand (T, 21, 2), rhand_p, lhand_p (T, 21).
        Hand points are integers (truncated, as the reference does); unseen ones NaN, score 0.
    """

    width: int
    height: int
    body: np.ndarray
    body_p: np.ndarray
    rhand: np.ndarray
    rhand_p: np.ndarray
    lhand: np.ndarray
    lhand_p: np.ndarray

    def to_pose_metas(self) -> list[PoseMeta]:
        """One :class:`PoseMeta` per frame (face unseen: the reference drops it)."""
        face, face_p = np.full((69, 2), np.nan), np.zeros(69)
        return [
            PoseMeta(
                width=self.width,
                height=self.height,
                kps_body=self.body[t],
                kps_body_p=self.body_p[t],
                kps_lhand=self.lhand[t],
                kps_lhand_p=self.lhand_p[t],
                kps_rhand=self.rhand[t],
                kps_rhand_p=self.rhand_p[t],
                kps_face=face.copy(),
                kps_face_p=face_p.copy(),
            )
            for t in range(self.body.shape[0])
        ]


def body_extent(body: np.ndarray) -> Extent:
    """Body extent of one skeleton.

    Args:
        body: (20, 3) normalised (x / W, y / H, score).

    FULL: both ankles and both hips inside the picture (y <= 1) and scored >= 0.4;
    THREE_QUARTER: both hips so; HALF otherwise.
    """

    def ok(rows: tuple[int, ...]) -> bool:
        pts = body[list(rows)]
        return bool(np.all(pts[:, 1] <= 1) and np.all(pts[:, 2] >= EXTENT_MIN_SCORE))

    if ok((R_ANKLE, L_ANKLE, R_HIP, L_HIP)):
        return Extent.FULL
    if ok((R_HIP, L_HIP)):
        return Extent.THREE_QUARTER
    return Extent.HALF


def person_scale(src: np.ndarray, src_wh: tuple[int, int], dst: np.ndarray, dst_wh: tuple[int, int]) -> float:
    """Template-to-reference scale ``s``.

    Args:
        src, dst: (20, 3) normalised bodies; src_wh, dst_wh: their canvases (W, H).

    The ratio of person heights in pixels, nose to mean ankle height when both skeletons see
    nose and ankles (score > 0.5), else nose to mean hip height, else of the canvases' sizes.
    """
    for low in ((R_ANKLE, L_ANKLE), (R_HIP, L_HIP)):
        rows = [NOSE, *low]
        if np.all(src[rows, 2] > SCALE_MIN_SCORE) and np.all(dst[rows, 2] > SCALE_MIN_SCORE):
            h_src = src_wh[1] * abs((src[low[0], 1] + src[low[1], 1]) / 2 - src[NOSE, 1])
            h_dst = dst_wh[1] * abs((dst[low[0], 1] + dst[low[1], 1]) / 2 - dst[NOSE, 1])
            if not h_dst > 0:
                raise ValueError("retarget: the reference person has zero height (nose level with its ankles / hips)")
            s = float(h_src / h_dst)
            break
    else:
        s = float(np.sqrt(src_wh[0] * src_wh[1]) / np.sqrt(dst_wh[0] * dst_wh[1]))
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"retarget: degenerate template-to-reference scale {s!r}")
    return s


def _limb_lengths(px: np.ndarray) -> np.ndarray:
    """(..., 20, 2) pixels -> (..., 19) limb lengths."""
    d = px[..., _CHILD, :] - px[..., _PARENT, :]
    return np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)


def limb_ratios(src_px: np.ndarray, dst_px: np.ndarray) -> np.ndarray:
    """Per-limb length ratios reference / template, left and right made alike.

    Args:
        src_px, dst_px: (20, 2) pixels (dst on its canvas scaled by ``s``).

    Returns:
        (19,) ratios in :data:`LIMBS` order.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        r = _limb_lengths(dst_px) / _limb_lengths(src_px)
    bad = ~np.isfinite(r)
    if bad.any():
        # A zero-length template limb: use the reference's rule for a missing limb.
        if bad[0] or bad[1]:
            raise ValueError("retarget: the template's frame 0 has zero-length shoulders; cannot retarget")
        r[bad] = (r[0] + r[1]) / 2
    for a, b in PAIRS_MAX:
        r[a] = r[b] = max(r[a], r[b])
    for a, b in PAIRS_MEAN:
        r[a] = r[b] = (r[a] + r[b]) / 2
    return r


def rebuild_skeleton(px: np.ndarray, ratios: np.ndarray, clamp_feet: bool) -> np.ndarray:
    """Rebuild skeletons with new limb lengths, keeping every limb's direction.

    Args:
        px: (T, 20, 2) pixels.
        ratios: (19,) length ratios in :data:`LIMBS` order.
        clamp_feet: cap each foot at half its calf (after scaling), as the per-frame pass does.

    Returns:
        (T, 20, 2): the neck where it was, every other point at ``parent_new + ratio * (child -
        parent)`` with the limb vector taken from the input points.
    """
    vec = px[:, _CHILD] - px[:, _PARENT]  # (T, 19, 2), directions from the points before rebuilding
    length = np.sqrt(vec[..., 0] ** 2 + vec[..., 1] ** 2)  # (T, 19)
    new_len = length * ratios
    if clamp_feet:
        for foot, calf in FOOT_CALF:
            new_len[:, foot] = np.minimum(new_len[:, foot], new_len[:, calf] * FOOT_PER_CALF)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A zero-length limb keeps its child on the parent (the reference's atan2(0, 0) = 0 with length 0).
        step = np.where(length[..., None] > 0, vec * (new_len / length)[..., None], 0.0)
    out = px.copy()
    for i, (p, c) in enumerate(LIMBS):  # 19 steps, each over all frames
        out[:, c] = out[:, p] + step[:, i]
    return out


def plan_retarget(source: Mapping[str, Any], reference: Mapping[str, Any]) -> RetargetPlan:
    """The once-per-video quantities.

    Args:
        source: the template's frame 0 as a Wan meta dict (normalised, its own canvas).
        reference: the reference image's Wan meta dict.
    """
    src = np.asarray(source["keypoints_body"], dtype=np.float64)
    dst = np.asarray(reference["keypoints_body"], dtype=np.float64)
    ws, hs = int(source["width"]), int(source["height"])
    wd, hd = int(reference["width"]), int(reference["height"])
    s = person_scale(src, (ws, hs), dst, (wd, hd))
    # The reference's lengths and anchor are measured on its canvas scaled by s (truncated, as the reference does).
    wd_s, hd_s = int(wd * s), int(hd * s)
    extent = min(body_extent(src), body_extent(dst))
    ratios = limb_ratios(src[:, :2] * (ws, hs), dst[:, :2] * (wd_s, hd_s))
    anchor = rebuild_skeleton((src[:, :2] * (ws, hs))[None], ratios, clamp_feet=False)[0]
    if extent == Extent.FULL:
        # Stand on the reference's ground (lower ankle-toe midpoint), centred on its hips.
        ground = max((dst[R_ANKLE, 1] + dst[R_TOE, 1]) / 2, (dst[L_ANKLE, 1] + dst[L_TOE, 1]) / 2) * hd_s
        dy = max(anchor[R_ANKLE, 1], anchor[L_ANKLE, 1]) - ground
        dx = (anchor[R_HIP, 0] + anchor[L_HIP, 0]) / 2 - (dst[R_HIP, 0] + dst[L_HIP, 0]) * wd_s / 2
    else:
        dx = anchor[NECK, 0] - dst[NECK, 0] * wd_s
        dy = anchor[NECK, 1] - dst[NECK, 1] * hd_s
    return RetargetPlan(
        scale=s,
        ratios=ratios,
        offset=np.array([dx, dy], dtype=np.float64),
        extent=extent,
        hand_scale=float(max(ratios[0], ratios[1]) / s),
        width=wd,
        height=hd,
    )


def retarget_arrays(frames: WanBatch, plan: RetargetPlan) -> RetargetedPoses:
    """Apply a plan to every template frame at once.

    Args:
        frames: the template's T frames (normalised, each on its own canvas).
        plan: from :func:`plan_retarget`.
    """
    wh = np.stack([frames.width, frames.height], axis=1).astype(np.float64)[:, None, :]  # (T, 1, 2)
    old = frames.body[..., :2] * wh  # (T, 20, 2) template pixels
    body = (rebuild_skeleton(old, plan.ratios, clamp_feet=True) - plan.offset) / plan.scale

    # Hands: scale about the root (row 0, whatever its score), in normalised template coordinates.
    h = plan.hand_scale

    def scaled(hand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, 21, 3) -> scaled (T, 21, 2) normalised points and (T, 21) seen mask."""
        xy = hand[..., :2]
        return xy * h - xy[:, :1] * (h - 1), hand[..., 2] >= HAND_MIN_SCORE

    right_xy, right_seen = scaled(frames.rhand)  # Wan right hand: normally at the right wrist
    left_xy, left_seen = scaled(frames.lhand)

    def wrist_shift(wrist: int, hand_xy: np.ndarray, hand_seen: np.ndarray) -> np.ndarray:
        """(T, 2) shift carrying a hand from its place in the template to ``wrist``'s new place.

        The wrist's move, plus, when the hand root is seen, the gap from root to old wrist
        (so the root lands on the new wrist).
        """
        root_gap = old[:, wrist] - hand_xy[:, 0] * wh[:, 0]
        return body[:, wrist] - old[:, wrist] + np.where(hand_seen[:, :1], root_gap, 0.0)

    to_right = wrist_shift(R_WRIST, right_xy, right_seen)
    to_left = wrist_shift(L_WRIST, left_xy, left_seen)
    # The reference swaps the hands when the right hand's root is nearer the left wrist (an unseen
    # root counts as the point (-1, -1) normalised, as in the reference).
    root = np.where(right_seen[:, :1], right_xy[:, 0], -1.0) * wh[:, 0]
    d_right = np.sqrt(((old[:, R_WRIST] - root) ** 2).sum(-1))
    d_left = np.sqrt(((old[:, L_WRIST] - root) ** 2).sum(-1))
    swap = (d_right > d_left)[:, None, None]  # (T, 1, 1)
    at_right_xy = np.where(swap, left_xy, right_xy)
    at_right_seen = np.where(swap[..., 0], left_seen, right_seen)
    at_left_xy = np.where(swap, right_xy, left_xy)
    at_left_seen = np.where(swap[..., 0], right_seen, left_seen)
    at_right_p = np.where(swap[..., 0], frames.lhand[..., 2], frames.rhand[..., 2])
    at_left_p = np.where(swap[..., 0], frames.rhand[..., 2], frames.lhand[..., 2])

    def place(xy: np.ndarray, seen: np.ndarray, p: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shifted, truncated output pixels (T, 21, 2) and scores (T, 21); unseen NaN, 0."""
        px = np.trunc(xy * wh + shift[:, None, :])  # the reference truncates hand points to int
        return np.where(seen[..., None], px, np.nan), np.where(seen, p, 0.0)

    rhand, rhand_p = place(at_right_xy, at_right_seen, at_right_p, to_right)
    lhand, lhand_p = place(at_left_xy, at_left_seen, at_left_p, to_left)
    return RetargetedPoses(
        width=plan.width,
        height=plan.height,
        body=body,
        body_p=frames.body[..., 2].copy(),
        rhand=rhand,
        rhand_p=rhand_p,
        lhand=lhand,
        lhand_p=lhand_p,
    )


def retarget(
    template_metas: Sequence[Mapping[str, Any] | PoseMeta],
    reference_meta: Mapping[str, Any] | PoseMeta,
) -> list[PoseMeta]:
    """Retarget a template video's poses onto the reference image's body proportions.

    Args:
        template_metas: T Wan meta dicts (``width``, ``height``, ``keypoints_body`` (20, 3),
            ``keypoints_left_hand`` / ``keypoints_right_hand`` (21, 3), normalised x / W, y / H,
            score), as :func:`wanprep_torch.wan.pose_metas` makes them, or PoseMeta objects.
            Frame 0 sets the proportions and the anchor.
        reference_meta: the reference image's Wan meta dict (or PoseMeta), on its own canvas.

    Returns:
        T :class:`PoseMeta` in pixels of the reference's canvas (its width and height): body,
        both hands (integer pixels, each labelled by the wrist it is attached to), no face
        (all NaN, score 0). Unseen hand points (score < 0.4) are NaN with score 0.

    Raises:
        ValueError: an empty template list, a malformed meta, or a degenerate pose (zero
        person height, zero-length template shoulders).
    """
    frames = WanBatch.stack(template_metas, "retarget: template_metas")
    ref = reference_meta.to_wan() if isinstance(reference_meta, PoseMeta) else reference_meta
    check_wan_meta(ref, "retarget: reference_meta")
    source = {
        "width": int(frames.width[0]),
        "height": int(frames.height[0]),
        "keypoints_body": frames.body[0],
    }
    plan = plan_retarget(source, ref)
    # The reference also corrects dx on frame 0 by (frame 0's rebuilt anchor x - the plan's anchor
    # x); frame 0 is the plan's source and hips / neck do not depend on the feet cap, so it is 0.
    return retarget_arrays(frames, plan).to_pose_metas()
