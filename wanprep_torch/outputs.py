"""A run's output folder: one run at a time, staged writes, an atomic commit.

- :class:`FolderLock`: ``<out>/.wanprep.lock``, held (``flock``) for the whole run; a second run
  on the same folder fails at once naming it. A lock left by a killed process is free again
  (the kernel drops a dead process's ``flock``) and is taken over; where ``flock`` does not
  exist, the pid in the file is checked instead.
- :class:`RunFolder`: outputs are written into ``<out>/.wanprep-partial/`` and moved into
  ``<out>`` at the end by renames, ``poses.json`` (the completion marker) last, after the old
  one has been marked incomplete. So at every moment ``<out>`` holds either a complete earlier
  result or files that agree with a ``poses.json`` saying ``"complete": false``; an abort or a
  write error leaves the earlier state untouched.
- :class:`StreamWriter`: pose.mp4, face.mp4 and per-frame records written part by part, folded
  into poses.json and openpose.json at the end. Frames the video could not give (``filled``)
  hold the previous frame's result and are flagged ``source_ok: false``; frames decoded from
  damaged references (``concealed``) keep their own result and are flagged too.

Every write error becomes a :class:`~wanprep_torch.errors.RunError` with
:data:`~wanprep_torch.errors.EXIT_WRITE` naming the path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import time
from pathlib import Path

from .errors import RunError, one_line

__all__ = ["FolderLock", "RunFolder", "StreamWriter", "RESULT_FILES", "prepare_out", "check_not_input", "remove_empty"]

RESULT_FILES = ("pose.mp4", "face.mp4", "overlay.mp4", "openpose.json", "timings.txt", "int8.json", "poses.json")  # commit order: marker last
STAGING = ".wanprep-partial"
PERSON_GLOB = "person-*"  # several people: one folder per identity (face.mp4, poses.json)
LOCK = ".wanprep.lock"


# ----------------------------------------------------------------------------- the folder


def prepare_out(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` (and parents) and check it is writable; returns the folders created
    (innermost first), so that a run that writes nothing can remove them. RunError otherwise."""
    created = []
    p = out_dir
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunError(f"--out {out_dir} exists and is not a folder") from None
    except OSError as exc:
        raise RunError(f"cannot create --out {out_dir}: {exc.strerror or one_line(exc)}") from None
    if not out_dir.is_dir():
        raise RunError(f"--out {out_dir} exists and is not a folder")
    probe = out_dir / f".wanprep-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        remove_empty(created)
        raise RunError(f"--out {out_dir} is not writable: {exc.strerror or one_line(exc)}") from None
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the given folders, innermost first, while they are empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def check_not_input(out_dir: Path, inputs) -> None:
    """RunError (exit 2) when a file the run writes would be one of ``inputs`` (same path or
    the same file through a link)."""
    targets = [out_dir / n for n in (*RESULT_FILES, "poses.jsonl")]
    stage = (out_dir / STAGING).resolve()
    for src in inputs:
        src = Path(src)
        if stage in src.resolve().parents:
            raise RunError(f"the input {src} is inside {stage}, the staging folder a run clears: move it elsewhere")
        for t in targets:
            same = src.resolve() == t.resolve()
            if not same and t.exists() and src.exists():
                with contextlib.suppress(OSError):
                    same = os.path.samefile(src, t)
            if same:
                raise RunError(f"--out {out_dir} would overwrite the input {src} (it writes {t.name} there): choose another --out")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """``<folder>/.wanprep.lock``: one run per folder. :meth:`acquire` raises RunError (exit 2)
    naming the folder when another live process holds it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.fd: int | None = None
        self.took_over: int | None = None  # the pid of a dead run whose lock was taken over

    def _busy(self, pid) -> RunError:
        who = f" (pid {pid})" if pid else ""
        return RunError(f"--out {self.folder} is busy: another wanprep run{who} is writing it; wait for it or choose another --out")

    def _read_pid(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the pid in the file decides
            return self._acquire_by_pid()
        for _ in range(20):
            old = self._read_pid()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._busy(self._read_pid()) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file as we opened it: try the new one
                os.close(fd)
                continue
            if old is not None and old != os.getpid():
                self.took_over = old  # its process died holding nothing: the kernel let go
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self.fd = fd
            return self
        raise self._busy(None)

    def _acquire_by_pid(self) -> "FolderLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = self._read_pid()
                if pid is not None and _pid_alive(pid):
                    raise self._busy(pid) from None
                self.took_over = pid
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self.fd = fd
            return self
        raise self._busy(self._read_pid())

    def release(self) -> None:
        """Remove the lock file, then let go (a waiting opener sees the file gone and retries)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """Staged outputs of one run in ``out`` (see the module docstring).

    ``holds_result()``: ``out/poses.json`` exists (a finished or partial earlier run).
    ``stage``: the folder the writers write into. ``commit()`` moves the staged files in;
    ``discard()`` removes the staging folder (the earlier state stays).
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.stage = self.out / STAGING

    def holds_result(self) -> bool:
        return (self.out / "poses.json").exists()

    def open(self) -> Path:
        """A fresh, empty staging folder (a dead run's leftovers removed)."""
        try:
            if self.stage.exists():
                shutil.rmtree(self.stage)
            self.stage.mkdir()
        except OSError as exc:
            raise RunError.write_failed(self.stage, exc) from None
        return self.stage

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def commit(self) -> None:
        """Move the staged result into ``out``: the old poses.json is first marked incomplete
        (so no moment shows "complete": true beside files of another run), then the files are
        renamed in, poses.json last; files of the old result this run did not write are removed."""
        marker = self.out / "poses.json"
        try:
            if marker.exists():
                tmp = self.out / ".poses.json.replacing"
                tmp.write_text(json.dumps({"complete": False, "incomplete_reason": "being replaced by a new run"}))
                os.replace(tmp, marker)
            for name in RESULT_FILES:
                if name == "poses.json":  # several people's folders before the marker
                    self._commit_people()
                src, dst = self.stage / name, self.out / name
                if src.exists():
                    os.replace(src, dst)
                elif name != "poses.json":
                    dst.unlink(missing_ok=True)
        except OSError as exc:
            raise RunError.write_failed(self.out, exc) from None
        self.discard()

    def _commit_people(self) -> None:
        """person-<id>/ folders (several people): the old result's removed, the staged ones
        moved in."""
        for old in self.out.glob(PERSON_GLOB):
            if old.is_dir():
                shutil.rmtree(old)
        for new in sorted(self.stage.glob(PERSON_GLOB)):
            os.replace(new, self.out / new.name)


# ----------------------------------------------------------------------------- the writers

# poses.json columns and the per-frame record keys they are folded from (poses.jsonl).
COLUMNS = (
    ("pose_metas", "pose_meta"),
    ("bboxes", "bbox"),
    ("face_bboxes", "face_bbox"),
    ("face_held", "face_held"),
    ("other_persons", "other_persons"),
    ("det_ran", "det_ran"),
    ("pose_ran", "pose_ran"),
    ("gate_distance", "gate_distance"),
    ("source_ok", "source_ok"),
)
_HELD = ("pose_meta", "bbox", "face_bbox", "face_held", "other_persons", "key_points", "openpose")
PERSON_COLUMNS = COLUMNS + (("present", "present"),)

_DRAW_CHUNK = 8  # pose frames drawn per step: the float canvases (5 MB a frame at 832x480) stay small


class StreamWriter:
    """pose.mp4, face.mp4 and poses.jsonl in ``folder``, written part by part; poses.json and
    openpose.json folded at the end. Holds nothing per frame in memory but the last frame's
    result (for filling lost frames). With several people, pose.mp4 draws them all and each
    identity gets ``person-<id>/`` (face.mp4 and poses.json with its ``present`` column: a
    ``person`` writer)."""

    def __init__(self, folder: Path, fps, device, filled=(), concealed=(), overlay: bool = False, person: bool = False):
        from .overlay import FrameQueue
        from .video import VideoWriter

        self.dir = Path(folder)
        self.device = device
        self.fps = fps
        self.filled = filled  # frame indices to fill (a container that grows as the reader finds gaps)
        self.concealed = concealed  # frame indices decoded from damaged references: flagged, kept
        self.columns = PERSON_COLUMNS if person else COLUMNS
        self.paths = [self.dir / "pose.mp4", self.dir / "face.mp4", self.dir / "poses.jsonl"]
        # overlay.mp4: the drawing on the source frames; the caller pushes each decoded chunk
        # into ``source`` and every part is drawn on the frames it came from.
        self.source = FrameQueue() if overlay else None
        self.overlay = None
        with self._writing(self.dir):
            self.dir.mkdir(exist_ok=True)
            self.pose = None if person else VideoWriter(self.paths[0], fps)
            self.face = VideoWriter(self.paths[1], fps)
            self.jsonl = open(self.paths[2], "w")
            if overlay:
                self.overlay = VideoWriter(self.dir / "overlay.mp4", fps)
        self.persons: dict = {}  # identity -> StreamWriter
        self.frames = 0
        self.fallback = 0  # frames where no person was detected (full-frame box)
        self.held = 0  # frames where no face was visible
        self.lost = 0  # frames filled from the previous one (source not decodable)
        self.person_frames = 0  # frames with a detected person
        self.body_seen = 0  # body points seen (score >= 0.3) on those frames
        self.width = self.height = None
        self.timings: dict = {}
        self.providers: dict = {}
        self.noise: dict = {}  # keypoint noise per group (Result.noise)
        self.write_s = 0.0
        self._last = None  # (record, meta, face crop) of the last frame written

    @contextlib.contextmanager
    def _writing(self, path):
        """Write errors (disk full, permissions) as RunError naming ``path``, exit 74."""
        import av

        try:
            yield
        except OSError as exc:
            raise RunError.write_failed(path, exc) from None
        except av.FFmpegError as exc:
            raise RunError.write_failed(path, OSError(getattr(exc, "errno", None), one_line(exc))) from None

    def add(self, part) -> None:
        """Write one :class:`~wanprep_torch.pipeline.Result` part."""
        from . import wan
        from .draw import draw_people, draw_pose

        t0 = time.perf_counter()
        n = len(part)
        for person in part.people or ():
            self._person(person.track_id, part).add(person)
        cols = part.to_json()
        kps = part.keypoints.detach().float().cpu()
        boxes = part.bboxes.detach().cpu()
        openpose = part.to_openpose()
        metas = list(part.pose_metas)
        faces = part.face_images
        recs = []
        for i in range(n):
            rec = {"frame": part.start + i}
            rec.update({key: cols[col][i] for col, key in self.columns if col in cols})
            rec["key_points"] = wan.key_frame_points(kps[i], box=boxes[i])  # SAM2 prompt points, if a key frame
            rec["openpose"] = openpose[i]
            lost = part.start + i in self.filled
            rec["source_ok"] = not lost and part.start + i not in self.concealed
            if lost:
                self.lost += 1
                if self._last is not None:  # hold the previous frame's result
                    last_rec, metas[i], face = self._last
                    rec.update({k: last_rec[k] for k in _HELD})
                    faces = faces.clone() if faces is part.face_images else faces
                    faces[i] = face
            self._last = (rec, metas[i], faces[i])
            recs.append(rec)
        with self._writing(self.paths[0]):
            for s in range(0, n if self.pose is not None else 0, _DRAW_CHUNK):
                if part.people:  # everyone followed (a filled frame keeps only the subject's hold)
                    self.pose.write(draw_people([p.pose_metas[s : s + _DRAW_CHUNK] for p in part.people], device=self.device))
                else:
                    self.pose.write(draw_pose(metas[s : s + _DRAW_CHUNK], device=self.device))
        with self._writing(self.paths[1]):
            self.face.write(faces)
        if self.overlay is not None:
            with self._writing(self.dir / "overlay.mp4"):
                self._add_overlay(part.start, metas, recs)
        with self._writing(self.paths[2]):
            for rec in recs:
                self.jsonl.write(json.dumps(rec) + "\n")
            self.jsonl.flush()
        self.fallback += sum(1 for r in recs if r["bbox"][4] == -1)
        for r, m in zip(recs, metas):
            if r["bbox"][4] != -1:
                self.person_frames += 1
                self.body_seen += int((m["keypoints_body"][:, 2] >= 0.3).sum())
        self.held += sum(1 for r in recs if r["face_held"])
        self.width, self.height = part.width, part.height
        self.timings, self.providers = part.timings, part.providers
        self.noise = part.noise
        self.frames += n
        self.write_s += time.perf_counter() - t0

    def _person(self, track_id: int, part) -> "StreamWriter":
        """Identity ``track_id``'s writer; one first seen now gets the frames before this part
        as not in view (black face crops), so every person's files hold every frame."""
        out = self.persons.get(track_id)
        if out is None:
            import torch

            from .pipeline import absent_person

            out = StreamWriter(self.dir / f"person-{track_id}", self.fps, self.device, self.filled, self.concealed, person=True)
            self.persons[track_id] = out
            for s in range(0, self.frames, _DRAW_CHUNK):
                n = min(_DRAW_CHUNK, self.frames - s)
                none = torch.zeros(n, dtype=torch.bool)
                like = dataclasses.replace(part, det_ran=none, pose_ran=none, gate_distance=none.float())
                out.add(absent_person(track_id, s, n, like, part.face_images[:0]))
        return out

    def _add_overlay(self, start: int, metas, recs) -> None:
        """Draw the frames' results (held ones for filled frames) on their source frames."""
        import torch

        from .overlay import draw_overlay
        from .poses import Poses

        frames = self.source.take(start, len(recs))
        poses = Poses.from_metas(metas)
        boxes = torch.tensor([r["bbox"] for r in recs], dtype=torch.float64)
        faces = [r["face_bbox"] for r in recs]
        held = torch.tensor([bool(r["face_held"]) for r in recs])
        for s in range(0, len(recs), _DRAW_CHUNK):
            e = s + _DRAW_CHUNK
            self.overlay.write(draw_overlay(frames[s:e], Poses(poses.keypoints[s:e], poses.width, poses.height),
                                            boxes[s:e], faces[s:e], held[s:e]))

    def close(self) -> None:
        """Close the videos (playable, exactly the frames written) and the records."""
        with self._writing(self.dir):
            try:
                if self.pose is not None:
                    self.pose.close()
                if self.overlay is not None:
                    self.overlay.close()
            finally:
                try:
                    self.face.close()
                finally:
                    self.jsonl.close()
                    for out in self.persons.values():
                        out.close()

    def fold(self, header: dict, footer: dict) -> Path:
        """Write poses.json and openpose.json from poses.jsonl (one pass per column, never all
        records in memory) and remove poses.jsonl."""
        with self._writing(self.dir):
            return self._fold(header, footer)

    def _fold(self, header: dict, footer: dict) -> Path:
        from . import wan

        rows = self.paths[2]
        wanted = set(wan.key_frame_indices(self.frames)) if self.frames else set()
        points = {}
        with open(rows) as r:
            for i, line in enumerate(r):
                if i in wanted:
                    points[i] = json.loads(line)["key_points"]
        path = self.dir / "poses.json"
        with open(path, "w") as f:
            f.write("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in header.items()))
            for col, key in self.columns:
                f.write(f", {json.dumps(col)}: [")
                with open(rows) as r:
                    for i, line in enumerate(r):
                        f.write((", " if i else "") + json.dumps(json.loads(line)[key]))
                f.write("]")
                if col == "face_bboxes":
                    kfp = points.get(0, [])
                    kf = [{"frame": i, "points": points[i]} for i in sorted(points)]
                    f.write(f", \"key_frame_points\": {json.dumps(kfp)}, \"key_frames\": {json.dumps(kf)}")
            for k, v in footer.items():
                f.write(f", {json.dumps(k)}: {json.dumps(v)}")
            f.write("}")
        # openpose.json: one OpenPose JSON dict per frame (pose editors, ControlNet tools).
        with open(self.dir / "openpose.json", "w") as f, open(rows) as r:
            f.write("[")
            for i, line in enumerate(r):
                f.write((", " if i else "") + json.dumps(json.loads(line)["openpose"]))
            f.write("]")
        rows.unlink()
        for tid, out in self.persons.items():
            out.fold({"track_id": tid, **header}, {k: footer[k] for k in ("complete", "frames_done") if k in footer})
        return path

    def write_text(self, name: str, text: str) -> None:
        with self._writing(self.dir / name):
            (self.dir / name).write_text(text)
