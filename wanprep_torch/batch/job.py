"""One batch's settings (:class:`Job`), one video's record (:class:`VideoRecord`), and running
one video (:func:`process_one`), with ``--resume``'s check of an earlier result
(:func:`resume_check`).

The engines load the models once per worker and hand each video to two functions of the job,
by default the real ones (tests inject others; both must be module-level so that spawned
processes and Ray actors can unpickle them)::

    load_models(options: RunOptions, progress_callback, threads) -> pre
    process_video(pre, video, out_dir, options: RunOptions, stop) -> RunSummary
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from ..errors import one_line
from ..runner import RunOptions, RunSummary, load_preprocessor, run_video

__all__ = ["BatchError", "VideoRecord", "Job", "ResumeCheck", "resume_check", "read_complete", "process_one",
           "load_models", "process_video"]


class BatchError(Exception):
    """A usage problem (no videos, bad options, Ray missing): one line, exit status 2."""


@dataclass
class VideoRecord:
    """One input's entry in ``DIR/batch.json``."""

    video: str  # the input path as found
    name: str  # its output folder's name (unique in the batch)
    out: str  # DIR/<name>
    status: str = "pending"  # ok | failed | incomplete | skipped (pending: not started)
    frames: int | None = None
    seconds: float | None = None
    error: str | None = None  # why it failed or is incomplete
    rerun: str | None = None  # under --resume: why an earlier result was not kept

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def load_models(options: RunOptions, progress_callback=None, threads: int | None = None):
    """A worker's Preprocessor, built once with the batch's options (FP16 models are converted
    beforehand, in the parent)."""
    return load_preprocessor(options, progress_callback=progress_callback, threads=threads)


def process_video(pre, video, out_dir, options: RunOptions, stop=None) -> RunSummary:
    """One video through `wanprep run` with the worker's Preprocessor."""
    return run_video(video, out_dir, options.replace(device=str(pre.device)), stop=stop, pre=pre, progress=False)


@dataclass(frozen=True)
class Job:
    """What every engine needs: the output folder, the run options, the policy and the hooks."""

    out: Path
    options: RunOptions
    resume: bool = False
    progress: bool = True
    meta: dict = field(default_factory=dict)
    log: Callable = print
    load_models: Callable = load_models
    process_video: Callable = process_video


class ResumeCheck(NamedTuple):
    keep: bool  # the earlier result stands: skip the video
    frames: int | None  # its frame count
    reason: str | None  # why it is run again (None: there was no result)


def _video_frames(path: Path) -> int | None:
    try:
        import av

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            return int(s.frames) or sum(1 for p in c.demux(s) if p.size)
    except Exception:  # noqa: BLE001 - unreadable counts as missing
        return None


def resume_check(out_dir, options: RunOptions | None = None) -> ResumeCheck:
    """Whether ``out_dir`` holds a result ``--resume`` can keep: poses.json complete, pose.mp4
    and face.mp4 there with the frame count poses.json records, and made with the same
    result-relevant options (when ``options`` are given)."""
    out = Path(out_dir)
    try:
        doc = json.loads((out / "poses.json").read_text())
    except FileNotFoundError:
        return ResumeCheck(False, None, None)
    except (OSError, ValueError):
        return ResumeCheck(False, None, "poses.json is unreadable")
    if not isinstance(doc, dict):
        return ResumeCheck(False, None, "poses.json is not a result")
    frames = doc.get("frames_done", len(doc.get("pose_metas", [])))
    if doc.get("complete", True) is not True:
        return ResumeCheck(False, frames, f"the earlier run is incomplete ({doc.get('incomplete_reason', 'no reason recorded')})")
    for name in ("pose.mp4", "face.mp4"):
        n = _video_frames(out / name)
        if n != frames:
            what = "missing or unreadable" if n is None else f"{n} frames, poses.json says {frames}"
            return ResumeCheck(False, frames, f"{name} is {what}")
    if options is not None:
        diff = options.differences(doc.get("options"))
        if diff:
            return ResumeCheck(False, frames, "options changed: " + "; ".join(diff))
    return ResumeCheck(True, frames, None)


def read_complete(out_dir) -> bool | None:
    """``out_dir/poses.json``'s ``"complete"`` value (a file without the key counts as
    complete); None when there is no readable poses.json."""
    try:
        data = json.loads((Path(out_dir) / "poses.json").read_text())
    except (OSError, ValueError):
        return None
    return bool(data.get("complete", True)) if isinstance(data, dict) else None


def process_one(rec: VideoRecord, pre, job: Job, options: RunOptions | None = None, stop=None) -> VideoRecord:
    """Run one video and return its finished record (a copy). Exceptions become "failed";
    KeyboardInterrupt propagates (the caller marks the video incomplete). What the run prints on
    stdout is captured (the batch shows one line per video instead)."""
    options = options or job.options
    rec = dataclasses.replace(rec, status="pending", frames=None, seconds=None, error=None, rerun=None)
    t0 = time.perf_counter()
    if job.resume:
        check = resume_check(rec.out, options)
        if check.keep:
            rec.status, rec.frames, rec.seconds = "skipped", check.frames, 0.0
            return rec
        rec.rerun = check.reason
        if check.reason is not None:
            options = options.replace(overwrite=True)  # --resume replaces what it does not keep
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            summary = job.process_video(pre, Path(rec.video), Path(rec.out), options, stop)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        rec.status, rec.error = "failed", one_line(exc)
    else:
        rec.status = "ok" if summary.complete else "incomplete"
        rec.frames = summary.frames
        rec.error = summary.reason
    rec.seconds = round(time.perf_counter() - t0, 3)
    return rec


def needs_models(rec: VideoRecord, job: Job) -> bool:
    """Whether the video will run (so a worker loads the models before it): not when resume
    keeps its result."""
    return not (job.resume and resume_check(rec.out, job.options).keep)
