"""The gate: which frames run the pose model, and keypoints for the frames that don't.

Verified keyframes. Keyframes are processed at a stride (``max_gap``), earlier where the
picture moved ``motion_px`` since the last keyframe or the scene cut; the frames between two
keyframes get keypoints interpolated linearly in time, and the interpolation is checked: the
pose model runs on the gap's midpoint, and when its confident body keypoints agree with the
interpolation within ``verify_px`` frame pixels the gap is accepted; otherwise it is split at
the midpoint and each half checked the same way. A checked frame keeps its real keypoints. A
gap in which the picture did not move (estimated motion under ``hold_px``) is a hold: accepted
without a check.

The pixel-based motion estimate: a frame's signature is its grayscale image (kornia) shrunk to
about 64 px wide; the distance to the last keyframe, inside the subject's last box, is the mean
absolute difference of the signatures over their mean gradient magnitude (kornia's spatial
gradient; for a small shift d, |I(x + d) - I(x)| ~ |grad I| d), scaled back to frame pixels.
That estimate only holds for motion smaller than the picture's structures, so a frame whose
signature lost its correlation with the last keyframe's (normalised cross-correlation, blind
to brightness and contrast) is a scene cut, or motion too large to estimate: it is a keyframe,
the frame before it too, and the detector runs. Knows nothing of ONNX.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import spatial_gradient

from .skeleton import BODY

__all__ = [
    "GateConfig",
    "PRESETS",
    "resolve_gate",
    "signatures",
    "correlation",
    "motion_distance",
    "Decision",
    "MotionGate",
    "interpolate",
    "interpolate_keypoints",
    "interpolate_boxes",
    "interpolation_error",
]


@dataclass(frozen=True)
class GateConfig:
    """Frame skipping settings. ``enabled=False`` is every frame through both models.

    max_gap: a keyframe at least every ``max_gap`` frames (the interpolation stride).
    verify_px: a gap is accepted when the pose model on its midpoint agrees with the
        interpolation within this many frame pixels (the largest error over confident body
        keypoints); else it is split and both halves checked.
    hold_px: a gap whose estimated motion stays under this is a hold, accepted unchecked.
    motion_px: a frame is a keyframe once the picture moved this far (estimated, frame px)
        since the last keyframe.
    cut_correlation: a frame whose signature correlates less than this with the last
        keyframe's is a scene cut (or too fast to estimate).
    det_every: also run the detector on every ``det_every``-th keyframe (0: only when tracking
        is in doubt: the start, a cut, a jump over ``track_max_px``, weak body keypoints, the
        body at the crop window's edge, or the subject box leaving the frame).
    track_max_px: the detector runs on a keyframe whose picture moved further than this since
        the last keyframe.
    track_min_score: re-detect when the mean body keypoint score of a tracked frame drops under this.
    track_kp_score: keypoints at least this confident make the tracked box and are checked.
    track_edge_margin: re-detect when a confident body keypoint lies within this fraction of
        the crop window of its edge (the window no longer holds the body).
    track_padding: the box from keypoints grows by this fraction of its size on each side
        (the crop pads it 1.25x more).
    subject: keep following the same person across frames (IoU with the last box); the
        reference's largest-box rule applies only at the start, after a cut, or when the subject
        is lost for more than ``subject_grace`` keyframes.
    subject_min_iou: a detection at least this overlapping the last box is the same person.
    signature_width: width of the grayscale signature.
    """

    enabled: bool = True
    max_gap: int = 8
    verify_px: float = 1.0
    hold_px: float = 0.3
    motion_px: float = 16.0
    cut_correlation: float = 0.6
    det_every: int = 0
    track_max_px: float = 32.0
    track_min_score: float = 0.3
    track_kp_score: float = 0.3
    track_edge_margin: float = 0.02
    track_padding: float = 0.2
    subject: bool = True
    subject_min_iou: float = 0.3
    subject_grace: int = 2
    signature_width: int = 64

    def __post_init__(self):
        if self.max_gap < 1 or self.det_every < 0 or self.signature_width < 8:
            raise ValueError("max_gap must be >= 1, det_every >= 0, signature_width >= 8")
        if self.verify_px < 0 or self.hold_px < 0 or self.motion_px <= 0 or not -1 <= self.cut_correlation <= 1:
            raise ValueError("verify_px and hold_px must be >= 0, motion_px > 0, cut_correlation in [-1, 1]")


PRESETS = {
    "off": GateConfig(enabled=False, det_every=1, subject=False),
    "safe": GateConfig(),
    "fast": GateConfig(max_gap=16, verify_px=3.0, hold_px=0.5, motion_px=32.0),
}


def resolve_gate(gate) -> GateConfig:
    """A preset name, a GateConfig, or a dict of fields (with an optional "preset" to start from)."""
    if isinstance(gate, GateConfig):
        return gate
    if gate is None or gate is False:
        return PRESETS["off"]
    if isinstance(gate, str):
        if gate not in PRESETS:
            raise ValueError(f"unknown gate preset {gate!r}; choose one of {sorted(PRESETS)} or pass a GateConfig")
        return PRESETS[gate]
    if isinstance(gate, dict):
        fields = dict(gate)
        base = resolve_gate(fields.pop("preset", "safe"))
        known = {f.name for f in dataclasses.fields(GateConfig)}
        bad = set(fields) - known
        if bad:
            raise ValueError(f"unknown gate fields {sorted(bad)}; known: {sorted(known)}")
        return dataclasses.replace(base, **fields)
    raise TypeError(f"gate must be a preset name, a GateConfig or a dict, got {type(gate).__name__}")


def signatures(frames: torch.Tensor, width: int = 64) -> torch.Tensor:
    """Grayscale thumbnails.

    Args:
        frames: (n, 3, H, W) uint8 or float (16/32/64-bit, bfloat16) in [0, 1].

    Returns:
        (n, h, width) float32 in [0, 1], h keeping the aspect ratio.
    """
    n, _, fh, fw = frames.shape
    h = max(int(round(fh * width / fw)), 1)
    if frames.dtype in (torch.float16, torch.bfloat16):
        # torch's antialiased resize has no CPU kernel for these; float32 on every device keeps
        # the signatures (and so the gate's decisions) the same everywhere.
        frames = frames.float()
    # Antialiased shrink: each signature pixel averages its block, which also averages out noise.
    small = F.interpolate(frames, size=(h, width), mode="bilinear", align_corners=False, antialias=True)
    small = small.float()
    if frames.dtype == torch.uint8:
        small = small / 255.0
    return rgb_to_grayscale(small)[:, 0]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised cross-correlation of two signatures in [-1, 1] (1 for two equal flat images)."""
    da, db = a - a.mean(), b - b.mean()
    den = (da.square().sum() * db.square().sum()).sqrt()
    if float(den) <= 1e-12:
        return 1.0 if float((a - b).abs().max()) < 1e-6 else 0.0
    return float((da * db).sum() / den)


def motion_distance(
    a: torch.Tensor, b: torch.Tensor, frame_width: int, region: tuple[float, float, float, float] | None = None
) -> float:
    """Estimated motion between two signatures, in frame pixels.

    Args:
        a, b: (h, w) signatures; a is the reference (the last processed frame).
        region: (x1, y1, x2, y2) in frame pixels to measure in (the subject's box); whole
            signature when None or when it covers under 2x2 signature pixels.
    """
    scale = frame_width / a.shape[-1]
    if region is not None:
        h, w = a.shape
        x1, y1, x2, y2 = (v / scale for v in region)
        c0, c1 = max(int(x1) - 1, 0), min(int(x2) + 2, w)
        r0, r1 = max(int(y1) - 1, 0), min(int(y2) + 2, h)
        if c1 - c0 >= 2 and r1 - r0 >= 2:
            a, b = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
    mad = (a - b).abs().mean()
    # kornia's unnormalised "diff" gradient is the central difference x[i+1] - x[i-1], twice
    # the per-pixel slope; the border (replicate-padded) is left out where there is an inside.
    g = spatial_gradient(a[None, None], mode="diff", order=1, normalized=False)[0, 0].abs()  # (2, h, w)
    grad = 0.5 * (g[:, 1:-1, 1:-1].mean() if min(a.shape) > 2 else g.mean())
    return float(mad / grad.clamp_min(1e-4) * scale)


@dataclass(frozen=True)
class Decision:
    """The gate's plan for one frame: it is a keyframe (``process``: the pose model runs), it
    starts a new scene (``cut``), and the estimated motion ``distance`` (frame px) since the
    last keyframe."""

    process: bool
    cut: bool
    distance: float


class MotionGate:
    """Decides, frame by frame, which frames are keyframes (streaming: state across chunks)."""

    def __init__(self, cfg: GateConfig, frame_width: int):
        self.cfg = cfg
        self.frame_width = frame_width
        self.ref = None  # signature of the last keyframe
        self.gap = 0  # frames since the last keyframe

    def step(self, sig: torch.Tensor, region=None) -> Decision:
        """The plan for the next frame; ``region`` is the subject's last box (x1, y1, x2, y2)
        in frame pixels, if known, or a list of boxes (several people: the motion is the
        largest measured in any of them)."""
        if self.ref is None:
            self.ref, self.gap = sig, 0
            return Decision(True, True, 0.0)
        cut = correlation(self.ref, sig) < self.cfg.cut_correlation
        if isinstance(region, list) and region and isinstance(region[0], (list, tuple)):
            dist = max(motion_distance(self.ref, sig, self.frame_width, r) for r in region)
        else:
            dist = motion_distance(self.ref, sig, self.frame_width, region)
        process = cut or dist >= self.cfg.motion_px or self.gap + 1 >= self.cfg.max_gap
        if process:
            self.ref, self.gap = sig, 0
        else:
            self.gap += 1
        return Decision(process, cut, dist)


def interpolate_keypoints(
    a: torch.Tensor, b: torch.Tensor, t0: int, t1: int, ts: list[int], min_score: float = 0.3
) -> torch.Tensor:
    """Keypoints (K, 3) x, y, score between frames t0 and t1: linear where both ends are
    confident; where only one end is (a point appearing or disappearing, whose other end is
    wherever an empty heatmap peaked), the position is that end's, and the score still fades.

    Returns:
        (len(ts), K, 3).
    """
    out = interpolate(a, b, t0, t1, ts)
    ok_a = (a[:, 2] >= min_score).unsqueeze(-1)
    ok_b = (b[:, 2] >= min_score).unsqueeze(-1)
    xy = out[..., :2]
    xy = torch.where(ok_a & ~ok_b, a[:, :2].expand_as(xy), xy)
    xy = torch.where(ok_b & ~ok_a, b[:, :2].expand_as(xy), xy)
    return torch.cat([xy, out[..., 2:]], dim=-1)


def interpolate(a: torch.Tensor, b: torch.Tensor, t0: int, t1: int, ts: list[int]) -> torch.Tensor:
    """Linear interpolation in time between values at frames t0 and t1.

    Args:
        a, b: (...) values at t0 and t1 (t1 > t0).
        ts: frames in between.

    Returns:
        (len(ts), ...).
    """
    w = torch.tensor([(t - t0) / (t1 - t0) for t in ts], device=a.device, dtype=a.dtype)
    w = w.view((-1,) + (1,) * a.dim())
    return a.unsqueeze(0) + (b - a).unsqueeze(0) * w


def interpolate_boxes(a: torch.Tensor, b: torch.Tensor, t0: int, t1: int, ts: list[int]) -> torch.Tensor:
    """Boxes (5,) x1, y1, x2, y2, score between frames t0 and t1: linear between two person
    boxes; next to a full-frame fallback (score < 0) each frame takes the nearer end's box, so
    a frame with no person keeps reporting the fallback.

    Returns:
        (len(ts), 5).
    """
    if float(a[4]) >= 0 and float(b[4]) >= 0:
        return interpolate(a, b, t0, t1, ts)
    return torch.stack([a if t - t0 <= t1 - t else b for t in ts])


def interpolation_error(
    got: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, t: torch.Tensor, min_score: float
) -> torch.Tensor:
    """How far the keypoints verification runs found at frames t lie from the interpolation
    between keyframes t0 and t1: the largest distance (frame px) over the body keypoints (rows
    0-16) confident at both ends. A body point confident at both ends but not at t counts as
    infinitely far (something the interpolation does not know happened); no point confident at
    both ends: 0 (nothing to check). Batched, so a level of checks reads the host once.

    Args:
        got, a, b: (L, 133, 3) keypoints at t, t0 and t1; t0, t1, t: (L,) frame numbers.

    Returns:
        (L,) float32 on the keypoints' device.
    """
    w = ((t - t0).float() / (t1 - t0).float()).to(got.device).view(-1, 1, 1)
    ka, kb, kg = a[:, BODY], b[:, BODY], got[:, BODY]
    ok_a, ok_b = ka[..., 2] >= min_score, kb[..., 2] >= min_score
    want = ka[..., :2] + (kb[..., :2] - ka[..., :2]) * w
    both = ok_a & ok_b
    d = (kg[..., :2] - want).norm(dim=-1)
    d = torch.where(kg[..., 2] >= min_score, d, torch.full_like(d, float("inf")))
    return torch.where(both, d, torch.zeros_like(d)).amax(dim=1)
