"""A temporal model of keypoint tracks: zero-lag smoothing and the measurement noise level.

One person's track is (T, K, 3) x, y, score per keypoint over time. Each keypoint's x and y
follow a constant-velocity Kalman filter (state: position and velocity; x and y share one
covariance, since they share the noise model) run forward, then a Rauch-Tung-Striebel pass
backward over a bounded look-ahead: a frame's smoothed position uses the frames up to
``lookahead`` after it, so it does not lag as a causal filter (One Euro, MediaPipe) does, and a
stream's frame is final once those frames have been seen.

- Confidence-aware: a measurement scored s counts with variance sigma^2 / s; under
  ``min_score`` it is no measurement at all.
- Adaptive: each step predicts with a small process noise (``accel_px``, steady holds and smooth
  motion); when the measurement falls outside what that prediction explains (normalised
  innovation over ``maneuver_chi2``) the step uses a large one (``maneuver_px``), so a turn or a
  fast bounce is followed without lag.
- Cuts: the filter restarts at a scene cut and the backward pass never crosses one; a point
  missing on more than ``bridge`` frames in a row restarts the same way (a long gap stays gone).
- Dropouts: a point missing on at most ``bridge`` frames between two confident measurements
  is bridged: the smoothed position, scored ``bridge_score`` x the lower neighbour score.
- Frames the gate interpolated count as weak measurements (``interp_weight``): the smoothed
  track follows the line the gate verified, rounded at its keyframes.

The noise level sigma (px, per keypoint group of :data:`~wanprep_torch.skeleton.GROUPS`) is
measured from the video itself (:class:`NoiseEstimator`): on three consecutive measurements
of a point, the middle one's distance from the line through the outer two is noise plus
curvature; a low quantile over many (robust to motion: up to 3/4 of them may be curvature)
gives sigma.

Pure functions on batched tensors (:func:`kalman_forward`, :func:`rts_window`) and two small
stage objects (:class:`NoiseEstimator`, :class:`TrackSmoother`). Knows nothing of the models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .skeleton import GROUPS, NUM_WHOLEBODY

__all__ = [
    "SmoothConfig",
    "SMOOTH_PRESETS",
    "resolve_smooth",
    "NoiseEstimator",
    "triple_residuals",
    "ForwardState",
    "kalman_forward",
    "rts_window",
    "smooth_track",
    "TrackSmoother",
    "one_euro",
]


@dataclass(frozen=True)
class SmoothConfig:
    """Keypoint smoothing settings (``enabled=False``: the pose model's keypoints as they are).

    lookahead: frames after a frame that its smoothed position uses (the stream's delay).
    min_score: measurements scored under this are missing.
    accel_px: process noise (px/frame^2 standard deviation of the acceleration) of a steady step.
    maneuver_px: the same for a maneuver step (a turn, a bounce, a sudden start).
    maneuver_chi2: a step is a maneuver when the squared innovation over its variance (x and y:
        2 degrees of freedom) exceeds this (9.21: 1% of steady steps under the noise model).
    jump_chi2: beyond this (20 standard deviations) the point jumped (a cut the picture did not
        show, another person): its track restarts there.
    noise_px: the measurement noise assumed before the video's own estimate exists.
    min_noise_px: floor on the measurement noise (a noise-free track is followed, not frozen).
    bridge: a point missing on at most this many frames between confident measurements is
        bridged; longer gaps stay gone.
    bridge_score: a bridged point's score, times the lower of its neighbours' scores.
    interp_weight: a frame the gate interpolated counts as a measurement with this many times
        the noise variance (the frames of a gap of that length together weigh about one).
    """

    enabled: bool = True
    lookahead: int = 16
    min_score: float = 0.3
    accel_px: float = 0.05
    maneuver_px: float = 8.0
    maneuver_chi2: float = 9.21
    jump_chi2: float = 400.0
    noise_px: float = 1.0
    min_noise_px: float = 0.05
    bridge: int = 4
    bridge_score: float = 0.9
    interp_weight: float = 8.0

    def __post_init__(self):
        if self.lookahead < 0 or self.bridge < 0:
            raise ValueError("lookahead and bridge must be >= 0")
        if min(self.accel_px, self.maneuver_px, self.min_noise_px) <= 0 or self.noise_px < 0 or self.maneuver_chi2 <= 0:
            raise ValueError("accel_px, maneuver_px, min_noise_px and maneuver_chi2 must be > 0, noise_px >= 0")


SMOOTH_PRESETS = {"off": SmoothConfig(enabled=False), "on": SmoothConfig()}


def resolve_smooth(smooth, gate_enabled: bool = True) -> SmoothConfig:
    """A preset name ("auto", "on", "off"), a bool, a SmoothConfig, or a dict of its fields
    (with an optional "preset"). "auto" is "on" with the gate on, "off" with ``gate="off"``
    (which then stays the reference's per-frame result)."""
    if isinstance(smooth, SmoothConfig):
        return smooth
    if smooth is None or smooth == "auto":
        return SMOOTH_PRESETS["on" if gate_enabled else "off"]
    if isinstance(smooth, bool):
        return SMOOTH_PRESETS["on" if smooth else "off"]
    if isinstance(smooth, str):
        if smooth not in SMOOTH_PRESETS:
            raise ValueError(f"unknown smooth preset {smooth!r}; choose one of ['auto', 'off', 'on'] or pass a SmoothConfig")
        return SMOOTH_PRESETS[smooth]
    if isinstance(smooth, dict):
        fields = dict(smooth)
        base = resolve_smooth(fields.pop("preset", "on"), gate_enabled)
        known = {f.name for f in dataclasses.fields(SmoothConfig)}
        bad = set(fields) - known
        if bad:
            raise ValueError(f"unknown smooth fields {sorted(bad)}; known: {sorted(known)}")
        return dataclasses.replace(base, **fields)
    raise TypeError(f"smooth must be 'auto', 'on', 'off', a bool, a SmoothConfig or a dict, got {type(smooth).__name__}")


# -- the noise level -------------------------------------------------------------------------


def triple_residuals(z0: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, t0, t1, t2) -> torch.Tensor:
    """How far the middle of three measurements lies from the line through the outer two, scaled
    so that under pure noise of sigma per coordinate each value is N(0, sigma^2).

    Args:
        z0, z1, z2: (..., 2) positions at times t0 < t1 < t2 (numbers or tensors broadcasting
            against the leading dims).

    Returns:
        (..., 2) residuals per coordinate.
    """
    t0, t1, t2 = (torch.as_tensor(v, dtype=torch.float64) for v in (t0, t1, t2))
    w = ((t1 - t0) / (t2 - t0)).unsqueeze(-1)
    r = z1.double() - ((1 - w) * z0.double() + w * z2.double())
    return r / (1 + w.square() + (1 - w).square()).sqrt()


class NoiseEstimator:
    """The measurement noise of each keypoint group (``groups``: name -> rows; by default
    :data:`~wanprep_torch.skeleton.GROUPS` for 133 points, else one group "all"), from the
    video itself.

    Feed the measured frames in order (:meth:`add`); each point confident on three consecutive
    measured frames (no reset between) gives a residual (:func:`triple_residuals`);
    sigma = the 25th percentile of the absolute residuals over the latest ``capacity`` of the
    group / 0.3186 (that percentile of |N(0, 1)|), once it has ``min_samples`` of them (None
    before). A low quantile, not the median: with frames skipped, the residuals of triples
    spanning a change of motion (a start, a stop) are curvature, not noise. Residuals can also be given directly
    (:meth:`add_residuals`).
    """

    def __init__(
        self, num_keypoints: int = NUM_WHOLEBODY, min_score: float = 0.3, min_samples: int = 24, capacity: int = 8192, groups: dict | None = None
    ):
        if groups is None:  # the wholebody groups, or one group for another layout
            groups = dict(GROUPS) if num_keypoints == NUM_WHOLEBODY else {"all": slice(0, num_keypoints)}
        self.groups = groups
        self.min_score, self.min_samples, self.capacity = min_score, min_samples, capacity
        self.samples = {name: torch.empty(0, dtype=torch.float64) for name in self.groups}
        self.last = torch.full((2, num_keypoints, 3), float("nan"), dtype=torch.float64)  # x, y, t of the last two
        self._cache: dict | None = None

    def reset(self) -> None:
        """A scene cut: no triple spans it."""
        self.last.fill_(float("nan"))

    def add(self, keypoints: torch.Tensor, t: int) -> None:
        """One measured frame's keypoints (K, 3) at frame ``t``."""
        k = keypoints.detach().to("cpu", torch.float64)
        ok = k[:, 2] >= self.min_score
        cur = torch.cat([k[:, :2], torch.full_like(k[:, :1], float(t))], dim=1)
        p0, p1 = self.last[0], self.last[1]
        have = ok & ~p0[:, 2].isnan() & ~p1[:, 2].isnan()
        if bool(have.any()):
            r = triple_residuals(p0[:, :2], p1[:, :2], cur[:, :2], p0[:, 2], p1[:, 2], cur[:, 2]).abs()
            for name, rows in self.groups.items():
                sel = have[rows]
                if bool(sel.any()):
                    self.add_residuals(name, r[rows][sel].flatten())
        # A point not confident now keeps its last two (a dropout does not end its triples).
        self.last[0] = torch.where(ok[:, None], p1, p0)
        self.last[1] = torch.where(ok[:, None], cur, p1)

    def add_residuals(self, group: str, residuals: torch.Tensor) -> None:
        """Residuals (any shape) that are N(0, sigma^2) under pure noise."""
        s = torch.cat([self.samples[group], residuals.detach().to("cpu", torch.float64).abs().flatten()])
        self.samples[group] = s[-self.capacity :]
        self._cache = None

    def sigma(self, group: str = "body") -> float | None:
        """The group's noise (px per coordinate), or None before ``min_samples`` residuals."""
        return self.sigmas().get(group)

    def sigmas(self) -> dict:
        """{group: sigma or None}."""
        if self._cache is None:
            self._cache = {
                name: (float(torch.quantile(s, 0.25)) / 0.3186 if s.numel() >= self.min_samples else None)
                for name, s in self.samples.items()
            }
        return dict(self._cache)

    def per_keypoint(self, num_keypoints: int, default: float) -> torch.Tensor:
        """(K,) float64 sigma of each keypoint's group (``default`` where unknown)."""
        out = torch.full((num_keypoints,), float(default), dtype=torch.float64)
        for name, value in self.sigmas().items():
            if value is not None:
                out[self.groups[name]] = value
        return out


# -- the Kalman filter and the RTS smoother ----------------------------------------------------


class ForwardState(NamedTuple):
    """Filter results of one or more frames (leading dims ...):

    mean: (..., K, 2, 2) filtered [x, y] x [position, velocity]; cov: (..., K, 2, 2) its
    covariance (shared by x and y); pred_mean / pred_cov: the same predicted before the
    measurement; fresh: (..., K) bool, the filter restarted here (nothing before it counts);
    last: (..., K) float64 frame of the last confident measurement (-inf: none since the restart);
    last_score: (..., K) its score.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    pred_mean: torch.Tensor
    pred_cov: torch.Tensor
    fresh: torch.Tensor
    last: torch.Tensor
    last_score: torch.Tensor


_DIFFUSE = 1e8  # prior variance of a (re)started track: no prior at all, numerically


def initial_state(num_keypoints: int) -> ForwardState:
    """The state before the first frame: every point restarts at its first measurement."""
    k = num_keypoints
    z = torch.zeros(k, 2, 2, dtype=torch.float64)
    cov = torch.eye(2, dtype=torch.float64).expand(k, 2, 2) * _DIFFUSE
    neg = torch.full((k,), -math.inf, dtype=torch.float64)
    return ForwardState(z, cov.clone(), z.clone(), cov.clone(), torch.ones(k, dtype=torch.bool), neg, torch.zeros(k, dtype=torch.float64))


def _predict(mean: torch.Tensor, cov: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant-velocity prediction by one frame with acceleration variance q (K,)."""
    pos, vel = mean[..., 0], mean[..., 1]
    m = torch.stack([pos + vel, vel], dim=-1)
    p00, p01, p11 = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    n00 = p00 + 2 * p01 + p11 + q / 4
    n01 = p01 + p11 + q / 2
    n11 = p11 + q
    return m, torch.stack([torch.stack([n00, n01], -1), torch.stack([n01, n11], -1)], -2)


def kalman_forward(state: ForwardState, z: torch.Tensor, r: torch.Tensor, t: int, restart: torch.Tensor, cfg: SmoothConfig) -> ForwardState:
    """One frame of the forward filter for K points.

    Args:
        state: the previous frame's (:func:`initial_state` before the first).
        z: (K, 3) measurements x, y, score (float64).
        r: (K,) measurement variance (px^2); inf where there is no measurement.
        t: the frame number.
        restart: (K,) bool: forget the past before this frame (a cut, a long gap).
    """
    k = z.shape[0]
    cov0 = torch.eye(2, dtype=torch.float64).expand(k, 2, 2) * _DIFFUSE
    mean = torch.where(restart[:, None, None], torch.zeros_like(state.mean), state.mean)
    cov = torch.where(restart[:, None, None], cov0, state.cov)
    last = torch.where(restart, torch.full_like(state.last, -math.inf), state.last)
    last_score = torch.where(restart, torch.zeros_like(state.last_score), state.last_score)
    q_lo = torch.full((k,), cfg.accel_px**2, dtype=torch.float64)
    mp, pp = _predict(mean, cov, q_lo)
    seen = torch.isfinite(r)
    rr = torch.where(seen, r, torch.ones_like(r))
    innov = z[:, :2] - mp[..., 0]  # (K, 2)
    nis = innov.square().sum(-1) / (pp[:, 0, 0] + rr)
    jump = seen & (nis > cfg.jump_chi2) & torch.isfinite(last) & ~restart
    if bool(jump.any()):
        return kalman_forward(state, z, r, t, restart | jump, cfg)
    maneuver = seen & (nis > cfg.maneuver_chi2) & torch.isfinite(last)
    if bool(maneuver.any()):
        q = torch.where(maneuver, torch.full_like(q_lo, cfg.maneuver_px**2), q_lo)
        mp, pp = _predict(mean, cov, q)
    s = pp[:, 0, 0] + rr
    gain = pp[:, :, 0] / s[:, None]  # (K, 2): position and velocity gains
    upd_mean = mp + gain[:, None, :] * innov[:, :, None]
    upd_cov = pp - gain[:, :, None] * gain[:, None, :] * s[:, None, None]
    upd_cov = 0.5 * (upd_cov + upd_cov.transpose(-1, -2))
    new_mean = torch.where(seen[:, None, None], upd_mean, mp)
    new_cov = torch.where(seen[:, None, None], upd_cov, pp)
    last = torch.where(seen, torch.full_like(last, float(t)), last)
    last_score = torch.where(seen, z[:, 2], last_score)
    return ForwardState(new_mean, new_cov, mp, pp, restart, last, last_score)


def _gain(cov: torch.Tensor, pred_cov_next: torch.Tensor) -> torch.Tensor:
    """RTS gain C = P F^T Pp^-1 for the constant-velocity F, per point: (..., 2, 2)."""
    p00, p01, p11 = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    # P F^T with F = [[1, 1], [0, 1]]: columns (p00 + p01, p01 + p11) and (p01, p11).
    a = torch.stack([torch.stack([p00 + p01, p01], -1), torch.stack([p01 + p11, p11], -1)], -2)
    q00, q01, q11 = pred_cov_next[..., 0, 0], pred_cov_next[..., 0, 1], pred_cov_next[..., 1, 1]
    det = (q00 * q11 - q01 * q01).clamp_min(1e-300)
    inv = torch.stack([torch.stack([q11, -q01], -1), torch.stack([-q01, q00], -1)], -2) / det[..., None, None]
    return a @ inv


class Smoothed(NamedTuple):
    """Backward-pass results for a block of frames: mean (B, K, 2) smoothed positions;
    next_seen (B, K) float64 frame of the next confident measurement at or after the frame in
    the window without a restart between (inf: none); next_score (B, K) its score."""

    mean: torch.Tensor
    next_seen: torch.Tensor
    next_score: torch.Tensor


def rts_window(
    fw: ForwardState, measured: torch.Tensor, scores: torch.Tensor, times: torch.Tensor, targets: torch.Tensor, ends: torch.Tensor
) -> Smoothed:
    """Fixed-lag RTS smoothing: each target frame smoothed with the frames up to its window end.

    Args:
        fw: forward results of N buffered frames (leading dim N).
        measured: (N, K) bool, a confident measurement at that frame; scores: (N, K) float64;
            times: (N,) float64 their frame numbers.
        targets: (B,) long buffer rows to smooth; ends: (B,) long their window ends (>= target).
    """
    span = int((ends - targets).max()) if targets.numel() else 0
    last = ends.clone()
    mean = fw.mean[last]  # (B, K, 2, 2)
    nxt = torch.where(measured[last], times[last][:, None], torch.full_like(scores[last], math.inf))
    nscore = torch.where(measured[last], scores[last], torch.zeros_like(scores[last]))
    for j in range(span - 1, -1, -1):
        i = targets + j  # (B,) the frame smoothed at this step
        active = (i < ends)[:, None]  # (B, 1)
        ic = torch.minimum(i, ends)
        inext = torch.minimum(i + 1, ends)
        brk = fw.fresh[inext]  # the next frame restarted: nothing after reaches back here
        gain = _gain(fw.cov[ic], fw.pred_cov[inext])  # (B, K, 2, 2)
        delta = mean - fw.pred_mean[inext]  # (B, K, 2 coords, 2)
        back = fw.mean[ic] + torch.einsum("bkij,bkcj->bkci", gain, delta)
        back = torch.where(brk[..., None, None], fw.mean[ic], back)
        mean = torch.where(active[..., None, None], back, mean)
        m_here = measured[ic]
        n_here = torch.where(brk, torch.full_like(nxt, math.inf), nxt)
        s_here = torch.where(brk, torch.zeros_like(nscore), nscore)
        n_here = torch.where(m_here, times[ic][:, None].expand_as(n_here), n_here)
        s_here = torch.where(m_here, scores[ic], s_here)
        nxt = torch.where(active, n_here, nxt)
        nscore = torch.where(active, s_here, nscore)
    return Smoothed(mean[..., 0], nxt, nscore)


def _apply(raw: torch.Tensor, t: torch.Tensor, fw_last: torch.Tensor, fw_score: torch.Tensor, sm: Smoothed, cfg: SmoothConfig) -> torch.Tensor:
    """The output keypoints (B, K, 3) of target frames at times t (B,): smoothed where the
    track has confident measurements on both sides (or at the frame), bridged where a point is
    missing on at most ``bridge`` frames, the raw keypoint elsewhere."""
    tt = t.double()[:, None]
    conf = raw[..., 2] >= cfg.min_score
    both = torch.isfinite(fw_last) & torch.isfinite(sm.next_seen)
    use = both & conf
    bridge = both & ~conf & (sm.next_seen - fw_last - 1 <= cfg.bridge) & (fw_last < tt) & (sm.next_seen > tt)
    out = raw.clone()
    xy = sm.mean.to(raw.dtype)
    sel = use | bridge
    out[..., :2] = torch.where(sel[..., None], xy, raw[..., :2])
    bscore = (cfg.bridge_score * torch.minimum(fw_score, sm.next_score)).to(raw.dtype)
    out[..., 2] = torch.where(bridge, bscore, raw[..., 2])
    return out


class TrackSmoother:
    """Streaming smoother of one track: :meth:`push` frames in order, take the final ones.

    A frame is final once ``lookahead`` later frames were pushed (or at :meth:`finish`); its
    output depends only on the frames pushed, not on how they were grouped, so a stream in
    parts gives the whole video's result.

    Args:
        cfg: the smoothing settings.
        noise: the measurement noise (px) per keypoint: a (K,) tensor, or a
            :class:`NoiseEstimator` read at each frame (its prior ``cfg.noise_px`` until it
            has an estimate).
        feed: the smoother adds the measured frames to that estimator itself, as it pushes
            them (so the noise used at a frame depends on the frames before it only, not on
            how the stream was split).
    """

    def __init__(self, cfg: SmoothConfig, noise, feed: bool = False):
        self.cfg, self.noise = cfg, noise
        self.feed = bool(feed) and isinstance(noise, NoiseEstimator)
        self.k = 0  # keypoints per frame, from the first frame
        self.state: ForwardState | None = None
        self.missing: torch.Tensor | None = None  # measured frames missed in a row, per point
        self.buf_raw: list[torch.Tensor] = []
        self.buf_fw: list[ForwardState] = []
        self.buf_meas: list[torch.Tensor] = []
        self.buf_t: list[int] = []
        self.t = 0

    def _sigma(self) -> torch.Tensor:
        if isinstance(self.noise, NoiseEstimator):
            s = self.noise.per_keypoint(self.k, self.cfg.noise_px)
        else:
            s = torch.as_tensor(self.noise, dtype=torch.float64).expand(self.k)
        return s.clamp_min(self.cfg.min_noise_px)

    def push(self, keypoints: torch.Tensor, measured: bool, cut: bool) -> None:
        """The next frame: keypoints (K, 3); ``measured``: the pose model ran on it (else the
        keypoints are interpolated and only pass through); ``cut``: it starts a new scene."""
        cfg = self.cfg
        raw = keypoints.detach()
        if raw.dim() != 2 or raw.shape[-1] != 3:
            raise ValueError(f"keypoints must be (K, 3), got {tuple(raw.shape)}")
        if self.state is None:
            self.k = raw.shape[0]
            self.state = initial_state(self.k)
            self.missing = torch.zeros(self.k, dtype=torch.long)
        z = raw.to("cpu", torch.float64)
        if self.feed:
            if cut:
                self.noise.reset()
            if measured:
                self.noise.add(z, self.t)
        conf = z[:, 2] >= cfg.min_score
        sigma = self._sigma()
        # An interpolated frame (the gate's line between two measurements) weighs 1/interp_weight
        # of a measurement: the frames of a gap together about one, and the smoothed track
        # cannot drift from the line the gate verified (e.g. extrapolating a velocity).
        weight = 1.0 if measured else cfg.interp_weight
        r = torch.where(conf, weight * sigma.square() / z[:, 2].clamp_min(cfg.min_score), torch.full_like(sigma, math.inf))
        # Measured frames on which the point was missing, in a row: past ``bridge`` the track
        # restarts at its next measurement (a long gap stays gone).
        long_gap = conf & (self.missing > cfg.bridge)
        if measured:
            self.missing = torch.where(conf, torch.zeros_like(self.missing), self.missing + 1)
        restart = torch.full((self.k,), bool(cut), dtype=torch.bool) | long_gap if self.t else torch.ones(self.k, dtype=torch.bool)
        self.state = kalman_forward(self.state, z, r, self.t, restart, cfg)
        self.out_like = raw  # the outputs take the input's dtype and device
        self.buf_raw.append(z)
        self.buf_fw.append(self.state)
        self.buf_meas.append(conf)
        self.buf_t.append(self.t)
        self.t += 1

    def take(self) -> list[torch.Tensor]:
        """The frames now final, in order: keypoints (K, 3) each, in the input's dtype/device."""
        return self._emit(len(self.buf_t) - self.cfg.lookahead)

    def finish(self) -> list[torch.Tensor]:
        """End of the track: every remaining frame."""
        return self._emit(len(self.buf_t))

    def _emit(self, n: int) -> list[torch.Tensor]:
        if n <= 0:
            return []
        fw = ForwardState(*(torch.stack(v) for v in zip(*self.buf_fw)))
        meas = torch.stack(self.buf_meas)
        scores = torch.stack([r[:, 2] for r in self.buf_raw])
        targets = torch.arange(n)
        ends = torch.clamp(targets + self.cfg.lookahead, max=len(self.buf_t) - 1)
        times = torch.tensor(self.buf_t, dtype=torch.float64)
        sm = rts_window(fw, meas, scores, times, targets, ends)
        raw = torch.stack(self.buf_raw[:n])
        out = _apply(raw, torch.tensor(self.buf_t[:n]), fw.last[:n], fw.last_score[:n], sm, self.cfg)
        res = list(out.to(device=self.out_like.device, dtype=self.out_like.dtype).unbind(0))  # one copy
        del self.buf_raw[:n], self.buf_fw[:n], self.buf_meas[:n], self.buf_t[:n]
        return res


def smooth_track(
    keypoints: torch.Tensor,
    cfg: SmoothConfig | None = None,
    noise=None,
    measured: torch.Tensor | None = None,
    cuts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Smooth one person's whole track.

    Args:
        keypoints: (T, K, 3) x, y, score.
        noise: measurement noise (px): a number, a (K,) tensor, or None to estimate it from
            the track (:class:`NoiseEstimator`, per group when K is 133, else one value).
        measured: (T,) bool, frames the pose model ran on (default: all).
        cuts: (T,) bool, frames that start a new scene (default: none).

    Returns:
        (T, K, 3) like ``keypoints``.
    """
    if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be (T, K, 3), got {tuple(keypoints.shape)}")
    cfg = cfg or SmoothConfig()
    t, k = keypoints.shape[:2]
    measured = torch.ones(t, dtype=torch.bool) if measured is None else measured.bool().cpu()
    cuts = torch.zeros(t, dtype=torch.bool) if cuts is None else cuts.bool().cpu()
    if noise is None:
        est = NoiseEstimator(k, cfg.min_score)
        for i in range(t):
            if cuts[i]:
                est.reset()
            if measured[i]:
                est.add(keypoints[i], i)
        noise = est.per_keypoint(k, cfg.noise_px)
    sm = TrackSmoother(cfg, noise if isinstance(noise, torch.Tensor) else torch.tensor(float(noise)))
    out = []
    for i in range(t):
        sm.push(keypoints[i], bool(measured[i]), bool(cuts[i]))
    out = sm.finish()
    return torch.stack(out) if out else keypoints.clone()


def one_euro(
    keypoints: torch.Tensor, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0, fps: float = 30.0
) -> torch.Tensor:
    """The One Euro filter (Casiez et al., CHI 2012) on a track, for comparison: causal, so it
    lags on motion. Scores pass through.

    Args:
        keypoints: (T, K, 3).
    """
    x = keypoints[..., :2].double()
    out = x.clone()

    def alpha(cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    dx_prev = torch.zeros_like(x[0])
    for i in range(1, x.shape[0]):
        dx = (x[i] - out[i - 1]) * fps
        a_d = alpha(d_cutoff)
        dx_hat = a_d * dx + (1 - a_d) * dx_prev
        cutoff = min_cutoff + beta * dx_hat.norm(dim=-1, keepdim=True)
        tau = 1.0 / (2 * math.pi * cutoff)
        a = 1.0 / (1.0 + tau * fps)
        out[i] = a * x[i] + (1 - a) * out[i - 1]
        dx_prev = dx_hat
    res = keypoints.clone()
    res[..., :2] = out.to(keypoints.dtype)
    return res
