"""INT8 models checked on the user's own frames: real model inputs and the accuracy reports.

The inputs are built by the pipeline's own stages (video decoding, the detector's resize, the
FP32 detector's box, the pose model's window crop and normalisation), so calibration and
validation see what the models see in a run. Validation compares the INT8 model with the FP32
one on the same inputs:

- pose: keypoint distance to FP32 on the FP32 detector's boxes, in crop pixels (the model's
  256x192 input: frame pixels x 256 / window height, so the numbers do not depend on the
  video's resolution or the person's size; one heatmap pixel is 4 crop pixels), mean and p95
  per group (body with feet, face, hands: ``skeleton.GROUPS``) and in frame pixels;
- detector: IoU of the box the largest-person rule picks, FP32 vs INT8, mean and worst frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._common import InputError

__all__ = [
    "Thresholds",
    "ModelInputs",
    "GroupError",
    "PoseReport",
    "DetectorReport",
    "read_frames",
    "model_inputs",
    "validate_pose",
    "validate_detector",
    "CONFIDENT",
]

# Points FP32 scores under this are not judged (where FP32 finds nothing, its position is
# noise): the Wan visibility threshold.
CONFIDENT = 0.3


@dataclass(frozen=True)
class Thresholds:
    """What an INT8 model must meet against FP32 on the user's frames.

    Pose, per group, in crop pixels (4 per heatmap pixel): mean <= ``pose_mean`` (half a
    heatmap pixel) and p95 <= ``pose_p95`` (one heatmap pixel). Detector: mean IoU of the
    chosen box >= ``det_mean_iou`` and every frame's >= ``det_worst_iou``.
    """

    pose_mean: float = 2.0
    pose_p95: float = 4.0
    det_mean_iou: float = 0.9
    det_worst_iou: float = 0.5


# ----------------------------------------------------------------------------- inputs


def read_frames(video, count: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The first ``count`` frames of a video file as (T, H, W, 3) uint8, resized to ``size``
    (H, W) as `wanprep run` resizes them. InputError when the video cannot be read."""
    from wanprep_torch.video import VideoError, VideoReader

    try:
        reader = VideoReader(video)
        if size is not None and tuple(size) == (reader.height, reader.width):
            size = None  # as the run reads it: no resampling at the native size
        try:
            chunk = next(iter(reader.chunks(count, "cpu", size, on_error="stop")), None)
        finally:
            reader.close()
    except VideoError as e:
        raise InputError(str(e)) from None
    if chunk is None:
        raise InputError(f"{video}: no frame could be decoded")
    return chunk


@dataclass
class ModelInputs:
    """Real inputs of both models for T frames, made by the pipeline's stages.

    det: (T, 3, 640, 640) float32, the detector's input; boxes: (T, 5) the FP32 detector's
    chosen box per frame (frame pixels); pose: (T, 3, 256, 192) float32, the pose model's
    normalised crops of those boxes; center, window: (T, 2) the crops' windows (frame pixels),
    to decode heatmaps; frame_hw: the frames' size.
    """

    det: np.ndarray
    boxes: torch.Tensor
    pose: np.ndarray | None
    center: torch.Tensor | None
    window: torch.Tensor | None
    frame_hw: tuple[int, int]

    def __len__(self) -> int:
        return self.det.shape[0]

    def take(self, index) -> "ModelInputs":
        """The inputs of the frames ``index`` (a slice or index list)."""
        sel = lambda a: None if a is None else a[index]  # noqa: E731
        return ModelInputs(self.det[index], self.boxes[index], sel(self.pose), sel(self.center),
                           sel(self.window), self.frame_hw)


