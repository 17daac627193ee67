"""Command line (also `python -m wanprep_torch ...`):

    wanprep run VIDEO --det DET.onnx --pose POSE.onnx --out DIR [--width W] [--height H]
                [--gate off|safe|fast] [--device cpu|cuda] [--fp16] [--batch auto|N]
                [--chunk 64] [--face-padding 0] [--no-progress]
    wanprep batch INPUT... --det DET.onnx --pose POSE.onnx --out DIR [run options] [--resume]
                [--workers N] [--devices cuda:0,cuda:1] [--engine local|ray] [--ray-address ADDR]
    wanprep demo [--out demo_out] [--frames 24] ...
    wanprep models [list]
    wanprep models download NAME... [--to models] [--force] [--no-check]

`run` writes DIR/pose.mp4, DIR/face.mp4, DIR/poses.json and DIR/timings.txt. User errors
(missing or undecodable video, missing or wrong model files, bad frames) print one line on
stderr and exit with status 2.

`batch` runs `run` over many videos (files, folders, globs, text/CSV manifests) into DIR/<name>/,
the models loaded once per worker (wanprep_torch.batch; DIR/batch.json records each video).
Its exit statuses: 0 all ok or skipped, 1 some failed or incomplete, 2 usage, 130 interrupted.

`models` lists the detector and pose models and their Hugging Face sources; `models download`
fetches them (wanprep_torch.hub). Its exit statuses: 0 done, 2 usage (unknown name, --to not
writable, huggingface_hub not installed), 4 download failed (network, hub), 5 a downloaded file
fails the model check, 130 interrupted (Ctrl-C; the same command resumes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from .gate import PRESETS
from .video import VideoError, VideoReader, one_line as _one_line, resize_frames, target_size, write_video

__all__ = [
    "main",
    "format_timings",
    "run_demo",
    "run_video",
    "batch_load",
    "batch_process",
    "CliError",
    "prepare_fp16_models",
]

GATE_PRESETS = tuple(PRESETS)


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def format_timings(timings: dict) -> str:
    """A fixed-width table of Result.timings."""
    rows = [(k, v) for k, v in timings.items() if isinstance(v, dict)]
    lines = [f"{'stage':<14}{'seconds':>10}{'ms/frame':>11}"]
    for name, v in rows:
        if name in ("total", "non_model"):
            continue
        lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    for name in ("non_model", "total"):
        if name in timings:
            v = timings[name]
            lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    lines.append(f"frames: {timings.get('frames', '?')}")
    return "\n".join(lines)


def _save_png(img, path: Path) -> None:
    from PIL import Image

    arr = img
    if arr.dtype.is_floating_point:
        arr = (arr.clamp(0, 1) * 255 + 0.5).to(dtype=__import__("torch").uint8)
    Image.fromarray(arr.cpu().numpy()).save(path)


def run_demo(out_dir: Path, frames: int = 24, device: str = "cpu", models_dir: Path | None = None, progress: bool = True) -> dict:
    """Build the tiny test models and a synthetic clip, run the pipeline, write the outputs.

    Returns a summary dict (also written as summary.json).
    """
    import torch

    from . import Preprocessor
    from .testkit import build_test_models, default_cache_dir, make_clip

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = build_test_models(models_dir or default_cache_dir(), fp16=False)  # the demo needs no FP16 models
    hidden = range(frames // 3, frames // 3 + max(frames // 6, 1))  # the person turns away
    clip = make_clip(frames, motion="slow", face_hidden=hidden, seed=0)
    video = clip.frames.to(device)
    pre = Preprocessor(models["det"], models["pose"], device=device, progress=progress)
    res = pre(video)

    (out_dir / "poses.json").write_text(json.dumps(res.to_json(), indent=1))
    faces_dir = out_dir / "faces"
    faces_dir.mkdir(exist_ok=True)
    for i in range(len(res)):
        _save_png(res.face_images[i], faces_dir / f"face_{i:04d}.png")
    try:
        from .draw import draw_pose

        poses = draw_pose(res.pose_metas)
        pose_dir = out_dir / "pose"
        pose_dir.mkdir(exist_ok=True)
        for i in range(poses.shape[0]):
            _save_png(poses[i], pose_dir / f"pose_{i:04d}.png")
    except ImportError:
        pass

    gt = clip.keypoints.to(res.keypoints.device)
    vis = clip.visible.to(res.keypoints.device)
    err = (res.keypoints[..., :2] - gt).norm(dim=-1)[vis]
    summary = {
        "frames": len(res),
        "size": [res.width, res.height],
        "providers": res.providers,
        "mean_keypoint_error_px": round(float(err.mean()), 3),
        "face_held_frames": int(res.face_held.sum()),
        "key_frame_points": json.loads(res.key_frame_points),
        "out_dir": str(out_dir),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(format_timings(res.timings))
    print(f"providers: {res.providers}")
    print(f"mean keypoint error vs ground truth: {summary['mean_keypoint_error_px']:.3f} px over {int(vis.sum())} visible points")
    print(f"frames with the face held (person turned away): {summary['face_held_frames']}")
    print(f"outputs written to {out_dir}/ (poses.json, faces/*.png, pose/*.png, summary.json)")
    return summary


# ----------------------------------------------------------------------------- wanprep run


def prepare_fp16_models(paths: dict, cache_dir: Path, log=print) -> dict:
    """FP16 copies of float32 models, converted once into ``cache_dir`` (FP16 files pass as is).

    Inputs and outputs become float16 too (keep_io_types=False); the pipeline feeds them
    float16. A cached copy is reused while it is newer than its source.
    """
    import onnx

    try:
        from converters.fp16 import convert_fp16, is_fp16_model
        from converters import ConversionError
    except ImportError as exc:
        raise CliError(f"--fp16 needs onnxconverter-common: pip install 'wanprep_torch[fp16]' ({_one_line(exc)})") from None
    from .runtime import ModelError, check_model_file

    out = {}
    for role, path in paths.items():
        path = Path(path)
        check_model_file(path, role)
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends
            raise ModelError(f"cannot load {role} model {path}: not a valid ONNX model ({_one_line(exc)})") from None
        if is_fp16_model(model):
            out[role] = path
            continue
        # The path hash keeps two models that share a file name apart.
        tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        dst = cache_dir / f"{path.stem}-{tag}.fp16.onnx"
        if not (dst.is_file() and dst.stat().st_mtime >= path.stat().st_mtime):
            cache_dir.mkdir(parents=True, exist_ok=True)
            log(f"converting the {role} model to FP16: {path} -> {dst}")
            try:
                convert_fp16(path, dst, keep_io_types=False, force=True)
            except ConversionError as exc:
                raise ModelError(f"cannot convert {role} model {path} to FP16: {_one_line(exc)}") from None
        out[role] = dst
    return out


def run_video(
    video,
    det,
    pose,
    out_dir,
    width: int | None = None,
    height: int | None = None,
    gate: str | None = None,
    device: str = "cpu",
    fp16: bool = False,
    batch="auto",
    chunk: int = 64,
    face_padding: int = 0,
    progress: bool = True,
    pre=None,
) -> dict:
    """Decode ``video`` in chunks, run the Preprocessor, write the outputs into ``out_dir``.

    ``gate=None`` is the Preprocessor's default, "safe". ``pre``: a Preprocessor built once by
    the caller (:func:`batch_load`); the model options are then its own.
    Returns a summary dict. Raises CliError / ModelError for user errors.
    """
    import torch

    from .draw import draw_pose
    from .pipeline import Preprocessor
    from .runtime import ModelError

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if chunk < 1:
        raise CliError(f"--chunk must be >= 1, got {chunk}")
    gate = "safe" if gate is None else gate
    if gate not in GATE_PRESETS:
        raise CliError(f"unknown --gate {gate!r}; choose one of {', '.join(GATE_PRESETS)}")

    reader = VideoReader(video)  # fails fast on a bad video, before loading models
    try:
        size = target_size((reader.height, reader.width), width, height)
        models = {"detector": Path(det), "pose": Path(pose)}
        if fp16 and pre is None:
            models = prepare_fp16_models(models, out_dir / ".models", log=print if progress else (lambda _m: None))
        if pre is None:
            pre = _preprocessor(models["detector"], models["pose"], device, batch, face_padding, chunk, progress, gate)

        bar = None
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=reader.frames, desc="decode", unit="frame", position=3, leave=True)
            except Exception:  # no tqdm: run without the decode bar
                bar = None
        try:
            res = pre(reader.chunks(chunk, pre.device, None if size == (reader.height, reader.width) else size, bar))
        except (ValueError, TypeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise CliError(f"bad frames in {reader.path}: {_one_line(exc)}") from None
        finally:
            if bar is not None:
                bar.close()
        decode_s = reader.decode_seconds
    finally:
        reader.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    t_write = time.perf_counter()
    n = len(res)
    draw_chunk = 32  # pose frames drawn per step: bounds the float canvas memory

    def pose_chunks():
        for s in range(0, n, draw_chunk):
            yield draw_pose(res.pose_metas[s : s + draw_chunk], device=pre.device)

    n_pose = write_video(out_dir / "pose.mp4", pose_chunks(), reader.fps)
    n_face = write_video(out_dir / "face.mp4", (res.face_images[s : s + 64] for s in range(0, n, 64)), reader.fps)
    write_s = time.perf_counter() - t_write

    report = res.to_json()
    report["video"] = {
        "source": str(reader.path),
        "fps": float(reader.fps),
        "frames": n,
        "source_size": [reader.width, reader.height],
        "size": [res.width, res.height],
        "gate": gate,
    }
    (out_dir / "poses.json").write_text(json.dumps(report))

    wall_s = time.perf_counter() - t_start
    table = format_timings(res.timings)
    extra = [
        f"{'decode':<14}{decode_s:>10.3f}{1000 * decode_s / max(n, 1):>11.2f}  (PyAV decode + resize, overlapped with the run)",
        f"{'write':<14}{write_s:>10.3f}{1000 * write_s / max(n, 1):>11.2f}  (pose drawing + H.264 encoding)",
        f"{'wall':<14}{wall_s:>10.3f}{1000 * wall_s / max(n, 1):>11.2f}  (whole command)",
    ]
    text = table + "\n" + "\n".join(extra) + "\n"
    (out_dir / "timings.txt").write_text(text)
    print(text, end="")
    print(f"providers: {res.providers}")
    print(f"outputs written to {out_dir}/ (pose.mp4, face.mp4, poses.json, timings.txt)")
    return {
        "frames": n,
        "pose_frames": n_pose,
        "face_frames": n_face,
        "size": [res.width, res.height],
        "fps": float(reader.fps),
        "gate": gate,
        "out_dir": str(out_dir),
    }


def _preprocessor(det, pose, device, batch, face_padding, chunk, progress, gate, **extra):
    """The Preprocessor `wanprep run` uses (``extra``: more Preprocessor arguments)."""
    import torch

    from .pipeline import Preprocessor
    from .runtime import ModelError

    opts = dict(
        device=device,
        batch_size=batch,
        face_padding=face_padding,
        face_dtype=torch.uint8,  # 4x smaller than float while the crops wait for the encoder
        face_device="cpu",
        chunk_size=chunk,
        progress=progress,
        gate=gate,
    )
    try:
        return Preprocessor(det, pose, **opts, **extra)
    except ModelError:
        raise
    except (ValueError, TypeError) as exc:
        raise CliError(_one_line(exc)) from None


def batch_load(options: dict, progress_callback=None):
    """`wanprep batch`: a worker's Preprocessor, built once with the run options (FP16 models
    are converted beforehand, in the parent)."""
    return _preprocessor(options["det"], options["pose"], options["device"], options["batch"],
                         options["face_padding"], options["chunk"], False, options["gate"] or "safe",
                         progress_callback=progress_callback, intra_op_threads=options.get("threads"))


def batch_process(pre, video, out_dir, options: dict) -> dict:
    """`wanprep batch`: one video through `wanprep run` with the worker's Preprocessor."""
    return run_video(video, options["det"], options["pose"], out_dir, width=options["width"],
                     height=options["height"], gate=options["gate"], device=str(pre.device),
                     batch=options["batch"], chunk=options["chunk"], face_padding=options["face_padding"],
                     progress=False, pre=pre)


