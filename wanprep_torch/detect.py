"""Person detector pre/post-processing (YOLOv10 end-to-end rows or YOLOv8-style outputs).

Matches the reference node: the frame is resized to 640x640 without letterbox (bilinear with
half-pixel centres, as OpenCV's resize), RGB in [0, 1]; detections above score 0.05 go through
NMS at IoU 0.5; the largest person box is chosen; a frame with no usable box falls back to the
full frame with score -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .buffers import Workspace
from .config import override
from .frames import FrameBatch, as_tchw
from .runtime import OrtModel, as_model, check_detector, resolve_batch_size
from .timing import NULL_TIMER

__all__ = [
    "DetectConfig",
    "Selection",
    "Detections",
    "PersonDetector",
    "largest_person",
    "resize_for_detector",
    "decode_detections",
    "box_iou",
    "nms",
    "select_person",
    "detect_candidates",
    "full_frame_box",
    "usable",
    "count_others",
    "detect_boxes",
]


@dataclass(frozen=True)
class DetectConfig:
    """The detector's decoding and the subject rule (the one home of their defaults: the
    reference's score 0.05 and NMS IoU 0.5)."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    person_class: int = 0
    strict: bool = True  # skip boxes whose longer side is under ``min_side_ratio`` of the longest
    min_side_ratio: float = 0.4
    other_person_area: float = 0.1  # others counted when larger than this fraction of the chosen box
    min_box_side: float = 10.0  # smaller boxes fall back to the full frame

    def __post_init__(self):
        for name in ("score_threshold", "iou_threshold", "min_side_ratio", "other_person_area"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.min_box_side < 0:
            raise ValueError(f"min_box_side must be >= 0, got {self.min_box_side!r}")


def resize_for_detector(frames: torch.Tensor, size_hw: tuple[int, int] = (640, 640), workspace=None) -> torch.Tensor:
    """Resize frames to the detector's input, RGB float in [0, 1].

    Args:
        frames: (T, 3, H, W) uint8 (0-255) or float (0-1); any memory format.
        workspace: optional :class:`~wanprep_torch.buffers.Workspace` to write into (saves a
            large allocation per group of frames on the CPU).

    Returns:
        (T, 3, h, w) float32, contiguous.
    """
    ws = workspace if workspace is not None else Workspace()
    dev = frames.device
    shape = (frames.shape[0], 3) + tuple(size_hw)
    out = ws.get("detector_input", shape, torch.float32, dev)
    if frames.dtype == torch.uint8 and dev.type == "cpu":
        # On the CPU uint8 channels-last resizes several times faster than float NCHW; the rounding to
        # 1/255 steps is below the input's own quantisation.
        cl = frames.is_contiguous(memory_format=torch.channels_last)
        small = ws.get("detector_u8", shape, torch.uint8, dev, channels_last=cl)
        torch.ops.aten.upsample_bilinear2d.out(frames, list(size_hw), False, None, None, out=small)
        # copy_ then an in-place scale: a mixed-dtype, mixed-layout mul(out=) is much slower.
        return out.copy_(small).mul_(1.0 / 255.0)
    x = frames if frames.is_floating_point() else frames.float() / 255.0
    return out.copy_(F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False, antialias=False))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (M, 4) and (K, 4) x1y1x2y2 boxes -> (M, K)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Exact greedy NMS: indices of the kept boxes, highest score first.

    Greedy NMS keeps box i iff no higher-scored kept box overlaps it; iterating that rule from
    "keep all" reaches the greedy answer (box i is settled after i rounds, usually far fewer),
    so it runs as a few matrix products instead of a Python loop over boxes.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order]
    m = b.shape[0]
    over = (box_iou(b, b) > iou_threshold).triu(diagonal=1).float()  # over[j, i]: j outranks i
    keep = torch.ones(m, device=b.device)
    for _ in range(m):
        new = ((keep @ over) == 0).float()
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep.bool()]


