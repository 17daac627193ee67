"""The gate: which frames run the pose model, and keypoints for the frames that don't.

Verified keyframes. Keyframes are processed at a stride (``max_gap``), earlier where the
picture moved ``motion_px`` since the last keyframe or the scene cut; the frames between two
keyframes get keypoints interpolated linearly in time, and the interpolation is checked: the
pose model runs on the gap's midpoint, and when its confident body keypoints agree with the
interpolation within what the measurement noise explains (:func:`gap_accepted`: a statistical
test with the noise measured from the video, plus ``verify_px``) the gap is accepted; otherwise
it is split at the midpoint and each half checked the same way. A checked frame keeps its real keypoints. A
gap in which the picture did not move (estimated motion under ``hold_px``) is a hold: accepted
without a check. Where the picture stops or starts moving (the motion from the previous frame
falls under half of ``hold_px`` or rises to ``hold_px``), the frame before is a keyframe too: a hold
then is a gap of its own, accepted unchecked, and the motion beside it a gap that
interpolates well, instead of one gap mixing both that checks split.

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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import spatial_gradient

from .gateconfig import PRESETS, GateConfig, resolve_gate
from .skeleton import BODY

__all__ = [
    "GateConfig",
    "PRESETS",
    "resolve_gate",
    "signatures",
    "correlation",
    "motion_distance",
    "region_motion",
    "Decision",
    "MotionGate",
    "interpolate",
    "interpolate_keypoints",
    "interpolate_boxes",
    "rayleigh_max_quantile",
    "gap_accepted",
]


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


def region_motion(a: torch.Tensor, b: torch.Tensor, frame_width: int, region) -> float:
    """:func:`motion_distance` in ``region``: one box, or a list of boxes (several people: the
    largest motion in any of them)."""
    if isinstance(region, list) and region and isinstance(region[0], (list, tuple)):
        return max(motion_distance(a, b, frame_width, r) for r in region)
    return motion_distance(a, b, frame_width, region)


@dataclass(frozen=True)
class Decision:
    """The gate's plan for one frame: it is a keyframe (``process``: the pose model runs), it
    starts a new scene (``cut``), the estimated motion ``distance`` (frame px) since the last
    keyframe, and ``boundary``: the picture stopped or started moving here, so the frame
    before is a keyframe too."""

    process: bool
    cut: bool
    distance: float
    boundary: bool = False


class MotionGate:
    """Decides, frame by frame, which frames are keyframes (streaming: state across chunks)."""

    def __init__(self, cfg: GateConfig, frame_width: int):
        self.cfg = cfg
        self.frame_width = frame_width
        self.ref = None  # signature of the last keyframe
        self.gap = 0  # frames since the last keyframe
        self.seen = 0  # frames seen
        self.prev = None  # signature of the previous frame
        self.still = True  # the picture is holding still (hysteresis: moving from hold_px, still under half)

    def step(self, sig: torch.Tensor, region=None) -> Decision:
        """The plan for the next frame; ``region`` is the subject's last box (x1, y1, x2, y2)
        in frame pixels, if known, or a list of boxes (several people: the motion is the
        largest measured in any of them)."""
        self.seen += 1
        prev, self.prev = self.prev, sig
        if self.ref is None:
            self.ref, self.gap = sig, 0
            return Decision(True, True, 0.0)
        boundary = False
        if self.cfg.hold_px > 0:
            step = region_motion(prev, sig, self.frame_width, region)
            if self.still and step >= self.cfg.hold_px or not self.still and step < 0.5 * self.cfg.hold_px:
                self.still, boundary = not self.still, True
                self.ref, self.gap = prev, 0  # the frame before is a keyframe (the caller plans it)
        cut = correlation(self.ref, sig) < self.cfg.cut_correlation
        dist = region_motion(self.ref, sig, self.frame_width, region)
        # The warm-up measures the noise before the first gap is checked; a still start needs
        # none (a hold is accepted unchecked), so it is skipped there.
        warmup = self.seen <= self.cfg.noise_warmup and not (self.still and self.cfg.hold_px > 0)
        process = cut or warmup or dist >= self.cfg.motion_px or self.gap + 1 >= self.cfg.max_gap
        if process:
            self.ref, self.gap = sig, 0
        else:
            self.gap += 1
        return Decision(process, cut, dist, boundary)


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


def rayleigh_max_quantile(n: int, p: float) -> float:
    """The distance that the largest of ``n`` 2-D Gaussian errors (unit sigma per coordinate,
    so Rayleigh distributed) exceeds with probability ``p``."""
    keep = (1.0 - p) ** (1.0 / max(n, 1))
    return math.sqrt(-2.0 * math.log(max(1.0 - keep, 1e-300)))


def gap_accepted(
    got: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, t: torch.Tensor,
    cfg: GateConfig, sigma: float = 0.0, sigma_mean: float | None = None,
) -> torch.Tensor:
    """Does the interpolation between keyframes t0 and t1 agree with the keypoints measured at
    t (the gap's check)? Over the n body keypoints confident at both ends, with r_i their error
    vectors, c = 1 + w^2 + (1 - w)^2 (w = (t - t0) / (t1 - t0): the noise of the two ends and
    of the check), ``sigma`` the measurement noise per coordinate of a point and ``sigma_mean``
    that of the points' mean (default sigma / sqrt(n): independent points). Accepted when:

    - the largest |r_i| <= ``verify_px`` + sigma sqrt(c) q_n, q_n the Rayleigh quantile that
      the largest of n noise errors exceeds with probability ``verify_p`` (one point off: a
      limb moved), and
    - the mean error vector |mean r_i| <= ``verify_mean_px`` + sigma_mean sqrt(c) q_1 (the body
      as a whole moved off the line, as in a start, a stop, a turn or an acceleration: noise
      averages out of the mean, a shared displacement does not).

    With sigma 0 this is the noise-free rule: the largest error within ``verify_px``, the mean
    within ``verify_mean_px``. A body point confident at both ends but not at t fails the check
    (something happened the interpolation does not know); no point confident at both ends
    passes (nothing to check).

    Args:
        got, a, b: (L, 133, 3) keypoints at t, t0 and t1; t0, t1, t: (L,) frame numbers.

    Returns:
        (L,) bool on the keypoints' device.
    """
    w = ((t - t0).float() / (t1 - t0).float()).to(got.device).view(-1, 1)
    ka, kb, kg = a[:, BODY], b[:, BODY], got[:, BODY]
    min_score = cfg.track_kp_score
    both = (ka[..., 2] >= min_score) & (kb[..., 2] >= min_score)
    want = ka[..., :2] + (kb[..., :2] - ka[..., :2]) * w.unsqueeze(-1)
    r = torch.where(both.unsqueeze(-1), kg[..., :2] - want, torch.zeros_like(want))  # (L, 17, 2)
    lost = (both & (kg[..., 2] < min_score)).any(dim=1)
    n = both.sum(dim=1)
    root_c = (1 + w.square() + (1 - w).square()).sqrt().squeeze(1)  # (L,)
    q = torch.tensor([rayleigh_max_quantile(int(v), cfg.verify_p) for v in n.tolist()], device=got.device)
    ok_max = r.norm(dim=-1).amax(dim=1) <= cfg.verify_px + float(sigma) * root_c * q
    nf = n.clamp_min(1).float()
    s_mean = float(sigma) / nf.sqrt() if sigma_mean is None else torch.full_like(nf, float(sigma_mean))
    mean = (r.sum(dim=1) / nf.unsqueeze(-1)).norm(dim=-1)
    ok_mean = mean <= cfg.verify_mean_px + s_mean * root_c * rayleigh_max_quantile(1, cfg.verify_p)
    return (n == 0) | (~lost & ok_max & ok_mean)
