"""The similarity gate: which frames run the pose model, and keypoints for the frames that don't.

A frame's signature is its grayscale image shrunk to about 64 px wide. The distance to the last
processed frame is an estimate of how far the subject moved, in frame pixels: inside the
subject's last box, the mean absolute difference of the signatures divided by their mean
gradient magnitude (for a small shift d, |I(x + d) - I(x)| ~ |grad I| d), scaled back to the
frame. That makes one threshold mean the same on dark and bright, flat and busy footage, and a
small person moving on a still background is not averaged away by the background. That estimate only holds for motion smaller
than the picture's structures, so a frame whose signature has lost its correlation with the
last processed one (normalised cross-correlation, blind to brightness and contrast) is a scene
cut, or motion too large to estimate: either way it is processed and the detector runs.

Skipped frames get keypoints interpolated linearly in time between the processed frames on
either side. Knows nothing of ONNX.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
]


@dataclass(frozen=True)
class GateConfig:
    """Frame skipping settings. ``enabled=False`` is the full pipeline, bit for bit.

    threshold_px: a frame runs the pose model once the picture moved this far (estimated, in
        frame pixels) since the last processed frame.
    cut_correlation: a frame whose signature correlates less than this with the last processed
        frame's is a scene cut (or too fast to estimate): it is processed, the detector runs and
        the subject is chosen afresh.
    max_gap: a processed frame at least every ``max_gap`` frames.
    det_every: on processed frames, run the detector every ``det_every`` frames; in between the
        box comes from the previous frame's confident keypoints (1 = every processed frame).
    track_max_px: the detector runs (rather than tracking) on a frame whose subject moved
        further than this since the last processed frame.
    track_min_score: re-detect when the mean body keypoint score of a tracked frame drops under this.
    track_kp_score: keypoints at least this confident make the tracked box.
    track_edge_margin: re-detect when such a keypoint lies within this fraction of the pose
        window of its edge (the person reaches past the tracked window).
    track_padding: the tracked box grows by this fraction of its size on each side.
    subject: keep following the same person across frames (IoU with the last box); the
        reference's largest-box rule applies only at the start, after a cut, or when the subject
        is lost for more than ``subject_grace`` processed frames.
    subject_min_iou: a detection at least this overlapping the last box is the same person.
    signature_width: width of the grayscale signature.
    """

    enabled: bool = True
    threshold_px: float = 1.5
    cut_correlation: float = 0.6
    max_gap: int = 4
    det_every: int = 4
    track_max_px: float = 8.0
    track_min_score: float = 0.3
    track_kp_score: float = 0.3
    track_edge_margin: float = 0.04
    track_padding: float = 0.1
    subject: bool = True
    subject_min_iou: float = 0.3
    subject_grace: int = 2
    signature_width: int = 64

    def __post_init__(self):
        if self.max_gap < 1 or self.det_every < 1 or self.signature_width < 8:
            raise ValueError("max_gap and det_every must be >= 1, signature_width >= 8")
        if self.threshold_px < 0 or not -1 <= self.cut_correlation <= 1:
            raise ValueError("threshold_px must be >= 0 and cut_correlation in [-1, 1]")


PRESETS = {
    "off": GateConfig(enabled=False, det_every=1, subject=False),
    "safe": GateConfig(),
    "fast": GateConfig(threshold_px=4.0, max_gap=8, det_every=8),
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


_GRAY = (0.299, 0.587, 0.114)


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
    w = torch.tensor(_GRAY, device=small.device).view(1, 3, 1, 1)
    return (small * w).sum(dim=1)


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
    gx = (a[:, 1:] - a[:, :-1]).abs().mean()
    gy = (a[1:, :] - a[:-1, :]).abs().mean()
    grad = (gx + gy) * 0.5
    return float(mad / grad.clamp_min(1e-4) * scale)


@dataclass(frozen=True)
class Decision:
    """The gate's plan for one frame: ``process`` it (run the pose model), it starts a new
    scene (``cut``), and the estimated motion ``distance`` (frame px) since the last processed
    frame."""

    process: bool
    cut: bool
    distance: float


class MotionGate:
    """Decides, frame by frame, which frames are processed (streaming: state across chunks)."""

    def __init__(self, cfg: GateConfig, frame_width: int):
        self.cfg = cfg
        self.frame_width = frame_width
        self.ref = None  # signature of the last processed frame
        self.gap = 0  # frames since the last processed one

    def step(self, sig: torch.Tensor, region=None) -> Decision:
        """The plan for the next frame; ``region`` is the subject's last box (x1, y1, x2, y2)
        in frame pixels, if known."""
        if self.ref is None:
            self.ref, self.gap = sig, 0
            return Decision(True, True, 0.0)
        cut = correlation(self.ref, sig) < self.cfg.cut_correlation
        dist = motion_distance(self.ref, sig, self.frame_width, region)
        process = cut or dist >= self.cfg.threshold_px or self.gap + 1 >= self.cfg.max_gap
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
