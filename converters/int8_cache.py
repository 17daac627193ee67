"""INT8 models for a run: converted once (cached by content hash), checked on the video's
first frames, FP32 where the check fails.

    >>> rec = prepare_int8("yolov10m.onnx", "vitpose_b.onnx", "clip.mp4")   # doctest: +SKIP
    >>> rec.paths                # {"detector": ..., "pose": ...}: INT8 files, or FP32 on fallback
    >>> rec.pose.report.summary()

The cache key is the source model's bytes (with its external data) and the settings (recipe
and onnxruntime versions included), so a changed model or recipe converts again and a renamed
or copied one does not. A static model is calibrated on the video it is first made for; every
run validates it on its own video.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wanprep_torch.modelcache import content_digest
from wanprep_torch.paths import int8_cache_dir
from wanprep_torch.runtime import ModelError

from ._common import ConversionError, Log, Staging, load_skeleton, no_log
from .int8 import Int8Settings, open_stages, quantize, split_frames
from .int8_check import (
    DetectorReport,
    PoseReport,
    Thresholds,
    frames_from,
    model_inputs,
    validate_detector,
    validate_pose,
)

__all__ = ["Int8Fallback", "ModelChoice", "Int8Record", "default_cache_dir", "content_hash", "prepare_int8"]


ROLES = ("detector", "pose")


class Int8Fallback(UserWarning):
    """An INT8 model was not used (it missed the thresholds or could not be made): FP32 runs."""


def default_cache_dir() -> Path:
    """The user cache's ``int8/`` folder (:func:`wanprep_torch.paths.int8_cache_dir`:
    ``$WANPREP_CACHE``, else the platform's user cache folder), beside the FP16 copies."""
    return int8_cache_dir()


def content_hash(path) -> str:
    """SHA-256 of a model file and its external data files (what ONNX Runtime would load), by
    the same rule as the FP16 copies' (:func:`wanprep_torch.modelcache.content_digest`),
    remembered per file path, size and modification time in the cache."""
    path = Path(path)
    return content_digest([path, *load_skeleton(path).data_files], memo_dir=default_cache_dir())


@dataclass
class ModelChoice:
    """The model one role runs with: ``path`` (the INT8 file, or ``source`` on fallback),
    ``int8`` whether it is the INT8 one, ``cached`` the INT8 file was already there, its
    validation ``report`` (None when none could be made) and ``reason`` for a fallback."""

    role: str
    source: Path
    path: Path
    int8: bool
    cached: bool = False
    report: PoseReport | DetectorReport | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"source": str(self.source), "path": str(self.path), "int8": self.int8, "cached": self.cached,
                "reason": self.reason, "validation": None if self.report is None else self.report.as_dict()}


@dataclass
class Int8Record:
    """What :func:`prepare_int8` chose for both models, with the validation numbers."""

    detector: ModelChoice
    pose: ModelChoice
    frames: int
    warnings: list[str] = field(default_factory=list)

    @property
    def paths(self) -> dict[str, Path]:
        return {"detector": self.detector.path, "pose": self.pose.path}

    def as_dict(self) -> dict:
        return {"frames": self.frames, "detector": self.detector.as_dict(), "pose": self.pose.as_dict(),
                "warnings": list(self.warnings)}


def _cache_path(cache_dir: Path, src: Path, settings: Int8Settings, kind: str) -> Path:
    """The cache file for ``src``: named after the first file seen with these bytes, found by
    the key alone (a renamed or copied model hits the cache)."""
    key = hashlib.sha256((content_hash(src) + settings.resolve(kind).key()).encode()).hexdigest()[:16]
    for pattern in (f"*-{key}.int8.onnx", f"*-{key}.int8.onnx.none.json"):
        found = sorted(cache_dir.glob(pattern)) if cache_dir.is_dir() else []
        if found:
            return found[0] if found[0].suffix == ".onnx" else found[0].with_name(found[0].name[: -len(".none.json")])
    return cache_dir / f"{src.stem}-{key}.int8.onnx"


def _none_marker(path: Path) -> Path:
    return path.with_name(path.name + ".none.json")


def _make(src: Path, dst: Path, kind: str, settings: Int8Settings, calibration, log: Log) -> str | None:
    """Quantize into the cache; None when done, else why no INT8 model exists (remembered)."""
    marker = _none_marker(dst)
    if marker.is_file():
        return json.loads(marker.read_text()).get("reason", "no INT8 model can be made")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Staging(dst) as st:
        info = quantize(src, st.path, kind, settings, calibration, log)
        if info.int8_ops == 0:
            reason = f"nothing in {src.name} is quantizable with the {info.settings.mode} recipe"
            marker.write_text(json.dumps({"source": str(src), "reason": reason}))
            return reason
        st.commit()
    return None


