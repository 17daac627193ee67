"""The Preprocessor: frames -> detector -> pose model -> Wan outputs, one chunk at a time."""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import wan
from .detect import DetectConfig, detect_boxes, resize_for_detector
from .frames import FrameBatch, as_tchw, iter_chunks
from .pose import IMAGENET_MEAN, IMAGENET_STD, box_to_center_window, crop_windows, decode_pose
from .runtime import ModelError, OrtModel, resolve_batch_size, run_in_batches

__all__ = ["Preprocessor", "Result"]

# On the CPU the models run at batch 1 (fastest per frame there) but pre/post-processing runs
# on groups of frames, so per-op dispatch overhead is paid once per group.
_CPU_WORK_BATCH = 8


@dataclass
class Result:
    """Everything the reference "Pose and Face Detection" node returns, and a bit more.

    Tensors live on the input's device unless noted; lists and strings are on the host.
    """

    keypoints: torch.Tensor  # (T, 133, 3) x, y in frame pixels, score
    bboxes: torch.Tensor  # (T, 5) x1, y1, x2, y2, score (-1: full-frame fallback)
    pose_metas: list  # T dicts in Wan's format
    face_images: torch.Tensor  # (T, S, S, 3) float in [0, 1] (or uint8, see face_dtype)
    face_bboxes: list  # T (x1, y1, x2, y2) ints
    face_held: torch.Tensor  # (T,) bool: face not visible, box held from another frame
    key_frame_points: str  # JSON [{"x", "y"}, ...] on frame 0
    key_frames: list  # [{"frame": i, "points": [...]}, ...] for up to 4 key frames
    other_persons: torch.Tensor  # (T,) int: other people larger than 0.1x the chosen box
    width: int
    height: int
    timings: dict = field(default_factory=dict)
    providers: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    def to_json(self) -> dict:
        """A JSON-ready summary (metas as lists)."""
        metas = [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in m.items()} for m in self.pose_metas]
        return {
            "width": self.width,
            "height": self.height,
            "pose_metas": metas,
            "bboxes": self.bboxes.cpu().tolist(),
            "face_bboxes": [list(b) for b in self.face_bboxes],
            "face_held": self.face_held.cpu().tolist(),
            "key_frame_points": json.loads(self.key_frame_points),
            "key_frames": self.key_frames,
            "other_persons": self.other_persons.cpu().tolist(),
            "providers": self.providers,
            "timings": self.timings,
        }


class _Timer:
    """Per-stage wall time; synchronises CUDA so GPU work is charged to the right stage."""

    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.seconds[stage] += time.perf_counter() - t0

    def report(self, frames: int) -> dict:
        total = sum(self.seconds.values())
        out = {k: {"s": round(v, 6), "ms_per_frame": round(1000 * v / max(frames, 1), 4)} for k, v in self.seconds.items()}
        model = self.seconds.get("detect_model", 0.0) + self.seconds.get("pose_model", 0.0)
        out["total"] = {"s": round(total, 6), "ms_per_frame": round(1000 * total / max(frames, 1), 4)}
        out["non_model"] = {"s": round(total - model, 6), "ms_per_frame": round(1000 * (total - model) / max(frames, 1), 4)}
        out["frames"] = frames
        return out


class _Progress:
    """tqdm bars per stage plus an optional callback(stage, done, total) for host apps."""

    STAGES = ("detect", "pose", "wan")

    def __init__(self, enabled: bool, callback: Callable | None, total: int | None):
        self.callback = callback
        self.total = total
        self.done = defaultdict(int)
        self.bars = {}
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bars = {s: tqdm(total=total, desc=s, unit="frame", position=i, leave=True) for i, s in enumerate(self.STAGES)}
            except Exception:  # tqdm missing or no terminal: the callback still works
                self.bars = {}

    def update(self, stage: str, n: int) -> None:
        self.done[stage] += n
        if stage in self.bars:
            self.bars[stage].update(n)
        if self.callback is not None:
            self.callback(stage, self.done[stage], self.total)

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


