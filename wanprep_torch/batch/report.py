"""``DIR/batch.json`` and what the batch shows while it runs: one progress report over videos
(a bar on a terminal, plain lines in logs) and one line per finished video, as it finishes."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from pathlib import Path
from typing import Iterable

from ..progress import Progress
from .job import VideoRecord

__all__ = ["REPORT", "EXIT_OK", "EXIT_FAILED", "counts", "exit_code", "write_report", "Board", "format_record"]

REPORT = "batch.json"
EXIT_OK, EXIT_FAILED = 0, 1


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


def format_record(rec: VideoRecord) -> str:
    """The line shown when a video finishes."""
    head = f"{rec.status:<10} {rec.name}"
    if rec.status == "skipped":
        return f"{head}: already complete"
    if rec.status == "failed":
        return f"{head}: {rec.error}"
    if rec.error and rec.seconds is None:
        return f"{head}: {rec.error}"
    rate = f" ({rec.frames / rec.seconds:.1f} frames/s)" if rec.frames and rec.seconds else ""
    tail = f" [{rec.error}]" if rec.error else ""
    again = f" (run again: {rec.rerun})" if rec.rerun else ""
    return f"{head}: {rec.frames} frames in {rec.seconds or 0:.1f} s{rate}{tail}{again}"


class Board:
    """The parent's view of the batch: the records, batch.json (throttled), one progress report
    over the videos (frames/s beside it) and one line per finished video."""

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
        self.bar = Progress(len(self.todo), enabled=progress, desc="videos", unit="video", interval=30.0)
        self.write(force=True)

    def fps(self) -> float:
        el = time.perf_counter() - self.t0
        return (self.frames_done + sum(self.live.values())) / el if el > 0 else 0.0

    def frames(self, worker, n: int) -> None:
        self.live[worker] = self.live.get(worker, 0) + n
        self.bar.postfix(f"{self.fps():.1f} frames/s")

    def started(self, worker) -> None:
        self.live[worker] = 0

    def finished(self, index: int, rec: VideoRecord, worker=None) -> None:
        self.records[index] = rec
        self.live.pop(worker, None)
        if rec.status != "skipped":
            self.frames_done += rec.frames or 0
        self.bar.note(format_record(rec), self.log)
        self.bar.postfix(f"{self.fps():.1f} frames/s")
        self.bar.update(1)
        self.write()

    def write(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last_write >= self.min_interval:
            write_report(self.path, self.records, self.meta)
            self.last_write = now

    def interrupted(self, running: Iterable[int]) -> None:
        """Mark the videos in progress incomplete (the rest stay pending)."""
        for i in running:
            r = self.records[i]
            if r.status == "pending":
                self.records[i] = dataclasses.replace(r, status="incomplete", error="interrupted")

    def close(self, interrupted: bool = False) -> None:
        self.meta["finished"] = not interrupted and all(r.status != "pending" for r in self.records)
        self.meta["interrupted"] = interrupted
        self.meta["seconds"] = round(time.perf_counter() - self.t0, 3)
        self.write(force=True)
        self.bar.close()
