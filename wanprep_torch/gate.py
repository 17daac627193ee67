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
falls under half of ``hold_px`` or rises to ``hold_px``, or its signed velocity changes by more
than its noise explains: :meth:`MotionGate.step`), the frame before is a keyframe too: a hold
then is a gap of its own, and the motion beside it a gap that interpolates well, instead of
one gap mixing both that checks split.

The pixel-based motion estimate: a frame's signature is its grayscale image (kornia) shrunk to
about 64 px wide; the distance to the last keyframe, inside the subject's last box, is the mean
absolute difference of the signatures over their mean gradient magnitude (kornia's spatial
gradient; for a small shift d, |I(x + d) - I(x)| ~ |grad I| d), scaled back to frame pixels.
That estimate only holds for motion smaller than the picture's structures, so a frame whose
signature lost its correlation with the last keyframe's (normalised cross-correlation, blind
to brightness and contrast) is a scene cut, or motion too large to estimate: it is a keyframe,
the frame before it too, and the detector runs. The velocity is one Lucas-Kanade step on a
finer thumbnail (:func:`translation`, ``velocity_width``): signed, so the jitter of a noisy
picture averages out of it where it adds up in the distance. Knows nothing of ONNX.
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
    "translation",
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


def _crop(a: torch.Tensor, b: torch.Tensor, frame_width: int, region) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The two signatures cut to ``region`` (frame px; whole when None or under 2x2 signature
    pixels) and the frame px per signature pixel."""
    scale = frame_width / a.shape[-1]
    if region is not None:
        h, w = a.shape
        x1, y1, x2, y2 = (v / scale for v in region)
        c0, c1 = max(int(x1) - 1, 0), min(int(x2) + 2, w)
        r0, r1 = max(int(y1) - 1, 0), min(int(y2) + 2, h)
        if c1 - c0 >= 2 and r1 - r0 >= 2:
            a, b = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
    return a, b, scale


def motion_distance(
    a: torch.Tensor, b: torch.Tensor, frame_width: int, region: tuple[float, float, float, float] | None = None
) -> float:
    """Estimated motion between two signatures, in frame pixels.

    Args:
        a, b: (h, w) signatures; a is the reference (the last processed frame).
        region: (x1, y1, x2, y2) in frame pixels to measure in (the subject's box); whole
            signature when None or when it covers under 2x2 signature pixels.
    """
    a, b, scale = _crop(a, b, frame_width, region)
    mad = (a - b).abs().mean()
    # kornia's unnormalised "diff" gradient is the central difference x[i+1] - x[i-1], twice
    # the per-pixel slope; the border (replicate-padded) is left out where there is an inside.
    g = spatial_gradient(a[None, None], mode="diff", order=1, normalized=False)[0, 0].abs()  # (2, h, w)
    grad = 0.5 * (g[:, 1:-1, 1:-1].mean() if min(a.shape) > 2 else g.mean())
    return float(mad / grad.clamp_min(1e-4) * scale)


def translation(
    a: torch.Tensor, b: torch.Tensor, frame_width: int, region: tuple[float, float, float, float] | None = None
) -> torch.Tensor:
    """The picture's shift from signature a to b (one Lucas-Kanade step: the least-squares
    shift that the brightness change shows against the gradient), in frame pixels. Signed, so
    jitter in different directions (each point of a pose, pixel noise) averages out of it where
    a magnitude (:func:`motion_distance`) adds it up; for shifts well under a signature pixel.

    Args:
        a, b: (h, w) signatures; region as in :func:`motion_distance`.

    Returns:
        (2,) float64 dx, dy; zeros where the picture has no structure to tell.
    """
    a, b, scale = _crop(a, b, frame_width, region)
    if min(a.shape) < 3:
        return torch.zeros(2, dtype=torch.float64)
    mid = 0.5 * (a.double() + b.double())
    g = 0.5 * spatial_gradient(mid[None, None], mode="diff", order=1, normalized=False)[0, 0, :, 1:-1, 1:-1]  # (2, h-2, w-2)
    it = (b.double() - a.double())[1:-1, 1:-1]
    gram = torch.einsum("ihw,jhw->ij", g, g)
    rhs = -torch.einsum("ihw,hw->i", g, it)
    if float(torch.linalg.det(gram)) <= 1e-12 * float(gram.trace()) ** 2 + 1e-300:
        return torch.zeros(2, dtype=torch.float64)
    return torch.linalg.solve(gram, rhs) * scale


def _boxes(region) -> list:
    """A motion region as a list of boxes: one box (or None: the whole picture) alone, a list
    of boxes (several people) as it is."""
    return region if isinstance(region, list) and region and isinstance(region[0], (list, tuple)) else [region]


def region_motion(a: torch.Tensor, b: torch.Tensor, frame_width: int, region) -> float:
    """:func:`motion_distance` in ``region``: one box, or a list of boxes (several people: the
    largest motion in any of them)."""
    return max(motion_distance(a, b, frame_width, r) for r in _boxes(region))


@dataclass(frozen=True)
class Decision:
    """The gate's plan for one frame: it is a keyframe (``process``: the pose model runs), it
    starts a new scene (``cut``), the estimated motion ``distance`` (frame px) since the last
    keyframe, and ``boundary``: the picture's motion changed here (it stopped, started, turned
    or changed speed), so the frame before is a keyframe too."""

    process: bool
    cut: bool
    distance: float
    boundary: bool = False


_VELOCITY_SAMPLES = 6  # velocity changes seen before the change test trusts its noise scale
# The picture's velocity from thumbnails is good to about half of it where the picture moves
# (the person crosses a textured background, changes shape): smaller changes are not tested.
_VELOCITY_REL = 0.5
# How often noise alone may pass for a change of velocity: a needless boundary costs a
# keyframe, a missed start or stop a failed check and its split (two more).
_VELOCITY_P = 0.01


class MotionGate:
    """Decides, frame by frame, which frames are keyframes (streaming: state across chunks).

    Two measures of the picture's motion in the subject's box: the distance (a magnitude,
    :func:`motion_distance`, on the coarse signature) for holds, strides and cuts, and the
    velocity (signed, :func:`translation`, on the finer thumbnail) for where the motion
    changes: a start, a stop or a turn makes the frame before a keyframe (a boundary), so the
    gaps on either side are each a straight line. Jitter (a pose's points, pixel noise) adds
    up in a magnitude but averages out of a signed velocity, so the second still sees starts
    and stops where the first is lost in the noise.
    """

    def __init__(self, cfg: GateConfig, frame_width: int):
        self.cfg = cfg
        self.frame_width = frame_width
        self.ref = None  # signature of the last keyframe
        self.gap = 0  # frames since the last keyframe
        self.seen = 0  # frames seen
        self.prev = None  # signature of the previous frame
        self.prev_fine = None  # its finer thumbnail
        self.still = True  # the picture is holding still (hysteresis: moving from hold_px, still under half)
        self.calm = True  # the velocity stayed under hold_px since the last keyframe
        self.velocity = None  # (n, 2) the picture's mean velocity per region box since it last changed
        self.stretch = 0  # frames in that mean
        self.last_velocity = None  # (n, 2) the previous frame's
        self.changes: list[float] = []  # recent frame-to-frame velocity changes: their noise scale

    def step(self, sig: torch.Tensor, region=None, fine: torch.Tensor | None = None) -> Decision:
        """The plan for the next frame; ``region`` is the subject's last box (x1, y1, x2, y2)
        in frame pixels, if known, or a list of boxes (several people: the motion is the
        largest measured in any of them); ``fine`` its finer thumbnail (None: no velocity
        test, and no frame counts as calm)."""
        self.seen += 1
        prev, self.prev = self.prev, sig
        prev_fine, self.prev_fine = self.prev_fine, fine
        if self.ref is None:
            self.ref, self.gap = sig, 0
            return Decision(True, True, 0.0)
        boundary = False
        if self.cfg.hold_px > 0:
            step = region_motion(prev, sig, self.frame_width, region)
            if self.still and step >= self.cfg.hold_px or not self.still and step < 0.5 * self.cfg.hold_px:
                self.still, boundary = not self.still, True
            calm_now = False
            if fine is not None and prev_fine is not None:
                changed, calm_now = self._velocity_changed(prev_fine, fine, region)
                boundary |= changed
            if boundary:
                self.ref, self.gap = prev, 0  # the frame before is a keyframe (the caller plans it)
                self.calm = calm_now  # the new gap is this frame's step
            else:
                self.calm = self.calm and calm_now
        else:
            self.calm = False
        cut = correlation(self.ref, sig) < self.cfg.cut_correlation
        if cut:
            # The velocity across a cut is meaningless, and the new scene has its own noise.
            self.velocity = self.last_velocity = None
            self.changes = []
            self.calm = False
        dist = region_motion(self.ref, sig, self.frame_width, region)
        # The warm-up measures the noise before the first gap is checked; a still start needs
        # none (a hold is accepted unchecked; a gap the body held still through, in a picture
        # too noisy to show the hold, is checked with its ends' difference as the noise).
        warmup = self.seen <= self.cfg.noise_warmup and not ((self.still or self.calm) and self.cfg.hold_px > 0)
        process = cut or warmup or dist >= self.cfg.motion_px or self.gap + 1 >= self.cfg.max_gap
        if process:
            self.ref, self.gap, self.calm = sig, 0, True
        else:
            self.gap += 1
        return Decision(process, cut, dist, boundary)

    def _velocity_changed(self, prev: torch.Tensor, fine: torch.Tensor, region) -> tuple[bool, bool]:
        """Did the picture's velocity (:func:`translation` in each region box) change from its
        mean since it last changed by more than ``hold_px``, than half of it (the estimate's
        own error in motion) and than its noise explains (a start, a stop, a turn)? The noise
        scale: the median of recent frame-to-frame changes (starts and stops are rare among
        them). Returns (changed, the velocity is under ``hold_px``)."""
        v = torch.stack([translation(prev, fine, self.frame_width, r) for r in _boxes(region)])
        speed = v.norm(dim=-1)
        calm = bool((speed < self.cfg.hold_px).all())
        last, self.last_velocity = self.last_velocity, v
        if last is not None and last.shape == v.shape:
            self.changes = (self.changes + [float((v - last).norm(dim=-1).max())])[-32:]
        if self.velocity is None or self.velocity.shape != v.shape:
            self.velocity, self.stretch = v, 1
            return False, calm
        changed = False
        if len(self.changes) >= _VELOCITY_SAMPLES:
            # Changes of two noisy velocities: Rayleigh with scale sqrt(2) sigma, median 1.665 sigma.
            sigma = sorted(self.changes)[len(self.changes) // 2] / 1.665
            noise = sigma * math.sqrt(1 + 1 / self.stretch) * rayleigh_max_quantile(1, _VELOCITY_P)
            limit = torch.clamp(_VELOCITY_REL * torch.maximum(speed, self.velocity.norm(dim=-1)), min=max(self.cfg.hold_px, noise))
            changed = bool(((v - self.velocity).norm(dim=-1) > limit).any())
        if changed:
            self.velocity, self.stretch = v, 1
        else:
            self.velocity = (self.velocity * self.stretch + v) / (self.stretch + 1)
            self.stretch += 1
        return changed, calm


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