class Preprocessor:
    """Detector + pose model + Wan outputs over a video of torch frames.

    Args:
        det_model, pose_model: ONNX files (YOLO person detector, ViTPose wholebody 133).
        device: where frames are processed ("cpu", "cuda", "cuda:1", torch.device). CUDA
            frames use ONNX Runtime's CUDA provider; without it, the CPU provider with a warning.
        batch_size: frames per model run, or "auto" (1 on the CPU, 16 on CUDA).
        intra_op_threads: ONNX Runtime CPU threads (default: physical cores).
        providers: explicit ONNX Runtime providers for both sessions.
        score_threshold, iou_threshold: detector thresholds (reference: 0.05, 0.5).
        face_padding: extra pixels on each side of the face boxes.
        face_size: side of the square face crops (512).
        face_dtype: torch.float32 (in [0, 1], the default) or torch.uint8 (4x less memory).
        face_device: where face crops are kept (default: the frames' device; "cpu" keeps long
            videos' crops off the GPU).
        chunk_size: frames processed per step; memory grows with this, not with the video.
        progress: show tqdm bars; progress_callback(stage, done, total) is called as frames finish.
        dark: DARK sub-pixel decoding (True, as the reference) or plain argmax.
    """

    def __init__(
        self,
        det_model: str | Path,
        pose_model: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int | str = "auto",
        intra_op_threads: int | None = None,
        providers=None,
        score_threshold: float = 0.05,
        iou_threshold: float = 0.5,
        face_padding: int = 0,
        face_size: int = 512,
        face_dtype: torch.dtype = torch.float32,
        face_device: str | torch.device | None = None,
        chunk_size: int = 64,
        progress: bool = True,
        progress_callback: Callable | None = None,
        dark: bool = True,
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device} requested but torch sees no CUDA device")
        if face_dtype not in (torch.float32, torch.float16, torch.uint8):
            raise ValueError(f"face_dtype must be torch.float32, torch.float16 or torch.uint8, got {face_dtype}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.det = OrtModel(det_model, self.device, providers, intra_op_threads, role="detector")
        self.pose = OrtModel(pose_model, self.device, providers, intra_op_threads, role="pose")
        _check_detector(self.det)
        _check_pose(self.pose)
        self.batch_size = resolve_batch_size(batch_size, self.device)
        self.det_cfg = DetectConfig(score_threshold=score_threshold, iou_threshold=iou_threshold)
        self.face_padding = int(face_padding)
        self.face_size = int(face_size)
        self.face_dtype = face_dtype
        self.face_device = torch.device(face_device) if face_device is not None else None
        self.chunk_size = int(chunk_size)
        self.progress = progress
        self.progress_callback = progress_callback
        self.dark = dark
        ih, iw = self.det.input_hw
        self.det_hw = (ih or 640, iw or 640)
        ph, pw = self.pose.input_hw
        self.pose_hw = (ph or 256, pw or 192)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def providers(self) -> dict:
        return {"detector": self.det.providers[0], "pose": self.pose.providers[0]}

    # -- one group of frames -------------------------------------------------------------
    def _resize_source(self, fb: FrameBatch) -> torch.Tensor:
        # uint8 channels-last resizes fastest on the CPU; on a GPU float costs nothing extra.
        return fb.uint8() if self.device.type == "cpu" else fb.float01()

    def _infer(self, fb: FrameBatch, timer: _Timer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detector + pose model on a group of frames -> keypoints (n,133,3), boxes (n,5), others (n,)."""
        mb = min(self.batch_size, len(fb))
        with timer("detect_pre"):
            det_in = resize_for_detector(self._resize_source(fb), self.det_hw)
        with timer("detect_model"):
            det_out = self.det.run(det_in, batch_size=mb)
        with timer("detect_post"):
            boxes, others = detect_boxes(det_out, fb.hw, self.det_hw, self.det_cfg)
            boxes = boxes.to(self.device)
        with timer("pose_pre"):
            center, window = box_to_center_window(boxes, self.pose_hw)
            crops = crop_windows(fb.float01(), center, window, self.pose_hw)
            pose_in = (crops - self._mean).mul_(self._inv_std)
        with timer("pose_model"):
            heatmaps = self.pose.run(pose_in, batch_size=mb)
        with timer("pose_post"):
            kps = decode_pose(heatmaps, center, window, dark=self.dark)
        return kps, boxes, others

    def _work_batch(self) -> int:
        return max(self.batch_size, _CPU_WORK_BATCH) if self.device.type == "cpu" else self.batch_size

    # -- the video ---------------------------------------------------------------------------
    def __call__(self, video) -> Result:
        """Process a video: a tensor of frames, or an iterable of tensor chunks.

        Bad input raises ValueError/TypeError naming the problem; when frames were already
        finished (a bad chunk of an iterable, a NaN frame late in a tensor), the error carries
        them as ``.partial_result``.
        """
        total = None
        if isinstance(video, torch.Tensor):
            total = as_tchw(video, finite=False).shape[0]
        timer = _Timer(self.device)
        prog = _Progress(self.progress, self.progress_callback, total)
        acc = _Accumulator(self, timer)
        try:
            for chunk in iter_chunks(video, self.chunk_size):
                if chunk.device != self.device:
                    raise ValueError(f"frames are on {chunk.device} but the Preprocessor runs on {self.device}")
                self._process_chunk(chunk, acc, timer, prog)
        except (ValueError, TypeError) as exc:
            if acc.frames:
                exc.partial_result = acc.finish()
            raise
        finally:
            prog.close()
        return acc.finish()

    def _process_chunk(self, chunk: torch.Tensor, acc: "_Accumulator", timer: _Timer, prog: _Progress) -> None:
        def step(s: int, e: int) -> None:
            fb = FrameBatch(chunk[s:e])
            kps, boxes, others = self._infer(fb, timer)
            prog.update("detect", e - s)
            prog.update("pose", e - s)
            with timer("wan"):
                acc.add(fb, kps, boxes, others)
            prog.update("wan", e - s)

        def shrink(b: int) -> None:
            self.batch_size = min(self.batch_size, b)

        run_in_batches(chunk.shape[0], self._work_batch(), step, on_oom=shrink)


def _check_detector(m: OrtModel) -> None:
    expected = "input (B, 3, 640, 640) and output (B, 300, 6) [YOLOv10] or (B, 4+C, N) [YOLOv8]"
    o = m.output.shape
    ok = m.input.shape[1] in (3, None) and len(o) == 3 and (o[2] == 6 or (o[1] is not None and o[1] >= 5))
    if not ok:
        hint = " It looks like a pose model." if len(o) == 4 else ""
        raise ModelError(
            f"{m.path} is not a person detector: it has {m.input.describe()} -> {m.output.describe()};"
            f" expected {expected}.{hint}"
        )


def _check_pose(m: OrtModel) -> None:
    expected = "input (B, 3, 256, 192) and output heatmaps (B, 133, 64, 48)"
    o = m.output.shape
    ok = m.input.shape[1] in (3, None) and len(o) == 4 and o[1] in (133, None)
    if not ok:
        hint = " It looks like a detector." if len(o) == 3 else ""
        raise ModelError(
            f"{m.path} is not a wholebody pose model: it has {m.input.describe()} -> {m.output.describe()};"
            f" expected {expected}.{hint}"
        )


class _Accumulator:
    """Collects per-chunk outputs; derives the Wan outputs with state carried across chunks."""

    def __init__(self, pre: Preprocessor, timer: _Timer):
        self.pre = pre
        self.timer = timer
        self.frames = 0
        self.kps, self.boxes, self.others, self.metas = [], [], [], []
        self.face_chunks: list[torch.Tensor] = []
        self.face_boxes: list = []
        self.face_held: list[bool] = []
        self.last_body = None
        self.last_good = None
        self.first_good = None
        # Leading groups of frames with no face yet (indices into face_chunks, which holds
        # their FrameBatch until the first good box crops them).
        self.pending: list[int] = []
        self.width = self.height = None

    def add(self, fb: FrameBatch, kps: torch.Tensor, boxes: torch.Tensor, others: torch.Tensor) -> None:
        # State changes only after the face crops succeed, so an out-of-memory retry of this
        # group starts from the same state.
        pre = self.pre
        h, w = fb.hw
        self.height, self.width = h, w
        metas, last_body = wan.pose_metas(kps, w, h, self.last_body)
        fb_boxes, valid = wan.face_boxes(kps, w, h)
        first_good = self.first_good
        if first_good is None and bool(valid.any()):
            first_good = tuple(fb_boxes[int(torch.nonzero(valid)[0])].tolist())
        resolved, held, last_good = wan.resolve_face_boxes(
            fb_boxes, valid, w, h, pre.face_padding, last_good=self.last_good, first_good=first_good
        )
        faces = fb if first_good is None else self._crop_faces(fb, resolved)
        if first_good is not None:
            self._flush_pending(first_good)
        else:
            # No face seen yet: keep these frames until one is, or the video ends.
            self.pending.append(len(self.face_chunks))
        self.face_chunks.append(faces)
        self.last_body, self.first_good, self.last_good = last_body, first_good, last_good
        self.kps.append(kps)
        self.boxes.append(boxes)
        self.others.append(others)
        self.metas.extend(metas)
        self.face_boxes.extend(resolved)
        self.face_held.extend(held)
        self.frames += len(fb)

    def _crop_faces(self, fb: FrameBatch, boxes: list) -> torch.Tensor:
        pre = self.pre
        if pre.device.type == "cpu":
            faces = wan.crop_resize(fb.uint8(), boxes, pre.face_size)
            if pre.face_dtype != torch.uint8:
                faces = faces.to(pre.face_dtype).mul_(1.0 / 255.0)
        else:
            faces = wan.crop_resize(fb.float01(), boxes, pre.face_size)
            if pre.face_dtype == torch.uint8:
                faces = faces.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
            else:
                faces = faces.to(pre.face_dtype)
        if pre.face_device is not None:
            faces = faces.to(pre.face_device)
        return faces

    def _flush_pending(self, box) -> None:
        """Crop the leading faceless frames with ``box`` (the first good one, or the fallback)."""
        if not self.pending:
            return
        w, h = self.width, self.height
        box = wan.pad_box(box, self.pre.face_padding, w, h) if self.pre.face_padding else box
        start = 0
        for ci in self.pending:
            fb = self.face_chunks[ci]
            self.face_chunks[ci] = self._crop_faces(fb, [box] * len(fb))
        for i in range(sum(len(self.face_chunks[ci]) for ci in self.pending)):
            self.face_boxes[start + i] = box
        self.pending.clear()

    def finish(self) -> Result:
        with self.timer("wan"):
            if self.pending:
                fallback = wan.fallback_face_box(self.width, self.height)
                self._flush_pending(fallback)
            kps = torch.cat(self.kps)
            faces = _concat_release(self.face_chunks)
            first = kps[0]
            key_points = wan.key_frame_points(first)
            key_frames = [{"frame": i, "points": wan.key_frame_points(kps[i])} for i in wan.key_frame_indices(kps.shape[0])]
        dev = kps.device
        return Result(
            keypoints=kps,
            bboxes=torch.cat(self.boxes),
            pose_metas=list(self.metas),
            face_images=faces,
            face_bboxes=list(self.face_boxes),
            face_held=torch.tensor(self.face_held, dtype=torch.bool, device=dev),
            key_frame_points=json.dumps(key_points),
            key_frames=key_frames,
            other_persons=torch.cat(self.others).to(dev),
            width=self.width,
            height=self.height,
            timings=self.timer.report(self.frames),
            providers=self.pre.providers,
        )


def _concat_release(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate chunk tensors into one, freeing each chunk once copied, so the peak is the
    output plus one chunk rather than twice the output."""
    if len(chunks) == 1:
        return chunks[0]
    total = sum(c.shape[0] for c in chunks)
    out = torch.empty((total,) + tuple(chunks[0].shape[1:]), dtype=chunks[0].dtype, device=chunks[0].device)
    pos = 0
    for i in range(len(chunks)):
        c = chunks[i]
        out[pos : pos + c.shape[0]] = c
        pos += c.shape[0]
        chunks[i] = None
        del c
    return out