def prepare_int8(det_path, pose_path, frames, *, cache_dir=None, settings: dict | None = None,
                 thresholds: Thresholds = Thresholds(), count: int = 24, size: tuple[int, int] | None = None,
                 log: Log = no_log, warn: Callable[[str], None] | None = None) -> Int8Record:
    """INT8 copies of the FP32 detector and pose model for the CPU provider, each used only
    where it passes the check on ``frames``.

    Args:
        det_path, pose_path: the FP32 models.
        frames: a video path (its first ``count`` frames, resized to ``size`` (H, W) when
            given, as the run resizes them) or a (T, H, W, 3) / (T, 3, H, W) tensor, uint8 or
            float in [0, 1]. Two in three calibrate a new static model, every third validates.
        cache_dir: where the INT8 files live (default :func:`default_cache_dir`).
        settings: {"detector": Int8Settings, "pose": Int8Settings} (default: auto recipes).
        warn: called with each fallback message (default: ``warnings.warn(..., Int8Fallback)``).

    Returns:
        :class:`Int8Record`; ``.paths`` are the files to run. Raises InputError for a bad
        model file or unreadable frames.
    """
    warn = warn or (lambda m: warnings.warn(m, Int8Fallback, stacklevel=3))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    settings = settings or {}
    src = {"detector": Path(det_path), "pose": Path(pose_path)}
    detector, estimator = open_stages(src["detector"], src["pose"])
    shots = frames_from(frames, count, size)
    dst = {r: _cache_path(cache, src[r], settings.get(r, Int8Settings()), r) for r in ROLES}
    calib_idx, val_idx = split_frames(shots.shape[0])
    fresh = [r for r in ROLES if not (dst[r].is_file() or _none_marker(dst[r]).is_file())]
    # Calibration frames are only needed for a model not yet in the cache.
    need = sorted(set(val_idx) | (set(calib_idx) if fresh else set()))
    log(f"INT8: real inputs from {len(need)} frame(s) with the FP32 models")
    inputs = model_inputs(shots[need], detector, estimator)
    pos = {f: i for i, f in enumerate(need)}
    calib, val = inputs.take([pos[i] for i in calib_idx if i in pos]), inputs.take([pos[i] for i in val_idx])
    choices, notes = {}, []
    for role in ROLES:
        stage = estimator if role == "pose" else detector
        data = calib.pose if role == "pose" else calib.det
        choices[role] = _choose(role, src[role], dst[role], role not in fresh, stage, data, val,
                                settings.get(role, Int8Settings()), thresholds, log)
        if choices[role].reason is not None:
            msg = f"INT8 {role} model not used, running FP32 ({src[role].name}): {choices[role].reason}"
            notes.append(msg)
            warn(msg)
    return Int8Record(choices["detector"], choices["pose"], len(val_idx), notes)


def _choose(role: str, src: Path, dst: Path, cached: bool, stage, calibration, val, settings: Int8Settings,
            thresholds: Thresholds, log: Log) -> ModelChoice:
    """Make (unless cached) and validate one role's INT8 model; the FP32 source with the
    reason when it cannot be made or misses the thresholds."""
    reason, report = None, None
    try:
        if not dst.is_file():
            if not cached:
                log(f"INT8: converting the {role} model {src} -> {dst}")
            reason = _make(src, dst, role, settings, calibration, log)
        if reason is None:
            log(f"INT8: validating the {role} model on {len(val)} frame(s)" + (" (cached)" if cached else ""))
            report = (validate_pose(stage, dst, val, thresholds) if role == "pose"
                      else validate_detector(stage, dst, val, thresholds))
            if not report.ok:
                reason = f"misses the INT8 thresholds on this video: {'; '.join(report.failures)}"
    except ConversionError as e:
        reason = f"cannot be quantized: {' '.join(str(e).split())}"
    except ModelError as e:  # a cached file onnxruntime cannot open (damaged): made again next time
        dst.unlink(missing_ok=True)
        reason = f"the INT8 file cannot be loaded: {' '.join(str(e).split())}"
    if reason is None:
        return ModelChoice(role, src, dst, True, cached, report)
    return ModelChoice(role, src, src, False, cached, report, reason)
