"""The stages after the scheduler: the temporal model (records in, records with smoothed
keypoints out: :class:`SubjectSmoothing`, :class:`CrowdSmoothing` one smoother per identity),
then the Wan assembly (records in, final Wan frames out: :class:`SubjectAssembly`,
:class:`CrowdAssembly`). Knows nothing of ONNX."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from . import wan
from .crowd import CrowdRecord, PrimaryChooser
from .detect import DetectConfig, full_frame_box
from .frames import quantize_u8
from .noise import NoiseEstimator
from .schedule import FrameRecord
from .temporal import TrackSmoother

__all__ = [
    "FrameExtra",
    "SubjectAssembly",
    "CrowdFrames",
    "CrowdAssembly",
    "SubjectSmoothing",
    "CrowdSmoothing",
    "smoothed",
    "flushed",
]


class SubjectAssembly:
    """One subject's finished frames into the Wan assembly."""

    def __init__(self, wan_out: "wan.WanAssembler", timer):
        self.wan_out, self.timer = wan_out, timer

    def add(self, records: list[FrameRecord]) -> None:
        _assemble(records, self.wan_out, self.timer)

    def flush(self) -> None:
        self.wan_out.flush()

    def take(self) -> "wan.WanFrames | None":
        return self.wan_out.take()


def _assemble(records: list[FrameRecord], wan_out: "wan.WanAssembler", timer) -> None:
    """Hand finished frames to the Wan assembly, one call per run of frames of one chunk."""
    for seg in _segments(records):
        c, a, b = seg[0].chunk, seg[0].local, seg[-1].local + 1
        extra = FrameExtra(
            start=seg[0].index,
            boxes=torch.stack([r.box for r in seg]),
            others=[r.others for r in seg],
            det_ran=[r.det_ran for r in seg],
            pose_ran=[r.pose_ran for r in seg],
            distance=[r.distance for r in seg],
        )
        with timer("wan"):
            wan_out.add(c[a:b], torch.stack([r.keypoints for r in seg]), extra)


def _segments(records: list[FrameRecord]) -> list[list[FrameRecord]]:
    """Split records into runs of consecutive frames of the same chunk."""
    runs: list[list[FrameRecord]] = []
    for r in records:
        if runs and runs[-1][-1].chunk is r.chunk and runs[-1][-1].local + 1 == r.local:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


@dataclass
class FrameExtra:
    """Per-frame data that travels with a run of frames through the Wan assembly."""

    start: int
    boxes: torch.Tensor
    others: list
    det_ran: list
    pose_ran: list
    distance: list
    present: list | None = None  # one person of several: in view on each frame


class CrowdFrames(NamedTuple):
    """Final frames of several people: the primary subject's Wan frames and, per identity
    (ordered), (id, that person's Wan frames from their first appearance; None: not yet seen)."""

    primary: "wan.WanFrames"
    people: list


