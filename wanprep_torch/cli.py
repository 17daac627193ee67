"""Command line (also `python -m wanprep_torch ...`): parses, then calls the library.

    wanprep run VIDEO --det NAME|DET.onnx --pose NAME|POSE.onnx --out DIR [--models-dir DIR]
                [--width W] [--height H] [--gate off|safe|fast] [--smooth auto|on|off]
                [--device cpu|cuda|cuda:N] [--fp16 | --int8] [--batch auto|N] [--chunk 64]
                [--face-padding 0] [--people N|all] [--overwrite] [--no-progress] [--overlay]
                [--start TIME] [--duration TIME]
    wanprep batch INPUT... --det NAME|DET.onnx --pose NAME|POSE.onnx --out DIR [run options] [--resume]
                [--workers N] [--devices cuda:0,cuda:1] [--engine local|ray] [--ray-address ADDR]
    wanprep demo [--out demo_out] [--frames 24] ...
    wanprep demo --video FILE [--frames 96]      (a lossless try-out clip for the test kit's models)
    wanprep --version
    wanprep models [list] [--models-dir DIR]
    wanprep models download NAME... [--models-dir DIR] [--force] [--no-check]
    wanprep doctor [--json]

Model names (yolov10m, vitpose-l, vitpose-h) are looked up in the models folder: --models-dir,
else $WANPREP_MODELS, else the user cache folder (wanprep_torch.paths). TIME is seconds (1.5),
[H:]M:S (1:02.5) or frames (30f). `--help`, `--version` and `models list` import neither torch
nor ONNX Runtime: heavy imports wait until work starts.

`run` is :func:`wanprep_torch.runner.run_video`: DIR is checked (created, writable, not the
input, not busy with another run, no earlier result unless --overwrite) before anything is
decoded; the outputs are staged in DIR/.wanprep-partial/ and moved in at the end, poses.json
last. The first SIGINT/SIGTERM stops at the next model batch and keeps the frames done; a second
one aborts at once (DIR keeps its earlier state).

Exit status (`wanprep`, `wanprep run`, `wanprep demo`):

    0    finished: every frame of the input processed
    1    an unexpected internal error (a bug: the traceback is printed)
    2    user error, one line on stderr: bad arguments or options (--device lists the accepted
         values), `--out` not creatable, not writable, busy with another run, holding a result
         (without --overwrite) or the input's own folder file, missing or undecodable video,
         missing or wrong model files, a model name not downloaded (the message names the
         download command), --start past the end, bad frames, sizes whose buffers do not fit in memory,
         `--fp16` without onnxconverter-common, `--int8` with `--fp16`; also `wanprep` with no
         arguments (prints the help)
    3    incomplete input: the video is truncated or corrupt; the frames there are processed and
         kept, undecodable ones hold the previous frame's result ("source_ok": false), poses.json
         has "complete": false with expected vs decoded counts
    74   an output could not be written (disk full, permissions): one line naming the path; the
         folder keeps its earlier state
    130  interrupted (SIGINT/SIGTERM): the frames done are kept, poses.json has "complete": false

`batch` runs `run` over many videos (wanprep_torch.batch). Its exit statuses: 0 all ok or
skipped, 1 some failed or incomplete, 2 usage, 130 interrupted. `models` lists and downloads the
models into the models folder (wanprep_torch.hub): 0 done, 2 usage, 4 download failed, 5 a file
fails the model check, 130 interrupted. `doctor` prints what the machine can run
(wanprep_torch.doctor), exit status 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import CHUNK_SIZE
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER, RunError, one_line
from .interrupt import SignalStop
from .options import GATES, SMOOTHING

__all__ = ["main", "build_parser", "run_options"]


_EPILOG = """exit status:
  0    finished: every frame processed
  1    an unexpected internal error (a bug; the traceback is printed)
  2    user error (one line on stderr): bad options, --out not creatable, not
       writable, busy with another run, holding a result (see --overwrite) or
       the input itself; missing or undecodable video, wrong model files, a
       model name not downloaded (the message names the download command),
       --start past the end, bad frames, sizes that do not fit in memory,
       --fp16 without onnxconverter-common, --int8 with --fp16
  3    incomplete input: the video is truncated or corrupt; the frames there
       are kept, undecodable ones hold the previous result ("source_ok": false)
  74   an output could not be written (disk full, permissions); the folder
       keeps its earlier state
  130  interrupted (SIGINT/SIGTERM): stops at the next model batch and keeps the
       frames done ("complete": false); a second signal aborts at once