def decode_detections(
    output: torch.Tensor, cfg: DetectConfig = DetectConfig(), box_scale: tuple[float, float] = (1.0, 1.0)
) -> list[torch.Tensor]:
    """Raw detector output -> person boxes per frame.

    Args:
        output: (N, R, 6) YOLOv10 end-to-end rows (x1, y1, x2, y2, score, class), or
            (N, 4 + C, A) YOLOv8-style (cx, cy, w, h, class scores) per anchor.
        box_scale: (sx, sy) applied to the boxes before NMS: frame W / input w and H / h give
            frame pixels, where the reference runs NMS and the selection rule.

    Returns:
        N tensors (M, 5) x1, y1, x2, y2, score after the score threshold and NMS.
    """
    out = output.float()
    if out.dim() != 3:
        raise ValueError(f"detector output must be 3-D, got shape {tuple(out.shape)}")
    if out.shape[-1] == 6:
        boxes, scores, cls = out[..., :4], out[..., 4], out[..., 5]
        person = (cls.round() == cfg.person_class) & (scores >= cfg.score_threshold)
    elif out.shape[1] > 4 + cfg.person_class:
        rows = out.transpose(1, 2)  # (N, A, 4 + C)
        c, wh = rows[..., :2], rows[..., 2:4]
        boxes = torch.cat([c - wh / 2, c + wh / 2], dim=-1)
        scores = rows[..., 4 + cfg.person_class]
        person = scores >= cfg.score_threshold
    else:
        raise ValueError(f"unrecognised detector output shape {tuple(out.shape)}")
    sx, sy = box_scale
    if (sx, sy) != (1.0, 1.0):
        boxes = boxes * torch.tensor([sx, sy, sx, sy], device=boxes.device, dtype=boxes.dtype)
    result = []
    for i in range(out.shape[0]):
        m = person[i]
        b, s = boxes[i][m], scores[i][m]
        k = nms(b, s, cfg.iou_threshold)
        result.append(torch.cat([b[k], s[k, None]], dim=-1))
    return result


def select_person(dets: torch.Tensor, cfg: DetectConfig = DetectConfig()) -> tuple[torch.Tensor | None, int]:
    """The reference's rule: the largest box (in strict mode among boxes whose longer side is at
    least ``min_side_ratio`` of the longest), and how many other persons cover more than
    ``other_person_area`` of its area.

    Args:
        dets: (M, 5) boxes after NMS.

    Returns:
        (the chosen (5,) box or None, the count of other persons).
    """
    if dets.shape[0] == 0:
        return None, 0
    wh = (dets[:, 2:4] - dets[:, :2]).clamp(min=0)
    area = wh[:, 0] * wh[:, 1]
    cand = torch.ones_like(area, dtype=torch.bool)
    if cfg.strict:
        longer = wh.max(dim=1).values
        cand = longer >= cfg.min_side_ratio * longer.max()
    idx = int(torch.argmax(torch.where(cand, area, torch.full_like(area, -1.0))))
    others = int(((area > cfg.other_person_area * area[idx]).sum()) - 1)
    return dets[idx], max(others, 0)


@dataclass(frozen=True)
class Selection:
    """The subject chosen in one frame: ``box`` (5,) x1, y1, x2, y2, score (score -1: the
    full-frame fallback) and ``others``, the other persons counted."""

    box: torch.Tensor
    others: int


def largest_person(dets: torch.Tensor, frame_hw: tuple[int, int], cfg: DetectConfig = DetectConfig()) -> Selection:
    """The reference's rule for one frame: :func:`select_person`, and the full frame (score -1,
    no others) when no box is usable. The one home of that rule (detection and tracking).

    Args:
        dets: (M, 5) person boxes after NMS, in frame pixels.
    """
    chosen, others = select_person(dets, cfg)
    if usable(chosen, cfg):
        return Selection(chosen, others)
    return Selection(full_frame_box(frame_hw), 0)


