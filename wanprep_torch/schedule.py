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
from .gate import GateConfig, MotionGate, correlation, gap_accepted, interpolate_boxes, interpolate_keypoints, signatures
from .interrupt import StopRequested
from .noise import NoiseEstimator
from .pose import PoseEstimator, box_to_center_window
from .runtime import run_in_batches
from .skeleton import BODY
from .timing import NULL_TIMER
from .track import SubjectTracker

__all__ = ["FrameRecord", "Scheduler", "PlannedFrame", "PlannedKey", "fill_gap", "stack_frames", "CPU_WORK_BATCH"]

# On the CPU the models run at batch 1 (fastest per frame there) but pre/post-processing runs
# on groups of frames, so per-op dispatch overhead is paid once per group. Only ungated runs
# group this way: tracking wants the freshest keypoints for the next box.
CPU_WORK_BATCH = 8


@dataclass
class FrameRecord:
    """One finished frame, handed out in frame order.

    index: the frame's position in the video; chunk, local: the (n, 3, H, W) chunk it came in
    and its position there (``view`` is the frame); keypoints: (133, 3) frame pixels and score; box: (5,) x1, y1, x2, y2, score on the
    host (-1: full-frame fallback); others: other persons counted; det_ran, pose_ran: which
    models ran on it (pose_ran False: interpolated); distance: the gate's motion estimate;
    cut: the frame starts a new scene (known with the gate on, or when cuts are asked for).
    still: a processed frame whose picture did not move since the processed frame before it
    (the end of a hold), or whose person held still since then by their keypoints
    (:meth:`~wanprep_torch.noise.NoiseEstimator.held_still`, where noise hides a hold in
    the picture): the difference of their keypoints is measurement noise alone.
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
    cut: bool = False
    still: bool = False

    @property
    def view(self) -> torch.Tensor:
        """(3, H, W) the frame."""
        return self.chunk[self.local]

    def motion_region(self) -> list:
        """Where the gate measures motion after this keyframe: the subject's box."""
        return self.box[:4].tolist()


@dataclass
class PlannedFrame:
    """A frame the gate has seen whose keyframe is not processed yet."""

    index: int
    chunk: torch.Tensor
    local: int
    distance: float
    cut: bool


@dataclass
class PlannedKey:
    """A planned keyframe and the frames between the previous keyframe and it."""

    frame: PlannedFrame
    gap: list


@dataclass
class _Segment:
    """Frames between two processed frames ``a`` and ``b``, interpolated unless checked."""

    a: FrameRecord
    b: FrameRecord
    gap: list


