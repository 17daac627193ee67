"""`wanprep batch` on parsed arguments: checks, the plan, the engine, the summary line."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from ..errors import one_line
from ..interrupt import StopFlag
from ..outputs import FolderLock
from ..runner import RunOptions, resolve_models
from .inputs import plan
from .job import BatchError, Job
from .report import REPORT, counts, exit_code, format_record

__all__ = ["main", "EXIT_HELP", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
EXIT_HELP = (
    "Exit status: 0 every video ok or skipped; 1 some video failed or is incomplete (see "
    "DIR/batch.json); 2 usage error (no videos found, missing model files, bad options, the "
    "output folder busy with another batch, Ray not installed or not reachable for --engine "
    "ray); 130 interrupted (Ctrl-C: the videos in progress stop at their next model batch and "
    "are marked incomplete, the rest pending; run again with --resume)."
)


def _check(args, options: RunOptions) -> None:
    from ..runtime import check_model_file
    from .rayengine import import_ray

    options.check(allow_auto_device=True)
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise BatchError(f"--workers must be >= 1, got {workers}")
    if getattr(args, "engine", "local") == "ray":
        import_ray()
        if getattr(args, "devices", None):
            raise BatchError("--devices is for --engine local; Ray gives each actor one GPU of the cluster")
    elif getattr(args, "ray_address", None):
        raise BatchError("--ray-address needs --engine ray")
    check_model_file(Path(options.det), "detector")
    check_model_file(Path(options.pose), "pose")


def main(args, options: RunOptions, stop: StopFlag | None = None, log=None, hooks: dict | None = None) -> int:
    """`wanprep batch`: ``args`` holds ``inputs``, ``out``, ``engine``, ``ray_address``,
    ``workers``, ``devices``, ``resume``, ``no_progress``; ``options`` the run options. Returns
    the exit status; raises BatchError (and the runs' own user errors) for usage errors, exit 2.
    ``hooks``: ``load_models`` / ``process_video`` replacements (tests)."""
    log = log or print
    out = Path(args.out)
    _check(args, options)
    records = plan(args.inputs, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot create the output folder {out}: {one_line(exc)}") from None
    with FolderLock(out):  # one batch per output folder (each video's folder is locked by its run)
        if options.fp16:
            # Converted once here, before the workers start (they would race on the cache).
            options = resolve_models(options, log=log)  # into the user cache, once per model content
        meta = {
            "command": "wanprep batch",
            "out": str(out),
            "options": dict(options.to_json(), fp16=bool(args.fp16)),
            "resume": bool(args.resume),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        for r in records:
            if r.status == "failed":
                print(format_record(r), file=sys.stderr)
        job = Job(out, options, resume=bool(args.resume), progress=not args.no_progress, meta=meta, log=log, **(hooks or {}))
        try:
            records = _run(args, records, job, stop)
        except KeyboardInterrupt:
            print(f"wanprep: interrupted; {out / REPORT} lists what finished; run the same command with --resume to go on",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
    c = counts(records)
    parts = ", ".join(f"{c[s]} {s}" for s in ("ok", "skipped", "incomplete", "failed", "pending") if c.get(s))
    log(f"batch: {len(records)} videos: {parts}; report: {out / REPORT}")
    return exit_code(records)


def _run(args, records, job: Job, stop):
    if getattr(args, "engine", "local") == "ray":
        from .rayengine import run_ray

        return run_ray(records, job, address=getattr(args, "ray_address", None), workers=getattr(args, "workers", None))
    from .local import resolve_devices, run_local

    devices = resolve_devices(job.options.device, getattr(args, "devices", None))
    return run_local(records, job, workers=getattr(args, "workers", None), devices=devices, stop=stop)
