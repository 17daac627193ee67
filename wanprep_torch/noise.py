"""The measurement noise of keypoint tracks, measured from the video itself.

On three consecutive measurements of a point, the middle one's distance from the line through
the outer two is noise plus curvature (:func:`triple_residuals`); a low quantile over many
(robust to motion: up to 3/4 of them may be curvature) gives sigma per keypoint group of
:data:`~wanprep_torch.skeleton.GROUPS` (:class:`NoiseEstimator`). Two measurements of a picture
or a person held still differ by noise alone, however far apart (hold pairs,
:meth:`NoiseEstimator.held_still`). Used by the gate's check and by the temporal model
(:mod:`wanprep_torch.temporal`, which re-exports these names).
"""

from __future__ import annotations

import math

import torch

from .skeleton import GROUPS, NUM_WHOLEBODY

__all__ = ["NoiseEstimator", "triple_residuals"]


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


_MEAN = "body mean"
_SHORT = 2  # a triple spanning at most this many frames: its residual is (almost) pure noise


def _layout_groups(num_keypoints: int) -> dict:
    """The noise groups of a layout: :data:`~wanprep_torch.skeleton.GROUPS` for the 133
    wholebody points, one group "all" for another layout."""
    return dict(GROUPS) if num_keypoints == NUM_WHOLEBODY else {"all": slice(0, num_keypoints)}


def _mean_held(r: torch.Tensor, p: float = 1e-3) -> bool:
    """Did points whose two measurements differ by r (n, 2) (scaled to the noise of one
    measurement) hold still: their mean difference within what their scatter explains (noise
    alone fails this with probability ``p``)?"""
    mean = r.mean(dim=0)
    sigma = float(torch.quantile((r - mean).abs().flatten(), 0.25)) / 0.3186
    return float(mean.norm()) <= math.sqrt(-2.0 * math.log(p)) * sigma / math.sqrt(r.shape[0])


