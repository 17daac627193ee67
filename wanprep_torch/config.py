"""Settings records: each stage's frozen dataclass lives beside the stage (one home for its
defaults): :class:`~wanprep_torch.runtime.RuntimeConfig` (device, batch, ONNX Runtime),
:class:`~wanprep_torch.detect.DetectConfig` (detector thresholds, subject rule),
:class:`~wanprep_torch.wan.FaceConfig` (face crops), :class:`~wanprep_torch.gate.GateConfig`
(frame skipping). This module holds what they share."""

from __future__ import annotations

import dataclasses

__all__ = ["override", "CHUNK_SIZE"]

CHUNK_SIZE = 64  # frames per step: memory follows this, not the video's length


def override(config, **fields):
    """``config`` with the given fields replaced, skipping those given as None (keyword
    shorthands left at their default).

    >>> from wanprep_torch.detect import DetectConfig
    >>> override(DetectConfig(), score_threshold=0.3, iou_threshold=None)
    DetectConfig(score_threshold=0.3, iou_threshold=0.5, person_class=0, strict=True, min_side_ratio=0.4, other_person_area=0.1, min_box_side=10.0)
    """
    given = {k: v for k, v in fields.items() if v is not None}
    return dataclasses.replace(config, **given) if given else config