def model_inputs(frames: torch.Tensor, detector, estimator=None) -> ModelInputs:
    """Both models' inputs for ``frames`` (T, H, W, 3) / (T, 3, H, W), uint8 or float in [0, 1].

    ``detector``: the FP32 :class:`~wanprep_torch.detect.PersonDetector` (its boxes choose the
    crops); ``estimator``: the FP32 :class:`~wanprep_torch.pose.PoseEstimator` whose
    preprocessing makes the crops (None: detector inputs only).
    """
    from wanprep_torch.frames import FrameBatch, as_tchw

    view = as_tchw(frames)
    dets, boxes = [], []
    for s in range(view.shape[0]):  # one frame at a time: FP32 runs at batch 1 on the CPU anyway
        fb = FrameBatch(view[s : s + 1])
        x = detector.preprocess(fb)
        dets.append(x.numpy().copy())
        cand = detector.postprocess(detector.infer(x), fb.hw)[0]
        boxes.append(detector.select(cand, fb.hw).box)
    hw = (int(view.shape[-2]), int(view.shape[-1]))
    det = np.concatenate(dets)
    box = torch.stack(boxes)
    if estimator is None:
        return ModelInputs(det, box, None, None, None, hw)
    inp = estimator.preprocess(FrameBatch(view), box)
    return ModelInputs(det, box, inp.pixels.numpy().copy(), inp.center, inp.window, hw)


# ----------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class GroupError:
    """Keypoint distance INT8 vs FP32 for one group: crop pixels (mean, p95, max) and frame
    pixels (mean, p95), over ``points`` judged points; ``all_points``: no point of the group
    reached the confidence threshold, so every point was judged."""

    mean: float
    p95: float
    max: float
    mean_px: float
    p95_px: float
    points: int
    all_points: bool = False


@dataclass
class PoseReport:
    """A pose model's validation: per-group errors, the thresholds and the verdict."""

    groups: dict[str, GroupError]
    frames: int
    thresholds: Thresholds
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [f"pose: keypoint distance INT8 vs FP32 on {self.frames} frame(s), crop px (256x192 input; frame px)"]
        for name, g in self.groups.items():
            note = " (no point scored >= 0.3: all judged)" if g.all_points else ""
            lines.append(f"  {name:5s} mean {g.mean:.3f} ({g.mean_px:.2f}), p95 {g.p95:.3f} ({g.p95_px:.2f}), "
                         f"max {g.max:.3f}; {g.points} points{note}")
        t = self.thresholds
        verdict = "PASS" if self.ok else "FAIL: " + "; ".join(self.failures)
        lines.append(f"  {verdict} (needs mean <= {t.pose_mean:g}, p95 <= {t.pose_p95:g} crop px per group)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "ok": self.ok, "failures": list(self.failures),
                "groups": {k: vars(v).copy() for k, v in self.groups.items()}}


def _shortfall(what: str, value: float, limit: float, above: bool) -> str:
    by = value - limit if above else limit - value
    rel = f", {100 * by / limit:.0f}%" if limit else ""
    return f"{what} {value:.3f} {'>' if above else '<'} {limit:g} (by {by:.3f}{rel})"


def pose_errors(ref: torch.Tensor, test: torch.Tensor, window: torch.Tensor, thresholds: Thresholds,
                input_h: int = 256) -> PoseReport:
    """Per-group distances of ``test`` keypoints to ``ref`` (both (N, 133, 3) frame pixels and
    score); ``window`` (N, 2): the crops' windows, which turn frame pixels into crop pixels."""
    from wanprep_torch.skeleton import GROUPS

    d_px = (test[..., :2].float() - ref[..., :2].float()).norm(dim=-1)  # (N, K)
    d_px = torch.nan_to_num(d_px, nan=float("inf"))
    d_crop = d_px * (input_h / window[:, 1:2].float())
    groups, failures = {}, []
    for name, rows in GROUPS.items():
        conf = ref[:, rows, 2] >= CONFIDENT
        all_points = not bool(conf.any())
        mask = torch.ones_like(conf) if all_points else conf
        c, p = d_crop[:, rows][mask], d_px[:, rows][mask]
        g = GroupError(float(c.mean()), float(torch.quantile(c, 0.95)), float(c.max()),
                       float(p.mean()), float(torch.quantile(p, 0.95)), int(mask.sum()), all_points)
        groups[name] = g
        if not g.mean <= thresholds.pose_mean:
            failures.append(_shortfall(f"{name} mean", g.mean, thresholds.pose_mean, True))
        if not g.p95 <= thresholds.pose_p95:
            failures.append(_shortfall(f"{name} p95", g.p95, thresholds.pose_p95, True))
    return PoseReport(groups, int(ref.shape[0]), thresholds, failures)