class NoiseEstimator:
    """The measurement noise of each keypoint group (``groups``: name -> rows; by default
    :data:`~wanprep_torch.skeleton.GROUPS` for 133 points, else one group "all"), from the
    video itself.

    Feed the measured frames in order (:meth:`add`); each point confident on three consecutive
    measured frames (no reset between) gives a residual (:func:`triple_residuals`);
    sigma = the 25th percentile of the absolute residuals over the latest ``capacity`` of the
    group / 0.3186 (that percentile of |N(0, 1)|), once it has ``min_samples`` of them (None
    before). The same for the mean residual of the body points of each triple of frames
    (:meth:`sigma_mean`: the gate tests the body's mean error with it). A low quantile, not
    the median: with frames skipped, the residuals of triples spanning a change of motion (a
    start, a stop) are curvature, not noise. For the same reason triples spanning at most 2
    frames (the gate's warm-up, checks split down to neighbours, every frame with the gate off)
    give an estimate of their own, and the lower of the two is taken (each can only be
    inflated: the wide triples by curvature, the few short ones by their crops' differing bias). Residuals can also be given directly
    (:meth:`add_residuals`).
    """

    def __init__(
        self, num_keypoints: int = NUM_WHOLEBODY, min_score: float = 0.3, min_samples: int = 24, capacity: int = 8192, groups: dict | None = None
    ):
        self.groups = _layout_groups(num_keypoints) if groups is None else groups
        self.min_score, self.min_samples, self.capacity = min_score, min_samples, capacity
        self.samples = {name: torch.empty(0, dtype=torch.float64) for name in self.groups}
        self.short = {name: torch.empty(0, dtype=torch.float64) for name in self.groups}  # spans <= _SHORT
        self.mean_samples = torch.empty(0, dtype=torch.float64)  # the body's mean residuals
        self.mean_short = torch.empty(0, dtype=torch.float64)
        self.frames = (float("nan"), float("nan"))  # the last two measured frames
        self.last = torch.full((2, num_keypoints, 3), float("nan"), dtype=torch.float64)  # x, y, t of the last two
        self._cache: dict | None = None

    @staticmethod
    def held_still(a: torch.Tensor, b: torch.Tensor, min_score: float = 0.3, p: float = 1e-3) -> bool:
        """Did the body (all points for another layout than 133) hold still between two
        measurements (a, b: (K, 3) keypoints)? Its points' mean moved less than their scatter
        explains (a held pair fails this with probability ``p``): their difference is then
        noise, but for a limb that moved (one of the few a low quantile leaves out; the face's
        and hands' points are tested again as a pair is added). False with under 3 body points
        confident in both."""
        ka, kb = (k.detach().to("cpu", torch.float64) for k in (a, b))
        body = _layout_groups(ka.shape[0]).get("body", slice(None))
        ok = ((ka[:, 2] >= min_score) & (kb[:, 2] >= min_score))[body]
        return int(ok.sum()) >= 3 and _mean_held(((kb[body, :2] - ka[body, :2]) / math.sqrt(2.0))[ok], p)

    def add_held(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        """Two measurements (a, b: (K, 3) keypoints) out of the frame order, taken as a noise
        sample where the person held still between them (:meth:`held_still`); True if so."""
        if not self.held_still(a, b, self.min_score):
            return False
        self.reset()
        self.add(a, 0)
        self.add(b, 1, still=True)
        return True

    @classmethod
    def from_pairs(cls, pairs, min_score: float = 0.3) -> "NoiseEstimator | None":
        """An estimate from the pairs of measurements (a, b: (K, 3) keypoints) between which the
        person held still (:meth:`add_held`); None where no pair did."""
        if not pairs:
            return None
        est = cls(pairs[0][0].shape[0], min_score=min_score)
        for a, b in pairs:
            est.add_held(a, b)
        return est if any(v is not None for v in est.sigmas().values()) else None

    def reset(self) -> None:
        """A scene cut: no triple spans it."""
        self.last.fill_(float("nan"))
        self.frames = (float("nan"), float("nan"))

    def add(self, keypoints: torch.Tensor, t: int, still: bool = False) -> None:
        """One measured frame's keypoints (K, 3) at frame ``t``; ``still``: the picture did not
        move since the measured frame before (a hold): the two differ by noise alone, however
        far apart (a clean sample where the gate measures holds at their ends only)."""
        k = keypoints.detach().to("cpu", torch.float64)
        ok = k[:, 2] >= self.min_score
        cur = torch.cat([k[:, :2], torch.full_like(k[:, :1], float(t))], dim=1)
        p0, p1 = self.last[0], self.last[1]
        if still:
            self._add_pair(p1, cur, ok)
        have = ok & ~p0[:, 2].isnan() & ~p1[:, 2].isnan()
        if bool(have.any()):
            r = triple_residuals(p0[:, :2], p1[:, :2], cur[:, :2], p0[:, 2], p1[:, 2], cur[:, 2])
            short = (float(t) - p0[:, 2]) <= _SHORT
            for name, rows in self.groups.items():
                for kind in (True, False):
                    sel = (have & (short == kind))[rows]
                    if bool(sel.any()):
                        self.add_residuals(name, r[rows][sel].flatten(), short=kind)
            # The body's mean residual over points of one triple of frames: the noise common to
            # all points (a crop that jitters moves them together) does not average out.
            body = self.groups.get("body")
            if body is not None:
                same = have & (p0[:, 2] == self.frames[0]) & (p1[:, 2] == self.frames[1])
                sel = same[body]
                if int(sel.sum()) >= 3:
                    self._add_mean(r[body][sel], short=float(t) - self.frames[0] <= _SHORT)
        self.frames = (self.frames[1], float(t))
        # A point not confident now keeps its last two (a dropout does not end its triples).
        self.last[0] = torch.where(ok[:, None], p1, p0)
        self.last[1] = torch.where(ok[:, None], cur, p1)

    def _add_pair(self, prev: torch.Tensor, cur: torch.Tensor, ok: torch.Tensor) -> None:
        """Residuals of held points' two measurements (points confident now and at the
        previous measured frame), (cur - prev) / sqrt(2): N(0, sigma^2) per coordinate under
        pure noise, with no curvature in them (they count as short)."""
        have = ok & (prev[:, 2] == self.frames[1])
        if not bool(have.any()):
            return
        r = (cur[:, :2] - prev[:, :2]) / math.sqrt(2.0)
        for name, rows in self.groups.items():
            sel = have[rows]
            # A group whose points moved together between the two (a hand raised while the body
            # held still) gives no sample.
            if bool(sel.any()) and (int(sel.sum()) < 3 or _mean_held(r[rows][sel])):
                self.add_residuals(name, r[rows][sel].flatten(), short=True)
        body = self.groups.get("body")
        if body is not None and int(have[body].sum()) >= 3:
            self._add_mean(r[body][have[body]], short=True)

    def _add_mean(self, residuals: torch.Tensor, short: bool) -> None:
        """The body's mean residual (x and y) over the points (n, 2) of one frame's sample."""
        mean = residuals.mean(dim=0).abs()
        self.mean_samples = torch.cat([self.mean_samples, mean])[-self.capacity :]
        if short:
            self.mean_short = torch.cat([self.mean_short, mean])[-self.capacity :]
        self._cache = None

    def add_residuals(self, group: str, residuals: torch.Tensor, short: bool = False) -> None:
        """Residuals (any shape) that are N(0, sigma^2) under pure noise; ``short``: from three
        measurements within ``_SHORT`` frames (curvature hardly enters)."""
        r = residuals.detach().to("cpu", torch.float64).abs().flatten()
        self.samples[group] = torch.cat([self.samples[group], r])[-self.capacity :]
        if short:
            self.short[group] = torch.cat([self.short[group], r])[-self.capacity :]
        self._cache = None

    def sigma(self, group: str = "body") -> float | None:
        """The group's noise (px per coordinate), or None before ``min_samples`` residuals."""
        return self.sigmas().get(group)

    def sigmas(self) -> dict:
        """{group: sigma or None}."""
        if self._cache is None:
            self._cache = {name: self._estimate(self.short[name], s, self.min_samples) for name, s in self.samples.items()}
            self._cache[_MEAN] = self._estimate(self.mean_short, self.mean_samples, self.min_samples // 3)
        return {k: v for k, v in self._cache.items() if k != _MEAN}

    def sigma_mean(self) -> float | None:
        """The noise (px per coordinate) of the mean of the body points of a frame, or None
        before enough frames: with independent points sigma / sqrt(n), with a jitter common to
        all points (the crop) up to sigma."""
        self.sigmas()
        return self._cache[_MEAN]

    @staticmethod
    def _estimate(short: torch.Tensor, every: torch.Tensor, min_samples: int) -> float | None:
        """The lower of the estimates from the short triples and from all (once each has
        enough): curvature inflates the second, a few crops' differing bias the first."""
        est = [float(torch.quantile(s, 0.25)) / 0.3186 for s in (short, every) if s.numel() >= min_samples]
        return min(est) if est else None

    def per_keypoint(self, num_keypoints: int, default: float) -> torch.Tensor:
        """(K,) float64 sigma of each keypoint's group (``default`` where unknown)."""
        out = torch.full((num_keypoints,), float(default), dtype=torch.float64)
        for name, value in self.sigmas().items():
            if value is not None:
                out[self.groups[name]] = value
        return out
