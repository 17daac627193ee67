"""Command line (also `python -m wanprep_torch ...`):

    wanprep run VIDEO --det DET.onnx --pose POSE.onnx --out DIR [--width W] [--height H]
                [--gate off|safe|fast] [--device cpu|cuda] [--fp16] [--batch auto|N]
                [--chunk 64] [--face-padding 0] [--people N|all] [--no-progress]
    wanprep batch INPUT... --det DET.onnx --pose POSE.onnx --out DIR [run options] [--resume]
                [--workers N] [--devices cuda:0,cuda:1] [--engine local|ray] [--ray-address ADDR]
    wanprep demo [--out demo_out] [--frames 24] ...
    wanprep --version
    wanprep models [list]
    wanprep models download NAME... [--to models] [--force] [--no-check]

`run` checks DIR first (created and writable), then streams: DIR/pose.mp4 and DIR/face.mp4 are
encoded part by part as frames become final and per-frame records are appended to
DIR/poses.jsonl, folded into DIR/poses.json (with "complete" and "frames_done") and
DIR/openpose.json (one OpenPose JSON dict per frame) at the end,
then DIR/timings.txt. With `--people N` (or all), pose.mp4 draws every person followed and
each identity K gets DIR/person-K/face.mp4 and DIR/person-K/poses.json (its own column
"present"); poses.json and face.mp4 are the primary subject's. Memory does not grow with the video's length. The first SIGINT/SIGTERM
stops after the current chunk and closes the outputs holding exactly the frames done; a second
one aborts at once. Odd sizes are rounded up to even ones (H.264 yuv420p), so the videos and the
JSON agree.

Exit status (`wanprep`, `wanprep run`, `wanprep demo`):

    0    finished: every frame of the input processed
    1    an unexpected internal error (a bug: the traceback is printed)
    2    user error, one line on stderr: bad arguments or options, `--out` not creatable or not
         writable, missing or undecodable video, missing or wrong model files, bad frames,
         `--fp16` without onnxconverter-common; also `wanprep` with no arguments (prints the help)
    3    incomplete input: the video is truncated or corrupt (fewer frames decoded than the
         container promises, or a decoder error mid-stream); the frames decoded are processed
         and kept, poses.json has "complete": false with expected vs decoded counts
    130  interrupted (SIGINT/SIGTERM): the frames done are kept, poses.json has "complete": false

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
import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .gate import PRESETS
from .video import VideoError, VideoReader, even_size, one_line as _one_line, target_size

__all__ = [
    "main",
    "build_parser",
    "format_timings",
    "run_demo",
    "run_video",
    "batch_load",
    "batch_process",
    "CliError",
    "prepare_fp16_models",
]

GATE_PRESETS = tuple(PRESETS)

EXIT_OK = 0
EXIT_USER = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def format_timings(timings: dict) -> str:
    """A fixed-width table of Result.timings."""
    rows = [(k, v) for k, v in timings.items() if isinstance(v, dict)]
    lines = [f"{'stage':<14}{'seconds':>10}{'ms/frame':>11}"]
    for name, v in rows:
        if name in ("total", "non_model", "wall"):
            continue
        lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    for name in ("non_model", "total", "wall"):
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


def _require_fp16() -> None:
    """CliError naming the install command when the FP16 converter's dependency is missing."""
    try:
        import onnxconverter_common  # noqa: F401
    except ImportError:
        raise CliError("--fp16 needs onnxconverter-common: pip install 'wanprep_torch[fp16]' (or pip install onnxconverter-common)") from None