class Scheduler:
    """Runs a video's chunks through the stages; :meth:`feed` and :meth:`finish` return the
    frames that became final, in order.

    With the gate on, frames after the last keyframe wait (as views) for the next one; the
    gate's ``max_gap`` bounds that wait, so memory stays independent of the video's length.
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
        noise: NoiseEstimator | None = None,
        cuts: bool = False,
    ):
        """``on_oom(batch)``: the batch was halved after an out-of-memory error;
        ``on_frames(n)``: n more frames are finished; also called with 0 before each model
        batch, so a host can check for an interrupt while frames wait for their keyframe.
        ``noise``: fed with every pose-model measurement in frame order; the gate's check reads
        its body noise. ``cuts``: mark scene cuts with the gate off too (the gate marks them)."""
        self.noise = noise
        self.want_cuts = cuts
        self.last_sig = None  # the previous frame's signature (cuts with the gate off)
        self.det, self.pose, self.cfg = detector, estimator, gate
        self.on_frames = on_frames
        self.ws = workspace if workspace is not None else Workspace()
        self.timer = timer
        self.on_oom = on_oom
        self.motion: MotionGate | None = None
        self.tracker: SubjectTracker | None = None
        self.waiting: list[PlannedFrame] = []  # frames after the last planned keyframe
        self.planned: list[PlannedKey] = []  # keyframes planned, not yet processed
        self.anchor: FrameRecord | None = None  # the last processed keyframe
        self.index = 0  # frames fed so far
        self.others = 0  # other people counted at the last detection

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
        try:
            if self.motion is None:
                self._feed_ungated(chunk, out)
            else:
                self._feed_gated(chunk, out)
        except StopRequested as stop:
            stop.finished = out  # the frames already final stay with the caller
            raise
        self.index += n
        return out

    def finish(self) -> list[FrameRecord]:
        """End of the video: the last frame is always a keyframe."""
        out: list[FrameRecord] = []
        if self.waiting:
            last = self.waiting.pop()
            self.planned.append(PlannedKey(last, self.waiting))
            self.waiting = []
        self._run_planned(out)
        return out

    def _feed_ungated(self, chunk: torch.Tensor, out: list[FrameRecord]) -> None:
        group = max(self.batch_size, CPU_WORK_BATCH) if chunk.device.type == "cpu" else self.batch_size
        cuts = self._cuts(chunk)

        def step(s: int, e: int) -> None:
            n = e - s
            results = self._infer(chunk[s:e], [True] * n, [False] * n)
            recs = [
                FrameRecord(self.index + s + j, chunk, s + j, r.keypoints, r.box, r.others, r.det_ran, True, 0.0, cuts[s + j])
                for j, r in enumerate(results)
            ]
            self._hand_out(recs, out)

        run_in_batches(chunk.shape[0], group, step, on_oom=self.on_oom)

    def _feed_gated(self, chunk: torch.Tensor, out: list[FrameRecord]) -> None:
        with self.timer("gate"):
            # One host copy per chunk: the gate's per-frame decisions then read no device memory.
            sig = signatures(chunk, self.cfg.signature_width).cpu()
            fine = signatures(chunk, self.cfg.velocity_width).cpu() if self.cfg.velocity_width else None
        for i in range(chunk.shape[0]):
            with self.timer("gate"):
                # The motion is measured in the subject's newest box.
                region = None if self.anchor is None else self.anchor.motion_region()
                d = self.motion.step(sig[i], region, None if fine is None else fine[i])
            f = PlannedFrame(self.index + i, chunk, i, d.distance, d.cut)
            if (d.cut or d.boundary) and self.waiting:
                # The frame before a cut ends the old scene: a keyframe too, so no frame is
                # interpolated across the cut. The same where the picture stops or starts
                # moving: a hold and the motion beside it are gaps of their own.
                prev = self.waiting.pop()
                self.planned.append(PlannedKey(prev, self.waiting))
                self.waiting = []
            if d.process:
                self.planned.append(PlannedKey(f, self.waiting))
                self.waiting = []
            else:
                self.waiting.append(f)
            if len(self.planned) >= self.batch_size:
                self._run_planned(out)
        self._run_planned(out)

    # -- keyframes, checks, interpolation -----------------------------------------------------
    def _run_planned(self, out: list[FrameRecord]) -> None:
        """Process the planned keyframes, check the gaps before them, hand out their frames."""
        keys, self.planned = self.planned, []
        if not keys:
            return
        results: list = []

        def step(s: int, e: int) -> None:
            sub = keys[s:e]
            force = [k.frame.cut or k.frame.distance >= self.cfg.track_max_px for k in sub]
            results.extend(self._infer(stack_frames([k.frame for k in sub]), force, [k.frame.cut for k in sub]))

        run_in_batches(len(keys), self.batch_size, step, on_oom=self.on_oom)
        segments = []  # (segment, is a hold)
        recs = []
        prev = self.anchor
        for k, r in zip(keys, results):
            f = k.frame
            rec = FrameRecord(f.index, f.chunk, f.local, r.keypoints, r.box, r.others, r.det_ran, True, f.distance, f.cut)
            recs.append(rec)
            seg = _Segment(prev, rec, k.gap) if prev is not None and k.gap else None
            segments.append((seg, seg is not None and max(g.distance for g in k.gap + [f]) < self.cfg.hold_px))
            prev = rec
        done = {r.index: r for r in self._check([seg for seg, hold in segments if seg is not None and not hold])}
        # The end of a hold, or of a stretch the person held still through in a picture too
        # noisy to show it: its difference from the measured frame before is noise.
        ends = [(i, self._measured_before(seg, done)) for i, (seg, hold) in enumerate(segments) if seg is not None and not hold]
        if ends:
            host = torch.stack([torch.stack([b.keypoints, recs[i].keypoints]) for i, b in ends]).cpu()  # one host read
            for (i, _), pair in zip(ends, host):
                recs[i].still = NoiseEstimator.held_still(pair[0], pair[1], self.cfg.track_kp_score)
        for rec, (seg, hold) in zip(recs, segments):
            rec.still = rec.still or hold
            self._hand_out(self._fill(seg, done) if seg is not None else [rec], out)
        self.anchor = prev

    @staticmethod
    def _measured_before(seg: _Segment, done: dict) -> FrameRecord:
        """The last frame the pose model ran on before the segment's end: its last check, or its start."""
        checked = [done[g.index] for g in seg.gap if g.index in done]
        return checked[-1] if checked else seg.a

    def _check(self, segments: list[_Segment]) -> list[FrameRecord]:
        """Verify interpolated gaps, level by level (each level one batch of pose runs): the
        midpoint's real keypoints against the interpolation; a gap that disagrees is split."""
        checked: list[FrameRecord] = []
        level = [s for s in segments if s.gap]
        # Before the video's noise is known (no warm-up where the picture starts still), the
        # ends of gaps the body held still through are a sample of it (a split adds its halves).
        known = self.noise.sigma("body") if self.noise is not None else None
        first = NoiseEstimator(min_score=self.cfg.track_kp_score) if known is None else None
        while level:
            if first is not None:
                ends = torch.stack([torch.stack([s.a.keypoints, s.b.keypoints]) for s in level]).cpu()  # one host read
                for a, b in ends:
                    first.add_held(a, b)
            mids = [s.gap[len(s.gap) // 2] for s in level]
            boxes = torch.stack([interpolate_boxes(s.a.box, s.b.box, s.a.index, s.b.index, [m.index])[0] for s, m in zip(level, mids)])
            kps: list = []

            def step(i: int, j: int) -> None:
                self._hand_out([], None)  # a heartbeat before the model runs
                kps.extend(self.pose.estimate(FrameBatch(stack_frames(mids[i:j]), self.ws), boxes[i:j], self.timer).unbind(0))

            run_in_batches(len(level), self.batch_size, step, on_oom=self.on_oom)
            nxt = []
            with self.timer("gate"):
                idx = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
                est = self.noise if known is not None else first
                sigma = est.sigma("body") if est is not None else None
                sigma_mean = est.sigma_mean() if est is not None and sigma is not None else None
                accepted = gap_accepted(
                    torch.stack(kps), torch.stack([s.a.keypoints for s in level]), torch.stack([s.b.keypoints for s in level]),
                    idx([s.a.index for s in level]), idx([s.b.index for s in level]), idx([m.index for m in mids]), self.cfg,
                    sigma or 0.0, sigma_mean,
                ).tolist()  # one host read per level
                for s, m, k, box, ok in zip(level, mids, kps, boxes, accepted):
                    rec = FrameRecord(m.index, m.chunk, m.local, k, box, s.a.others, False, True, m.distance, m.cut)
                    checked.append(rec)
                    if not ok:
                        at = len(s.gap) // 2
                        nxt += [half for half in (_Segment(s.a, rec, s.gap[:at]), _Segment(rec, s.b, s.gap[at + 1 :])) if half.gap]
            level = nxt
        return checked

    def _fill(self, seg: _Segment, done: dict) -> list[FrameRecord]:
        """The gap's frames then its end, in order: checked frames as run, the others
        interpolated between the processed frames on either side."""

        def between(f, a, b) -> FrameRecord:
            k = interpolate_keypoints(a.keypoints, b.keypoints, a.index, b.index, [f.index], self.cfg.track_kp_score)[0]
            box = interpolate_boxes(a.box, b.box, a.index, b.index, [f.index])[0]
            return FrameRecord(f.index, f.chunk, f.local, k, box, a.others, False, False, f.distance, f.cut)

        with self.timer("gate"):
            return fill_gap(seg.gap, seg.a, seg.b, done, between) + [seg.b]

    def _infer(self, frames: torch.Tensor, force: list[bool], cuts: list[bool]) -> list["_Inferred"]:
        """Boxes and keypoints for consecutive frames (n, 3, H, W), in order.

        ``force``: run the detector on that frame; ``cuts``: also choose the subject afresh.
        """
        tr, timer = self.tracker, self.timer
        self._hand_out([], None)  # a heartbeat before the models run
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
            periodic = self.cfg.det_every > 0 and tr.since_det + 1 >= self.cfg.det_every
            if force[j] or tracked is None or periodic:
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
            # Tracking in doubt: weak body keypoints, or confident body keypoints at the crop
            # window's edge (the window no longer holds the body). Detect and run the pose
            # model again on those frames.
            lost = (kps[:, BODY, 2].mean(dim=1) < self.cfg.track_min_score) | _at_window_edge(
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
        # A frame without a detection reports the other people counted at the last one (as an
        # interpolated frame does), not none.
        for j in range(n):
            if det[j]:
                self.others = others[j]
            else:
                others[j] = self.others
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

    def _cuts(self, chunk: torch.Tensor) -> list[bool]:
        """Scene cuts with the gate off (when asked for): a frame whose signature correlates
        less than ``cut_correlation`` with the previous frame's."""
        n = chunk.shape[0]
        if not self.want_cuts:
            return [False] * n
        with self.timer("gate"):
            sig = signatures(chunk, self.cfg.signature_width).cpu()
            out = []
            for i in range(n):
                out.append(self.last_sig is None or correlation(self.last_sig, sig[i]) < self.cfg.cut_correlation)
                self.last_sig = sig[i]
        return out

    def _hand_out(self, recs: list[FrameRecord], out: list[FrameRecord] | None) -> None:
        if recs:
            out.extend(recs)
            if self.noise is not None:
                measured = [r for r in recs if r.pose_ran or r.cut]
                if measured:
                    kps = torch.stack([r.keypoints for r in measured]).cpu()  # one host read
                    for r, k in zip(measured, kps):
                        if r.cut:
                            self.noise.reset()
                        if r.pose_ran:
                            self.noise.add(k, r.index, still=r.still)
        if self.on_frames is not None:
            self.on_frames(len(recs))

@dataclass
class _Inferred:
    keypoints: torch.Tensor
    box: torch.Tensor
    others: int
    det_ran: bool


_FROM_DETECTION = object()  # planning marker: the box comes from this group's latest detection


def fill_gap(gap, start, end, done: dict, between) -> list:
    """The records of a gap's frames, in order: a frame in ``done`` (frame index -> record, the
    checked ones) as run, any other ``between(frame, before, after)`` from the processed records
    on either side of it (``start`` and ``end`` bound the gap; ``end`` is not included)."""
    known = [start] + [done[f.index] for f in gap if f.index in done] + [end]
    recs, j = [], 0
    for f in gap:
        if f.index in done:
            recs.append(done[f.index])
            continue
        while known[j + 1].index < f.index:
            j += 1
        recs.append(between(f, known[j], known[j + 1]))
    return recs


def _at_window_edge(
    kps: torch.Tensor, boxes: torch.Tensor, pose_hw: tuple[int, int], min_score: float, margin: float
) -> torch.Tensor:
    """(n,) bool: a body keypoint (rows 0-16) scored >= ``min_score`` lies within ``margin`` (a
    fraction of the window) of the edge of the pose window its box gives."""
    center, window = box_to_center_window(boxes, pose_hw)
    lo = center - window * (0.5 - margin)
    hi = center + window * (0.5 - margin)
    body = kps[:, BODY]
    xy = body[..., :2]
    outside = ((xy < lo[:, None]) | (xy > hi[:, None])).any(dim=-1)
    return (outside & (body[..., 2] >= min_score)).any(dim=1)


def stack_frames(frames: list) -> torch.Tensor:
    """(n, 3, H, W) of the given frames (anything with ``chunk`` and ``local``): a view when
    they are consecutive frames of one chunk, else a copy."""
    c = frames[0].chunk
    if all(f.chunk is c for f in frames):
        return _gather(c, [f.local for f in frames])
    return torch.stack([f.chunk[f.local] for f in frames])


def _gather(frames: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """The given frames: a view when they are consecutive, else a copy."""
    if idx == list(range(idx[0], idx[-1] + 1)):
        return frames[idx[0] : idx[-1] + 1]
    return frames[torch.tensor(idx, device=frames.device)]