def _add_batch_parser(sub, run_parser) -> None:
    from .batch import EXIT_HELP

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
    for action in run_parser._actions:  # the run options, shared (argparse's parents= does the same)
        if action.dest not in ("help", "video", "out", "device"):
            b._add_action(action)
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder: DIR/<name>/ per video, DIR/batch.json")
    b.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: every GPU, else the CPU)")
    b.add_argument("--devices", default=None, metavar="LIST", help="devices for the workers, e.g. cuda:0,cuda:1 (default: one worker per GPU)")
    b.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (Ray: actors); default: one per GPU, 1 on the CPU")
    b.add_argument("--resume", action="store_true", help="skip videos whose poses.json is complete; run interrupted or failed ones again")
    b.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes (default) or a Ray Data job")
    b.add_argument("--ray-address", default=None, metavar="ADDR", help="Ray cluster to join (e.g. ray://head:10001 or auto); default: a local instance")


def _run_batch(args) -> int:
    from . import batch
    from .runtime import ModelError

    try:
        return batch.main(args, batch_process, batch_load, prepare_fp16_models)
    except (CliError, ModelError, VideoError, batch.BatchError) as exc:
        print(f"wanprep: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _batch_arg(v: str):
    if v == "auto":
        return v
    try:
        b = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {v!r}") from None
    if b < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {v!r}")
    return b


MODELS_EXIT = {"usage": 2, "download": 4, "check": 5}


def _add_models_parser(sub) -> None:
    from .hub import MODELS

    names = ", ".join(MODELS)
    m = sub.add_parser(
        "models",
        help="list the detector and pose models and where they come from; download them",
        description="Without a subcommand: list the models users run (YOLOv10m detector, ViTPose wholebody) "
        "and their Hugging Face sources. Exit status: 0 done, 2 usage error (unknown name, --to not "
        "writable, huggingface_hub missing), 4 download failed, 5 a downloaded file fails the model check, "
        "130 interrupted.",
    )
    msub = m.add_subparsers(dest="models_cmd")
    msub.add_parser("list", help="list the models and their sources (the default)")
    d = msub.add_parser(
        "download",
        help="fetch models from the Hugging Face Hub (needs huggingface_hub) and check them",
        description="Fetch the named models with huggingface_hub into DIR (each under its path in the "
        "repository), then open each in ONNX Runtime and check its signature. A download that was "
        "interrupted resumes when run again; files already there are not fetched again. Exit status: "
        "0 done, 2 usage error, 4 download failed, 5 a file fails the model check, 130 interrupted.",
    )
    d.add_argument("names", nargs="+", metavar="NAME", help=f"model(s) to fetch: {names}")
    d.add_argument("--to", type=Path, default=Path("models"), metavar="DIR",
                   help="destination folder, created if needed (default: models)")
    d.add_argument("--force", action="store_true", help="fetch again even when the files are already there")
    d.add_argument("--no-check", action="store_true",
                   help="skip opening each model in ONNX Runtime to check its signature (saves time and memory)")


def _run_models(args) -> int:
    from . import hub

    if args.models_cmd in (None, "list"):
        print(hub.format_model_list())
        return 0
    try:
        done = hub.download(args.names, args.to, force=args.force, check=not args.no_check, log=print)
    except hub.HubError as exc:
        kind = ("download" if isinstance(exc, hub.DownloadError)
                else "check" if isinstance(exc, hub.CheckError) else "usage")
        print(f"wanprep: error: {_one_line(exc)}", file=sys.stderr)
        return MODELS_EXIT[kind]
    except KeyboardInterrupt:
        print("wanprep: interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    for d in done:
        checked = f": {d.signature}" if d.signature else " (not checked)"
        print(f"{d.model.name} ({d.model.role}): {d.path}{checked}")
    hint = hub.run_hint(done)
    if hint:
        print(f"run with: {hint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wanprep", description="Pose and face preprocessing for Wan 2.2 Animate")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the pipeline on a synthetic clip with tiny built-in models")
    d.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    d.add_argument("--frames", type=int, default=24)
    d.add_argument("--device", default="cpu")
    d.add_argument("--models-dir", type=Path, default=None, help="where to build the tiny models (default: a cache folder)")
    d.add_argument("--no-progress", action="store_true")

    r = sub.add_parser(
        "run",
        help="preprocess a video file: pose.mp4, face.mp4, poses.json, timings.txt",
        description="Decode VIDEO in chunks, detect the person, estimate the wholebody pose, crop the face, "
        "and write DIR/pose.mp4 (pose rendering), DIR/face.mp4 (512x512 face crops), DIR/poses.json "
        "and DIR/timings.txt. Exit status 2 on user errors.",
    )
    r.add_argument("video", type=Path, metavar="VIDEO", help="input video (anything FFmpeg/PyAV decodes)")
    r.add_argument("--det", type=Path, required=True, metavar="DET.onnx", help="YOLO person detector ONNX file")
    r.add_argument("--pose", type=Path, required=True, metavar="POSE.onnx", help="ViTPose wholebody ONNX file")
    r.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")
    r.add_argument("--width", type=int, default=None, metavar="W", help="resize frames to this width (e.g. 832); alone, keeps the aspect")
    r.add_argument("--height", type=int, default=None, metavar="H", help="resize frames to this height (e.g. 480); alone, keeps the aspect")
    r.add_argument(
        "--gate",
        choices=GATE_PRESETS,
        default="safe",
        help="frame-skipping preset: off (every frame through both models), safe (default), fast",
    )
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    r.add_argument(
        "--fp16",
        action="store_true",
        help="convert float32 models to FP16 (cached in DIR/.models/; FP16 files are used as they are)",
    )
    r.add_argument("--batch", type=_batch_arg, default="auto", metavar="auto|N", help="frames per model run, or auto (default)")
    r.add_argument("--chunk", type=int, default=64, metavar="N", help="frames decoded and processed per step (default: 64)")
    r.add_argument("--face-padding", type=int, default=0, metavar="PX", help="extra pixels on each side of the face box (default: 0)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_batch_parser(sub, r)
    _add_models_parser(sub)

    args = parser.parse_args(argv)
    if args.cmd == "batch":
        return _run_batch(args)
    if args.cmd == "models":
        return _run_models(args)
    if args.cmd == "demo":
        run_demo(args.out, args.frames, args.device, args.models_dir, progress=not args.no_progress)
        return 0
    if args.cmd == "run":
        from .runtime import ModelError

        try:
            run_video(
                args.video,
                args.det,
                args.pose,
                args.out,
                width=args.width,
                height=args.height,
                gate=args.gate,
                device=args.device,
                fp16=args.fp16,
                batch=args.batch,
                chunk=args.chunk,
                face_padding=args.face_padding,
                progress=not args.no_progress,
            )
        except (CliError, ModelError, VideoError) as exc:
            print(f"wanprep: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
