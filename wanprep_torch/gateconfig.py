"""Frame-skipping settings: :class:`GateConfig`, the presets and :func:`resolve_gate`.

Imports nothing heavy (no torch), so that the command line can list the presets in its help
without loading torch; :mod:`wanprep_torch.gate` re-exports everything here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["GateConfig", "PRESETS", "resolve_gate"]


@dataclass(frozen=True)
class GateConfig:
    """Frame skipping settings. ``enabled=False`` is every frame through both models.

    max_gap: a keyframe at least every ``max_gap`` frames (the interpolation stride).
    verify_px: a gap is accepted when the pose model on its midpoint agrees with the
        interpolation: the largest error over the confident body keypoints within this many
        frame pixels plus what noise explains at that many points, and their mean error vector
        within ``verify_mean_px`` plus what noise explains of a mean (:func:`gap_accepted`);
        else it is split and both halves checked.
    verify_mean_px: the tolerance of the mean error vector (see verify_px).
    verify_p: how rarely noise alone may fail either test (a needless split).
    hold_px: a gap whose estimated motion stays under this is a hold, accepted unchecked.
    noise_warmup: the first this many frames are all keyframes, so the measurement noise is
        known (from three consecutive measurements) before the first gap is checked; not
        where the picture starts still (a hold is accepted unchecked).
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
    velocity_width: width of the finer grayscale thumbnail the picture's velocity is measured
        on (the test of its changes, :meth:`~wanprep_torch.gate.MotionGate.step`); 0: no
        velocity test (nor with ``hold_px`` 0, which turns off every hold and boundary).
    """

    enabled: bool = True
    max_gap: int = 8
    verify_px: float = 1.0
    verify_mean_px: float = 0.5
    verify_p: float = 1e-3
    hold_px: float = 0.3
    noise_warmup: int = 3
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
    velocity_width: int = 256

    def __post_init__(self):
        if self.max_gap < 1 or self.det_every < 0 or self.signature_width < 8 or self.noise_warmup < 0 or 0 < self.velocity_width < 8:
            raise ValueError("max_gap must be >= 1, det_every >= 0, signature_width >= 8, velocity_width 0 or >= 8, noise_warmup >= 0")
        if self.verify_mean_px < 0 or not 0 < self.verify_p < 1:
            raise ValueError("verify_mean_px must be >= 0, verify_p in (0, 1)")
        if self.verify_px < 0 or self.hold_px < 0 or self.motion_px <= 0 or not -1 <= self.cut_correlation <= 1:
            raise ValueError("verify_px and hold_px must be >= 0, motion_px > 0, cut_correlation in [-1, 1]")


PRESETS = {
    "off": GateConfig(enabled=False, det_every=1, subject=False),
    "safe": GateConfig(),
    "fast": GateConfig(max_gap=16, verify_px=3.0, verify_mean_px=1.5, hold_px=0.5, motion_px=32.0),
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