def validate_pose(estimator, int8_path, inputs: ModelInputs, thresholds: Thresholds = Thresholds()) -> PoseReport:
    """The INT8 pose model at ``int8_path`` against ``estimator`` (the FP32 stage) on the
    crops of ``inputs``; keypoints decoded the pipeline's way."""
    from wanprep_torch.pose import PoseEstimator, PoseInput

    if inputs.pose is None:
        raise ValueError("validate_pose needs pose inputs (model_inputs with an estimator)")
    q = PoseEstimator(int8_path, "cpu", batch_size=1)
    inp = PoseInput(torch.from_numpy(inputs.pose), inputs.center, inputs.window)
    ref = estimator.postprocess(estimator.infer(inp.pixels), inp)
    test = q.postprocess(q.infer(inp.pixels), inp)
    return pose_errors(ref, test, inputs.window, thresholds, estimator.input_hw[0])


# ----------------------------------------------------------------------------- detector


@dataclass
class DetectorReport:
    """A detector's validation: IoU of the chosen box INT8 vs FP32 per frame."""

    ious: list[float]
    thresholds: Thresholds
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious))

    @property
    def worst_iou(self) -> float:
        return float(np.min(self.ious))

    def summary(self) -> str:
        t = self.thresholds
        verdict = "PASS" if self.ok else "FAIL: " + "; ".join(self.failures)
        return (f"detector: chosen-box IoU INT8 vs FP32 on {len(self.ious)} frame(s): mean {self.mean_iou:.4f}, "
                f"worst {self.worst_iou:.4f}\n  {verdict} (needs mean >= {t.det_mean_iou:g}, "
                f"worst >= {t.det_worst_iou:g})")

    def as_dict(self) -> dict:
        return {"frames": len(self.ious), "ok": self.ok, "failures": list(self.failures),
                "mean_iou": self.mean_iou, "worst_iou": self.worst_iou}


def box_ious(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """IoU of row i of ``a`` with row i of ``b`` ((N, >=4) x1, y1, x2, y2)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:4], b[:, 2:4])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-9), torch.ones_like(union))
    return torch.nan_to_num(iou, nan=0.0).tolist()


def detector_errors(ref_boxes: torch.Tensor, test_boxes: torch.Tensor, thresholds: Thresholds) -> DetectorReport:
    ious = box_ious(ref_boxes.float(), test_boxes.float())
    rep = DetectorReport(ious, thresholds)
    if not rep.mean_iou >= thresholds.det_mean_iou:
        rep.failures.append(_shortfall("mean IoU", rep.mean_iou, thresholds.det_mean_iou, False))
    if not rep.worst_iou >= thresholds.det_worst_iou:
        rep.failures.append(_shortfall("worst-frame IoU", rep.worst_iou, thresholds.det_worst_iou, False))
    return rep


def validate_detector(detector, int8_path, inputs: ModelInputs, thresholds: Thresholds = Thresholds()) -> DetectorReport:
    """The INT8 detector at ``int8_path`` against the FP32 boxes in ``inputs`` (chosen by
    ``detector``'s rule, which decodes the INT8 output too)."""
    from wanprep_torch.detect import PersonDetector

    q = PersonDetector(int8_path, "cpu", batch_size=1)
    boxes = []
    for i in range(len(inputs)):
        raw = q.infer(torch.from_numpy(inputs.det[i : i + 1]))
        cand = detector.postprocess(raw, inputs.frame_hw)[0]
        boxes.append(detector.select(cand, inputs.frame_hw).box)
    return detector_errors(inputs.boxes, torch.stack(boxes), thresholds)


def frames_from(source, count: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Frames from a video path (the first ``count``) or a tensor (its first ``count``)."""
    if isinstance(source, (str, Path)):
        return read_frames(source, count, size)
    t = torch.as_tensor(source)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[0] == 0:
        raise InputError(f"frames must be (T, H, W, 3) or (T, 3, H, W) with T >= 1, got {tuple(t.shape)}")
    return t[:count]
