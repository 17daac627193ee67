"""The scheduler: for each frame, run the detector, run the pose model, or interpolate.

It drives the two stages (:class:`~wanprep_torch.detect.PersonDetector`,
:class:`~wanprep_torch.pose.PoseEstimator`) over a stream of chunks and hands out
:class:`FrameRecord`s in frame order. ``gate="off"`` is its simplest setting: every frame
through both models with the reference's per-frame largest-box rule. With the gate on, the
motion gate (:mod:`~wanprep_torch.gate`) picks the frames to process and the subject tracker
(:mod:`~wanprep_torch.track`) supplies boxes between detections.

Knows nothing of ONNX: the stages own their sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .buffers import Workspace
from .detect import PersonDetector
from .frames import FrameBatch
from .gate import Decision, GateConfig, MotionGate, interpolate, interpolate_keypoints, signatures
from .pose import PoseEstimator, box_to_center_window
from .runtime import run_in_batches
from .timing import NULL_TIMER
from .track import SubjectTracker

__all__ = ["Decision", "FrameRecord", "Scheduler"]

# On the CPU the models run at batch 1 (fastest per frame there) but pre/post-processing runs
# on groups of frames, so per-op dispatch overhead is paid once per group. Only ungated runs
# group this way: tracking wants the freshest keypoints for the next box.
_CPU_WORK_BATCH = 8


@dataclass
class FrameRecord:
    """One finished frame, handed out in frame order.

    index: the frame's position in the video; chunk, local: the (n, 3, H, W) chunk it came in
    and its position there (``view`` is the frame); keypoints: (133, 3) frame pixels and score; box: (5,) x1, y1, x2, y2, score on the
    host (-1: full-frame fallback); others: other persons counted; det_ran, pose_ran: which
    models ran on it (pose_ran False: interpolated); distance: the gate's motion estimate.
    """

    index: int
    chunk: torch.Tensor
    local: int
    keypoints: torch.Tensor
    box: torch.Tensor
    others: int
    det_ran: bool
    pose_ran: bool
    distance: float

    @property
    def view(self) -> torch.Tensor:
        """(3, H, W) the frame."""
        return self.chunk[self.local]


@dataclass
class _Pending:
    """A skipped frame waiting for the next processed one."""

    index: int
    chunk: torch.Tensor
    local: int
    distance: float


class Scheduler:
    """Runs a video's chunks through the stages; :meth:`feed` and :meth:`finish` return the
    frames that became final, in order.

    Skipped frames wait (as views) until the next processed frame; the gate's ``max_gap``
    bounds that wait, so memory stays independent of the video's length.
    """

    def __init__(
        self,
        detector: PersonDetector,
        estimator: PoseEstimator,
        gate: GateConfig,
        workspace: Workspace | None = None,
        timer=NULL_TIMER,
        on_oom: Callable[[int], None] | None = None,
        on_frames: Callable[[int], None] | None = None,
    ):
        """``on_oom(batch)``: the batch was halved after an out-of-memory error;
        ``on_frames(n)``: n more frames are finished (for progress and interrupt checks)."""
        self.det, self.pose, self.cfg = detector, estimator, gate
        self.on_frames = on_frames
        self.ws = workspace if workspace is not None else Workspace()
        self.timer = timer
        self.on_oom = on_oom
        self.motion: MotionGate | None = None
        self.tracker: SubjectTracker | None = None
        self.pending: list[_Pending] = []
        self.last: FrameRecord | None = None  # the last processed frame
        self.index = 0  # frames fed so far

    @property
    def batch_size(self) -> int:
        return self.pose.batch_size

    # -- the stream ------------------------------------------------------------------------
    def feed(self, chunk: torch.Tensor) -> list[FrameRecord]:
        """Schedule and run one (n, 3, H, W) chunk; returns the frames now final."""
        n = chunk.shape[0]
        if self.tracker is None:
            h, w = (int(v) for v in chunk.shape[-2:])
            self.tracker = SubjectTracker(self.cfg, self.det.config, (h, w))
            self.motion = MotionGate(self.cfg, w) if self.cfg.enabled else None
        out: list[FrameRecord] = []
        if self.motion is None:
            self._feed_ungated(chunk, out)
        else:
            self._feed_gated(chunk, out)
        self.index += n
        return out

    def finish(self) -> list[FrameRecord]:
        """End of the video: the last frame is always processed, then the rest interpolated."""
        if not self.pending:
            return []
        p = self.pending.pop()
        done = self._infer(p.chunk[p.local : p.local + 1], [p.distance >= self.cfg.track_max_px], [False])
        out: list[FrameRecord] = []
        self._emit(p.index, p.chunk, p.local, done[0], p.distance, False, out)
        return out

    def _feed_ungated(self, chunk: torch.Tensor, out: list[FrameRecord]) -> None:
        group = max(self.batch_size, _CPU_WORK_BATCH) if chunk.device.type == "cpu" else self.batch_size

        def step(s: int, e: int) -> None:
            n = e - s
            results = self._infer(chunk[s:e], [True] * n, [False] * n)
            for j, r in enumerate(results):
                self._emit(self.index + s + j, chunk, s + j, r, 0.0, False, out)

        run_in_batches(chunk.shape[0], group, step, on_oom=self.on_oom)

    def _feed_gated(self, chunk: torch.Tensor, out: list[FrameRecord]) -> None:
        n = chunk.shape[0]
        with self.timer("gate"):
            # One host copy per chunk: the gate's per-frame decisions then read no device memory.
            sig = signatures(chunk, self.cfg.signature_width).cpu()
        # Plan frames until a model batch of frames to process is collected, run it, emit, and
        # go on: the motion is measured in the subject's newest box.
        i = 0
        while i < n:
            start, todo, plan = i, [], []
            with self.timer("gate"):
                while i < n and len(todo) < self.batch_size:
                    region = None if self.last is None else self.last.box[:4].tolist()
                    d = self.motion.step(sig[i], region)
                    plan.append(d)
                    if d.process:
                        todo.append(i)
                    i += 1
            # A cut, or motion too fast to track, makes the detector run.
            force = [plan[j - start].cut or plan[j - start].distance >= self.cfg.track_max_px for j in todo]
            cuts = [plan[j - start].cut for j in todo]
            results = dict(zip(todo, self._infer_at(chunk, todo, force, cuts)))
            for j, d in enumerate(plan, start):
                if d.process:
                    self._emit(self.index + j, chunk, j, results[j], d.distance, d.cut, out)
                else:
                    self.pending.append(_Pending(self.index + j, chunk, j, d.distance))

    # -- inference on the scheduled frames ----------------------------------------------------
    def _infer_at(self, chunk: torch.Tensor, todo: list[int], force: list[bool], cuts: list[bool]) -> list:
        """Results for frames ``todo`` of a chunk, in model batches (out-of-memory halves them)."""
        results: list = []

        def step(s: int, e: int) -> None:
            results.extend(self._infer(_gather(chunk, todo[s:e]), force[s:e], cuts[s:e]))

        run_in_batches(len(todo), self.batch_size, step, on_oom=self.on_oom)
        return results

    def _infer(self, frames: torch.Tensor, force: list[bool], cuts: list[bool]) -> list["_Inferred"]:
        """Boxes and keypoints for consecutive frames (n, 3, H, W), in order.

        ``force``: run the detector on that frame; ``cuts``: also choose the subject afresh.
        """
        tr, timer = self.tracker, self.timer
        fb = FrameBatch(frames, self.ws)
        n = len(fb)
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
        kps = self.pose.estimate(fb, box_t, timer)
        redo = []
        if not all(det):
            # Tracking failed: weak body keypoints, or confident keypoints at the crop's edge
            # (the person reaches past the tracked window, as when a hidden head turns back).
            # Detect and run the pose model again on those frames.
            lost = (kps[:, :17, 2].mean(dim=1) < self.cfg.track_min_score) | _at_window_edge(
                kps, box_t.to(kps.device), self.pose.input_hw, self.cfg.track_kp_score, self.cfg.track_edge_margin
            )
            lost = lost.cpu().tolist()
            redo = [j for j in range(n) if not det[j] and lost[j]]
        if redo:
            sub = _gather(fb.view, redo)
            self._detect_into(FrameBatch(sub, self.ws), None, boxes, others, targets=redo)
            for j in redo:
                det[j] = True
            kps[redo] = self.pose.estimate(FrameBatch(sub, self.ws), torch.stack([boxes[j] for j in redo]), timer)
        tr.observe(kps[-1])
        return [_Inferred(kps[j], boxes[j], others[j], det[j]) for j in range(n)]

    def _detect_into(self, fb: FrameBatch, sel, boxes: list, others: list, targets: list | None = None) -> None:
        """Run the detector on frames ``sel`` of ``fb`` (or all of it, writing to ``targets``) and
        choose each frame's subject box in order."""
        targets = targets if targets is not None else sel
        if not targets:
            return
        sub = fb if sel is None or len(sel) == len(fb) else FrameBatch(_gather(fb.view, sel), self.ws)
        cands = self.det.candidates(sub, self.timer)
        with self.timer("detect_post"):
            for j, d in zip(targets, cands):
                chosen = self.tracker.choose(d)
                boxes[j], others[j] = chosen.box, chosen.others

    # -- emission in frame order ----------------------------------------------------------------
    def _emit(self, index: int, chunk: torch.Tensor, local: int, res: "_Inferred", dist: float, cut: bool, out: list) -> None:
        """A processed frame: interpolate the frames waiting before it, then hand out all."""
        done = len(self.pending) + 1
        if self.pending:
            a = self.last
            gs = [p.index for p in self.pending]
            # Frames waiting before a cut resembled the frame before them, not the new scene:
            # they hold its values instead of blending across the cut.
            k1, b1 = (a.keypoints, a.box) if cut else (res.keypoints, res.box)
            with self.timer("gate"):
                ks = interpolate_keypoints(a.keypoints, k1, a.index, index, gs, self.cfg.track_kp_score)
                bs = interpolate(a.box, b1, a.index, index, gs)
            for p, k, b in zip(self.pending, ks, bs):
                out.append(FrameRecord(p.index, p.chunk, p.local, k, b, a.others, False, False, p.distance))
            self.pending.clear()
        rec = FrameRecord(index, chunk, local, res.keypoints, res.box, res.others, res.det_ran, True, dist)
        out.append(rec)
        self.last = rec
        if self.on_frames is not None:
            self.on_frames(done)


@dataclass
class _Inferred:
    keypoints: torch.Tensor
    box: torch.Tensor
    others: int
    det_ran: bool


_FROM_DETECTION = object()  # planning marker: the box comes from this group's latest detection


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


def _gather(frames: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """The given frames: a view when they are consecutive, else a copy."""
    if idx == list(range(idx[0], idx[-1] + 1)):
        return frames[idx[0] : idx[-1] + 1]
    return frames[torch.tensor(idx, device=frames.device)]
