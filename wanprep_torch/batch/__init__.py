"""Many videos: the engines behind `wanprep batch` (local processes, or a Ray Data job).

- :mod:`.inputs`: :func:`discover` turns inputs (video files, folders, glob patterns, text/CSV
  manifests) into an ordered list of videos; :func:`plan` gives each its ``DIR/<name>/``.
- :mod:`.job`: :class:`Job` (the batch's settings and hooks), :class:`VideoRecord` (one entry
  of ``DIR/batch.json``), :func:`process_one` and ``--resume``'s :func:`resume_check`.
- :mod:`.report`: ``batch.json`` and the progress shown while the batch runs.
- :mod:`.local`: :func:`run_local`, this process or N spawned ones; :mod:`.rayengine`:
  :func:`run_ray`, a Ray Data job over a pool of actors. Both load the models once per worker.
- :mod:`.command`: `wanprep batch` on parsed arguments.

A video's status: "ok"; "failed" (it raised: the error on one line); "incomplete" (its run
ended with ``"complete": false``, or was interrupted; ``error`` says why); "skipped" (under
``resume``, its earlier result is complete, its videos hold the recorded frame count and its
options match; otherwise ``rerun`` says why it ran again). "pending": not started yet.
"""

from .inputs import MANIFEST_EXTENSIONS, VIDEO_EXTENSIONS, discover, plan, unique_names
from .job import BatchError, Job, VideoRecord, load_models, process_one, process_video, read_complete, resume_check
from .local import resolve_devices, run_local
from .rayengine import RAY_INSTALL, run_ray
from .report import exit_code, write_report

__all__ = [
    "BatchError", "Job", "VideoRecord", "discover", "unique_names", "plan", "read_complete", "resume_check",
    "process_one", "load_models", "process_video", "run_local", "run_ray", "resolve_devices", "write_report",
    "exit_code", "VIDEO_EXTENSIONS", "MANIFEST_EXTENSIONS", "RAY_INSTALL",
]
