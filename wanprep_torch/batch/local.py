"""The local engine: the videos run in this process (one worker) or in N spawned processes,
each loading the models once.

Ctrl-C: the first stops the videos in progress at their next model batch (they end
"incomplete", the rest stay "pending"), the second kills the workers.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import one_line
from ..interrupt import StopFlag
from .job import BatchError, Job, VideoRecord, needs_models, process_one
from .report import Board

__all__ = ["resolve_devices", "Worker", "worker_plan", "run_local"]


class Worker(NamedTuple):
    device: str
    threads: int | None  # ONNX Runtime / torch CPU threads (None: the default)


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


def worker_plan(devices: list[str], workers: int | None) -> list[Worker]:
    """One per GPU by default, 1 on the CPU; CPU workers share the physical cores."""
    gpu = any(d.startswith("cuda") for d in devices)
    n = workers or (len(devices) if gpu else 1)
    assigned = [devices[i % len(devices)] for i in range(n)]
    n_cpu = sum(1 for d in assigned if not d.startswith("cuda"))
    threads = None
    if n_cpu > 1:
        from ..runtime import physical_cores

        threads = max(1, physical_cores() // n_cpu)
    return [Worker(d, threads if not d.startswith("cuda") else None) for d in assigned]


def run_local(records: list[VideoRecord], job: Job, workers: int | None = None, devices: list[str] | None = None,
              stop: StopFlag | None = None) -> list[VideoRecord]:
    """Run the pending ``records``; returns the finished records (also in ``job.out/batch.json``).
    Raises KeyboardInterrupt after Ctrl-C (the report written) and BatchError when a worker
    cannot load the models. ``stop``: the caller's stop flag (the inline worker's runs watch it)."""
    devices = devices or resolve_devices(job.options.device)
    wplan = worker_plan(devices, workers)
    records = list(records)
    meta = dict(job.meta, engine="local", workers=len(wplan), devices=[w.device for w in wplan])
    board = Board(records, Path(job.out), meta, job.progress, job.log)
    todo = list(board.todo)
    wplan = wplan[: max(1, len(todo))]
    try:
        if len(wplan) == 1:
            _run_inline(board, todo, job, wplan[0], stop or StopFlag())
        else:
            _run_pool(board, todo, job, wplan, stop or StopFlag())
    except KeyboardInterrupt:
        board.close(interrupted=True)
        raise
    except BaseException:
        board.close(interrupted=False)
        raise
    board.close()
    return board.records


def _run_inline(board: Board, todo, job: Job, worker: Worker, stop: StopFlag) -> None:
    options = job.options.replace(device=worker.device)
    current = {"done": 0}

    def on_progress(kind, done, total=None):
        if kind == "frames" and done > current["done"]:
            board.frames(0, done - current["done"])
            current["done"] = done

    pre = None
    for i in todo:
        rec = board.records[i]
        if stop.requested:
            raise KeyboardInterrupt
        if pre is None and needs_models(rec, job):
            pre = job.load_models(options, on_progress, worker.threads)  # at the first video that runs
        current["done"] = 0
        board.started(0)
        try:
            rec = process_one(rec, pre, job, options, stop)
        except KeyboardInterrupt:
            board.interrupted([i])
            raise
        board.finished(i, rec, 0)
        if stop.requested:
            raise KeyboardInterrupt


def _watch(event, flag: StopFlag) -> None:
    """A worker's thread: the parent's stop event becomes the run's stop flag."""
    event.wait()
    flag.request("interrupted")