def detect_candidates(
    output: torch.Tensor, frame_hw: tuple[int, int], input_hw: tuple[int, int], cfg: DetectConfig = DetectConfig()
) -> list[torch.Tensor]:
    """Person boxes per frame in frame pixels (not clipped, as the reference), after NMS.

    The boxes are a few hundred numbers a frame, so they are decoded on the host.
    """
    fh, fw = frame_hw
    ih, iw = input_hw
    return decode_detections(output.detach().to("cpu"), cfg, box_scale=(fw / iw, fh / ih))


def full_frame_box(frame_hw: tuple[int, int]) -> torch.Tensor:
    """The fallback box (0, 0, W, H) with score -1."""
    fh, fw = frame_hw
    return torch.tensor([0.0, 0.0, float(fw), float(fh), -1.0])


def usable(box: torch.Tensor | None, cfg: DetectConfig) -> bool:
    """A chosen box is used when both sides reach ``min_box_side`` px."""
    return box is not None and min(float(box[2] - box[0]), float(box[3] - box[1])) >= cfg.min_box_side


def count_others(dets: torch.Tensor, chosen: torch.Tensor, cfg: DetectConfig) -> int:
    """Persons other than ``chosen`` covering more than ``other_person_area`` of its area."""
    if dets.shape[0] == 0:
        return 0
    area = (dets[:, 2] - dets[:, 0]).clamp(min=0) * (dets[:, 3] - dets[:, 1]).clamp(min=0)
    a = float((chosen[2] - chosen[0]).clamp(min=0) * (chosen[3] - chosen[1]).clamp(min=0))
    same = (dets[:, :4] == chosen[:4]).all(dim=1)
    return int(((area > cfg.other_person_area * a) & ~same).sum())


