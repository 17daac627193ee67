"""Many videos: the engines behind `wanprep batch` (local processes, or a Ray Data job).

The library side of batch processing, independent of the command line:

- :func:`discover` turns inputs (video files, folders, glob patterns, text/CSV manifests) into
  an ordered list of videos; :func:`unique_names` gives each its output folder ``DIR/<name>/``.
- :class:`VideoRecord` is one entry of ``DIR/batch.json`` (``video``, ``status``, ``frames``,
  ``seconds``, ``error``, plus ``name`` and ``out``).
- :func:`run_local` runs the videos in this process (one worker) or in N spawned processes,
  :func:`run_ray` as a Ray Data job over a pool of actors. Both load the models once per worker
  and hand each video to an injected function::

      load_models(options, progress_callback) -> pre
      process_video(pre, video_path, out_dir, options) -> dict   # a summary with "frames"

  (the command line passes ``cli.batch_load`` and ``cli.batch_process``: ``wanprep run`` with a
  Preprocessor built once per worker). Both must be importable module-level functions, so that
  spawned processes and Ray actors can unpickle them.

A video's status comes from what its run reports: "ok"; "failed" (it raised: the error is kept on
one line); "incomplete" (its ``poses.json`` says ``"complete": false``, or it was interrupted);
"skipped" (``resume`` and its ``poses.json`` already says complete; a ``poses.json`` without
the key counts as complete). "pending" marks videos not started yet, in a ``batch.json``
written while the batch runs or after an interrupt.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import glob
import io
import json
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .video import one_line

__all__ = [
    "BatchError",
    "VideoRecord",
    "discover",
    "unique_names",
    "plan",
    "read_complete",
    "process_one",
    "run_local",
    "run_ray",
    "resolve_devices",
    "write_report",
    "exit_code",
    "main",
    "VIDEO_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "RAY_INSTALL",
    "EXIT_HELP",
]

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .mov .mkv .avi .webm .m4v .mpg .mpeg .wmv .flv .ts .mts .m2ts .3gp .ogv .gif".split()
)
MANIFEST_EXTENSIONS = frozenset((".txt", ".csv", ".lst", ".list"))
RESERVED_NAMES = frozenset(("batch.json", ".models"))
RAY_INSTALL = 'pip install "wanprep_torch[ray]"'
REPORT = "batch.json"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_HELP = (
    "Exit status: 0 every video ok or skipped; 1 some video failed or is incomplete (see "
    "DIR/batch.json); 2 usage error (no videos found, missing model files, bad options, Ray "
    "not installed for --engine ray); 130 interrupted (Ctrl-C: the videos in progress are "
    "marked incomplete, the rest pending; run again with --resume)."
)
RUN_OPTIONS = ("det", "pose", "width", "height", "gate", "device", "fp16", "int8", "batch", "chunk", "face_padding")


class BatchError(Exception):
    """A usage problem (no videos, bad options, Ray missing): one line, exit status 2."""


class _Interrupted(Exception):
    """Raised inside the engines after Ctrl-C, once the report is written."""


@dataclass
class VideoRecord:
    """One input's entry in ``DIR/batch.json``."""

    video: str  # the input path as found
    name: str  # its output folder's name (unique in the batch)
    out: str  # DIR/<name>
    status: str = "pending"  # ok | failed | incomplete | skipped (pending: not started)
    frames: int | None = None
    seconds: float | None = None
    error: str | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- inputs


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _read_manifest(path: Path) -> list[str]:
    """Paths listed in a text manifest (one a line, # comments) or a CSV (a ``video``/``path``/
    ``file`` column, else the first); relative entries are relative to the manifest's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read manifest {path}: {one_line(exc)}") from None
    entries: list[str] = []
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        col = 0
        if rows:
            header = [c.strip().lower() for c in rows[0]]
            for key in ("video", "path", "file", "filename"):
                if key in header:
                    col = header.index(key)
                    rows = rows[1:]
                    break
        for r in rows:
            cell = r[col].strip() if col < len(r) else ""
            if cell and not cell.startswith("#"):
                entries.append(cell)
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(line)
    base = path.parent
    return [e if os.path.isabs(os.path.expanduser(e)) else str(base / e) for e in entries]


def discover(inputs: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None) -> tuple[list[Path], list[str]]:
    """Expand ``inputs`` into videos, in order, each once.

    A folder is searched recursively for files with a video extension (sorted); a pattern with
    ``* ? [`` is expanded with :mod:`glob` (``**`` recursive); a ``.txt/.csv/.lst/.list`` file is
    a manifest of paths (each expanded by the same rules); any other file is a video. Files under
    ``exclude`` (the output folder) are left out.

    Returns (videos, missing): ``missing`` lists inputs that name nothing (a path that does not
    exist, a pattern that matches nothing).
    """
    videos: list[Path] = []
    missing: list[str] = []
    seen: set[str] = set()
    manifests: set[str] = set()
    excl = Path(exclude).resolve() if exclude is not None else None

    def add(p: Path) -> None:
        key = os.path.normcase(str(p.resolve()))
        if key in seen:
            return
        if excl is not None and (excl == p.resolve() or excl in p.resolve().parents):
            return
        seen.add(key)
        videos.append(p)

    def expand(item: str) -> None:
        p = Path(os.path.expanduser(item))
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file()]
            for f in sorted(found, key=lambda f: str(f.relative_to(p)).lower()):
                add(f)
        elif p.is_file():
            if p.suffix.lower() in MANIFEST_EXTENSIONS:
                key = str(p.resolve())
                if key in manifests:
                    return  # a manifest listing itself
                manifests.add(key)
                for e in _read_manifest(p):
                    expand(e)
            else:
                add(p)
        elif _is_glob(item):
            hits = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            if not hits:
                missing.append(item)
            for h in hits:
                hp = Path(h)
                if hp.is_dir() or hp.suffix.lower() in MANIFEST_EXTENSIONS:
                    expand(h)
                elif hp.is_file():
                    add(hp)
        else:
            missing.append(item)

    for item in inputs:
        expand(os.fspath(item))
    return videos, missing


def unique_names(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Output folder names: each path's stem, ``-2``, ``-3``... added where two share one
    (case-insensitively; the first keeps the plain stem). The same inputs in the same order
    give the same names, which ``--resume`` relies on."""
    used = set(RESERVED_NAMES)
    names = []
    for p in paths:
        stem = Path(os.fspath(p)).stem.strip() or "video"
        if stem.startswith("."):
            stem = "_" + stem[1:]
        name, k = stem, 2
        while name.lower() in used:
            name, k = f"{stem}-{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


def plan(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[VideoRecord]:
    """The batch's records, all "pending", in input order; an input that names nothing becomes a
    "failed" record. Raises BatchError when nothing at all was found."""
    out_dir = Path(out_dir)
    videos, missing = discover(inputs, exclude=out_dir)
    if not videos:
        what = f": {', '.join(missing)} not found" if missing else ""
        raise BatchError(f"no videos found in the inputs{what}")
    names = unique_names([*videos, *missing])
    recs = [VideoRecord(str(v), n, str(out_dir / n)) for v, n in zip(videos, names)]
    for m, n in zip(missing, names[len(videos):]):
        recs.append(VideoRecord(m, n, str(out_dir / n), status="failed", error=f"not found: {m}"))
    return recs


# ----------------------------------------------------------------------------- one video


def read_complete(out_dir: str | os.PathLike) -> bool | None:
    """Whether ``out_dir/poses.json`` marks a complete run: its ``"complete"`` value (a file
    without the key counts as complete); None when there is no readable poses.json."""
    p = Path(out_dir) / "poses.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return bool(data.get("complete", True))


def _frames_in(out_dir: Path) -> int | None:
    try:
        data = json.loads((out_dir / "poses.json").read_text())
        v = data.get("video", {}).get("frames")
        return int(v) if v is not None else len(data.get("pose_metas", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def process_one(rec: VideoRecord, pre, process_video: Callable, options: dict, resume: bool = False) -> VideoRecord:
    """Run one video and return its finished record (a copy). Exceptions become "failed";
    KeyboardInterrupt propagates (the caller marks the video incomplete). What the run prints on
    stdout is captured (the batch shows one line per video instead)."""
    rec = dataclasses.replace(rec, status="pending", frames=None, seconds=None, error=None)
    out = Path(rec.out)
    t0 = time.perf_counter()
    if resume and read_complete(out) is True:
        rec.status, rec.frames, rec.seconds = "skipped", _frames_in(out), 0.0
        return rec
    summary: dict | None = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            summary = process_video(pre, Path(rec.video), out, options)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        rec.status, rec.error = "failed", one_line(exc)
    else:
        summary = summary if isinstance(summary, dict) else {}
        incomplete = summary.get("complete") is False or read_complete(out) is False
        rec.status = "incomplete" if incomplete else "ok"
        rec.frames = summary.get("frames", _frames_in(out))
    rec.seconds = round(time.perf_counter() - t0, 3)
    return rec


# ----------------------------------------------------------------------------- report + display


def counts(records: list[VideoRecord]) -> dict:
    c: dict = {}
    for r in records:
        c[r.status] = c.get(r.status, 0) + 1
    return c


def exit_code(records: list[VideoRecord]) -> int:
    """0 when every video is ok or skipped, else 1."""
    return EXIT_OK if all(r.status in ("ok", "skipped") for r in records) else EXIT_FAILED


def write_report(path: str | os.PathLike, records: list[VideoRecord], meta: dict | None = None) -> None:
    """Write ``batch.json`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    doc = dict(meta or {})
    doc["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc["counts"] = counts(records)
    doc["videos"] = [r.to_json() for r in records]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


class _Board:
    """The parent's view of the batch: records, batch.json (throttled), the shared progress bar
    (videos done / total, frames/s, ETA) and one line per finished video."""

    def __init__(self, records, out_dir: Path, meta: dict, progress: bool, log=None, min_interval: float = 2.0):
        self.records = records
        self.path = Path(out_dir) / REPORT
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.log = log or print
        self.min_interval = min_interval
        self.t0 = time.perf_counter()
        self.frames_done = 0  # finished videos' frames
        self.live: dict = {}  # worker -> frames of its current video so far
        self.last_write = 0.0
        self.todo = [i for i, r in enumerate(records) if r.status == "pending"]
        self.bar = None
        if progress:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=len(self.todo), desc="videos", unit="video", leave=True, dynamic_ncols=True)
            except Exception:  # no tqdm: lines only
                self.bar = None
        self.write(force=True)

    def fps(self) -> float:
        el = time.perf_counter() - self.t0
        return (self.frames_done + sum(self.live.values())) / el if el > 0 else 0.0

    def frames(self, worker, n: int) -> None:
        self.live[worker] = self.live.get(worker, 0) + n
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.fps():.1f} frames/s", refresh=True)

    def started(self, worker) -> None:
        self.live[worker] = 0

    def finished(self, index: int, rec: VideoRecord, worker=None) -> None:
        self.records[index] = rec
        self.live.pop(worker, None)
        if rec.status != "skipped":
            self.frames_done += rec.frames or 0
        line = self.format(rec)
        if self.bar is not None:
            self.bar.write(line)
            self.bar.update(1)
            self.bar.set_postfix_str(f"{self.fps():.1f} frames/s", refresh=True)
        else:
            self.log(line)
        self.write()

    @staticmethod
    def format(rec: VideoRecord) -> str:
        head = f"{rec.status:<10} {rec.name}"
        if rec.status == "skipped":
            return f"{head}: already complete"
        if rec.status == "failed":
            return f"{head}: {rec.error}"
        if rec.error and rec.seconds is None:
            return f"{head}: {rec.error}"
        rate = f" ({rec.frames / rec.seconds:.1f} frames/s)" if rec.frames and rec.seconds else ""
        tail = f" [{rec.error}]" if rec.error else ""
        return f"{head}: {rec.frames} frames in {rec.seconds or 0:.1f} s{rate}{tail}"

    def write(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last_write >= self.min_interval:
            write_report(self.path, self.records, self.meta)
            self.last_write = now

    def close(self, interrupted: bool = False) -> None:
        self.meta["finished"] = not interrupted and all(r.status != "pending" for r in self.records)
        self.meta["interrupted"] = interrupted
        self.meta["seconds"] = round(time.perf_counter() - self.t0, 3)
        self.write(force=True)
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _interrupted_records(board: _Board, running: Iterable[int]) -> None:
    """Mark the videos in progress incomplete (the rest stay pending)."""
    for i in running:
        r = board.records[i]
        if r.status == "pending":
            board.records[i] = dataclasses.replace(r, status="incomplete", error="interrupted")


# ----------------------------------------------------------------------------- local engine


def resolve_devices(device: str | None, devices: str | None = None) -> list[str]:
    """The devices the workers use: ``devices`` ("cuda:0,cuda:1"), else ``device``; "auto"/None
    and plain "cuda" mean every visible GPU (the CPU when there is none, for "auto")."""
    if devices:
        lst = [d.strip() for d in devices.split(",") if d.strip()]
        if not lst:
            raise BatchError(f"--devices lists no device: {devices!r}")
        return lst
    if device in (None, "auto", "cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n:
            return [f"cuda:{i}" for i in range(n)]
        return ["cpu"] if device in (None, "auto") else ["cuda"]
    return [device]


def _worker_plan(devices: list[str], workers: int | None) -> list[tuple[str, int | None]]:
    """(device, CPU threads or None) per worker: one per GPU by default, 1 on the CPU; CPU
    workers share the physical cores."""
    gpu = any(d.startswith("cuda") for d in devices)
    n = workers or (len(devices) if gpu else 1)
    assigned = [devices[i % len(devices)] for i in range(n)]
    n_cpu = sum(1 for d in assigned if not d.startswith("cuda"))
    threads = None
    if n_cpu > 1:
        from .runtime import physical_cores

        threads = max(1, physical_cores() // n_cpu)
    return [(d, threads if not d.startswith("cuda") else None) for d in assigned]


def _worker_options(options: dict, device: str, threads: int | None) -> dict:
    o = dict(options, device=device)
    if threads:
        o["threads"] = threads
    return o


def run_local(
    records: list[VideoRecord],
    out_dir,
    options: dict,
    process_video: Callable,
    load_models: Callable,
    workers: int | None = None,
    devices: list[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
    log=None,
) -> list[VideoRecord]:
    """Run the pending ``records`` on this machine; returns the finished records (also in
    ``out_dir/batch.json``). One worker runs in this process; more are spawned processes, each
    loading the models once. Raises KeyboardInterrupt after Ctrl-C (the report written) and
    BatchError when a worker cannot load the models."""
    devices = devices or resolve_devices(options.get("device"))
    wplan = _worker_plan(devices, workers)
    records = list(records)
    meta = dict(meta or {}, engine="local", workers=len(wplan), devices=[d for d, _ in wplan])
    board = _Board(records, Path(out_dir), meta, progress, log)
    todo = list(board.todo)
    wplan = wplan[: max(1, len(todo))]
    try:
        if len(wplan) == 1:
            _run_inline(board, todo, options, process_video, load_models, wplan[0], resume)
        else:
            _run_pool(board, todo, options, process_video, load_models, wplan, resume)
    except KeyboardInterrupt:
        board.close(interrupted=True)
        raise
    except BaseException:
        board.close(interrupted=False)
        raise
    board.close()
    return board.records


def _run_inline(board: _Board, todo, options, process_video, load_models, wp, resume) -> None:
    opts = _worker_options(options, *wp)
    current = {"done": 0}

    def on_progress(kind, done, total=None):
        if kind == "frames" and done > current["done"]:
            board.frames(0, done - current["done"])
            current["done"] = done

    pre = None
    for i in todo:
        rec = board.records[i]
        if pre is None and not (resume and read_complete(rec.out) is True):
            pre = load_models(opts, on_progress)  # loaded at the first video that needs it
        current["done"] = 0
        board.started(0)
        try:
            rec = process_one(rec, pre, process_video, opts, resume)
        except KeyboardInterrupt:
            _interrupted_records(board, [i])
            raise
        board.finished(i, rec, 0)


def _worker_main(wid, opts, process_video, load_models, resume, tasks, results, stop) -> None:
    """A spawned worker: load the models once, then take videos from ``tasks`` until a None.
    Ctrl-C reaches it through ``stop`` (checked in the run's progress beats), not SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if opts.get("threads"):
        import torch

        torch.set_num_threads(int(opts["threads"]))
    state = {"done": 0, "sent": 0, "t": time.perf_counter()}

    def on_progress(kind, done, total=None):
        if stop.is_set():
            raise KeyboardInterrupt
        if kind == "frames" and done > state["done"]:
            state["done"] = done
            now = time.perf_counter()
            if now - state["t"] >= 0.5:
                results.put(("frames", wid, state["done"] - state["sent"]))
                state["sent"], state["t"] = state["done"], now

    pre = None
    try:
        while not stop.is_set():
            item = tasks.get()
            if item is None:
                break
            i, rec = item
            rec = VideoRecord(**rec)
            results.put(("start", wid, i))
            state.update(done=0, sent=0)
            try:
                if pre is None and not (resume and read_complete(rec.out) is True):
                    try:
                        pre = load_models(opts, on_progress)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:
                        results.put(("load_failed", wid, i, f"worker {wid} ({opts.get('device')}): cannot load the models: {one_line(exc)}"))
                        return
                rec = process_one(rec, pre, process_video, opts, resume)
            except KeyboardInterrupt:
                rec = dataclasses.replace(rec, status="incomplete", error="interrupted")
                results.put(("done", wid, i, rec.to_json()))
                break
            results.put(("done", wid, i, rec.to_json()))
    finally:
        results.put(("exit", wid))


def _run_pool(board: _Board, todo, options, process_video, load_models, wplan, resume) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # torch and ONNX Runtime threads do not survive fork
    tasks, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    for i in todo:
        tasks.put((i, board.records[i].to_json()))
    for _ in wplan:
        tasks.put(None)
    procs: dict = {}
    current: dict = {}  # worker -> record index
    exited: set = set()
    next_id = [0]

    def spawn(wp):
        wid = next_id[0]
        next_id[0] += 1
        p = ctx.Process(
            target=_worker_main,
            args=(wid, _worker_options(options, *wp), process_video, load_models, resume, tasks, results, stop),
            name=f"wanprep-batch-{wid}",
            daemon=True,
        )
        p.start()
        procs[wid] = (p, wp)

    for wp in wplan:
        spawn(wp)
    remaining = set(todo)
    _handle = _make_handler(board, current, remaining, exited)
    load_error = None
    # Ctrl-C only raises a flag here: a KeyboardInterrupt in the middle of reading a message
    # from the workers would leave the pipe out of step. The workers ignore SIGINT and stop at
    # their next progress beat once ``stop`` is set (the videos they run end incomplete).
    sigints = [0]

    def on_sigint(signum, frame):
        sigints[0] += 1

    import threading

    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    announced = False
    t_give_up = None
    try:
        while procs.keys() - exited:
            if sigints[0] and not announced:
                announced = True
                stop.set()
                t_give_up = time.perf_counter() + 60
                print("wanprep: interrupted: stopping the workers (Ctrl-C again to kill them)", file=sys.stderr)
            if sigints[0] > 1 or (t_give_up is not None and time.perf_counter() > t_give_up):
                break
            try:
                msg = results.get(timeout=0.5)
            except queue.Empty:
                msg = None
            if msg is None:
                for wid, (p, wp) in list(procs.items()):
                    if wid not in exited and not p.is_alive():
                        # Died without saying goodbye (a crash in native code, the OOM killer).
                        try:
                            while True:  # messages it sent before dying
                                _handle(results.get_nowait())
                        except queue.Empty:
                            pass
                        if wid in exited:
                            continue
                        exited.add(wid)
                        i = current.pop(wid, None)
                        if i is not None:
                            r = board.records[i]
                            board.finished(i, dataclasses.replace(r, status="failed", error=f"worker crashed (exit code {p.exitcode})"), wid)
                            remaining.discard(i)
                        if remaining and not stop.is_set():
                            spawn(wp)  # its replacement takes the dead worker's share
                continue
            load_error = _handle(msg) or load_error
            if load_error and not stop.is_set():
                stop.set()
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        for p, _ in procs.values():
            p.join(timeout=5 if not sigints[0] > 1 else 0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        tasks.cancel_join_thread()
        results.cancel_join_thread()
    interrupted = sigints[0] > 0
    if interrupted or load_error:
        _interrupted_records(board, current.values())
    if load_error:
        raise BatchError(load_error)
    if interrupted:
        raise KeyboardInterrupt


def _make_handler(board, current, remaining, exited):
    def _handle(msg):
        kind, wid = msg[0], msg[1]
        if kind == "frames":
            board.frames(wid, msg[2])
        elif kind == "start":
            current[wid] = msg[2]
            board.started(wid)
        elif kind == "done":
            i = msg[2]
            current.pop(wid, None)
            remaining.discard(i)
            board.finished(i, VideoRecord(**msg[3]), wid)
        elif kind == "load_failed":
            current.pop(wid, None)
            return msg[3]
        elif kind == "exit":
            exited.add(wid)
        return None

    return _handle


# ----------------------------------------------------------------------------- Ray engine


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (needs pandas and pyarrow: the [data] extra)
    except ImportError as exc:
        raise BatchError(f"--engine ray needs Ray Data ({one_line(exc)}): {RAY_INSTALL}") from None
    return ray


class _RayVideoActor:
    """A Ray Data actor: holds the two models (loaded once), runs its share of the videos.

    Rows carry one JSON-encoded VideoRecord each (``record``) and come back the same way, so the
    driver gets exactly what the local engine writes."""

    def __init__(self, options: dict, process_video: Callable, load_models: Callable, resume: bool):
        if options.get("threads"):
            import torch

            torch.set_num_threads(int(options["threads"]))
        self.options = options
        self.process_video = process_video
        self.resume = resume
        self.pre = load_models(options, None)

    def __call__(self, batch: dict) -> dict:
        out = []
        for item in batch["record"]:
            d = json.loads(item)
            index = d.pop("index")
            rec = VideoRecord(**d)
            try:
                rec = process_one(rec, self.pre, self.process_video, self.options, self.resume)
            except KeyboardInterrupt:
                rec = dataclasses.replace(rec, status="incomplete", error="interrupted")
            out.append(json.dumps(dict(rec.to_json(), index=index)))
        return {"record": out}


def _ray_pool(ray, options: dict, workers: int | None, n_videos: int) -> tuple[dict, int, int, int]:
    """(actor options, actors, GPUs per actor, CPUs per actor) from the cluster's resources:
    one GPU per actor and as many actors as GPUs where the cluster has GPUs (and the device is
    not the CPU; ``workers`` above the GPU count share them, 1/k of a GPU each); else actors
    of ``physical cores`` CPUs each (ONNX Runtime's threads), as many as the nodes hold."""
    from .runtime import physical_cores

    res = ray.cluster_resources()
    n_gpu = int(res.get("GPU", 0))
    device = options.get("device")
    if device and str(device).startswith("cuda") and not n_gpu:
        raise BatchError(f"--device {device}: the Ray cluster has no GPUs")
    opts = dict(options)
    if n_gpu and device in (None, "auto") or str(device).startswith("cuda"):
        opts["device"] = "cuda"  # the actor sees only its own GPU (CUDA_VISIBLE_DEVICES)
        size = workers or n_gpu
        # More actors than GPUs (--workers): k actors share a GPU, 1/k of it each.
        share = -(-size // n_gpu) if n_gpu else 1
        gpus, cpus = (1 if share <= 1 else 1.0 / share), 1
    else:
        opts["device"] = "cpu"
        node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [res.get("CPU", 1)]
        total = sum(node_cpus)
        if workers:
            cpus = max(1, min(physical_cores(), int(total // workers)))
        else:
            cpus = max(1, min(physical_cores(), int(max(node_cpus))))
        size = workers or max(1, sum(int(c // cpus) for c in node_cpus))
        gpus = 0
        opts["threads"] = cpus
    return opts, max(1, min(size, n_videos)), gpus, cpus


def run_ray(
    records: list[VideoRecord],
    out_dir,
    options: dict,
    process_video: Callable,
    load_models: Callable,
    address: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
    log=None,
) -> list[VideoRecord]:
    """Run the pending ``records`` as a Ray Data job: a dataset of videos mapped by a pool of
    actors, each holding the two models. Uses the Ray instance already initialised in this
    process, else connects to ``address``, else starts a local one (and shuts it down after).
    ``out_dir`` must be reachable by every node (shared storage) on a multi-node cluster.
    Returns the finished records (also in ``out_dir/batch.json``)."""
    import logging

    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kw = dict(log_to_driver=False, include_dashboard=False)
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(runtime_env=_local_runtime_env(), **kw)
            started = True
    try:
        records = list(records)
        todo = [i for i, r in enumerate(records) if r.status == "pending"]
        opts, size, gpus, cpus = _ray_pool(ray, options, workers, len(todo))
        meta = dict(meta or {}, engine="ray", workers=size, devices=[opts["device"]] * size,
                    ray_address=address or ("local" if started else "existing"))
        board = _Board(records, Path(out_dir), meta, progress, log)
        ctx = ray.data.DataContext.get_current()
        for attr, value in (("enable_progress_bars", False), ("print_on_execution_start", False)):
            if hasattr(ctx, attr):
                setattr(ctx, attr, value)
        ctx.execution_options.preserve_order = False  # rows come back as videos finish
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        if not todo:
            board.close()
            return board.records
        items = [{"record": json.dumps(dict(records[i].to_json(), index=i))} for i in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            _RayVideoActor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=size),
            num_gpus=gpus,
            num_cpus=cpus,
            fn_constructor_kwargs=dict(options=opts, process_video=process_video, load_models=load_models, resume=resume),
        )
        done: set = set()
        try:
            for row in ds.iter_rows():
                d = json.loads(row["record"])
                i = d.pop("index")
                done.add(i)
                board.finished(i, VideoRecord(**d))
        except KeyboardInterrupt:
            # Ray does not say which videos were running: those with an output folder were.
            _interrupted_records(board, [i for i in todo if i not in done and Path(records[i].out).exists()])
            board.close(interrupted=True)
            raise
        except Exception as exc:
            board.close(interrupted=False)
            msg = one_line(exc)
            raise BatchError(f"the Ray job failed: {msg[:600]}") from None
        board.close()
        return board.records
    finally:
        if started:
            try:
                ray.shutdown()
            except KeyboardInterrupt:  # a Ctrl-C after the last video: the report stands
                pass


def _local_runtime_env() -> dict:
    """A local instance's workers import this copy of wanprep_torch (a source checkout that is
    not installed, or not the installed one)."""
    root = str(Path(__file__).resolve().parents[1])
    path = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(path)}}


# ----------------------------------------------------------------------------- the command


def _jsonable(v):
    return str(v) if isinstance(v, Path) else v


def main(args, process_video: Callable, load_models: Callable, prepare_models: Callable | None = None, log=None,
         prepare_int8: Callable | None = None) -> int:
    """`wanprep batch` on parsed arguments (``inputs``, ``out``, ``engine``, ``ray_address``,
    ``workers``, ``devices``, ``resume``, ``no_progress`` and the run options). Returns the exit
    status; raises BatchError (and the hooks' own errors) for usage errors, exit status 2."""
    from .runtime import check_model_file

    log = log or print
    err = lambda m: print(m, file=sys.stderr)  # noqa: E731
    out = Path(args.out)
    options = {k: _jsonable(getattr(args, k, None)) for k in RUN_OPTIONS}
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise BatchError(f"--workers must be >= 1, got {workers}")
    if options["chunk"] is not None and options["chunk"] < 1:
        raise BatchError(f"--chunk must be >= 1, got {options['chunk']}")
    engine = getattr(args, "engine", "local")
    if engine == "ray":
        _import_ray()
        if getattr(args, "devices", None):
            raise BatchError("--devices is for --engine local; Ray gives each actor one GPU of the cluster")
    elif getattr(args, "ray_address", None):
        raise BatchError("--ray-address needs --engine ray")
    check_model_file(Path(options["det"]), "detector")
    check_model_file(Path(options["pose"]), "pose")
    records = plan(args.inputs, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot create the output folder {out}: {one_line(exc)}") from None
    if options["fp16"] and prepare_models is not None:
        # Converted once here, before the workers start (they would race on the cache).
        conv = prepare_models({"detector": Path(options["det"]), "pose": Path(options["pose"])}, out / ".models", log=log)
        options.update(det=str(conv["detector"]), pose=str(conv["pose"]), fp16=False)
    if options.get("int8") and prepare_int8 is not None:
        # Once, checked on the first video's first frames (a model that misses the thresholds
        # there runs in FP32 for the whole batch).
        first = next((r.video for r in records if r.status != "failed"), None)
        if first is not None:
            conv = prepare_int8({"detector": Path(options["det"]), "pose": Path(options["pose"])}, first, log=log,
                                report=out / "int8.json")
            options.update(det=str(conv["detector"]), pose=str(conv["pose"]), int8=False)
    meta = {
        "command": "wanprep batch",
        "out": str(out),
        "options": dict(options, fp16=bool(getattr(args, "fp16", False)), int8=bool(getattr(args, "int8", False))),
        "resume": bool(args.resume),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for r in records:
        if r.status == "failed":
            err(_Board.format(r))
    common = dict(resume=bool(args.resume), progress=not args.no_progress, meta=meta, log=log)
    try:
        if engine == "ray":
            records = run_ray(records, out, options, process_video, load_models,
                              address=getattr(args, "ray_address", None), workers=workers, **common)
        else:
            devices = resolve_devices(options["device"], getattr(args, "devices", None))
            records = run_local(records, out, options, process_video, load_models,
                                workers=workers, devices=devices, **common)
    except KeyboardInterrupt:
        err(f"wanprep: interrupted; {out / REPORT} lists what finished; run the same command with --resume to go on")
        return EXIT_INTERRUPTED
    c = counts(records)
    parts = ", ".join(f"{c[s]} {s}" for s in ("ok", "skipped", "incomplete", "failed", "pending") if c.get(s))
    log(f"batch: {len(records)} videos: {parts}; report: {out / REPORT}")
    return exit_code(records)