def _prepare_out(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` (and parents) and check it is writable; returns the folders created
    (so that a run that fails before writing anything can remove them). CliError otherwise."""
    created = []
    p = out_dir
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CliError(f"--out {out_dir} exists and is not a folder") from None
    except OSError as exc:
        raise CliError(f"cannot create --out {out_dir}: {exc.strerror or _one_line(exc)}") from None
    if not out_dir.is_dir():
        raise CliError(f"--out {out_dir} exists and is not a folder")
    probe = out_dir / f".wanprep-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        _remove_empty(created)
        raise CliError(f"--out {out_dir} is not writable: {exc.strerror or _one_line(exc)}") from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # innermost first
        try:
            d.rmdir()
        except OSError:
            return


class _Stop:
    """The first SIGINT/SIGTERM asks the run to stop after the current chunk; a second one
    aborts at once (KeyboardInterrupt)."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"wanprep: {self.requested}: stopping after the current chunk (again to abort at once)", file=sys.stderr, flush=True)

    def install(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class _Progress:
    """One progress report over frames, fed by the Preprocessor's progress_callback: a tqdm bar
    with total and ETA when stderr is a terminal, else a plain line every ``interval`` seconds
    (and one at the end), without escape codes."""

    def __init__(self, total: int | None, enabled: bool, stream=None, interval: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self.bar = None
        self.t0 = time.perf_counter()
        self.last = self.t0
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="wanprep", unit="frame", file=self.stream, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def __call__(self, _stage, done, _total=None) -> None:
        step = done - self.done
        self.done = done
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step)
            return
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        el = now - self.t0
        rate = self.done / el if el > 0 else 0.0
        text = f"wanprep: {self.done}"
        if self.total:
            text += f"/{self.total} frames ({100 * self.done / self.total:.0f}%)"
            if rate > 0 and self.done < self.total:
                text += f", ETA {_hms((self.total - self.done) / rate)}"
        else:
            text += " frames"
        text += f", {rate:.2f} frames/s, {_hms(el)} elapsed"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.done:
            self._line(time.perf_counter())
        self.enabled = False


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# poses.json columns and the per-frame record keys they are folded from (poses.jsonl).
_COLUMNS = (
    ("pose_metas", "pose_meta"),
    ("bboxes", "bbox"),
    ("face_bboxes", "face_bbox"),
    ("face_held", "face_held"),
    ("other_persons", "other_persons"),
    ("det_ran", "det_ran"),
    ("pose_ran", "pose_ran"),
    ("gate_distance", "gate_distance"),
)


_DRAW_CHUNK = 8  # pose frames drawn per step: the float canvases (5 MB a frame at 832x480) stay small
_PERSON_COLUMNS = _COLUMNS + (("present", "present"),)


class _Outputs:
    """pose.mp4, face.mp4 and poses.jsonl written part by part; poses.json folded at the end.
    With several people, one more per identity in person-<id>/ (face.mp4, poses.json).

    Holds nothing per frame in memory: the key-frame points are read back from the records."""

    def __init__(self, out_dir: Path, fps, device, person: bool = False):
        from .video import VideoWriter

        self.dir = out_dir
        self.device = device
        self.fps = fps
        self.columns = _PERSON_COLUMNS if person else _COLUMNS
        self.paths = ([] if person else [out_dir / "pose.mp4"]) + [out_dir / "face.mp4", out_dir / "poses.jsonl"]
        self.pose = None if person else VideoWriter(self.paths[0], fps)
        self.face = VideoWriter(self.paths[-2], fps)
        self.jsonl = open(self.paths[-1], "w")
        self.persons: dict = {}  # identity -> _Outputs
        self.frames = 0
        self.fallback = 0  # frames where no person was detected (full-frame box)
        self.held = 0  # frames where no face was visible
        self.width = self.height = None
        self.timings: dict = {}
        self.providers: dict = {}
        self.write_s = 0.0

    def add(self, part) -> None:
        from . import wan
        from .draw import draw_people, draw_pose

        t0 = time.perf_counter()
        n = len(part)
        for s in range(0, n if self.pose is not None else 0, _DRAW_CHUNK):
            if part.people:
                self.pose.write(draw_people([p.pose_metas[s : s + _DRAW_CHUNK] for p in part.people], device=self.device))
            else:
                self.pose.write(draw_pose(part.pose_metas[s : s + _DRAW_CHUNK], device=self.device))
        for person in part.people or ():
            self._person(person.track_id, part).add(person)
        self.face.write(part.face_images)
        cols = part.to_json()
        kps = part.keypoints.detach().float().cpu()
        boxes = part.bboxes.detach().cpu()
        openpose = part.to_openpose()
        for i in range(n):
            rec = {"frame": part.start + i}
            rec.update({key: cols[col][i] for col, key in self.columns})
            rec["key_points"] = wan.key_frame_points(kps[i], box=boxes[i])  # SAM2 prompt points, if it is a key frame
            rec["openpose"] = openpose[i]
            self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        self.fallback += int((part.bboxes[:, 4] == -1).sum())
        self.held += int(part.face_held.sum())
        self.width, self.height = part.width, part.height
        self.timings, self.providers = part.timings, part.providers
        self.frames += n
        self.write_s += time.perf_counter() - t0

    def _person(self, track_id: int, part):
        """The outputs of identity ``track_id``; one first seen now gets the frames before
        this part as not in view (black face crops), so every person's files have all frames."""
        out = self.persons.get(track_id)
        if out is None:
            from .pipeline import absent_person

            folder = self.dir / f"person-{track_id}"
            folder.mkdir(exist_ok=True)
            out = self.persons[track_id] = _Outputs(folder, self.fps, self.device, person=True)
            faces = part.face_images[:0]
            for s in range(0, self.frames, _DRAW_CHUNK):
                n = min(_DRAW_CHUNK, self.frames - s)
                like = dataclasses.replace(part, det_ran=_pad(n), pose_ran=_pad(n), gate_distance=_pad(n).float())
                out.add(absent_person(track_id, s, n, like, faces))
        return out

    def close(self) -> None:
        """Close the videos (playable, exactly the frames written) and the records."""
        try:
            if self.pose is not None:
                self.pose.close()
        finally:
            try:
                self.face.close()
            finally:
                self.jsonl.close()
                for out in self.persons.values():
                    out.close()

    def remove(self) -> None:
        for p in self.paths:
            p.unlink(missing_ok=True)
        for out in self.persons.values():
            out.remove()
            _remove_empty([out.dir])

    def fold(self, header: dict, footer: dict) -> Path:
        """Write poses.json and openpose.json from poses.jsonl (one pass per column, never all
        records in memory) and remove poses.jsonl."""
        from . import wan

        rows = self.paths[-1]
        wanted = set(wan.key_frame_indices(self.frames)) if self.frames else set()
        points = {}
        with open(rows) as r:
            for i, line in enumerate(r):
                if i in wanted:
                    points[i] = json.loads(line)["key_points"]
        path = self.dir / "poses.json"
        tmp = self.dir / "poses.json.tmp"
        with open(tmp, "w") as f:
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
        os.replace(tmp, path)
        # openpose.json: one OpenPose JSON dict per frame (pose editors, ControlNet tools).
        tmp = self.dir / "openpose.json.tmp"
        with open(tmp, "w") as f, open(rows) as r:
            f.write("[")
            for i, line in enumerate(r):
                f.write((", " if i else "") + json.dumps(json.loads(line)["openpose"]))
            f.write("]")
        os.replace(tmp, self.dir / "openpose.json")
        rows.unlink()
        for tid, out in self.persons.items():
            out.fold({"track_id": tid, **header}, {k: footer[k] for k in ("complete", "frames_done") if k in footer})
        return path


def _pad(n: int):
    """(n,) False: the gate report of frames a person's files are padded with (not recorded)."""
    import torch

    return torch.zeros(n, dtype=torch.bool)


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
    stop: "_Stop | None" = None,
    pre=None,
    people=1,
) -> dict:
    """Decode ``video`` in chunks, run the Preprocessor part by part, and stream the outputs
    into ``out_dir`` (see the module docstring).

    ``gate=None`` is the Preprocessor's default, "safe". ``stop`` (set by main's signal
    handlers) ends the run after the current chunk. ``pre``: a Preprocessor built once by the
    caller (:func:`batch_load`); the model options are then its own. Returns a summary dict with
    "exit" (0, 3 or 130, see the module docstring). Raises CliError / ModelError / VideoError
    for user errors.
    """
    from .runtime import ModelError

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    stop = stop or _Stop()
    if chunk < 1:
        raise CliError(f"--chunk must be >= 1, got {chunk}")
    for name, v in (("--width", width), ("--height", height)):
        if v is not None and v < 1:
            raise CliError(f"{name} must be >= 1, got {v}")
    gate = "safe" if gate is None else gate
    if gate not in GATE_PRESETS:
        raise CliError(f"unknown --gate {gate!r}; choose one of {', '.join(GATE_PRESETS)}")
    if fp16:
        _require_fp16()

    reader = VideoReader(video)  # fails fast on a bad video, before loading models
    outputs = None
    created: list[Path] = []
    try:
        asked = target_size((reader.height, reader.width), width, height)
        size = even_size(asked)
        if size != asked:
            print(f"wanprep: note: processing at {size[1]}x{size[0]}, not {asked[1]}x{asked[0]}: "
                  "H.264 (yuv420p) needs even sides", file=sys.stderr)
        created = _prepare_out(out_dir)
        models = {"detector": Path(det), "pose": Path(pose)}
        if fp16 and pre is None:
            models = prepare_fp16_models(models, out_dir / ".models", log=print if progress else (lambda _m: None))
        bar = _Progress(reader.expected_frames, progress)
        if pre is None:  # one report, driven here: the Preprocessor's own bar stays off
            more = {} if people == 1 else {"people": people}
            pre = _preprocessor(models["detector"], models["pose"], device, batch, face_padding, chunk, False, gate, progress_callback=bar, **more)
        outputs = _Outputs(out_dir, reader.fps, pre.device)

        def frames():
            resize = None if size == (reader.height, reader.width) else size
            for c in reader.chunks(chunk, pre.device, resize, on_error="stop"):
                yield c
                if stop.requested:  # the chunk just yielded is finished; read no more
                    return

        error = None
        try:
            for part in pre.stream(frames()):
                outputs.add(part)
        except ModelError:
            raise
        except (ValueError, TypeError) as exc:
            if reader.decoded == 0:
                raise VideoError(reader.error or f"cannot decode {reader.path}: no frame could be decoded") from None
            error = f"bad frames in {reader.path}: {_one_line(exc)}"
            if not outputs.frames:
                raise CliError(error) from None
        finally:
            bar.close()
        outputs.close()
    except BaseException as exc:
        if outputs is not None:
            if not outputs.frames:  # nothing done: leave nothing behind
                outputs.close()
                outputs.remove()
            elif not isinstance(exc, KeyboardInterrupt):  # a second signal aborts at once
                outputs.close()
        if outputs is None or not outputs.frames:
            _remove_empty(created)
        reader.close()
        raise
    reader.close()

    n = outputs.frames
    shortfall = reader.shortfall()
    interrupted = stop.requested is not None
    if error:
        reason = error
    elif interrupted:
        reason = f"interrupted ({stop.requested})"
    elif reader.error:
        reason = reader.error
    elif shortfall:
        reason = f"truncated input: {reader.decoded} of {reader.expected_frames} frames decoded"
    else:
        reason = None
    complete = reason is None
    header = {"width": outputs.width or size[1], "height": outputs.height or size[0]}
    video_info = {
        "source": str(reader.path),
        "fps": float(reader.fps),
        "frames": n,
        "source_size": [reader.width, reader.height],
        "size": [size[1], size[0]],
        "gate": gate,
    }
    if size != asked:
        video_info["requested_size"] = [asked[1], asked[0]]
    footer = {
        "providers": outputs.providers,
        "timings": outputs.timings,
        "video": video_info,
        "complete": complete,
        "frames_done": n,
        "expected_frames": reader.expected_frames,
        "decoded_frames": reader.decoded,
    }
    if reason:
        footer["incomplete_reason"] = reason
    outputs.fold(header, footer)

    wall_s = time.perf_counter() - t_start
    decode_s = reader.decode_seconds
    table = format_timings(outputs.timings) if outputs.timings else "frames: 0"
    extra = [
        f"{'decode':<14}{decode_s:>10.3f}{1000 * decode_s / max(n, 1):>11.2f}  (PyAV decode + resize, overlapped with the run)",
        f"{'write':<14}{outputs.write_s:>10.3f}{1000 * outputs.write_s / max(n, 1):>11.2f}  (pose drawing, H.264 encoding, records)",
        f"{'wall':<14}{wall_s:>10.3f}{1000 * wall_s / max(n, 1):>11.2f}  (whole command)",
    ]
    text = table + "\n" + "\n".join(extra) + "\n"
    (out_dir / "timings.txt").write_text(text)
    print(text, end="")
    print(f"providers: {outputs.providers}")
    _warn_empty(n, outputs.fallback, outputs.held)
    where = f"{out_dir}/ (pose.mp4, face.mp4, poses.json, timings.txt)"
    if interrupted:
        status = EXIT_INTERRUPTED
        total = f" of {reader.expected_frames}" if reader.expected_frames else ""
        print(f"wanprep: interrupted after {n}{total} frames; partial outputs (\"complete\": false) in {where}", file=sys.stderr)
    elif error:
        status = EXIT_USER
        print(f"wanprep: error: {error}; the {n} frames done are in {where}", file=sys.stderr)
    elif reason:
        status = EXIT_INCOMPLETE
        expected = reader.expected_frames if reader.expected_frames is not None else "?"
        why = f" ({reader.error})" if reader.error else ""
        print(f"wanprep: warning: {reader.path} is truncated or corrupt: {reader.decoded} of {expected} frames decoded "
              f"({reader.expected_from or 'unknown'}){why}; the outputs hold those frames, \"complete\": false, in {where}",
              file=sys.stderr)
    else:
        status = EXIT_OK
        print(f"outputs written to {where}")
    return {
        "exit": status,
        "complete": complete,
        "frames": n,
        "pose_frames": outputs.pose.frames,
        "face_frames": outputs.face.frames,
        "size": [size[1], size[0]],
        "fps": float(reader.fps),
        "gate": gate,
        "out_dir": str(out_dir),
    }


def _warn_empty(n: int, fallback: int, held: int) -> None:
    """Warn when the result is mostly empty: most frames without a person, or without a face."""
    if not n:
        return
    if fallback * 2 > n:
        print(f"wanprep: warning: no person detected on {fallback} of {n} frames (full-frame boxes): a wrong or "
              "random-weight detector model, or no person in view", file=sys.stderr)
    if held * 2 > n:
        print(f"wanprep: warning: no face visible on {held} of {n} frames (face boxes held or a fallback square): "
              "a wrong or random-weight pose model, or the person faces away", file=sys.stderr)


def _people_arg(text: str):
    """--people: a positive integer or "all"."""
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return n


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


_EPILOG = """exit status:
  0    finished: every frame processed
  1    an unexpected internal error (a bug; the traceback is printed)
  2    user error (one line on stderr): bad options, --out not creatable or not
       writable, missing or undecodable video, wrong model files, bad frames,
       --fp16 without onnxconverter-common; also `wanprep` without arguments
  3    incomplete input: the video is truncated or corrupt; the frames decoded
       are kept and poses.json has "complete": false with expected vs decoded
  130  interrupted (SIGINT/SIGTERM): stops after the current chunk and keeps the
       frames done ("complete": false); a second signal aborts at once

outputs: DIR/pose.mp4 and DIR/face.mp4 are encoded as frames finish, records go
to DIR/poses.jsonl during the run and are folded into DIR/poses.json (and
DIR/openpose.json, the OpenPose layout per frame) at the end
("complete", "frames_done", "expected_frames", "decoded_frames"). Odd sizes are
rounded up to even ones (H.264 yuv420p) so that the videos and the JSON agree."""


def build_parser() -> argparse.ArgumentParser:
    """The `wanprep` argument parser (subcommands: demo, run)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="wanprep",
        description="Pose and face preprocessing for Wan 2.2 Animate",
        epilog="exit status: 0 ok, 1 internal error, 2 user error, 3 incomplete input, 130 interrupted "
        "(details: wanprep run --help)",
    )
    parser.add_argument("--version", action="version", version=f"wanprep {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    d = sub.add_parser("demo", help="run the pipeline on a synthetic clip with tiny built-in models",
                       description="Build the tiny analytic test models and a synthetic clip, run the pipeline and "
                       "write poses.json, faces/*.png, pose/*.png and summary.json.")
    d.add_argument("--out", type=Path, default=Path("demo_out"), metavar="DIR", help="output folder (default: demo_out)")
    d.add_argument("--frames", type=int, default=24, metavar="N", help="frames in the synthetic clip (default: 24)")
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
    r.add_argument("--det", type=Path, required=True, metavar="DET.onnx", help="YOLO person detector ONNX file")
    r.add_argument("--pose", type=Path, required=True, metavar="POSE.onnx", help="ViTPose wholebody ONNX file")
    r.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed; checked before anything runs)")
    r.add_argument("--width", type=int, default=None, metavar="W", help="resize frames to this width (e.g. 832); alone, keeps the aspect; odd rounds up")
    r.add_argument("--height", type=int, default=None, metavar="H", help="resize frames to this height (e.g. 480); alone, keeps the aspect; odd rounds up")
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
        help="convert float32 models to FP16 (cached in DIR/.models/; FP16 files are used as they are; "
        "needs pip install 'wanprep_torch[fp16]')",
    )
    r.add_argument("--batch", type=_batch_arg, default="auto", metavar="auto|N", help="frames per model run, or auto (default)")
    r.add_argument("--chunk", type=int, default=64, metavar="N", help="frames decoded and processed per step; an interrupt stops after one (default: 64)")
    r.add_argument("--face-padding", type=int, default=0, metavar="PX", help="extra pixels on each side of the face box (default: 0)")
    r.add_argument(
        "--people",
        type=_people_arg,
        default=1,
        metavar="N|all",
        help="follow up to N people (or all) with identities: pose.mp4 draws them all, DIR/person-K/ holds "
        "identity K's face.mp4 and poses.json (default: 1, the single subject)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress report (a bar on a terminal, plain lines otherwise)")
    _add_batch_parser(sub, r)
    _add_models_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `wanprep` command; returns the exit status (see the module docstring)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        return EXIT_USER
    args = parser.parse_args(argv)
    if args.cmd == "batch":
        return _run_batch(args)
    if args.cmd == "demo":
        run_demo(args.out, args.frames, args.device, args.models_dir, progress=not args.no_progress)
        return EXIT_OK
    if args.cmd == "run":
        return _main_run(args)
    if args.cmd == "models":
        return _run_models(args)
    return EXIT_USER


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


def _main_run(args) -> int:
    from .runtime import ModelError

    _tune_malloc()
    stop = _Stop().install()
    try:
        summary = run_video(
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
            stop=stop,
            people=args.people,
        )
    except (CliError, ModelError, VideoError) as exc:
        print(f"wanprep: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"wanprep: aborted; whatever was written is in {args.out}/ (poses.jsonl: the records so far)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        stop.restore()
    return summary["exit"]


if __name__ == "__main__":
    sys.exit(main())
