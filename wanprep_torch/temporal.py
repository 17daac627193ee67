"""A temporal model of keypoint tracks: zero-lag smoothing and the measurement noise level.

One person's track is (T, K, 3) x, y, score per keypoint over time. Each group of points that
moves together (the body, the face, each hand: :func:`motion_groups`) is tracked as its common
motion plus each point's offset from it: a body that starts, stops or turns moves all its
points at once, which their mean (its noise averaged over the points) shows at once, while a
point's offset (a limb against the body, the shape of the face) changes slowly and is averaged
over many frames; where points leave or join a group, the reference of its common position
moves with them, so no other point moves. Each of those tracks' x and y follow a constant-velocity Kalman filter
(state: position and velocity; x and y share one covariance, since they share the noise model)
run forward, then a Rauch-Tung-Striebel pass backward over a bounded look-ahead: a frame's
smoothed position uses the frames up to ``lookahead`` after it, so it does not lag as a causal
filter (One Euro, MediaPipe) does, and a stream's frame is final once those frames have been
seen.

- Confidence-aware: a measurement scored s counts with variance sigma^2 / s; under
  ``min_score`` it is no measurement at all.
- Adaptive: each step predicts with a small process noise (``accel_px`` for a group's common
  motion, ``shape_accel_px`` for an offset: steady holds and smooth motion); when the
  measurement falls outside what that prediction explains (normalised innovation over
  ``maneuver_chi2``) the step's process noise grows to what the innovation shows (up to
  ``maneuver_px``), so a start, a stop, a turn or a fast bounce is followed without lag and
  without rounding the corner into the frames beside it.
- Cuts: the filter restarts at a scene cut and the backward pass never crosses one; a point
  missing on more than ``bridge`` frames in a row restarts the same way (a long gap stays gone).
- Dropouts: a point missing on at most ``bridge`` frames between two confident measurements
  is bridged: its smoothed offset from its group's common motion (which the other points
  still measure), scored ``bridge_score`` x the lower neighbour score.
- Frames the gate interpolated count as weak measurements (``interp_weight``): the smoothed
  track follows the line the gate verified, rounded at its keyframes.

The noise level sigma (px, per keypoint group) is measured from the video itself
(:class:`~wanprep_torch.noise.NoiseEstimator`, re-exported here).

Pure functions on batched tensors (:func:`kalman_forward`, :func:`rts_window`) and two small
stage objects (:class:`NoiseEstimator`, :class:`TrackSmoother`). Knows nothing of the models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .noise import NoiseEstimator, triple_residuals
from .skeleton import FACE, GROUPS, LEFT_HAND, NUM_WHOLEBODY, RIGHT_HAND

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
    "motion_groups",
    "common_measurement",
    "TrackSmoother",
    "one_euro",
]


@dataclass(frozen=True)
class SmoothConfig:
    """Keypoint smoothing settings (``enabled=False``: the pose model's keypoints as they are).

    lookahead: frames after a frame that its smoothed position uses (the stream's delay).
    min_score: measurements scored under this are missing.
    accel_px: process noise (px/frame^2 standard deviation of the acceleration) of a steady
        step of a group's common motion.
    shape_accel_px: the same for a point's motion relative to its group (a limb against the
        body, the shape of the face): steadier than the group as a whole.
    maneuver_px: the largest for a maneuver step (a turn, a bounce, a sudden start).
    maneuver_gain: a maneuver step's acceleration variance is this times its squared
        innovation (clipped to accel_px^2 .. maneuver_px^2): free enough to follow the change
        the innovation shows, not so free that one step forgets the track.
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
        the noise variance (it carries the noise of the two measurements it lies between).
    """

    enabled: bool = True
    lookahead: int = 16
    min_score: float = 0.3
    accel_px: float = 0.05
    shape_accel_px: float = 0.02
    maneuver_px: float = 8.0
    maneuver_chi2: float = 9.21
    maneuver_gain: float = 8.0
    jump_chi2: float = 400.0
    noise_px: float = 1.0
    min_noise_px: float = 0.05
    bridge: int = 4
    bridge_score: float = 0.9
    interp_weight: float = 2.0

    def __post_init__(self):
        if self.lookahead < 0 or self.bridge < 0:
            raise ValueError("lookahead and bridge must be >= 0")
        if min(self.accel_px, self.shape_accel_px, self.maneuver_px, self.min_noise_px, self.maneuver_gain) <= 0 or self.noise_px < 0 or self.maneuver_chi2 <= 0:
            raise ValueError("accel_px, shape_accel_px, maneuver_px, maneuver_gain, min_noise_px and maneuver_chi2 must be > 0, noise_px >= 0")


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


# -- the Kalman filter and the RTS smoother ----------------------------------------------------
# Host NumPy arrays: a frame's filter step is ~40 operations on arrays of a few hundred numbers,
# where torch's per-operation overhead would cost several times the arithmetic.


class ForwardState(NamedTuple):
    """Filter results of one or more frames (NumPy float64 arrays, leading dims ...):

    mean: (..., K, 2, 2) filtered [x, y] x [position, velocity]; cov: (..., K, 2, 2) its
    covariance (shared by x and y); pred_mean / pred_cov: the same predicted before the
    measurement; fresh: (..., K) bool, the filter restarted here (nothing before it counts);
    last: (..., K) frame of the last confident measurement (-inf: none since the restart);
    last_score: (..., K) its score.
    """

    mean: np.ndarray
    cov: np.ndarray
    pred_mean: np.ndarray
    pred_cov: np.ndarray
    fresh: np.ndarray
    last: np.ndarray
    last_score: np.ndarray


_DIFFUSE = 1e8  # prior variance of a (re)started track: no prior at all, numerically


def initial_state(num_keypoints: int) -> ForwardState:
    """The state before the first frame: every point restarts at its first measurement."""
    k = num_keypoints
    z = np.zeros((k, 2, 2))
    cov = np.broadcast_to(np.eye(2) * _DIFFUSE, (k, 2, 2)).copy()
    return ForwardState(z, cov, z.copy(), cov.copy(), np.ones(k, dtype=bool), np.full(k, -math.inf), np.zeros(k))


def _predict(mean: np.ndarray, cov: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity prediction by one frame with acceleration variance q (K,)."""
    m = np.empty_like(mean)
    m[..., 0] = mean[..., 0] + mean[..., 1]
    m[..., 1] = mean[..., 1]
    p00, p01, p11 = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    p = np.empty_like(cov)
    p[..., 0, 0] = p00 + 2 * p01 + p11 + q / 4
    p[..., 0, 1] = p[..., 1, 0] = p01 + p11 + q / 2
    p[..., 1, 1] = p11 + q
    return m, p


def kalman_forward(state: ForwardState, z: np.ndarray, r: np.ndarray, t: int, restart: np.ndarray, cfg: SmoothConfig) -> ForwardState:
    """One frame of the forward filter for K points.

    Args:
        state: the previous frame's (:func:`initial_state` before the first).
        z: (K, 3) measurements x, y, score (float64).
        r: (K,) measurement variance (px^2); inf where there is no measurement.
        t: the frame number.
        restart: (K,) bool: forget the past before this frame (a cut, a long gap).
    """
    rs = restart[:, None, None]
    mean = np.where(rs, 0.0, state.mean)
    cov = np.where(rs, np.eye(2) * _DIFFUSE, state.cov)
    last = np.where(restart, -math.inf, state.last)
    last_score = np.where(restart, 0.0, state.last_score)
    q_lo = np.full(z.shape[0], cfg.accel_px**2)
    mp, pp = _predict(mean, cov, q_lo)
    seen = np.isfinite(r)
    rr = np.where(seen, r, 1.0)
    innov = z[:, :2] - mp[..., 0]  # (K, 2)
    nis = (innov**2).sum(-1) / (pp[:, 0, 0] + rr)
    tracked = seen & np.isfinite(last)
    jump = tracked & (nis > cfg.jump_chi2) & ~restart
    if jump.any():
        return kalman_forward(state, z, r, t, restart | jump, cfg)
    maneuver = tracked & (nis > cfg.maneuver_chi2)
    if maneuver.any():
        # A maneuver frees the velocity by a few times what the innovation shows (a slow start:
        # a little, keeping the position continuous; a bounce: up to maneuver_px).
        q_man = np.clip(cfg.maneuver_gain * (innov**2).sum(-1), cfg.accel_px**2, cfg.maneuver_px**2)
        mp, pp = _predict(mean, cov, np.where(maneuver, q_man, q_lo))
    s = pp[:, 0, 0] + rr
    gain = pp[:, :, 0] / s[:, None]  # (K, 2): position and velocity gains
    upd_mean = mp + gain[:, None, :] * innov[:, :, None]
    upd_cov = pp - gain[:, :, None] * gain[:, None, :] * s[:, None, None]
    upd_cov = 0.5 * (upd_cov + upd_cov.swapaxes(-1, -2))
    ss = seen[:, None, None]
    return ForwardState(
        np.where(ss, upd_mean, mp), np.where(ss, upd_cov, pp), mp, pp, restart.copy(),
        np.where(seen, float(t), last), np.where(seen, z[:, 2], last_score),
    )


def _gain(cov: np.ndarray, pred_cov_next: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RTS gain C = P F^T Pp^-1 for the constant-velocity F, per point, written out (2x2
    matrices: elementwise beats batched matmul): its entries c00, c01, c10, c11, each (...)."""
    p00, p01, p11 = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    # P F^T with F = [[1, 1], [0, 1]]: rows (p00 + p01, p01) and (p01 + p11, p11).
    a00, a01, a10, a11 = p00 + p01, p01, p01 + p11, p11
    q00, q01, q11 = pred_cov_next[..., 0, 0], pred_cov_next[..., 0, 1], pred_cov_next[..., 1, 1]
    det = np.maximum(q00 * q11 - q01 * q01, 1e-300)
    i00, i01, i11 = q11 / det, -q01 / det, q00 / det
    return a00 * i00 + a01 * i01, a00 * i01 + a01 * i11, a10 * i00 + a11 * i01, a10 * i01 + a11 * i11


class Smoothed(NamedTuple):
    """Backward-pass results for a block of frames: mean (B, K, 2) smoothed positions;
    next_seen (B, K) frame of the next confident measurement at or after the frame in the
    window without a restart between (inf: none); next_score (B, K) its score."""

    mean: np.ndarray
    next_seen: np.ndarray
    next_score: np.ndarray


def rts_window(
    fw: ForwardState, measured: np.ndarray, scores: np.ndarray, times: np.ndarray, targets: np.ndarray, ends: np.ndarray
) -> Smoothed:
    """Fixed-lag RTS smoothing: each target frame smoothed with the frames up to its window end.

    Args:
        fw: forward results of N buffered frames (leading dim N).
        measured: (N, K) bool, a confident measurement at that frame; scores: (N, K);
            times: (N,) their frame numbers.
        targets: (B,) int buffer rows to smooth; ends: (B,) int their window ends (>= target).
    """
    span = int((ends - targets).max()) if len(targets) else 0
    mean = fw.mean[ends]  # (B, K, 2, 2)
    nxt = np.where(measured[ends], times[ends][:, None], math.inf)
    nscore = np.where(measured[ends], scores[ends], 0.0)
    for j in range(span - 1, -1, -1):
        i = targets + j  # (B,) the frame smoothed at this step
        active = (i < ends)[:, None]  # (B, 1)
        ic = np.minimum(i, ends)
        inext = np.minimum(i + 1, ends)
        brk = fw.fresh[inext]  # the next frame restarted: nothing after reaches back here
        c00, c01, c10, c11 = (c[..., None] for c in _gain(fw.cov[ic], fw.pred_cov[inext]))  # (B, K, 1)
        delta = mean - fw.pred_mean[inext]  # (B, K, 2 coords, 2)
        here = fw.mean[ic]
        back = np.empty_like(here)
        back[..., 0] = here[..., 0] + c00 * delta[..., 0] + c01 * delta[..., 1]
        back[..., 1] = here[..., 1] + c10 * delta[..., 0] + c11 * delta[..., 1]
        back = np.where(brk[..., None, None], here, back)
        mean = np.where(active[..., None, None], back, mean)
        m_here = measured[ic]
        n_here = np.where(m_here, times[ic][:, None], np.where(brk, math.inf, nxt))
        s_here = np.where(m_here, scores[ic], np.where(brk, 0.0, nscore))
        nxt = np.where(active, n_here, nxt)
        nscore = np.where(active, s_here, nscore)
    return Smoothed(mean[..., 0], nxt, nscore)


def _apply(raw: np.ndarray, t: np.ndarray, fw_last: np.ndarray, fw_score: np.ndarray, sm: Smoothed, cfg: SmoothConfig) -> np.ndarray:
    """The output keypoints (B, K, 3) of target frames at times t (B,): smoothed where the
    track has confident measurements on both sides (or at the frame), bridged where a point is
    missing on at most ``bridge`` frames, the raw keypoint elsewhere."""
    tt = t[:, None]
    conf = raw[..., 2] >= cfg.min_score
    both = np.isfinite(fw_last) & np.isfinite(sm.next_seen)
    bridge = both & ~conf & (sm.next_seen - fw_last - 1 <= cfg.bridge) & (fw_last < tt) & (sm.next_seen > tt)
    out = raw.copy()
    out[..., :2] = np.where(((both & conf) | bridge)[..., None], sm.mean, raw[..., :2])
    out[..., 2] = np.where(bridge, cfg.bridge_score * np.minimum(fw_score, sm.next_score), raw[..., 2])
    return out


def motion_groups(num_keypoints: int) -> tuple[slice, ...]:
    """Row ranges of the points that move together, each with a common motion of its own: the
    body (with the feet), the face, each hand; another layout: all points one group."""
    if num_keypoints == NUM_WHOLEBODY:
        return (GROUPS["body"], FACE, LEFT_HAND, RIGHT_HAND)
    return (slice(0, num_keypoints),)


def common_measurement(
    z: np.ndarray, r: np.ndarray, shape: np.ndarray, shape_var: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, float]:
    """A group's common position in one frame and its variance.

    Args:
        z: (n, 3) the group's measurements x, y, score; r: (n,) their variances (inf: none).
        shape: (n, 2) each point's offset from the common position as last estimated;
            shape_var: (n,) its variance.
        known: (n,) bool, the point has an offset (else it is new).

    Returns:
        ((2,) the inverse-variance weighted mean of the points' positions less their offsets
        (the plain weighted mean of the positions when no measured point has an offset), its
        variance from the measurements' and the offsets' as independent terms; inf when no
        point is measured). A jitter all points share (their crop's) does not average out: the
        common track follows it rather than rounding a start or stop (smoothing it, measured,
        cost more there).
    """
    seen = np.isfinite(r)
    if not seen.any():
        return np.zeros(2), math.inf
    use = seen & known if (seen & known).any() else seen
    # Weighted by the measurements' variance alone: weights that also followed the offsets'
    # (unequal where some offsets just moved) would let those offsets lean on the common
    # position, and the two tracks trade it back and forth.
    w = np.where(use, 1.0 / np.where(use, r, 1.0), 0.0)
    # The offsets are taken about their own mean over the points used: the common position is
    # where their shape's centre is, so the offsets' mean cannot drift into it (the caller
    # moves the reference where that set changes: TrackSmoother._keep_centre).
    centre = shape[use & known].mean(axis=0) if (use & known).any() else np.zeros(2)
    base = np.where(use[:, None], z[:, :2] - np.where(known[:, None], shape - centre, 0.0), 0.0)
    var = np.where(use & known, r + shape_var, r)
    return (w[:, None] * base).sum(0) / w.sum(), float((w**2 * np.where(use, var, 0.0)).sum() / w.sum() ** 2)


class TrackSmoother:
    """Streaming smoother of one track: :meth:`push` frames in order, take the final ones.

    Each group of points (:func:`motion_groups`) is tracked as a common motion plus each
    point's offset from it, each a constant-velocity track of :func:`kalman_forward` and
    :func:`rts_window`: a body that starts, stops or turns moves all its points at once, which
    the common track (the points' mean: their noise averages out of it) sees and follows at
    once, while each point's offset, its limb or face shape, changes slowly and is averaged
    over many frames (``shape_accel_px``). A point's output is the two added.

    A frame is final once ``lookahead`` later frames were pushed (or at :meth:`finish`); its
    output depends only on the frames pushed, not on how they were grouped, so a stream in
    parts gives the whole video's result.

    Args:
        cfg: the smoothing settings.
        noise: the measurement noise (px) per keypoint: a number or (K,) tensor, or a
            :class:`NoiseEstimator` read at each frame as it is filtered (the first frames wait,
            at most ``lookahead`` of them, until it has an estimate; then its prior
            ``cfg.noise_px`` where it has none).
        feed: the smoother adds the measured frames to that estimator itself, as it pushes
            them (so the noise used at a frame depends on the frames before it only, not on
            how the stream was split).
    """

    def __init__(self, cfg: SmoothConfig, noise, feed: bool = False):
        self.cfg, self.noise = cfg, noise
        self.shape_cfg = dataclasses.replace(cfg, accel_px=cfg.shape_accel_px)
        self.feed = bool(feed) and isinstance(noise, NoiseEstimator)
        self.k = 0  # keypoints per frame, from the first frame
        self.groups: tuple[slice, ...] = ()
        self.group_of: np.ndarray | None = None  # (K,) each point's group
        self.state: ForwardState | None = None  # the points' offsets from their group
        self.common: ForwardState | None = None  # the groups' common motion
        self.missing: np.ndarray | None = None  # measured frames missed in a row, per point
        self.centre_set: np.ndarray | None = None  # (K,) the points each group's centre was last taken over
        self.out_like: torch.Tensor | None = None  # the outputs take the input's dtype and device
        self.buf_raw: list[np.ndarray] = []
        self.buf_fw: list[ForwardState] = []
        self.buf_common: list[ForwardState] = []
        self.buf_meas: list[np.ndarray] = []
        self.buf_common_meas: list[np.ndarray] = []
        self.buf_t: list[int] = []
        self.waiting: list[tuple] = []  # (z, measured, cut) of frames not filtered yet
        self.t = 0  # frames filtered

    def _sigma(self) -> np.ndarray:
        if isinstance(self.noise, NoiseEstimator):
            s = self.noise.per_keypoint(self.k, self.cfg.noise_px).numpy()
        else:
            s = np.broadcast_to(torch.as_tensor(self.noise, dtype=torch.float64).numpy(), (self.k,))
        return np.maximum(s, self.cfg.min_noise_px)

    def push(self, keypoints: torch.Tensor, measured: bool, cut: bool, still: bool = False) -> None:
        """The next frame: keypoints (K, 3); ``measured``: the pose model ran on it (else the
        gate interpolated it: a weak measurement); ``cut``: it starts a new scene; ``still``:
        the picture did not move since the measured frame before (for the noise estimate)."""
        raw = keypoints.detach()
        if raw.dim() != 2 or raw.shape[-1] != 3:
            raise ValueError(f"keypoints must be (K, 3), got {tuple(raw.shape)}")
        if self.state is None:
            self.k = raw.shape[0]
            self.groups = motion_groups(self.k)
            self.group_of = np.zeros(self.k, dtype=np.int64)
            for g, rows in enumerate(self.groups):
                self.group_of[rows] = g
            self.state = initial_state(self.k)
            self.common = initial_state(len(self.groups))
            self.missing = np.zeros(self.k, dtype=np.int64)
            self.centre_set = np.zeros(self.k, dtype=bool)
        host = raw.to("cpu", torch.float64)
        if self.feed:
            if cut:
                self.noise.reset()
            if measured:
                self.noise.add(host, self.t + len(self.waiting), still=still)
        self.out_like = raw
        # The first frames wait (at most ``lookahead`` of them: no later output) until the
        # video's noise is known: filtered with the prior's noise they would weigh too little
        # to hold the track's start against the motion after it.
        self.waiting.append((host.numpy(), bool(measured), bool(cut)))
        if self.waiting_for_noise() and len(self.waiting) <= self.cfg.lookahead:
            return
        waiting, self.waiting = self.waiting, []
        for z, m, c in waiting:
            self._step(z, m, c)

    def waiting_for_noise(self) -> bool:
        """No frame was filtered yet and the noise estimator has no estimate of any group."""
        return self.t == 0 and isinstance(self.noise, NoiseEstimator) and all(v is None for v in self.noise.sigmas().values())

    def _step(self, z: np.ndarray, measured: bool, cut: bool) -> None:
        """The forward filters over one frame (K, 3) float64."""
        cfg = self.cfg
        conf = (z[:, 2] >= cfg.min_score) & np.isfinite(z).all(axis=1)  # a NaN is no measurement
        sigma = self._sigma()
        # An interpolated frame (the gate's line between two measurements) weighs 1/interp_weight
        # of a measurement: the smoothed track cannot drift from the line the gate verified
        # (e.g. extrapolating a velocity), but it still averages the measurements' noise.
        weight = 1.0 if measured else cfg.interp_weight
        r = np.where(conf, weight * sigma**2 / np.maximum(z[:, 2], cfg.min_score), math.inf)
        # Measured frames on which the point was missing, in a row: past ``bridge`` the track
        # restarts at its next measurement (a long gap stays gone).
        long_gap = conf & (self.missing > cfg.bridge)
        if measured:
            self.missing = np.where(conf, 0, self.missing + 1)
        restart = (np.full(self.k, cut) | long_gap) if self.t else np.ones(self.k, dtype=bool)
        # The common position of each group: the measured points' positions less their offsets.
        known = np.isfinite(self.state.last) & ~restart
        c_restart = np.zeros(len(self.groups), dtype=bool)
        for g, rows in enumerate(self.groups):
            cur = conf[rows] & known[rows]
            if conf[rows].any() and not cur.any():
                # Measured points but none with an offset (the start, a cut, all back from a
                # long gap): the group starts afresh, every offset with it.
                c_restart[g] = True
                restart[rows], known[rows] = True, False
                self.centre_set[rows] = conf[rows]
            elif cur.any():
                self._keep_centre(g, rows, cur, known[rows])
                self.centre_set[rows] = cur
        # The offsets as last filtered (they change slowly; a velocity known from two frames
        # at a track's start would only add its noise).
        offset, offset_var = self.state.mean[..., 0], self.state.cov[:, 0, 0]  # (K, 2), (K,)
        cz, cr = np.zeros((len(self.groups), 3)), np.full(len(self.groups), math.inf)
        for g, rows in enumerate(self.groups):
            cz[g, :2], cr[g] = common_measurement(z[rows], r[rows], offset[rows], offset_var[rows], known[rows])
            cz[g, 2] = 1.0
        self.common = kalman_forward(self.common, cz, cr, self.t, c_restart, cfg)
        d = z.copy()
        d[:, :2] -= cz[self.group_of, :2]
        self.state = kalman_forward(self.state, d, r, self.t, restart, self.shape_cfg)
        self.buf_raw.append(z)
        self.buf_fw.append(self.state)
        self.buf_common.append(self.common)
        self.buf_meas.append(conf)
        self.buf_common_meas.append(np.isfinite(cr))
        self.buf_t.append(self.t)
        self.t += 1

    def _keep_centre(self, g: int, rows: slice, cur: np.ndarray, known: np.ndarray) -> None:
        """The group's common position is measured about the centre of the offsets of its
        measured points (``cur``); where that set differs from the last frame's (a point lost
        or back, a new one), the centre moves by the difference of the two sets' offsets. A
        change of reference: the common position (and its track, buffered frames included:
        the backward pass compares them) moves by that much and every offset by minus that
        much, so no output moves and the common track sees no jump."""
        prev = self.centre_set[rows] & known
        if not prev.any() or np.array_equal(prev, cur):
            return
        off = self.state.mean[rows, :, 0]
        delta = off[cur].mean(axis=0) - off[prev].mean(axis=0)
        for fw in {id(f): f for f in self.buf_fw + [self.state]}.values():
            fw.mean[rows, :, 0] -= delta
            fw.pred_mean[rows, :, 0] -= delta
        for fw in {id(f): f for f in self.buf_common + [self.common]}.values():
            fw.mean[g, :, 0] += delta
            fw.pred_mean[g, :, 0] += delta

    def take(self) -> list[torch.Tensor]:
        """The frames now final, in order: keypoints (K, 3) each, in the input's dtype/device."""
        return self._emit(len(self.buf_t) - self.cfg.lookahead)

    def finish(self) -> list[torch.Tensor]:
        """End of the track: every remaining frame."""
        waiting, self.waiting = self.waiting, []
        for z, m, c in waiting:
            self._step(z, m, c)
        return self._emit(len(self.buf_t))

    def _emit(self, n: int) -> list[torch.Tensor]:
        if n <= 0:
            return []
        fw = ForwardState(*(np.stack(v) for v in zip(*self.buf_fw)))
        common = ForwardState(*(np.stack(v) for v in zip(*self.buf_common)))
        raw = np.stack(self.buf_raw)
        targets = np.arange(n)
        ends = np.minimum(targets + self.cfg.lookahead, len(self.buf_t) - 1)
        times = np.asarray(self.buf_t, dtype=np.float64)
        sm = rts_window(fw, np.stack(self.buf_meas), raw[..., 2], times, targets, ends)
        c_meas = np.stack(self.buf_common_meas)
        csm = rts_window(common, c_meas, c_meas.astype(np.float64), times, targets, ends)
        sm = sm._replace(mean=sm.mean + csm.mean[:, self.group_of])
        out = _apply(raw[:n], times[:n], fw.last[:n], fw.last_score[:n], sm, self.cfg)
        res = list(torch.from_numpy(out).to(device=self.out_like.device, dtype=self.out_like.dtype).unbind(0))  # one copy
        for buf in (self.buf_raw, self.buf_fw, self.buf_common, self.buf_meas, self.buf_common_meas, self.buf_t):
            del buf[:n]
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
