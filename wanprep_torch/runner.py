"""One video file through the Preprocessor into an output folder: what `wanprep run` does, and
what `wanprep batch` does per video (the command line only parses and calls).

- :class:`RunOptions`: the run's options, one frozen record shared by the command line and
  batch; it extends :class:`~wanprep_torch.options.PipelineOptions`, the Preprocessor's part
  the ComfyUI nodes build too. :meth:`RunOptions.check` validates them (RunError, exit 2).
- :func:`run_video` -> :class:`RunSummary`: checks and locks the output folder first, then
  decodes, processes and writes (staged, committed atomically: :mod:`~wanprep_torch.outputs`).
- :func:`load_preprocessor`, :func:`resolve_models` (FP16 copies): the model side, shared with
  batch workers.

Stopping: pass a :class:`~wanprep_torch.interrupt.StopFlag` (the command line's
:class:`~wanprep_torch.interrupt.SignalStop`); the run stops at the next model batch and keeps
the frames done (exit 130).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER, RunError, one_line
from .interrupt import StopFlag, StopRequested, checkpoint
from .options import PipelineOptions, cli_flag

__all__ = ["RunOptions", "RunSummary", "run_video", "load_preprocessor", "resolve_models", "resolve_int8",
           "format_timings"]

@dataclass(frozen=True)
class RunOptions(PipelineOptions):
    """The options of one run (defaults as `wanprep run`'s): the model files and what a run
    adds (size, time range, outputs, model conversions) to the Preprocessor's options, which
    it inherits from :class:`~wanprep_torch.options.PipelineOptions` (keyword-only there)."""

    det: str
    pose: str
    width: int | None = None
    height: int | None = None
    fp16: bool = False
    int8: bool = False
    overwrite: bool = False
    overlay: bool = False  # also overlay.mp4: the result drawn on the source frames
    start: str | None = None  # --start as written (video.parse_time): seconds, [H:]M:S or frames (30f)
    duration: str | None = None  # --duration, the same forms

    # The options a result depends on: a change re-runs a video under `batch --resume`.
    RESULT_FIELDS = ("det", "pose", "width", "height", "gate", "smooth", "fp16", "face_padding", "overlay", "start", "duration", "people")

    def check(self, allow_auto_device: bool = False) -> "RunOptions":
        """RunError (exit 2) naming the first bad option (as its command-line flag); returns self."""
        for name, v in (("--width", self.width), ("--height", self.height)):
            if v is not None and v < 1:
                raise RunError(f"{name} must be >= 1, got {v}")
        super().check(cli_flag, allow_auto_device=allow_auto_device)
        self.time_range()
        if self.int8 and self.fp16:
            raise RunError("--int8 and --fp16 exclude each other: INT8 is for the CPU, FP16 for CUDA")
        return self

    def time_range(self):
        """(start, duration) as :class:`~wanprep_torch.video.TimeSpec` (None where not given);
        RunError for a value that does not parse."""
        from .video import parse_time

        out = []
        for flag, text in (("--start", self.start), ("--duration", self.duration)):
            try:
                out.append(parse_time(text) if text is not None else None)
            except ValueError as exc:
                raise RunError(f"{flag}: {exc}") from None
        return tuple(out)

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d: dict) -> "RunOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def record(self) -> dict:
        """What poses.json records: the result-relevant options (model files by path, size
        and modification time)."""
        rec = {k: getattr(self, k) for k in self.RESULT_FIELDS}
        for role in ("det", "pose"):
            p = Path(rec[role])
            try:
                st = p.stat()
                rec[role] = {"path": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}
            except OSError:
                rec[role] = {"path": str(p)}
        return rec

    def differences(self, recorded: dict | None) -> list[str]:
        """The result-relevant options that differ from ``recorded`` (a poses.json "options"),
        as "name: old -> new"; a result without a record differs in "options"."""
        if not isinstance(recorded, dict):
            return ["options: not recorded"]
        now = self.record()
        old = {"people": 1, **recorded}  # results from before --people followed one subject
        return [f"{k}: {old.get(k)!r} -> {now[k]!r}" for k in self.RESULT_FIELDS if old.get(k) != now[k]]


@dataclass
class RunSummary:
    """What :func:`run_video` reports (also what `batch` records per video)."""

    exit: int
    complete: bool
    frames: int
    out_dir: str
    reason: str | None = None
    filled: int = 0  # frames the source could not give (previous result held)
    size: tuple[int, int] | None = None  # (width, height) processed
    fps: float | None = None
    gate: str | None = None
    pose_frames: int = 0
    face_frames: int = 0
    overlay_frames: int | None = None  # with --overlay


def format_timings(timings: dict) -> str:
    """A fixed-width table of Result.timings."""
    lines = [f"{'stage':<14}{'seconds':>10}{'ms/frame':>11}"]
    for name, v in timings.items():
        if isinstance(v, dict) and name not in ("total", "non_model", "wall"):
            lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    for name in ("non_model", "total", "wall"):
        if name in timings:
            v = timings[name]
            lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    lines.append(f"frames: {timings.get('frames', '?')}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- models


def require_fp16() -> None:
    """RunError naming the install command when the FP16 converter's dependency is missing."""
    try:
        import onnxconverter_common  # noqa: F401
    except ImportError:
        from converters.fp16 import FP16_INSTALL

        raise RunError(f"--fp16 needs onnxconverter-common: {FP16_INSTALL}") from None


def resolve_models(options: RunOptions, cache_dir: Path | None = None, log=print) -> RunOptions:
    """With ``fp16``: FP16 copies of float32 models, converted once per source model's content
    into ``cache_dir`` (default: the user cache's fp16 folder, :func:`wanprep_torch.paths.fp16_cache_dir`);
    FP16 files pass as they are. The options returned name them (``fp16`` then False: nothing
    left to convert). Inputs and outputs become float16 too. A copy is named after the SHA-256 of
    its source's bytes with their external data (:mod:`~wanprep_torch.modelcache`), so every
    ``--out``, and every copy of the same file, shares it."""
    if not options.fp16:
        return options
    require_fp16()
    import onnx

    from converters import ConversionError
    from converters.fp16 import convert_fp16, is_fp16_model

    from . import modelcache, paths
    from .runtime import ModelError, check_model_file

    cache = Path(cache_dir) if cache_dir is not None else paths.fp16_cache_dir()
    out = {}
    for key, role in (("det", "detector"), ("pose", "pose")):
        path = Path(getattr(options, key))
        check_model_file(path, role)
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends
            raise ModelError(f"cannot load {role} model {path}: not a valid ONNX model ({one_line(exc)})") from None
        if is_fp16_model(model):
            out[key] = str(path)
            continue
        try:
            cache.mkdir(parents=True, exist_ok=True)
            digest = modelcache.content_digest([path, *modelcache.external_data_files(model, path.parent)], cache)
        except OSError as exc:
            raise RunError(f"--fp16: cannot use the cache folder {cache}: {exc.strerror or one_line(exc)}") from None
        dst = modelcache.cached_copy_path(path, digest, cache, ".fp16.onnx")
        if dst.is_file():
            log(f"using the cached FP16 {role} model {dst}")
        else:
            log(f"converting the {role} model to FP16: {path} -> {dst}")
            try:
                convert_fp16(path, dst, keep_io_types=False, force=True)
            except ConversionError as exc:
                raise ModelError(f"cannot convert {role} model {path} to FP16: {one_line(exc)}") from None
        out[key] = str(dst)
    return options.replace(det=out["det"], pose=out["pose"], fp16=False)


def resolve_int8(options: RunOptions, video, log=print, err=None, device: str | None = None) -> tuple[RunOptions, dict | None]:
    """With ``int8``: INT8 copies of the models for the CPU provider
    (``converters.int8_cache.prepare_int8``: made once into the user cache, checked on the
    first frames of ``video`` as this run reads them), each replaced by its FP32 file, with a
    warning through ``err``, where it misses the thresholds. Returns the options naming the
    files to run (``int8`` then False) and the record for int8.json (None without --int8).
    On a CUDA ``device`` (default the options') --int8 is ignored with a warning."""
    if not options.int8:
        return options, None
    err = err or (lambda m: print(m, file=sys.stderr, flush=True))
    device = str(device or options.device)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        err(f"wanprep: warning: --int8 is for the CPU provider; ignored on {device} (FP32 models used)")
        return options.replace(int8=False), None
    from converters import InputError
    from converters.int8_cache import prepare_int8

    from .video import VideoReader, even_size, target_size

    reader = VideoReader(video)
    size = even_size(target_size((reader.height, reader.width), options.width, options.height))
    reader.close()
    try:
        rec = prepare_int8(options.det, options.pose, video, size=size, log=log,
                           warn=lambda m: err(f"wanprep: warning: {m}"))
    except InputError as exc:
        raise RunError(f"--int8: {one_line(exc)}") from None
    for choice in (rec.detector, rec.pose):
        if choice.int8:
            log(f"INT8 {choice.role} model: {choice.path}" + (" (cached)" if choice.cached else ""))
        if choice.report is not None:
            log("  " + choice.report.summary().replace("\n", "\n  "))
    return options.replace(det=str(rec.paths["detector"]), pose=str(rec.paths["pose"]), int8=False), rec.as_dict()


def load_preprocessor(options: RunOptions, progress_callback=None, threads: int | None = None):
    """The Preprocessor a run uses: the options' own settings
    (:meth:`~wanprep_torch.options.PipelineOptions.preprocessor`, as the ComfyUI nodes), plus
    what a run adds: face crops kept as uint8 on the CPU (4x smaller than float while they wait
    for the encoder), its one progress report instead of the Preprocessor's bar. Bad values
    raise RunError; bad model files ModelError."""
    import torch

    from .runtime import ModelError

    try:
        return options.preprocessor(options.det, options.pose, face_dtype=torch.uint8, face_device="cpu",
                                    progress=False, progress_callback=progress_callback, intra_op_threads=threads)
    except ModelError:
        raise
    except (ValueError, TypeError) as exc:
        raise RunError(one_line(exc)) from None


# ----------------------------------------------------------------------------- the run


def run_video(video, out_dir, options: RunOptions, *, stop: StopFlag | None = None, pre=None,
              progress: bool = True, log=print, err=None) -> RunSummary:
    """Decode ``video`` in chunks, run the Preprocessor part by part and write the outputs into
    ``out_dir`` (pose.mp4, face.mp4, poses.json, openpose.json, timings.txt).

    Order: the options, then ``out_dir`` (created, writable, not the input, locked, no earlier
    result unless ``options.overwrite``), before any decoding or model loading. ``pre``: a
    Preprocessor built once by the caller (batch workers); the model options are then its own.
    Raises RunError / ModelError / VideoError for user errors (exit 2) and write errors
    (RunError with exit 74); returns the summary otherwise (exit 0, 3 or 130).
    """
    from .outputs import FolderLock, RunFolder, check_not_input, prepare_out, remove_empty

    err = err or (lambda m: print(m, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    stop = stop or StopFlag()
    options.check()
    if options.fp16 and pre is None:
        require_fp16()
        if str(options.device).startswith("cpu"):
            err("wanprep: warning: --fp16 on the CPU makes the models slower, not faster: ONNX Runtime's CPU "
                "provider runs most float16 ops through casts to float32 (scripts/bench_fp16_cpu.py, "
                "BENCHMARKS.md); FP16 pays on CUDA. Going on in FP16 as asked.")
    check_not_input(out_dir, [video])
    if stop.requested:  # during start-up (the imports take seconds): nothing done yet
        err(f"wanprep: interrupted ({stop.requested}) during start-up; nothing was written")
        return RunSummary(EXIT_INTERRUPTED, False, 0, str(out_dir), reason=f"interrupted ({stop.requested})")
    created = prepare_out(out_dir)
    lock = FolderLock(out_dir)
    try:
        lock.acquire()
    except RunError:
        remove_empty(created)
        raise
    try:
        if lock.took_over:
            err(f"wanprep: note: took over the lock of a run that ended without releasing it (pid {lock.took_over})")
        folder = RunFolder(out_dir)
        if folder.holds_result() and not options.overwrite:
            raise RunError(f"--out {out_dir} already holds a result (poses.json); add --overwrite to replace it, or choose another --out")
        with stop.watch():
            summary = _run_locked(video, folder, options, stop, pre, progress, log, err, t_start)
    except BaseException:
        lock.release()
        remove_empty(created)  # only folders this run created, and only while empty
        raise
    lock.release()
    if not summary.frames:
        remove_empty(created)
    return summary


def _open_video(video, options: RunOptions, err):
    """The reader, primed, and the (H, W) to process at (even sides), after the memory check."""
    from .resources import check_fits
    from .video import VideoReader, even_size, frame_range, target_size

    reader = VideoReader(video)
    try:
        start, duration = options.time_range()
        try:
            rng = frame_range(start, duration, reader.fps)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        reader.select(rng)
        reader.prime()
        asked = target_size((reader.height, reader.width), options.width, options.height)
        size = even_size(asked)
        if size != asked:
            err(f"wanprep: note: processing at {size[1]}x{size[0]}, not {asked[1]}x{asked[0]}: H.264 (yuv420p) needs even sides")
        check_fits((reader.height, reader.width), size, options.chunk, options.device)
    except BaseException:
        reader.close()
        raise
    return reader, size, asked


def _run_locked(video, folder, options, stop, pre, progress, log, err, t_start) -> RunSummary:
    from .outputs import StreamWriter
    from .progress import Progress

    reader, size, asked = _open_video(video, options, err)
    writer = bar = None
    try:
        checkpoint()
        int8 = None
        if pre is None:
            quiet = log if progress else (lambda _m: None)
            options = resolve_models(options, log=quiet)
            options, int8 = resolve_int8(options, video, log=quiet, err=err)
        bar = Progress(reader.expected_frames, progress)
        if pre is None:  # one report, driven here: the Preprocessor's own bar stays off
            checkpoint()
            pre = load_preprocessor(options, progress_callback=bar)
        checkpoint()
        writer = StreamWriter(folder.open(), reader.fps, pre.device, reader.filled, reader.concealed,
                              overlay=options.overlay)
        if int8 is not None:  # the INT8 choice and its validation numbers, kept with the result
            writer.write_text("int8.json", json.dumps(int8, indent=1))
        error, interrupted = _process(reader, pre, writer, size, options, stop, bar)
        writer.close()
    except StopRequested:  # before any frame: nothing to keep
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        folder.discard()
        reader.close()
        err(f"wanprep: interrupted ({stop.requested}) before any frame was finished; {folder.out} is unchanged")
        return RunSummary(EXIT_INTERRUPTED, False, 0, str(folder.out), reason=f"interrupted ({stop.requested})")
    except KeyboardInterrupt:  # a second signal: abort, keep the folder's earlier state
        reader.close()
        raise
    except BaseException:
        if bar is not None:
            bar.close()
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        folder.discard()
        reader.close()
        raise
    reader.close()
    if not writer.frames:
        folder.discard()
        if interrupted:
            err(f"wanprep: interrupted ({stop.requested}) before any frame was finished; {folder.out} is unchanged")
            return RunSummary(EXIT_INTERRUPTED, False, 0, str(folder.out), reason=f"interrupted ({stop.requested})")
        raise RunError(error or f"no frame of {reader.path} could be processed")
    return _finish(reader, writer, folder, options, size, asked, error, stop if interrupted else None, log, err, t_start)


def _process(reader, pre, writer, size, options, stop, bar) -> tuple[str | None, bool]:
    """Stream the video through ``pre`` into ``writer``. Returns (bad-frames error or None,
    interrupted)."""
    from .runtime import ModelError
    from .video import VideoError

    def frames():
        resize = None if size == (reader.height, reader.width) else size
        for c in reader.chunks(options.chunk, pre.device, resize, on_error="stop"):
            if writer.source is not None:  # --overlay: each part is drawn on its own frames
                writer.source.push(c.cpu())
            yield c
            checkpoint()

    try:
        for part in pre.stream(frames()):
            writer.add(part)
    except StopRequested:
        if not writer.frames:
            raise
        return None, True
    except ModelError:
        raise
    except (ValueError, TypeError) as exc:
        if isinstance(exc, VideoError) or reader.decoded == 0:
            raise
        return f"bad frames in {reader.path}: {one_line(exc)}", False
    finally:
        bar.close()
    return None, stop.requested is not None


def _reason(reader, error, stop) -> str | None:
    if error:
        return error
    if stop is not None:
        return f"interrupted ({stop.requested})"
    if reader.filled or reader.concealed:
        parts = []
        if reader.filled:
            parts.append(f"{len(reader.filled)} frame(s) of the source could not be decoded (first: frame "
                         f"{reader.filled[0]}), each holding the previous frame's result")
        if reader.concealed:
            parts.append(f"{len(reader.concealed)} frame(s) were decoded from damaged references (first: frame "
                         f"{reader.concealed[0]}) and may be off")
        return "; ".join(parts) + "; all flagged \"source_ok\": false"
    if reader.error:
        return reader.error
    if reader.shortfall():
        return f"truncated input: {reader.produced} of {reader.expected_frames} frames decoded"
    return None


def _finish(reader, writer, folder, options, size, asked, error, stop, log, err, t_start) -> RunSummary:
    """Fold the records, write timings.txt, commit the folder, report."""
    n = writer.frames
    reason = _reason(reader, error, stop)
    complete = reason is None
    video_info = {
        "source": str(reader.path), "fps": float(reader.fps), "frames": n,
        "source_size": [reader.width, reader.height], "size": [size[1], size[0]], "gate": options.gate,
        "smooth": options.smooth, "rotation": reader.rotation, "filled_frames": len(reader.filled), "concealed_frames": len(reader.concealed),
        "range": _range_record(reader, options),
    }
    if options.overlay:
        video_info["overlay"] = "overlay.mp4"
    if size != asked:
        video_info["requested_size"] = [asked[1], asked[0]]
    footer = {
        "providers": writer.providers, "timings": writer.timings, "noise": writer.noise, "video": video_info, "options": options.record(),
        "complete": complete, "frames_done": n, "expected_frames": reader.expected_frames,
        "decoded_frames": reader.decoded, "filled_frames": len(reader.filled), "concealed_frames": len(reader.concealed),
    }
    if reason:
        footer["incomplete_reason"] = reason
    writer.fold({"width": writer.width or size[1], "height": writer.height or size[0]}, footer)
    wall_s = time.perf_counter() - t_start
    dec = reader.decode_seconds
    per = lambda s: 1000 * s / max(n, 1)  # noqa: E731
    text = (format_timings(writer.timings) if writer.timings else "frames: 0") + "\n" + "\n".join([
        f"{'decode':<14}{dec:>10.3f}{per(dec):>11.2f}  (PyAV decode + resize, overlapped with the run)",
        f"{'write':<14}{writer.write_s:>10.3f}{per(writer.write_s):>11.2f}  (pose drawing, H.264 encoding, records)",
        f"{'wall':<14}{wall_s:>10.3f}{per(wall_s):>11.2f}  (whole command)",
    ]) + "\n"
    writer.write_text("timings.txt", text)
    folder.commit()
    log(text.rstrip("\n"))
    log(f"providers: {writer.providers}")
    if writer.noise:
        log("keypoint noise (px, measured): " + ", ".join(f"{k} {'?' if v is None else f'{v:.2f}'}" for k, v in writer.noise.items()))
    _warn_empty(n, writer.fallback, writer.held, err)
    _warn_unseen(writer.person_frames, writer.body_seen, reader.pix_fmt, err)
    where = f"{folder.out}/ (pose.mp4, face.mp4, {'overlay.mp4, ' if options.overlay else ''}poses.json, timings.txt)"
    if stop is not None:
        status = EXIT_INTERRUPTED
        total = f" of {reader.expected_frames}" if reader.expected_frames else ""
        err(f"wanprep: interrupted after {n}{total} frames; partial outputs (\"complete\": false) in {where}")
    elif error:
        status = EXIT_USER
        err(f"wanprep: error: {error}; the {n} frames done are in {where}")
    elif reason:
        status = EXIT_INCOMPLETE
        expected = reader.expected_frames if reader.expected_frames is not None else "?"
        err(f"wanprep: warning: {reader.path} is truncated or corrupt: {reader.decoded} of {expected} frames decoded "
            f"({reason}); {n} frames written, \"complete\": false, in {where}")
    else:
        status = EXIT_OK
        log(f"outputs written to {where}")
    return RunSummary(status, complete, n, str(folder.out), reason=reason, filled=len(reader.filled),
                      size=(size[1], size[0]), fps=float(reader.fps), gate=options.gate,
                      pose_frames=writer.pose.frames, face_frames=writer.face.frames,
                      overlay_frames=writer.overlay.frames if writer.overlay is not None else None)


def _range_record(reader, options: RunOptions) -> dict:
    """poses.json's video.range: the part of the source processed (--start / --duration)."""
    start, duration = options.time_range()
    rng = reader.range
    return {
        "first_frame": rng.first,
        "start_s": round(rng.first / float(reader.fps), 6),
        "max_frames": rng.count,
        "start": start.to_json() if start is not None else None,
        "duration": duration.to_json() if duration is not None else None,
        "source_frames": reader.source_frames,
        "seeked_to": reader.seeked_to,
    }


# The colour-code rule: on frames where a person was found, fewer than half of the 20 body points
# seen on average. Real models see most body points of a person in view; the test kit's
# colour-coded people through 4:2:0 chroma give ~7 of 20 (BENCHMARKS.md, the codec table).
_UNSEEN_BODY = 10
_SUBSAMPLED = ("yuv420", "yuvj420", "yuv422", "yuvj422", "yuv411", "yuv410", "nv12", "nv21", "nv16")


def _warn_unseen(person_frames: int, body_seen: int, pix_fmt: str | None, err) -> None:
    """Warn when a person is found but most of its body points are not."""
    if not person_frames or body_seen >= _UNSEEN_BODY * person_frames:
        return
    mean = body_seen / person_frames
    why = "a wrong or random-weight pose model, or a person mostly out of view or occluded"
    if pix_fmt and pix_fmt.startswith(_SUBSAMPLED):
        why += (f"; with the test kit's models: its colour-coded people do not survive {pix_fmt} video (chroma "
                "subsampling mixes the colour codes); `wanprep demo --video clip.mp4` writes a clip that keeps them")
    err(f"wanprep: warning: a person was found on {person_frames} frames but only {mean:.1f} of 20 body points "
        f"were seen on average: {why}")


def _warn_empty(n: int, fallback: int, held: int, err) -> None:
    """Warn when the result is mostly empty: most frames without a person, or without a face."""
    if fallback * 2 > n:
        err(f"wanprep: warning: no person detected on {fallback} of {n} frames (full-frame boxes): a wrong or "
            "random-weight detector model, or no person in view")
    if held * 2 > n:
        err(f"wanprep: warning: no face visible on {held} of {n} frames (face boxes held or a fallback square): "
            "a wrong or random-weight pose model, or the person faces away")