class CrowdAssembly:
    """Several people's finished frames into Wan assemblies, one per identity, started on the
    frame it first appears; the primary subject's outputs are, frame by frame, those of the
    identity the :class:`~wanprep_torch.crowd.PrimaryChooser` picks (no second face crop).
    Frames go in by runs, cut where someone first appears, so every assembly's groups end on
    the same frames and a part can end where all of them are final."""

    def __init__(self, make_assembler: Callable, det: DetectConfig, timer):
        self.make = make_assembler
        self.det = det
        self.timer = timer
        self.people: dict = {}  # identity -> [assembler, first frame]
        self.chooser: PrimaryChooser | None = None
        self.primary: list = []  # per frame added, not taken: (identity or None, its FrameExtra)
        self.start = 0  # first frame not yet taken
        self.canvas = None  # (width, height, device) of the frames
        self.face = make_assembler().face  # the crops' settings, for frames with nobody

    def add(self, records: list[CrowdRecord]) -> None:
        for run in _segments(records):
            cut = [0] + [i for i, r in enumerate(run) if i and any(t not in self.people and t not in _ids(run[:i]) for t in r.people)]
            for a, b in zip(cut, cut[1:] + [len(run)]):
                self._add_run(run[a:b])

    def _add_run(self, run: list[CrowdRecord]) -> None:
        r0 = run[0]
        view = r0.chunk[r0.local : r0.local + len(run)]
        dev = view.device
        hw = (int(view.shape[-2]), int(view.shape[-1]))
        if self.chooser is None:
            self.chooser = PrimaryChooser(hw, self.det)
            self.canvas = (hw[1], hw[0], dev)
        gate = dict(det_ran=[r.det_ran for r in run], pose_ran=[r.pose_ran for r in run], distance=[r.distance for r in run])
        for r in run:
            pid, others = self.chooser.choose(r.people)
            box = r.people[pid].box if pid is not None else full_frame_box(hw)
            self.primary.append((pid, FrameExtra(r.index, box[None].float(), [others], [r.det_ran], [r.pose_ran], [r.distance])))
        with self.timer("wan"):
            for tid in _ids(run):
                if tid not in self.people:
                    self.people[tid] = [self.make(), r0.index]
            if dev.type == "cpu" and view.is_floating_point() and len(self.people) > 1:
                # Every assembly crops its faces from these frames, on the CPU in uint8 (see
                # WanAssembler): convert them once, not once per person.
                view = quantize_u8(view.float()).contiguous(memory_format=torch.channels_last)
            absent_box = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0])
            for tid, (out, _first) in self.people.items():
                seen = [r.people.get(tid) for r in run]
                kps = torch.stack([s.keypoints if s is not None else torch.zeros(133, 3) for s in seen])
                boxes = torch.stack([s.box.float() if s is not None else absent_box for s in seen])
                present = [s is not None for s in seen]
                out.add(view, kps.to(dev), FrameExtra(r0.index, boxes, [0] * len(run), present=present, **gate))

    def flush(self) -> None:
        for out, _first in self.people.values():
            out.flush()

    def take(self) -> CrowdFrames | None:
        """The frames final in every assembly (None: none yet)."""
        end = self.start + len(self.primary)
        for out, first in self.people.values():
            end = min(end, max(first, self.start) + out.ready_frames())
        n = end - self.start
        if n <= 0:
            return None
        people = []
        for tid in sorted(self.people):
            out, first = self.people[tid]
            m = end - max(first, self.start)
            people.append((tid, _one_group(out.take_frames(m)) if m > 0 else None))
        chosen, self.primary = self.primary[:n], self.primary[n:]
        primary = self._primary(chosen, dict(people))
        self.start = end
        return CrowdFrames(primary, people)

    def _primary(self, chosen: list, people: dict) -> "wan.WanFrames":
        """The primary subject's Wan frames: each frame's from the chosen identity's; a frame
        with nobody in view: zero keypoints, a black face crop, the fallback face box (held)."""
        w, h, dev = self.canvas
        face = self.face
        black = torch.zeros((1, face.size, face.size, 3), dtype=face.dtype, device=face.device or dev)
        nobody = torch.zeros(1, 133, 3, device=dev)
        kps, faces, out = [], [], wan.WanFrames()
        for pid, extra in chosen:
            done = people.get(pid)
            if done is not None:
                i = extra.start - done.extra[0].start
                kps.append(done.keypoints[0][i : i + 1])
                faces.append(done.face_images[0][i : i + 1])
                out.metas.append(done.metas[i])
                out.face_bboxes.append(done.face_bboxes[i])
                out.face_exact.append(done.face_exact[i])
                out.face_held.append(done.face_held[i])
            else:
                kps.append(nobody)
                faces.append(black)
                out.metas.extend(wan.pose_metas(nobody, w, h)[0])
                out.face_bboxes.append(wan.fallback_face_box(w, h))
                out.face_exact.append(tuple(float(v) for v in wan.fallback_face_box(w, h)))
                out.face_held.append(True)
            out.extra.append(extra)
        out.keypoints, out.face_images = [torch.cat(kps)], [torch.cat(faces)]
        return out


def _ids(records: list) -> list:
    """The identities in view on any of ``records``, in order of first appearance."""
    return list(dict.fromkeys(t for r in records for t in r.people))


def _one_group(done: "wan.WanFrames") -> "wan.WanFrames":
    """``done`` with its keypoints and face crops as one group (frame i is row i)."""
    for name in ("keypoints", "face_images"):
        parts = getattr(done, name)
        setattr(done, name, [parts[0] if len(parts) == 1 else torch.cat(parts)])
    merged = done.extra[0]
    if len(done.extra) > 1:
        e = done.extra
        merged = FrameExtra(
            e[0].start, torch.cat([x.boxes for x in e]), [v for x in e for v in x.others], [v for x in e for v in x.det_ran],
            [v for x in e for v in x.pose_ran], [v for x in e for v in x.distance], [v for x in e for v in x.present],
        )
    done.extra = [merged]
    return done



