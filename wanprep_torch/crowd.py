"""Several people: the scheduler for ``Preprocessor(people=N)`` and the primary subject's rule.

The frame-level decisions are shared by everyone in view: the motion gate picks the keyframes
(motion measured in each person's box, the largest counts), the detector runs on every
keyframe (people entering are found there), and the pose model runs once per group of frames
on every chosen person together (one batched call, ``frame_index`` naming each crop's frame).
What is per person: the identity (:class:`~wanprep_torch.track.PersonTrack`, associated by box
overlap and keypoint similarity against a constant-velocity prediction or the last place
seen), the measurement noise (:class:`PeopleNoise`), and the gate's check of each gap: a gap is
interpolated per identity seen at both ends, and its midpoint check must agree for every one of
them within what that identity's measured noise explains
(:func:`~wanprep_torch.gate.gap_accepted`). A gap whose ends see different people is split
until the frame where someone appeared or left is found (its midpoints run the detector too).

Limits (also in the README): two people who overlap on screen are told apart only by their
predicted boxes and keypoints, so identical-looking people crossing can swap ids; a person
seen only between two keyframes whose ends both see the same set of people is missed; after a
cut, identities are matched by position alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .detect import DetectConfig, PersonDetector, count_others, largest_person
from .frames import FrameBatch
from .gate import GateConfig, MotionGate, gap_accepted, interpolate_boxes, interpolate_keypoints
from .noise import NoiseEstimator
from .pose import PoseEstimator
from .runtime import run_in_batches
from .schedule import CPU_WORK_BATCH, PlannedFrame, PlannedKey, Scheduler, fill_gap, stack_frames
from .skeleton import BODY
from .timing import NULL_TIMER
from .track import PeopleConfig, PeopleTracker, assign, association_cost, pose_candidates

__all__ = ["PersonObs", "CrowdRecord", "CrowdScheduler", "PeopleNoise", "PrimaryChooser"]


@dataclass
class PersonObs:
    """One person on one frame: keypoints (133, 3) in frame pixels, box (5,) x1, y1, x2, y2,
    score (host)."""

    keypoints: torch.Tensor
    box: torch.Tensor


@dataclass
class CrowdRecord:
    """One finished frame with everyone in it: ``people`` maps identity -> :class:`PersonObs`
    (the identities in view); the rest as :class:`~wanprep_torch.schedule.FrameRecord`."""

    index: int
    chunk: torch.Tensor
    local: int
    people: dict
    det_ran: bool
    pose_ran: bool
    distance: float
    cut: bool = False

    @property
    def view(self) -> torch.Tensor:
        return self.chunk[self.local]

    def motion_region(self) -> list | None:
        """Where the gate measures motion after this keyframe: in each person's box (the
        largest motion counts: one person walking is not averaged away by others standing);
        the whole frame with nobody in view."""
        if not self.people:
            return None
        return [p.box[:4].tolist() for p in self.people.values()]


@dataclass
class _Segment:
    a: CrowdRecord
    b: CrowdRecord
    gap: list


class PeopleNoise:
    """The measurement noise of each identity's keypoints: one
    :class:`~wanprep_torch.noise.NoiseEstimator` per identity, fed with the measured frames
    in order (a triple of measurements belongs to one person's track)."""

    def __init__(self, min_score: float = 0.3):
        self.min_score = min_score
        self.by_id: dict[int, NoiseEstimator] = {}

    def of(self, track_id: int) -> NoiseEstimator:
        if track_id not in self.by_id:
            self.by_id[track_id] = NoiseEstimator(min_score=self.min_score)
        return self.by_id[track_id]

    def add(self, record: "CrowdRecord") -> None:
        """A measured frame: every identity in it (a cut first forgets the frames before)."""
        if record.cut:
            for est in self.by_id.values():
                est.reset()
        for tid, p in record.people.items():
            self.of(tid).add(p.keypoints, record.index)

    def sigmas(self, track_id: int | None = None) -> dict:
        """{group: sigma or None} of one identity; with None, per group the median over the
        identities with an estimate (the video's noise level, as ``Result.noise`` reports it)."""
        if track_id is not None:
            est = self.by_id.get(track_id)
            return est.sigmas() if est is not None else {}
        per = [e.sigmas() for e in self.by_id.values()]
        out = {}
        for group in sorted({g for p in per for g in p}):
            vals = sorted(v for p in per if (v := p.get(group)) is not None)
            out[group] = vals[len(vals) // 2] if vals else None
        return out


class CrowdScheduler(Scheduler):
    """:class:`~wanprep_torch.schedule.Scheduler` for several people: the same keyframe
    planning (its ``feed``/``finish`` stream), with keyframes, checks and interpolation done
    for every identity; hands out :class:`CrowdRecord`s in frame order."""

    def __init__(
        self,
        detector: PersonDetector,
        estimator: PoseEstimator,
        gate: GateConfig,
        people: PeopleConfig,
        workspace=None,
        timer=NULL_TIMER,
        on_oom=None,
        on_frames=None,
        cuts: bool = False,
    ):
        # No shared noise estimate: it follows one track; each identity has its own.
        super().__init__(detector, estimator, gate, workspace, timer, on_oom, on_frames, noise=None, cuts=cuts)
        self.people_noise = PeopleNoise(gate.track_kp_score)
        self.people_cfg = people
        self.people = PeopleTracker(people)
        self.tracker = self.people  # Scheduler.feed builds a SubjectTracker only when this is None

    def feed(self, chunk: torch.Tensor) -> list[CrowdRecord]:
        if self.motion is None and self.cfg.enabled:
            self.motion = MotionGate(self.cfg, int(chunk.shape[-1]))
        return super().feed(chunk)

    # -- every frame (gate off) -------------------------------------------------------------
    def _feed_ungated(self, chunk: torch.Tensor, out: list) -> None:
        group = max(self.batch_size, CPU_WORK_BATCH) if chunk.device.type == "cpu" else self.batch_size
        cuts = self._cuts(chunk)

        def step(s: int, e: int) -> None:
            frames = [PlannedFrame(self.index + j, chunk, j, 0.0, cuts[j]) for j in range(s, e)]
            seen = self._observe(frames)
            self._hand_out([CrowdRecord(f.index, chunk, f.local, p, True, True, 0.0, f.cut) for f, p in zip(frames, seen)], out)

        run_in_batches(chunk.shape[0], group, step, on_oom=self.on_oom)

    # -- keyframes ----------------------------------------------------------------------------
    def _run_planned(self, out: list) -> None:
        keys: list[PlannedKey] = self.planned
        self.planned = []
        if not keys:
            return
        seen: list = []

        def step(s: int, e: int) -> None:
            seen.extend(self._observe([k.frame for k in keys[s:e]]))

        run_in_batches(len(keys), self.batch_size, step, on_oom=self.on_oom)
        segments, recs = [], []
        prev = self.anchor
        for k, people in zip(keys, seen):
            f = k.frame
            rec = CrowdRecord(f.index, f.chunk, f.local, people, True, True, f.distance, f.cut)
            recs.append(rec)
            seg = _Segment(prev, rec, k.gap) if prev is not None and k.gap else None
            hold = seg is not None and set(prev.people) == set(people) and max(g.distance for g in k.gap + [f]) < self.cfg.hold_px
            segments.append((seg, hold))
            prev = rec
        done = {r.index: r for r in self._check([seg for seg, hold in segments if seg is not None and not hold])}
        for rec, (seg, _hold) in zip(recs, segments):
            self._hand_out(self._fill(seg, done) if seg is not None else [rec], out)
        self.anchor = prev

    def _observe(self, frames: list) -> list[dict]:
        """Keyframes in order: the detector on all of them, the pose model on every chosen box
        of all of them (one call), then the identities frame by frame."""
        self._hand_out([], None)  # a heartbeat before the models run
        fb = FrameBatch(stack_frames(frames), self.ws)
        cands = self.det.candidates(fb, self.timer)
        chosen = []
        with self.timer("detect_post"):
            for f, d in zip(frames, cands):
                if f.cut:
                    self.people.reset_motion()
                _ids, expected, _k = self.people.predictions(f.index)
                chosen.append(pose_candidates(d, expected, self.people_cfg.max_people, self.det.config, self.people_cfg.min_iou))
        kps = self._pose(fb, chosen)
        seen = []
        with self.timer("detect_post"):
            for f, boxes, k in zip(frames, chosen, kps):
                match = self.people.step(f.index, boxes, k)
                seen.append({tid: PersonObs(k[c], boxes[c]) for tid, c in sorted(match.matched.items())})
        return seen

    def _pose(self, fb: FrameBatch, boxes: list) -> list[torch.Tensor]:
        """Keypoints (K_j, 133, 3) on the host for the K_j boxes of each frame j of ``fb``,
        from one pose call over all of them."""
        counts = [b.shape[0] for b in boxes]
        if not sum(counts):
            return [torch.zeros(0, 133, 3) for _ in boxes]
        # One box on every frame: the single-person crop (no per-window regions needed).
        idx = None if counts == [1] * len(counts) else torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor(counts))
        kps = self.pose.estimate(fb, torch.cat(boxes), self.timer, frame_index=idx).float().cpu()
        return list(kps.split(counts))

    # -- checks and interpolation --------------------------------------------------------------
    def _check(self, segments: list[_Segment]) -> list[CrowdRecord]:
        """Verify gaps level by level, as the single-person scheduler does, for every identity:
        a gap whose ends see the same people has its midpoint checked against each one's
        interpolation; a gap whose ends differ runs the detector on its midpoint too, and is
        split until the frame of the change is found."""
        checked: list[CrowdRecord] = []
        level = [s for s in segments if s.gap and (s.a.people or s.b.people)]
        while level:
            self._hand_out([], None)
            mids = [s.gap[len(s.gap) // 2] for s in level]
            same = [set(s.a.people) == set(s.b.people) for s in level]
            expect = [_expected(s, m.index) for s, m in zip(level, mids)]
            fb = FrameBatch(stack_frames(mids), self.ws)
            redetect = [j for j, ok in enumerate(same) if not ok]
            boxes = [torch.stack([e.box for e in ex.values()]) if same[j] else None for j, ex in enumerate(expect)]
            if redetect:
                sub = FrameBatch(stack_frames([mids[j] for j in redetect]), self.ws) if len(redetect) < len(mids) else fb
                for j, d in zip(redetect, self.det.candidates(sub, self.timer)):
                    want = torch.stack([e.box for e in expect[j].values()])
                    boxes[j] = pose_candidates(d, want, self.people_cfg.max_people, self.det.config, self.people_cfg.min_iou)
            kps = self._pose(fb, boxes)
            nxt = []
            with self.timer("gate"):
                for s, m, ok, ex, b, k in zip(level, mids, same, expect, boxes, kps):
                    people = _present(ex, b, k, ok, self.cfg, self.people_cfg)
                    rec = CrowdRecord(m.index, m.chunk, m.local, people, not ok, True, m.distance, m.cut)
                    checked.append(rec)
                    if not ok or self._disagrees(s, rec):
                        at = len(s.gap) // 2
                        halves = (_Segment(s.a, rec, s.gap[:at]), _Segment(rec, s.b, s.gap[at + 1 :]))
                        nxt += [h for h in halves if h.gap and (h.a.people or h.b.people)]
            level = nxt
        return checked

    def _disagrees(self, s: _Segment, mid: CrowdRecord) -> bool:
        """A same-people gap's check: someone missing at the midpoint, or someone's keypoints
        off their interpolation by more than their measured noise explains (the single
        subject's test, :func:`~wanprep_torch.gate.gap_accepted`, with that identity's noise)."""
        ids = sorted(s.a.people)
        if set(mid.people) != set(ids):
            return True
        t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
        for i in ids:
            est = self.people_noise.of(i)
            if est.sigma("body") is None:
                # Before this identity's noise is known (no warm-up where the picture starts
                # still): the gap's ends, where it held still between them.
                pair = [(s.a.people[i].keypoints, s.b.people[i].keypoints)]
                est = NoiseEstimator.from_pairs(pair, self.cfg.track_kp_score) or est
            sigma = est.sigma("body")
            ok = gap_accepted(
                mid.people[i].keypoints[None], s.a.people[i].keypoints[None], s.b.people[i].keypoints[None],
                t(s.a.index), t(s.b.index), t(mid.index), self.cfg, sigma or 0.0, est.sigma_mean() if sigma is not None else None,
            )
            if not bool(ok[0]):
                return True
        return False

    def _hand_out(self, recs: list, out) -> None:
        for r in recs:  # each identity's noise, from the measured frames in order
            if r.pose_ran:
                self.people_noise.add(r)
        super()._hand_out(recs, out)

    def _fill(self, seg: _Segment, done: dict) -> list[CrowdRecord]:
        """The gap's frames then its end: checked frames as run, the others interpolated per
        identity seen on both sides (someone seen on one side only is not in view there)."""

        def between(f, a, b) -> CrowdRecord:
            people = {}
            for tid in sorted(set(a.people) & set(b.people)):
                pa, pb = a.people[tid], b.people[tid]
                k = interpolate_keypoints(pa.keypoints, pb.keypoints, a.index, b.index, [f.index], self.cfg.track_kp_score)[0]
                people[tid] = PersonObs(k, interpolate_boxes(pa.box, pb.box, a.index, b.index, [f.index])[0])
            return CrowdRecord(f.index, f.chunk, f.local, people, False, False, f.distance, f.cut)

        with self.timer("gate"):
            return fill_gap(seg.gap, seg.a, seg.b, done, between) + [seg.b]


def _expected(seg: _Segment, t: int) -> dict:
    """Where each identity seen at either end of a gap is expected at frame ``t``: interpolated
    between the ends where seen at both, else the one end's box and keypoints."""
    a, b = seg.a, seg.b
    out = {}
    for tid in sorted(set(a.people) | set(b.people)):
        if tid in a.people and tid in b.people:
            pa, pb = a.people[tid], b.people[tid]
            k = interpolate_keypoints(pa.keypoints, pb.keypoints, a.index, b.index, [t])[0]
            out[tid] = PersonObs(k, interpolate_boxes(pa.box, pb.box, a.index, b.index, [t])[0])
        else:
            out[tid] = a.people.get(tid) or b.people[tid]
    return out


def _present(expect: dict, boxes: torch.Tensor, kps: torch.Tensor, same: bool, gate: GateConfig, cfg: PeopleConfig) -> dict:
    """The identities in view on a checked frame: with the same people at both ends, each one
    whose checked body keypoints are confident enough; else the detections associated with
    the expected identities (a detection matching none is left out: see the module's limits)."""
    ids = list(expect)
    if same:
        return {tid: PersonObs(kps[i], boxes[i]) for i, tid in enumerate(ids) if float(kps[i, BODY, 2].mean()) >= gate.track_min_score}
    eb = torch.stack([expect[t].box[:4] for t in ids])
    ek = torch.stack([expect[t].keypoints for t in ids])
    pairs = assign(association_cost(eb, ek, boxes, kps, cfg))
    return {ids[r]: PersonObs(kps[c], boxes[c]) for r, c in pairs}


class PrimaryChooser:
    """Which identity is the primary subject (``Result``'s own fields), frame by frame in
    order: the one chosen stays while in view; at the start, or when they are out of view,
    the reference's largest-box rule (:func:`~wanprep_torch.detect.largest_person`, its one
    home) picks among the people in view."""

    def __init__(self, frame_hw: tuple[int, int], cfg: DetectConfig):
        self.frame_hw = frame_hw
        self.cfg = cfg
        self.current: int | None = None

    def choose(self, people: dict) -> tuple[int | None, int]:
        """(the primary identity or None with nobody usable in view, others counted)."""
        if not people:
            self.current = None
            return None, 0
        ids = list(people)
        boxes = torch.stack([people[t].box for t in ids])
        if self.current not in people:
            sel = largest_person(boxes, self.frame_hw, self.cfg)
            hit = (boxes == sel.box).all(dim=1).nonzero()
            self.current = ids[int(hit[0])] if hit.numel() else None
        if self.current is None:
            return None, 0
        return self.current, count_others(boxes, people[self.current].box, self.cfg)
