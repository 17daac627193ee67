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
from .detect import DetectConfig, detect_boxes, detect_candidates, resize_for_detector
from .gate import Scheduler, interpolate, interpolate_keypoints, resolve_gate, signatures
from .buffers import Workspace
from .frames import FrameBatch, as_tchw, iter_chunks
from .pose import IMAGENET_MEAN, IMAGENET_STD, box_to_center_window, crop_windows, decode_pose, window_pixel_bounds
from .runtime import ModelError, OrtModel, resolve_batch_size, run_in_batches
from .track import SubjectTracker

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
    det_ran: torch.Tensor  # (T,) bool: the detector ran on this frame
    pose_ran: torch.Tensor  # (T,) bool: the pose model ran (False: keypoints interpolated)
    gate_distance: torch.Tensor  # (T,) float: estimated motion (px) since the last processed frame
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
            "det_ran": self.det_ran.cpu().tolist(),
            "pose_ran": self.pose_ran.cpu().tolist(),
            "gate_distance": [round(v, 4) for v in self.gate_distance.cpu().tolist()],
            "providers": self.providers,
            "timings": self.timings,
        }


class _Timer:
    """Per-stage wall time; synchronises CUDA so GPU work is charged to the right stage.

    Stages may nest: an inner stage's time is charged to it alone, not also to the outer one,
    so no time is counted twice.
    """

    def __init__(self, device: torch.device):
        self.device = device if device.type == "cuda" else None
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open stage: time spent in stages nested in it

    @contextmanager
    def __call__(self, stage: str):
        if self.device is not None:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            if self.device is not None:
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - t0
            self.seconds[stage] += elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed

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
        gate: frame skipping: "safe" (default), "fast", "off" (every frame through both models,
            the reference's behaviour bit for bit), a GateConfig, or a dict of GateConfig fields
            (with an optional "preset").
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
        gate="safe",
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {self.device} requested but torch sees no CUDA device")
            if self.device.index is None:  # "cuda" means the current device; frames report an index
                self.device = torch.device("cuda", torch.cuda.current_device())
        if face_dtype not in (torch.float32, torch.float16, torch.uint8):
            raise ValueError(f"face_dtype must be torch.float32, torch.float16 or torch.uint8, got {face_dtype}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.det, self.pose = open_models(det_model, pose_model, self.device, providers, intra_op_threads)
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
        self.gate = resolve_gate(gate)
        ih, iw = self.det.input_hw
        self.det_hw = (ih or 640, iw or 640)
        ph, pw = self.pose.input_hw
        self.pose_hw = (ph or 256, pw or 192)
        # Normalisation as one multiply-add: (x - mean) / std = x * inv_std + bias.
        self._inv_std = 1.0 / torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._bias = -torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * self._inv_std
        self._ws = Workspace()

    @property
    def providers(self) -> dict:
        return {"detector": self.det.providers[0], "pose": self.pose.providers[0]}

    # -- one group of frames -------------------------------------------------------------
    def _resize_source(self, fb: FrameBatch) -> torch.Tensor:
        # uint8 channels-last resizes fastest on the CPU; on a GPU float costs nothing extra.
        return fb.uint8() if self.device.type == "cpu" else fb.float01()

    def _frames(self, view: torch.Tensor) -> FrameBatch:
        return FrameBatch(view, self._ws)

    def _run_detector(self, fb: FrameBatch, timer: _Timer) -> torch.Tensor:
        """Raw detector output for a group of frames."""
        with timer("detect_pre"):
            det_in = resize_for_detector(self._resize_source(fb), self.det_hw, self._ws)
        with timer("detect_model"):
            return self.det.run(det_in, batch_size=min(self.batch_size, len(fb)))

    def _run_pose(self, fb: FrameBatch, boxes: torch.Tensor, timer: _Timer) -> torch.Tensor:
        """Keypoints (n, 133, 3) in frame pixels for one box (n, 5) per frame."""
        n = len(fb)
        ws = self._ws
        with timer("pose_pre"):
            center, window = box_to_center_window(boxes.to(self.device), self.pose_hw)
            shape = (n, 3) + tuple(self.pose_hw)
            src, src_center = _crop_source(fb, center, window, self.pose_hw)
            crops = crop_windows(src, src_center, window, self.pose_hw, out=ws.get("crops", shape, torch.float32, self.device))
            pose_in = torch.addcmul(self._bias, crops, self._inv_std, out=ws.get("pose_input", shape, torch.float32, self.device))
        with timer("pose_model"):
            heatmaps = self.pose.run(pose_in, batch_size=min(self.batch_size, n), workspace=ws)
        with timer("pose_post"):
            return decode_pose(heatmaps, center, window, dark=self.dark)

    def _infer(self, fb: FrameBatch, timer: _Timer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detector (largest-box rule per frame) + pose model -> keypoints, boxes (n,5), others (n,)."""
        det_out = self._run_detector(fb, timer)
        with timer("detect_post"):
            boxes, others = detect_boxes(det_out, fb.hw, self.det_hw, self.det_cfg)
        kps = self._run_pose(fb, boxes, timer)
        return kps, boxes.to(self.device), others

    def model_inputs(self, frames: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detector and pose inputs this pipeline builds for ``frames`` (any accepted layout)
        and one person box (N, >=4) per frame: for timing the models alone on the same data.

        Returns:
            (N, 3, 640, 640) detector input and (N, 3, 256, 192) pose input, float32, new tensors.
        """
        fb = FrameBatch(as_tchw(frames))  # its own buffers: the results outlive the call
        det_in = resize_for_detector(self._resize_source(fb), self.det_hw)
        center, window = box_to_center_window(boxes.to(self.device).float(), self.pose_hw)
        src, src_center = _crop_source(fb, center, window, self.pose_hw)
        crops = crop_windows(src, src_center, window, self.pose_hw)
        return det_in, torch.addcmul(self._bias, crops, self._inv_std)

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
        acc = _Accumulator(self, timer, total)
        gated = _GatedRun(self, acc, timer, prog) if self.gate.enabled else None
        try:
            for chunk in iter_chunks(video, self.chunk_size):
                if chunk.device != self.device:
                    raise ValueError(f"frames are on {chunk.device} but the Preprocessor runs on {self.device}")
                if gated is not None:
                    gated.feed(chunk)
                else:
                    self._process_chunk(chunk, acc, timer, prog)
            if gated is not None:
                gated.finish()
        except (ValueError, TypeError) as exc:
            if gated is not None and gated.pending:
                gated.finish()  # frames already read are not lost
            if acc.frames:
                exc.partial_result = acc.finish()
            raise
        finally:
            prog.close()
        return acc.finish()

    def _process_chunk(self, chunk: torch.Tensor, acc: "_Accumulator", timer: _Timer, prog: _Progress) -> None:
        def step(s: int, e: int) -> None:
            fb = self._frames(chunk[s:e])
            kps, boxes, others = self._infer(fb, timer)
            prog.update("detect", e - s)
            prog.update("pose", e - s)
            with timer("wan"):
                acc.add(fb, kps, boxes, others)
            prog.update("wan", e - s)

        run_in_batches(chunk.shape[0], self._work_batch(), step, on_oom=self._shrink)

    def _shrink(self, batch: int) -> None:
        self.batch_size = min(self.batch_size, batch)


class _GatedRun:
    """Frame skipping for one video: schedules frames, tracks the subject, runs the models on
    the scheduled frames and interpolates the others (emitted in order to the accumulator).

    Skipped frames wait (as views) until the next processed frame; the gate's ``max_gap``
    bounds that wait, so memory stays independent of the video's length.
    """

    def __init__(self, pre: Preprocessor, acc: "_Accumulator", timer: _Timer, prog: _Progress):
        self.pre, self.acc, self.timer, self.prog = pre, acc, timer, prog
        self.cfg = pre.gate
        self.scheduler: Scheduler | None = None
        self.tracker: SubjectTracker | None = None
        self.pending: list[tuple[torch.Tensor, int, float]] = []  # (chunk, local index, distance)
        self.last = None  # (global index, kps (133,3), box (5,), others) of the last processed frame
        self.index = 0

    def feed(self, chunk: torch.Tensor) -> None:
        n = chunk.shape[0]
        if self.scheduler is None:
            h, w = chunk.shape[-2:]
            self.scheduler = Scheduler(self.cfg, int(w))
            self.tracker = SubjectTracker(self.cfg, self.pre.det_cfg, (int(h), int(w)))
        with self.timer("gate"):
            sig = signatures(chunk, self.cfg.signature_width)
        # Plan frames until a model batch of frames to process is collected, run it, emit, and
        # go on: the motion is measured in the subject's newest box.
        i = 0
        while i < n:
            start, todo, plan = i, [], []
            with self.timer("gate"):
                while i < n and len(todo) < self.pre.batch_size:
                    region = None if self.last is None else self.last[2][:4].tolist()
                    step = self.scheduler.step(sig[i], region)
                    plan.append(step)
                    if step[0]:
                        todo.append(i)
                    i += 1
            # A cut, or motion too fast to track, makes the detector run.
            force = [plan[j - start][1] or plan[j - start][2] >= self.cfg.track_max_px for j in todo]
            results = self._infer_frames(chunk, todo, force, [plan[j - start][1] for j in todo])
            for j, (process, cut, dist) in enumerate(plan, start):
                if process:
                    self._emit_processed(chunk, j, results[j], dist, cut=cut)
                else:
                    self.pending.append((chunk, j, dist))
        self.index += n

    def finish(self) -> None:
        """End of the video: the last frame is always processed, then the rest interpolated."""
        if not self.pending:
            return
        chunk, i, dist = self.pending.pop()
        base = self.index - chunk.shape[0]  # the last fed chunk
        res = self._infer_frames(chunk, [i], [dist >= self.cfg.track_max_px], [False])[i]
        self._emit_processed(chunk, i, res, dist, index=base + i)

    # -- inference on the scheduled frames ----------------------------------------------------
    def _infer_frames(self, chunk: torch.Tensor, todo: list[int], force: list[bool], cuts: list[bool]) -> dict:
        """Keypoints for the scheduled frames of a chunk: {local index: (kps, box, others, det_ran)}.

        ``force``: run the detector on that frame; ``cuts``: also choose the subject afresh.
        """
        out: dict = {}
        if not todo:
            return out

        def step(s: int, e: int) -> None:
            idx = todo[s:e]
            out.update(self._infer_tracked(chunk, idx, force[s:e], cuts[s:e]))

        # Batches of the model's size: tracking wants the freshest keypoints for the next box.
        run_in_batches(len(todo), self.pre.batch_size, step, on_oom=self.pre._shrink)
        return out

    def _infer_tracked(self, chunk: torch.Tensor, idx: list[int], force: list[bool], cuts: list[bool]) -> dict:
        pre, tr, timer = self.pre, self.tracker, self.timer
        fb = _gather(chunk, idx, pre._ws)
        n = len(idx)
        boxes: list = [None] * n
        others = [0] * n
        det = [False] * n
        # Plan the boxes in order: detect at cuts, every det_every frames, and where no tracked
        # box exists (or it left the frame); else reuse the newest box: the one from the last
        # keypoints, or this group's latest detection (filled in below).
        tracked = tr.tracked_box()
        for j in range(n):
            if cuts[j]:
                tr.reset()
                tracked = None
            if force[j] or tracked is None or tr.since_det + 1 >= self.cfg.det_every:
                det[j] = True
                tr.since_det = 0
                tracked = _FROM_DETECTION
            else:
                tr.skip_detection()
                boxes[j] = None if tracked is _FROM_DETECTION else tracked
        self._detect_into(fb, [j for j in range(n) if det[j]], boxes, others)
        last = None
        for j in range(n):
            if det[j]:
                last = boxes[j]
            elif boxes[j] is None:
                boxes[j] = last
        box_t = torch.stack(boxes)
        kps = pre._run_pose(fb, box_t, timer)
        # Tracking failed: weak body keypoints, or confident keypoints at the crop's edge (the
        # person reaches past the tracked window, as when a hidden head turns back). Detect
        # and run the pose model again on those frames.
        lost = (kps[:, :17, 2].mean(dim=1) < self.cfg.track_min_score) | _at_window_edge(
            kps, box_t.to(kps.device), pre.pose_hw, self.cfg.track_kp_score, self.cfg.track_edge_margin
        )
        lost = lost.cpu().tolist()
        redo = [j for j in range(n) if not det[j] and lost[j]]
        if redo:
            self._detect_into(_gather(fb.view, redo, pre._ws), None, boxes, others, targets=redo)
            for j in redo:
                det[j] = True
            sub = torch.stack([boxes[j] for j in redo])
            kps[redo] = pre._run_pose(_gather(fb.view, redo, pre._ws), sub, timer)
            box_t = torch.stack(boxes)
        tr.observe(kps[-1])
        box_dev = box_t.to(pre.device)
        return {i: (kps[j], box_dev[j], others[j], det[j]) for j, i in enumerate(idx)}

    def _detect_into(self, fb: FrameBatch, sel, boxes: list, others: list, targets: list | None = None) -> None:
        """Run the detector on frames ``sel`` of ``fb`` (or all of it, writing to ``targets``) and
        choose each frame's subject box in order."""
        targets = targets if targets is not None else sel
        if not targets:
            return
        sub = fb if sel is None else _gather(fb.view, sel, self.pre._ws)
        raw = self.pre._run_detector(sub, self.timer)
        with self.timer("detect_post"):
            cands = detect_candidates(raw, sub.hw, self.pre.det_hw, self.pre.det_cfg)
            for j, d in zip(targets, cands):
                boxes[j], others[j] = self.tracker.choose(d)

    # -- emission in frame order ----------------------------------------------------------------
    def _emit_processed(
        self, chunk: torch.Tensor, i: int, res, dist: float, index: int | None = None, cut: bool = False
    ) -> None:
        g = self.index + i if index is None else index
        kps, box, others, det_ran = res
        items = []
        if self.pending:
            g0, k0, b0, o0 = self.last
            gs = [g0 + 1 + k for k in range(len(self.pending))]
            # Frames waiting before a cut resembled the frame before them, not the new scene:
            # they hold its values instead of blending across the cut.
            k1, b1 = (k0, b0) if cut else (kps, box)
            with self.timer("gate"):
                ks = interpolate_keypoints(k0, k1, g0, g, gs, self.cfg.track_kp_score)
                bs = interpolate(b0, b1, g0, g, gs)
            for (c, li, d), k, b in zip(self.pending, ks, bs):
                items.append((c, li, k, b, o0, False, False, d))
            self.pending.clear()
        items.append((chunk, i, kps, box, others, det_ran, True, dist))
        self.last = (g, kps, box, others)
        for seg in _segments(items):
            c, a, b = seg[0][0], seg[0][1], seg[-1][1] + 1
            with self.timer("wan"):
                self.acc.add(
                    self.pre._frames(c[a:b]),
                    torch.stack([it[2] for it in seg]),
                    torch.stack([it[3] for it in seg]),
                    torch.tensor([it[4] for it in seg]),
                    det_ran=[it[5] for it in seg],
                    pose_ran=[it[6] for it in seg],
                    distance=[it[7] for it in seg],
                )
            # Skipped frames count as done for every stage once they are interpolated.
            for stage in self.prog.STAGES:
                self.prog.update(stage, b - a)


def _at_window_edge(
    kps: torch.Tensor, boxes: torch.Tensor, pose_hw: tuple[int, int], min_score: float, margin: float
) -> torch.Tensor:
    """(n,) bool: a keypoint scored >= ``min_score`` lies within ``margin`` (a fraction of the
    window) of the edge of the pose window its box gives."""
    center, window = box_to_center_window(boxes, pose_hw)
    lo = center - window * (0.5 - margin)
    hi = center + window * (0.5 - margin)
    xy = kps[..., :2]
    outside = ((xy < lo[:, None]) | (xy > hi[:, None])).any(dim=-1)
    return (outside & (kps[..., 2] >= min_score)).any(dim=1)


_FROM_DETECTION = object()  # planning marker: the box comes from this group's latest detection


def _crop_source(
    fb: FrameBatch, center: torch.Tensor, window: torch.Tensor, pose_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float frames for the pose crop and the window centres in their coordinates: float32
    input as it is; other dtypes converted only where the windows can read."""
    if fb.view.dtype == torch.float32:
        return fb.float01(), center
    bounds = window_pixel_bounds(center, window, pose_hw, fb.hw)
    if bounds is None:  # every window is off the frame: the crops are zeros either way
        bounds = (0, 0, 1, 1)
    x0, y0 = bounds[:2]
    return fb.float01_region(*bounds), center - torch.tensor([x0, y0], device=center.device, dtype=center.dtype)


def _gather(frames: torch.Tensor, idx: list[int], workspace: Workspace) -> FrameBatch:
    """A FrameBatch of the given frames: a view when they are consecutive, else a copy."""
    if idx == list(range(idx[0], idx[-1] + 1)):
        return FrameBatch(frames[idx[0] : idx[-1] + 1], workspace)
    return FrameBatch(frames[torch.tensor(idx, device=frames.device)], workspace)


def _segments(items: list) -> list[list]:
    """Split emission items into runs of consecutive frames of the same chunk."""
    runs: list[list] = []
    for it in items:
        if runs and runs[-1][-1][0] is it[0] and runs[-1][-1][1] + 1 == it[1]:
            runs[-1].append(it)
        else:
            runs.append([it])
    return runs


def open_models(det_model, pose_model, device: torch.device, providers=None, intra_op_threads=None) -> tuple[OrtModel, OrtModel]:
    """The detector and pose sessions, with one warning (not one per model) when CUDA was asked
    for but ONNX Runtime's CUDA provider is missing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = OrtModel(det_model, device, providers, intra_op_threads, role="detector")
        pose = OrtModel(pose_model, device, providers, intra_op_threads, role="pose")
    fallback = [m.role for m in (det, pose) if device.type == "cuda" and not m.on_cuda]
    for w in caught:  # pass on anything else the sessions said
        if not (fallback and "CUDA provider is not available" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if fallback:
        warnings.warn(
            f"ONNX Runtime's CUDA provider is not available (session providers: {det.providers}); "
            f"the {' and '.join(fallback)} model{'s run' if len(fallback) > 1 else ' runs'} on the CPU provider "
            "and frames are copied to the host for it. Install onnxruntime-gpu for CUDA.",
            RuntimeWarning,
            stacklevel=3,
        )
    return det, pose


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
    """Collects outputs in frame order; derives the Wan outputs with state carried across
    groups of frames.

    Face crops go straight into the output: one (T, S, S, 3) tensor when the video's length is
    known, else one tensor per group, joined at the end.
    """

    def __init__(self, pre: Preprocessor, timer: _Timer, total: int | None = None):
        self.pre = pre
        self.timer = timer
        self.total = total
        self.frames = 0
        self.kps, self.boxes, self.others, self.metas = [], [], [], []
        self.face_out: torch.Tensor | None = None  # (T, S, S, 3) when total is known
        self.face_chunks: list[torch.Tensor] = []  # otherwise, one per group
        self.face_boxes: list = []
        self.face_held: list[bool] = []
        self.det_ran: list[bool] = []
        self.pose_ran: list[bool] = []
        self.distance: list[float] = []
        self.last_body = None
        self.last_good = None
        self.first_good = None
        # Leading groups with no face seen yet: (frames, their slots in the face output),
        # cropped once the first good box is known (or the video ends).
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.width = self.height = None

    def _face_slots(self, n: int) -> torch.Tensor:
        """The face output rows of the next ``n`` frames."""
        pre = self.pre
        dev = pre.face_device or pre.device
        s = pre.face_size
        if self.total is not None:
            if self.face_out is None:
                self.face_out = torch.empty((self.total, s, s, 3), dtype=pre.face_dtype, device=dev)
            return self.face_out[self.frames : self.frames + n]
        slots = torch.empty((n, s, s, 3), dtype=pre.face_dtype, device=dev)
        self.face_chunks.append(slots)
        return slots

    def add(
        self,
        fb: FrameBatch,
        kps: torch.Tensor,
        boxes: torch.Tensor,
        others: torch.Tensor,
        det_ran: list | None = None,
        pose_ran: list | None = None,
        distance: list | None = None,
    ) -> None:
        # State changes only after the face crops succeed, so an out-of-memory retry of this
        # group starts from the same state.
        pre = self.pre
        h, w = fb.hw
        n = len(fb)
        self.height, self.width = h, w
        metas, last_body = wan.pose_metas(kps, w, h, self.last_body)
        fb_boxes, valid = wan.face_boxes(kps, w, h)
        first_good = self.first_good
        if first_good is None and bool(valid.any()):
            first_good = tuple(fb_boxes[int(torch.nonzero(valid)[0])].tolist())
        resolved, held, last_good = wan.resolve_face_boxes(
            fb_boxes, valid, w, h, pre.face_padding, last_good=self.last_good, first_good=first_good
        )
        slots = self._face_slots(n)
        if first_good is None:
            # No face seen yet: keep these frames until one is, or the video ends.
            self.pending.append((fb.view, slots))
        else:
            with self.timer("faces"):
                self._crop_faces(fb, resolved, slots)
                self._flush_pending(first_good)
        self.last_body, self.first_good, self.last_good = last_body, first_good, last_good
        self.kps.append(kps)
        self.boxes.append(boxes)
        self.others.append(others)
        self.metas.extend(metas)
        self.face_boxes.extend(resolved)
        self.face_held.extend(held)
        self.det_ran.extend(det_ran if det_ran is not None else [True] * n)
        self.pose_ran.extend(pose_ran if pose_ran is not None else [True] * n)
        self.distance.extend(distance if distance is not None else [0.0] * n)
        self.frames += n

    def _crop_faces(self, fb: FrameBatch, boxes: list, slots: torch.Tensor) -> None:
        """Face crops of ``fb`` into ``slots`` (n, S, S, 3) in the output's dtype and device."""
        pre = self.pre
        if pre.device.type == "cpu" and slots.device.type == "cpu":
            wan.crop_resize(fb.uint8(), boxes, pre.face_size, out=slots)  # 0-255 values
            if slots.dtype != torch.uint8:
                slots.mul_(1.0 / 255.0)
            return
        faces = wan.crop_resize(fb.float01(), boxes, pre.face_size)
        if slots.dtype == torch.uint8:
            faces = faces.mul_(255.0).round_().clamp_(0, 255)
        slots.copy_(faces)

    def _flush_pending(self, box) -> None:
        """Crop the leading faceless frames with ``box`` (the first good one, or the fallback)."""
        if not self.pending:
            return
        w, h = self.width, self.height
        box = wan.pad_box(box, self.pre.face_padding, w, h) if self.pre.face_padding else box
        done = 0
        for view, slots in self.pending:
            # A fresh FrameBatch: the earlier one's converted frames lived in reused buffers.
            self._crop_faces(self.pre._frames(view), [box] * view.shape[0], slots)
            done += view.shape[0]
        self.face_boxes[:done] = [box] * done  # the pending frames are the leading ones
        self.pending.clear()

    def finish(self) -> Result:
        with self.timer("wan"):
            if self.pending:
                fallback = wan.fallback_face_box(self.width, self.height)
                with self.timer("faces"):
                    self._flush_pending(fallback)
            kps = torch.cat(self.kps)
            with self.timer("faces"):
                faces = self.face_out[: self.frames] if self.face_out is not None else _concat_release(self.face_chunks)
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
            det_ran=torch.tensor(self.det_ran, dtype=torch.bool, device=dev),
            pose_ran=torch.tensor(self.pose_ran, dtype=torch.bool, device=dev),
            gate_distance=torch.tensor(self.distance, dtype=torch.float32, device=dev),
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