class SubjectSmoothing:
    """The smoother between the scheduler and the Wan assembly: records in, the same records
    with smoothed keypoints out once ``lookahead`` later frames were seen."""

    def __init__(self, cfg, noise: NoiseEstimator, timer):
        self.track = TrackSmoother(cfg, noise, feed=True)
        self.pending: list[FrameRecord] = []
        self.timer = timer

    def feed(self, records: list[FrameRecord]) -> list[FrameRecord]:
        with self.timer("smooth"):
            if records:
                host = torch.stack([r.keypoints for r in records]).cpu()  # one device read
                for r, k in zip(records, host):
                    self.track.push(k, r.pose_ran, r.cut, still=r.still)
                    self.pending.append(r)
            return self._out(self.track.take())

    def finish(self) -> list[FrameRecord]:
        with self.timer("smooth"):
            return self._out(self.track.finish())

    def _out(self, keypoints: list) -> list[FrameRecord]:
        done, self.pending = self.pending[: len(keypoints)], self.pending[len(keypoints) :]
        if not done:
            return []
        dev = done[0].keypoints.device
        moved = torch.stack(keypoints).to(dev).unbind(0) if dev.type != "cpu" else keypoints  # one copy
        return [dataclasses.replace(r, keypoints=k) for r, k in zip(done, moved)]


class CrowdSmoothing:
    """The temporal model for several people: one :class:`~wanprep_torch.temporal.TrackSmoother`
    (with its own noise estimate) per identity, started on the frame it first appears; every
    later frame goes to each identity's smoother (out of view: no measurement there). Records
    come out, each person's keypoints smoothed, once every smoother has made them final."""

    def __init__(self, cfg, timer):
        self.cfg = cfg
        self.timer = timer
        self.tracks: dict = {}  # identity -> [TrackSmoother, first frame of ``done``, smoothed frames not yet used]
        self.pending: list = []  # records pushed, not yet handed out
        self.start = 0  # frame index of pending[0]

    def feed(self, records: list) -> list:
        with self.timer("smooth"):
            for r in records:
                self._push(r)
            for entry in self.tracks.values():
                entry[2].extend(entry[0].take())
            return self._out()

    def finish(self) -> list:
        with self.timer("smooth"):
            for entry in self.tracks.values():
                entry[2].extend(entry[0].finish())
            return self._out()

    def _push(self, r) -> None:
        if not self.pending:
            self.start = r.index
        self.pending.append(r)
        for tid in r.people:
            if tid not in self.tracks:
                self.tracks[tid] = [TrackSmoother(self.cfg, NoiseEstimator(min_score=self.cfg.min_score), feed=True), r.index, []]
        for tid, (track, _first, _done) in self.tracks.items():
            seen = r.people.get(tid)
            kps = seen.keypoints.cpu() if seen is not None else torch.zeros(133, 3)
            track.push(kps, r.pose_ran and seen is not None, r.cut)

    def _out(self) -> list:
        end = self.start + len(self.pending)
        for _track, first, done in self.tracks.values():
            end = min(end, max(first, self.start) + len(done))  # frames this smoother has made final
        n = end - self.start
        if n <= 0:
            return []
        out = []
        for r in self.pending[:n]:
            people = {}
            for tid, obs in r.people.items():
                _track, first, done = self.tracks[tid]
                people[tid] = dataclasses.replace(obs, keypoints=done[r.index - max(first, self.start)])
            out.append(dataclasses.replace(r, people=people))
        for entry in self.tracks.values():
            used = end - max(entry[1], self.start)
            del entry[2][: max(used, 0)]
            entry[1] = max(entry[1], end)
        self.pending = self.pending[n:]
        self.start = end
        return out


def smoothed(smoother, records: list) -> list:
    return records if smoother is None else smoother.feed(records)


def flushed(smoother, records: list) -> list:
    """The last records of a run (its end, or a requested stop), with the smoother's held
    look-ahead frames after them."""
    if smoother is None:
        return records
    return smoother.feed(records) + smoother.finish()