def _worker_main(wid, options, threads, job_hooks, tasks, results, stop) -> None:
    """A spawned worker: load the models once, then take videos from ``tasks`` until a None.
    Ctrl-C reaches it through ``stop`` (its runs stop at the next model batch), not SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    job = Job(**job_hooks)
    flag = StopFlag()
    threading.Thread(target=_watch, args=(stop, flag), daemon=True).start()
    state = {"done": 0, "sent": 0, "t": time.perf_counter()}

    def on_progress(kind, done, total=None):
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
            if pre is None and needs_models(rec, job):
                try:
                    pre = job.load_models(options, on_progress, threads)
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the batch
                    results.put(("load_failed", wid, i, f"worker {wid} ({options.device}): cannot load the models: {one_line(exc)}"))
                    return
            with flag.watch():
                rec = process_one(rec, pre, job, options, flag)
            if flag.requested and rec.status in ("ok", "pending"):
                rec = dataclasses.replace(rec, status="incomplete", error=rec.error or "interrupted")
            results.put(("done", wid, i, rec.to_json()))
    finally:
        results.put(("exit", wid))


class _Pool:
    """The parent's side of the spawned workers."""

    def __init__(self, board: Board, todo, job: Job, wplan):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")  # torch and ONNX Runtime threads do not survive fork
        self.board, self.job = board, job
        self.tasks, self.results, self.stop = self.ctx.Queue(), self.ctx.Queue(), self.ctx.Event()
        for i in todo:
            self.tasks.put((i, board.records[i].to_json()))
        for _ in wplan:
            self.tasks.put(None)
        self.hooks = dict(out=job.out, options=job.options, resume=job.resume, progress=False,
                          load_models=job.load_models, process_video=job.process_video)
        self.procs: dict = {}
        self.current: dict = {}  # worker -> record index
        self.exited: set = set()
        self.remaining = set(todo)
        self.next_id = 0
        self.sigints = 0

    def spawn(self, w: Worker) -> None:
        wid, self.next_id = self.next_id, self.next_id + 1
        p = self.ctx.Process(target=_worker_main, name=f"wanprep-batch-{wid}", daemon=True,
                             args=(wid, self.job.options.replace(device=w.device), w.threads, self.hooks,
                                   self.tasks, self.results, self.stop))
        p.start()
        self.procs[wid] = (p, w)

    def handle(self, msg) -> str | None:
        kind, wid = msg[0], msg[1]
        if kind == "frames":
            self.board.frames(wid, msg[2])
        elif kind == "start":
            self.current[wid] = msg[2]
            self.board.started(wid)
        elif kind == "done":
            self.current.pop(wid, None)
            self.remaining.discard(msg[2])
            self.board.finished(msg[2], VideoRecord(**msg[3]), wid)
        elif kind == "load_failed":
            self.current.pop(wid, None)
            return msg[3]
        elif kind == "exit":
            self.exited.add(wid)
        return None

    def reap(self) -> None:
        """Workers that died without saying goodbye (a crash in native code, the OOM killer)."""
        for wid, (p, w) in list(self.procs.items()):
            if wid in self.exited or p.is_alive():
                continue
            try:
                while True:  # messages it sent before dying
                    self.handle(self.results.get_nowait())
            except queue.Empty:
                pass
            if wid in self.exited:
                continue
            self.exited.add(wid)
            i = self.current.pop(wid, None)
            if i is not None:
                r = self.board.records[i]
                self.board.finished(i, dataclasses.replace(r, status="failed", error=f"worker crashed (exit code {p.exitcode})"), wid)
                self.remaining.discard(i)
            if self.remaining and not self.stop.is_set():
                self.spawn(w)  # its replacement takes the dead worker's share

    def loop(self, flag: StopFlag) -> str | None:
        load_error, give_up = None, None
        while self.procs.keys() - self.exited:
            if flag.requested and not self.sigints:  # SIGTERM (the caller's handler) counts as one Ctrl-C
                self.sigints = 1
            if self.sigints and give_up is None:
                self.stop.set()
                give_up = time.perf_counter() + 60
                print("wanprep: interrupted: stopping the workers at their next model batch (Ctrl-C again to kill them)",
                      file=sys.stderr, flush=True)
            if self.sigints > 1 or (give_up is not None and time.perf_counter() > give_up):
                break
            try:
                msg = self.results.get(timeout=0.2)
            except queue.Empty:
                self.reap()
                continue
            load_error = self.handle(msg) or load_error
            if load_error and not self.stop.is_set():
                self.stop.set()
        return load_error

    def close(self) -> None:
        for p, _ in self.procs.values():
            p.join(timeout=5 if self.sigints <= 1 else 0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()


def _run_pool(board: Board, todo, job: Job, wplan, flag: StopFlag) -> None:
    pool = _Pool(board, todo, job, wplan)
    for w in wplan:
        pool.spawn(w)

    # Ctrl-C only counts here: a KeyboardInterrupt in the middle of reading a message from the
    # workers would leave the pipe out of step.
    def on_sigint(signum, frame):
        pool.sigints += 1

    old = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    try:
        load_error = pool.loop(flag)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
        pool.close()
    if pool.sigints or load_error:
        board.interrupted(pool.current.values())
    if load_error:
        raise BatchError(load_error)
    if pool.sigints:
        raise KeyboardInterrupt