def detect_boxes(
    output: torch.Tensor, frame_hw: tuple[int, int], input_hw: tuple[int, int], cfg: DetectConfig = DetectConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector output -> one person box per frame (the largest-box rule), in frame pixels,
    with the full-frame fallback.

    Args:
        output: raw detector output for N frames.
        frame_hw: (H, W) of the frames; input_hw: the detector input size.

    Returns:
        boxes (N, 5) x1, y1, x2, y2, score (score -1 for the full-frame fallback) on the host,
        and others (N,) int64: other persons counted in each frame.
    """
    chosen = [largest_person(d, frame_hw, cfg) for d in detect_candidates(output, frame_hw, input_hw, cfg)]
    return _stack_selections(chosen)


def _stack_selections(chosen: list[Selection]) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.empty(len(chosen), 5)
    others = torch.zeros(len(chosen), dtype=torch.long)
    for i, sel in enumerate(chosen):
        boxes[i] = sel.box
        others[i] = sel.others
    return boxes, others


@dataclass
class Detections:
    """What :class:`PersonDetector` returns for N frames.

    boxes: (N, 5) the largest-box rule's choice per frame (host, frame pixels; score -1 for the
        full-frame fallback); others: (N,) other persons counted; candidates: N tensors
        (M, 5), every person box after NMS (for tracking a subject instead).
    """

    boxes: torch.Tensor
    others: torch.Tensor
    candidates: list


class PersonDetector:
    """The person detector stage: YOLOv10 / YOLOv8 ONNX model, resize, decoding, NMS and the
    subject selection rule.

    Args:
        model: an ONNX file, or an :class:`~wanprep_torch.runtime.OrtModel` already open.
        device: where frames live ("cpu", "cuda", "cuda:N").
        batch_size: frames per model run, or "auto" (1 on the CPU, 16 on CUDA).
        providers, intra_op_threads: ONNX Runtime settings (see :class:`OrtModel`).
        config: thresholds and the subject rule (:class:`DetectConfig`; the reference's score
            0.05 and IoU 0.5 by default).
        score_threshold, iou_threshold: shorthands that override the config's fields.

    Example (the test kit's analytic detector on its synthetic clip; a real model is a
    path such as ``"yolov10m.onnx"``)::

        >>> import tempfile
        >>> from wanprep_torch.testkit import build_test_models, make_clip
        >>> models = build_test_models(tempfile.mkdtemp(), fp16=False)
        >>> clip = make_clip(2)              # (T, H, W, 3) float in [0, 1]; uint8 or (T, 3, H, W) too
        >>> found = PersonDetector(models["det"])(clip.frames)
        >>> found.boxes.shape                # x1, y1, x2, y2, score in frame pixels
        torch.Size([2, 5])
        >>> bool((found.boxes[:, :2] < clip.boxes[:, :2]).all() and (found.boxes[:, 2:4] > clip.boxes[:, 2:4]).all())
        True
    """

    def __init__(
        self,
        model: str | Path | OrtModel,
        device: str | torch.device = "cpu",
        *,
        batch_size: int | str = "auto",
        providers=None,
        intra_op_threads: int | None = None,
        config: DetectConfig | None = None,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
    ):
        self.device = torch.device(device)
        self.model = as_model(model, self.device, providers, intra_op_threads, role="detector")
        check_detector(self.model)
        self.batch_size = resolve_batch_size(batch_size, self.device)
        self.config = override(config or DetectConfig(), score_threshold=score_threshold, iou_threshold=iou_threshold)
        ih, iw = self.model.input_hw
        self.input_hw = (ih or 640, iw or 640)
        self.workspace = Workspace()

    def preprocess(self, frames: FrameBatch, workspace: Workspace | None = None) -> torch.Tensor:
        """(N, 3, h, w) float32 detector input, RGB in [0, 1] (in ``workspace`` when given)."""
        # uint8 channels-last resizes fastest on the CPU; on a GPU float costs nothing extra.
        src = frames.uint8() if frames.view.device.type == "cpu" else frames.float01()
        return resize_for_detector(src, self.input_hw, workspace)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Raw model output for the (N, 3, h, w) input."""
        return self.model.run(x, batch_size=min(self.batch_size, x.shape[0]))

    def postprocess(self, raw: torch.Tensor, frame_hw: tuple[int, int]) -> list[torch.Tensor]:
        """N tensors (M, 5) of person boxes after NMS, in frame pixels (host)."""
        return detect_candidates(raw, frame_hw, self.input_hw, self.config)

    def select(self, candidates: torch.Tensor, frame_hw: tuple[int, int]) -> Selection:
        """The largest-box rule on one frame's candidates."""
        return largest_person(candidates, frame_hw, self.config)

    def candidates(self, frames: FrameBatch, timer=NULL_TIMER) -> list[torch.Tensor]:
        """Person boxes per frame of a :class:`FrameBatch` (the pipeline's entry point)."""
        with timer("detect_pre"):
            x = self.preprocess(frames, self.workspace)
        with timer("detect_model"):
            raw = self.infer(x)
        with timer("detect_post"):
            return self.postprocess(raw, frames.hw)

    def __call__(self, frames: torch.Tensor) -> Detections:
        """Detect the person in each frame.

        Args:
            frames: (T, H, W, 3) or (T, 3, H, W), float in [0, 1] or uint8, or one (H, W, 3) frame,
                on this detector's device.

        Returns:
            :class:`Detections` for the T frames.
        """
        view = as_tchw(frames)
        if view.device != self.device:
            raise ValueError(f"frames are on {view.device} but the detector runs on {self.device}")
        cands: list = []
        for s in range(0, view.shape[0], self.batch_size):
            cands.extend(self.candidates(FrameBatch(view[s : s + self.batch_size])))
        hw = (int(view.shape[-2]), int(view.shape[-1]))
        boxes, others = _stack_selections([self.select(c, hw) for c in cands])
        return Detections(boxes, others, cands)