outputs: DIR/pose.mp4, DIR/face.mp4 (DIR/overlay.mp4 with --overlay),
DIR/poses.json (with "complete", "frames_done", "expected_frames",
"decoded_frames", "filled_frames", the options; --start/--duration under
"video": "range"),
DIR/openpose.json and DIR/timings.txt, staged in DIR/.wanprep-partial/ and moved
in at the end. Odd sizes are rounded up to even ones (H.264 yuv420p)."""


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def _people_arg(v: str):
    """--people: a positive integer or "all"."""
    if v.strip().lower() == "all":
        return "all"
    try:
        return _positive(v)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {v!r}") from None


def _batch_arg(v: str):
    if v == "auto":
        return v
    try:
        return _positive(v)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {v!r}") from None


def _time_arg(v: str):
    from .video import parse_time

    try:
        return parse_time(v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MODELS_DIR_HELP = ("the models folder (default: $WANPREP_MODELS, else the user cache folder, "
                   "e.g. ~/.cache/wanprep/models; `wanprep models` prints it)")


def _add_run_options(r: argparse.ArgumentParser, batch: bool) -> None:
    """The options `run` and `batch` share (one RunOptions)."""
    r.add_argument("--det", required=True, metavar="NAME|FILE",
                   help="person detector: a model name (yolov10m, from `wanprep models download`) or a YOLO ONNX file")
    r.add_argument("--pose", required=True, metavar="NAME|FILE",
                   help="pose model: a model name (vitpose-l, vitpose-h) or a ViTPose wholebody ONNX file")
    r.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help="where model names are looked up: " + MODELS_DIR_HELP)
    r.add_argument("--width", type=int, default=None, metavar="W", help="resize frames to this width (e.g. 832); alone, keeps the aspect; odd rounds up")
    r.add_argument("--height", type=int, default=None, metavar="H", help="resize frames to this height (e.g. 480); alone, keeps the aspect; odd rounds up")
    r.add_argument("--gate", choices=GATES, default="safe",
                   help="frame-skipping preset: off (every frame through both models), safe (default), fast")
    r.add_argument("--smooth", choices=SMOOTHING, default="auto",
                   help="keypoint smoothing (zero-lag, noise measured from the video; steadier bones and face crops): "
                   "auto (default: on with --gate safe/fast, off with --gate off), on, off")
    if batch:
        r.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: every GPU, else the CPU)")
    else:
        r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    r.add_argument("--fp16", action="store_true", help="convert float32 models to FP16 (once per model, cached in the user "
                   "cache; FP16 files are used as they are; slower on the CPU; needs pip install 'wanprep_torch[fp16]')")
    r.add_argument("--int8", action="store_true", help="CPU: INT8 models (made once into the user cache, checked on "
                   "the video's first frames; a model that misses the thresholds runs in FP32 with a warning)")
    r.add_argument("--batch", type=_batch_arg, default="auto", metavar="auto|N", help="frames per model run, or auto (default)")
    r.add_argument("--chunk", type=int, default=CHUNK_SIZE, metavar="N", help=f"frames decoded and processed per step (default: {CHUNK_SIZE})")
    r.add_argument("--face-padding", type=int, default=0, metavar="PX", help="extra pixels on each side of the face box (default: 0)")
    r.add_argument("--people", type=_people_arg, default=1, metavar="N|all",
                   help="follow up to N people (or all) with identities: pose.mp4 draws them all, DIR/person-K/ holds "
                   "identity K's face.mp4 and poses.json (default: 1, the single subject)")
    r.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output folder (refused without it)")
    r.add_argument("--no-progress", action="store_true", help="no progress report (a bar on a terminal, plain lines otherwise)")
    r.add_argument("--overlay", action="store_true",
                   help="also write DIR/overlay.mp4: the skeleton, face box and person box drawn on the source frames")
    r.add_argument("--start", type=_time_arg, default=None, metavar="TIME",
                   help="start at this time, as ffmpeg's -ss: seconds (1.5 or 1.5s), [H:]M:S (1:02.5) or frames (30f); "
                   "a time rounds up to the next frame (default: the first frame)")
    r.add_argument("--duration", type=_time_arg, default=None, metavar="TIME",
                   help="process this much, as ffmpeg's -t: seconds (2), [H:]M:S or frames (48f) (default: to the end)")


def resolve_names(args) -> tuple[str, str]:
    """``--det`` / ``--pose`` as files: a catalogue name becomes its file in the models folder (a
    path stays a path); RunError (exit 2) naming the download command when one is missing."""
    from . import hub, paths

    explicit = getattr(args, "models_dir", None)
    folder = paths.models_dir(explicit)
    try:
        det = hub.resolve_model(args.det, "detector", folder, explicit_dir=explicit is not None)
        pose = hub.resolve_model(args.pose, "pose", folder, explicit_dir=explicit is not None)
    except hub.HubError as exc:
        raise RunError(one_line(exc)) from None
    return str(det), str(pose)


def run_options(args) -> "RunOptions":  # noqa: F821 - imported lazily (torch-free start-up)
    """The RunOptions of parsed `run` / `batch` arguments."""
    from .runner import RunOptions

    det, pose = resolve_names(args)
    text = lambda t: t.text if t is not None else None  # noqa: E731 - RunOptions keeps what was written
    return RunOptions(det=det, pose=pose, width=args.width, height=args.height, gate=args.gate, smooth=args.smooth,
                      device=args.device if args.device is not None else "auto", fp16=args.fp16, int8=args.int8,
                      batch=args.batch, chunk=args.chunk, face_padding=args.face_padding, overwrite=args.overwrite,
                      overlay=args.overlay, people=args.people, start=text(args.start), duration=text(args.duration))


def _add_batch_parser(sub) -> None:
    from .batch.command import EXIT_HELP

    b = sub.add_parser(
        "batch",
        help="preprocess many videos: DIR/<name>/ per video, DIR/batch.json, models loaded once per worker",
        description="Run `wanprep run` over many videos: INPUT may be video files, folders (searched "
        "for videos), glob patterns, or text/CSV manifests listing paths. Each video gets DIR/<name>/ "
        "with the files `run` writes (names made unique); DIR/batch.json records every video's "
        "status (ok, failed, incomplete, skipped), frames, seconds and error.",
        epilog=EXIT_HELP,
    )
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders, glob patterns, .txt/.csv manifests")
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder: DIR/<name>/ per video, DIR/batch.json")
    _add_run_options(b, batch=True)
    b.add_argument("--devices", default=None, metavar="LIST", help="devices for the workers, e.g. cuda:0,cuda:1 (default: one worker per GPU)")
    b.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (Ray: actors); default: one per GPU, 1 on the CPU")
    b.add_argument("--resume", action="store_true", help="skip videos whose result is complete, matches its recorded frame "
                   "count and was made with the same options; run the others again (saying why)")
    b.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes (default) or a Ray Data job")
    b.add_argument("--ray-address", default=None, metavar="ADDR", help="Ray cluster to join (e.g. ray://head:10001 or auto); default: a local instance")


MODELS_EXIT = {"usage": 2, "download": 4, "check": 5}


def _add_models_parser(sub) -> None:
    from .hub import MODELS

    names = ", ".join(MODELS)
    m = sub.add_parser(
        "models",
        help="list the detector and pose models and where they come from; download them",
        description="Without a subcommand: list the models users run (YOLOv10m detector, ViTPose wholebody), "
        "their Hugging Face sources and whether each is in the models folder. Exit status: 0 done, 2 usage "
        "error (unknown name, the folder not writable, huggingface_hub missing), 4 download failed, 5 a "
        "downloaded file fails the model check, 130 interrupted.",
    )
    m.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help=MODELS_DIR_HELP)
    msub = m.add_subparsers(dest="models_cmd")
    ls = msub.add_parser("list", help="list the models, their sources and what is downloaded (the default)")
    ls.add_argument("--models-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR", help=MODELS_DIR_HELP)
    d = msub.add_parser(
        "download",
        help="fetch models from the Hugging Face Hub (needs huggingface_hub) and check them",
        description="Fetch the named models with huggingface_hub into the models folder (each under its "
        "path in the repository), then open each in ONNX Runtime and check its signature; `wanprep run "
        "--det NAME --pose NAME` finds them there. A download that was interrupted resumes when run "
        "again; files already there are not fetched again. Exit status: 0 done, 2 usage error, 4 "
        "download failed, 5 a file fails the model check, 130 interrupted.",
    )
    d.add_argument("names", nargs="+", metavar="NAME", help=f"model(s) to fetch: {names}")
    d.add_argument("--models-dir", "--to", dest="models_dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                   help=MODELS_DIR_HELP + "; --to is the same option")
    d.add_argument("--force", action="store_true", help="fetch again even when the files are already there")
    d.add_argument("--no-check", action="store_true",
                   help="skip opening each model in ONNX Runtime to check its signature (saves time and memory)")


def _run_models(args) -> int:
    from . import hub, paths

    folder = paths.models_dir(args.models_dir)
    if args.models_cmd in (None, "list"):
        print(hub.format_model_list(folder))
        return 0
    try:
        done = hub.download(args.names, folder, force=args.force, check=not args.no_check, log=print)
    except hub.HubError as exc:
        kind = ("download" if isinstance(exc, hub.DownloadError)
                else "check" if isinstance(exc, hub.CheckError) else "usage")
        print(f"wanprep: error: {one_line(exc)}", file=sys.stderr)
        return MODELS_EXIT[kind]
    except KeyboardInterrupt:
        print("wanprep: interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    for d in done:
        checked = f": {d.signature}" if d.signature else " (not checked)"
        print(f"{d.model.name} ({d.model.role}): {d.path}{checked}")
    hint = hub.run_hint(done, args.models_dir)
    if hint:
        print(f"run with: {hint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `wanprep` argument parser (subcommands: demo, run, batch, models)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="wanprep",
        description="Pose and face preprocessing for Wan 2.2 Animate",
        epilog="exit status: 0 ok, 1 internal error, 2 user error, 3 incomplete input, 74 write error, "
        "130 interrupted (details: wanprep run --help)",
    )
    parser.add_argument("--version", action="version", version=f"wanprep {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    d = sub.add_parser("demo", help="run the pipeline on a synthetic clip with tiny built-in models; "
                       "--video FILE writes a try-out clip instead",
                       description="Build the tiny analytic test models and a synthetic clip, run the pipeline and "
                       "write poses.json, faces/*.png, pose/*.png and summary.json.")
    d.add_argument("--out", type=Path, default=Path("demo_out"), metavar="DIR", help="output folder (default: demo_out)")
    d.add_argument("--frames", type=_positive, default=None, metavar="N", help="frames in the synthetic clip, >= 1 (default: 24; 96 with --video)")
    d.add_argument("--video", type=Path, default=None, metavar="FILE",
                   help="only write the synthetic clip to FILE (416x240, 4 s at 24 fps), lossless so the test kit's models read it: "
                   "FFV1 for .mkv, else H.264 RGB at qp 0 (.mp4); prints the `wanprep run` command for it")
    d.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    d.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help="where to build the tiny models (default: a cache folder)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = sub.add_parser(
        "run",
        help="preprocess a video file: pose.mp4, face.mp4, poses.json, timings.txt",
        description="Decode VIDEO in chunks, detect the person, estimate the wholebody pose, crop the face, "
        "and write DIR/pose.mp4 (pose rendering), DIR/face.mp4 (512x512 face crops), DIR/poses.json "
        "and DIR/timings.txt, streaming them as frames finish.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("video", type=Path, metavar="VIDEO", help="input video (anything FFmpeg/PyAV decodes)")
    r.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed; checked before anything runs)")
    _add_run_options(r, batch=False)
    _add_batch_parser(sub)
    _add_models_parser(sub)
    doc = sub.add_parser("doctor", help="what this machine can run: versions, ONNX Runtime providers, GPUs, conflicts, advice",
                         description="Print the versions of the packages wanprep uses, the ONNX Runtime providers that "
                         "really work (each runs a tiny model in its own session), the devices torch sees, ONNX Runtime "
                         "distributions installed side by side, the models downloaded, and what to do about it. "
                         "Exit status 0.")
    doc.add_argument("--json", action="store_true", help="print the report as JSON")
    doc.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help=MODELS_DIR_HELP)
    return parser


def _tune_malloc() -> None:
    """On glibc, serve allocations of 1 MB and more with mmap (given back to the system when
    freed) and use at most 2 malloc arenas: the chunks' large short-lived buffers then do not
    fragment the heap, and the peak stays flat over long videos (scripts/measure_memory.py).
    Only the `wanprep run` process; left alone when MALLOC_MMAP_THRESHOLD_ or MALLOC_ARENA_MAX
    is set, and elsewhere than glibc."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops glibc's dynamic raise)
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _user_errors() -> tuple:
    from .runtime import ModelError
    from .video import VideoError

    return RunError, ModelError, VideoError


def _error(exc: BaseException) -> int:
    print(f"wanprep: error: {one_line(exc)}", file=sys.stderr, flush=True)
    return getattr(exc, "status", EXIT_USER)


def _main_run(args, stop: SignalStop) -> int:
    from .runner import run_video

    _tune_malloc()
    try:
        options = run_options(args)
        summary = run_video(args.video, args.out, options, stop=stop, progress=not args.no_progress)
    except _user_errors() as exc:
        return _error(exc)
    return summary.exit


def _write_tryout(args) -> int:
    from .testkit import write_tryout_clip

    try:
        got = write_tryout_clip(args.video, args.frames or 96)
    except ValueError as exc:  # VideoError too
        print(f"wanprep: error: --video {args.video}: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    print(f"wrote {got.video}: {got.frames} frames of the test kit's synthetic person, lossless ({got.codec})")
    print(f"try: wanprep run {got.video} --det {got.det} --pose {got.pose} --out tryout --overlay")
    return EXIT_OK


def _main_demo(args, stop: SignalStop) -> int:
    from .demo import run_demo
    from .interrupt import StopRequested

    if args.video is not None:
        return _write_tryout(args)
    try:
        with stop.watch():
            run_demo(args.out, args.frames or 24, args.device, args.models_dir, progress=not args.no_progress)
    except _user_errors() as exc:
        return _error(exc)
    except StopRequested:
        print(f"wanprep: interrupted ({stop.requested})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _main_batch(args, stop: SignalStop) -> int:
    from .batch import BatchError
    from .batch.command import main as batch_main

    try:
        return batch_main(args, run_options(args), stop=stop)
    except (BatchError, *_user_errors()) as exc:
        return _error(exc)


def main(argv: list[str] | None = None) -> int:
    """The `wanprep` command; returns the exit status (see the module docstring)."""
    # First of all: a Ctrl-C during start-up (torch and ONNX Runtime load for seconds) becomes a
    # stop request answered at the first checkpoint, not a KeyboardInterrupt traceback.
    stop = SignalStop().install()
    try:
        parser = build_parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:
            parser.print_help()
            return EXIT_USER
        args = parser.parse_args(argv)
        if args.cmd == "models":
            stop.restore()  # downloads handle Ctrl-C themselves (resumable)
            return _run_models(args)
        if args.cmd == "doctor":
            from . import doctor

            print(doctor.format_report(doctor.diagnose(models_dir=args.models_dir), as_json=args.json))
            return EXIT_OK
        if stop.requested:
            print(f"wanprep: interrupted ({stop.requested}) during start-up; nothing was done", file=sys.stderr)
            return EXIT_INTERRUPTED
        if args.cmd == "batch":
            return _main_batch(args, stop)
        if args.cmd == "demo":
            return _main_demo(args, stop)
        if args.cmd == "run":
            return _main_run(args, stop)
        return EXIT_USER
    except KeyboardInterrupt:
        out = getattr(locals().get("args"), "out", None)
        where = f"; {out}/ keeps its earlier state (this run's files stay in {out}/.wanprep-partial/)" if out else ""
        print(f"wanprep: aborted{where}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        stop.restore()


if __name__ == "__main__":
    sys.exit(main())
