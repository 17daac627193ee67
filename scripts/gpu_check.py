#!/usr/bin/env python
"""GPU check for a lent CUDA machine: is ONNX Runtime really on CUDA, and how close does the
whole pipeline get to its models' own throughput, in FP32 and FP16?

Models: the YOLOv10m stand-in (shared/models, random weights) and a ViTPose-B/L/H stand-in
built here (scripts/make_standins.py, random weights), each also converted to FP16 with
converters.fp16 (keep_io_types=False: half inputs bound directly). Their outputs mean nothing:
the numbers are timings only.

For each precision and batch size (default 1, 8, 16) the same Preprocessor (gate off: every
frame through both models) runs --frames 832x480 frames already on the device, alternating
(ABBA) with "model-only": a replay of the model calls that pipeline made at that batch size
(recorded on the same frames: same sessions, inputs, batches, IO binding and output buffers; no
pre/post-processing). Medians of --repeats runs of each are kept, and the pipeline / model-only
ratio of each back-to-back pair: its median and range are reported.

On the GPU machine, scripts/gpu_check.sh installs onnxruntime-gpu, runs tests/test_gpu.py and
then this script. The device calls, in order (N = the chunk count split_ort_gpu.sh prints):

    here:  bash ../shared/device/split_ort_gpu.sh        # .ortw1 .. .ortwN (needs pip download)
           bash scripts/gpu_check.sh prepare              # bench_models/gpu_carry: YOLO + onnxconverter_common
    run carry=[".ortw1"]  command="mkdir -p /tmp/ortw && cp .ortw1/* /tmp/ortw/ && ls -la /tmp/ortw"
    ...   (.ortw2 .. .ortwN, back to back: the machine goes back after ~30 s idle)
    run carry=["bench_models/gpu_carry"] timeout_s=580 command="bash scripts/gpu_check.sh"
    give_back

A rerun on the still-warm machine needs no carry (ignored files stay) and reuses the built
models in /tmp/wanprep_gpu. Add "--vit l" to the command for a quicker run; ViTPose-H alone
takes about a minute to build and another to convert (~3.8 GB of disk).

Here (CPU, seconds): the same code end to end, minus CUDA:

    python scripts/gpu_check.py --dry-run --out /tmp/gpu_dry
    python scripts/gpu_check.py --device cpu --vit tiny --det testkit --frames 2 --out /tmp/gpu_cpu

Writes OUT/gpu_table.md and OUT/gpu_check.json after every row (a run cut short keeps what it
measured), OUT/gpu_env.json, and prints the table last:

    ## GPU check: NVIDIA H100 80GB HBM3, 2026-11-26 14:03 UTC
    torch 2.11.0+cu130 (CUDA 13.0, cuDNN 91300), onnxruntime 1.31.1 (CUDAExecutionProvider, CPUExecutionProvider); ...
    | precision | batch | pipeline fps | model-only fps | pipeline / model-only, median pair (min-max) | ... |
    |---|---|---|---|---|---|---|---|---|
    | fp32 | 1 | ... |

"pipeline / model-only" is the wall-time ratio of each pair (1.00 = the pipeline costs nothing
beyond its models); "non-model ms/frame" is the pipeline's own stage timers outside the model
runs, and "outside the stage timers" the wall time none of them saw.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

YOLO_NAME = "yolov10m-standin.onnx"
CARRY = ROOT / "bench_models" / "gpu_carry"
FRAME_H, FRAME_W = 480, 832
# Modules worth naming in the import report: the package's declared dependencies and extras,
# and what the tests and converters need.
REPORT_MODULES = ("torch", "numpy", "onnxruntime", "onnx", "onnxconverter_common", "tqdm", "PIL", "kornia", "av",
                  "pytest", "psutil")

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu_check +{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - T0


# ----------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for the device calls and the table format.")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"),
                   help="where gpu_table.md, gpu_check.json and gpu_env.json go (default: $OUT)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a smoke run of the same code")
    p.add_argument("--vit", choices=["tiny", "b", "l", "h"], default="h",
                   help="ViTPose stand-in size (default h: ~2.5 GB, about a minute to build; tiny: tests only)")
    p.add_argument("--vit-path", type=Path, help="reuse this FP32 ViTPose model instead of building one")
    p.add_argument("--vit-fp16-path", type=Path, help="reuse this FP16 ViTPose model instead of converting")
    p.add_argument("--det", choices=["yolo", "testkit"], default="yolo",
                   help="detector: the YOLOv10m stand-in (default) or the test kit's tiny one (CPU smoke runs)")
    p.add_argument("--yolo", type=Path, help=f"FP32 YOLOv10m stand-in (default: $WANPREP_YOLO, {CARRY.relative_to(ROOT)}/, "
                   "../shared/models/, shared/models/)")
    p.add_argument("--yolo-fp16-path", type=Path, help="reuse this FP16 detector instead of converting")
    p.add_argument("--work-dir", type=Path, help="where models are built (default /tmp/wanprep_gpu, or /tmp/wanprep_gpu_cpu)")
    p.add_argument("--frames", type=int, default=64, help="frames per timed run (default 64)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16], help="batch sizes (default 1 8 16)")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "fp16"], default=["fp32", "fp16"])
    p.add_argument("--repeats", type=int, default=4, help="timed runs of each kind per row, alternating; medians kept")
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="rows not started within this many seconds are skipped (the table keeps the rest)")
    p.add_argument("--env-only", action="store_true", help="environment, imports and the ORT CUDA probe, then exit")
    p.add_argument("--dry-run", action="store_true", help="print the plan and write the table format; run nothing")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.frames < 1 or args.repeats < 1 or any(b < 1 for b in args.batches):
        p.error("--frames, --repeats and --batches must be positive")
    if args.work_dir is None:
        args.work_dir = Path("/tmp/wanprep_gpu" if args.device == "cuda" else "/tmp/wanprep_gpu_cpu")
    args.batches = list(dict.fromkeys(args.batches))
    args.precisions = list(dict.fromkeys(args.precisions))
    return args


# ----------------------------------------------------------------------------- environment


def module_versions() -> dict:
    out = {}
    for name in REPORT_MODULES:
        try:
            m = importlib.import_module(name)
            out[name] = str(getattr(m, "__version__", "installed"))
        except Exception as exc:  # noqa: BLE001 - anything that stops the import counts as missing
            out[name] = None if isinstance(exc, ImportError) else f"broken: {exc}"
    return out


def package_imports() -> dict:
    """Third-party modules wanprep_torch's files import, lazy imports included: {module: [files]}."""
    std = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    found: dict[str, set] = {}
    for f in sorted((ROOT / "wanprep_torch").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in std and top != "wanprep_torch":
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return {k: sorted(v) for k, v in sorted(found.items())}


def _ldd_missing(path: Path) -> list[str]:
    try:
        r = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30)
    except Exception as exc:  # noqa: BLE001
        return [f"ldd failed: {exc}"]
    return [line.strip() for line in r.stdout.splitlines() if "not found" in line]


def ort_probe(device: str, model: Path | None) -> dict:
    """ONNX Runtime's build, preload_dlls() and, for CUDA, the providers a real session gets."""
    import torch

    info: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        torch.cuda.init()  # torch's CUDA libraries first: ORT's CUDA provider links against them
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(device_name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                    memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    import onnxruntime as ort

    info.update(ort_version=ort.__version__, ort_path=os.path.dirname(ort.__file__), ort_device=ort.get_device())
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
            info["preload_dlls"] = "ok"
        except Exception as exc:  # noqa: BLE001
            info["preload_dlls"] = f"failed: {exc}"
    else:
        info["preload_dlls"] = "not in this onnxruntime"
    info["available_providers"] = ort.get_available_providers()
    info["cuda_ok"] = False
    if device != "cuda":
        return info
    if not torch.cuda.is_available():
        info["problem"] = "torch sees no CUDA device"
    elif "CUDAExecutionProvider" not in info["available_providers"]:
        info["problem"] = "this onnxruntime has no CUDAExecutionProvider (the CPU build is first on sys.path?)"
    elif model is None:
        info["problem"] = "no model to open a probe session with"
    else:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(model), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            info["session_providers"] = sess.get_providers()
            info["cuda_ok"] = info["session_providers"][0] == "CUDAExecutionProvider"
            if not info["cuda_ok"]:
                info["problem"] = "a session asked for CUDA fell back to the CPU (CUDA/cuDNN libraries not found?)"
        except Exception as exc:  # noqa: BLE001
            info["problem"] = f"a CUDA session failed: {exc}"
    if not info["cuda_ok"]:
        lib = Path(info["ort_path"]) / "capi" / "libonnxruntime_providers_cuda.so"
        info["cuda_provider_lib"] = str(lib) if lib.exists() else "missing"
        if lib.exists():
            info["ldd_not_found"] = _ldd_missing(lib)
    return info


def print_env(env: dict) -> None:
    log("modules: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in env["modules"].items()))
    log("wanprep_torch imports (third-party, lazy ones included):")
    for mod, files in env["package_imports"].items():
        state = env["modules"].get(mod, "?")
        if mod not in env["modules"]:
            try:
                importlib.import_module(mod)
                state = "installed"
            except Exception:  # noqa: BLE001
                state = None
        print(f"    {mod:22s} {state or 'MISSING':12s} {', '.join(files)}", flush=True)
    for k, v in env["ort"].items():
        print(f"    ort/torch {k}: {v}", flush=True)


def find_yolo(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    cands = [os.environ.get("WANPREP_YOLO")]
    cands += [CARRY / YOLO_NAME, ROOT.parent / "shared" / "models" / YOLO_NAME, ROOT / "shared" / "models" / YOLO_NAME]
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    return None


# ----------------------------------------------------------------------------- models


def _done_marker(path: Path) -> Path:
    return path.with_name(path.name + ".ok")


def _load_make_standins():
    spec = importlib.util.spec_from_file_location("make_standins", ROOT / "scripts" / "make_standins.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def vit_fp32(args) -> Path:
    if args.vit_path is not None:
        if not args.vit_path.is_file():
            raise FileNotFoundError(f"--vit-path {args.vit_path} not found")
        return args.vit_path
    path = args.work_dir / f"vitpose-{args.vit}-standin.onnx"
    if path.is_file() and _done_marker(path).exists():
        log(f"reusing {path}")
        return path
    log(f"building the ViTPose-{args.vit.upper()} stand-in at {path}" + (" (minutes, ~2.5 GB)" if args.vit == "h" else ""))
    t = time.perf_counter()
    _load_make_standins().build_vitpose_standin(args.vit, path)
    _done_marker(path).touch()
    log(f"built {path.name} in {time.perf_counter() - t:.1f} s")
    return path


def fp16_copy(src: Path, explicit: Path | None, work: Path, notes: list) -> tuple[Path, str]:
    """FP16 version of src (float16 inputs/outputs), converted once and reused: (path, converter).

    converters.fp16 checks that ONNX Runtime loads its result and falls back to onnxruntime's
    own float16 tool where onnxconverter-common's output does not load (YOLOv10m).
    """
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"{explicit} not found")
        return explicit, "given"
    dst = work / f"{src.stem}-fp16.onnx"
    marker = _done_marker(dst)  # written only once the conversion finished
    if dst.is_file() and marker.exists():
        log(f"reusing {dst}")
        return dst, "converters.fp16"
    from converters.fp16 import convert_fp16

    t = time.perf_counter()
    try:
        convert_fp16(src, dst, keep_io_types=False, force=True, log=lambda m: log(f"  fp16 {src.name}: {m}"))
    except Exception as exc:  # noqa: BLE001 - reported in the table's notes
        notes.append(f"converters.fp16 on {src.name}: {type(exc).__name__}: {str(exc)[:300]}")
        log(notes[-1])
        raise RuntimeError(f"no loadable FP16 {src.name}") from exc
    marker.write_text("converters.fp16")
    log(f"converted {src.name} -> {dst.name} in {time.perf_counter() - t:.1f} s")
    return dst, "converters.fp16"


def testkit_models(work: Path) -> dict:
    from wanprep_torch.testkit import build_test_models

    return build_test_models(work / "testkit")


# ----------------------------------------------------------------------------- timing


def make_frames(n: int, device, seed: int = 0):
    """832x480 frames in ComfyUI layout (T, H, W, 3) float32: the synthetic person on noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    try:
        from wanprep_torch.testkit import make_clip

        x = make_clip(n, H=FRAME_H, W=FRAME_W, motion="slow", seed=seed).frames
        x = (x + 0.1 * torch.rand(x.shape, generator=g)).clamp_(0, 1)
    except ImportError:  # test kit needs onnx; noise times the same
        x = torch.rand(n, FRAME_H, FRAME_W, 3, generator=g)
    return x.to(device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_preprocessor(det: Path, pose: Path, device, batch: int, frames: int):
    from wanprep_torch import Preprocessor

    # Gate off: every frame through both models, like model-only.
    return Preprocessor(det, pose, device=device, batch_size=batch, chunk_size=max(frames, 1), progress=False, gate="off")


def record_model_calls(pre, frames) -> list:
    """Run the pipeline once and record each model call it makes: (model, input copy, args,
    kwargs). Replaying them (:func:`model_only`) does what the pipeline's runs do: same sessions,
    inputs, batches, IO binding and output buffers, with no pre/post-processing."""
    calls, spied = [], []
    for m in (pre.detector.model, pre.estimator.model):
        orig = m.run

        def spy(x, *a, _m=m, _orig=orig, **kw):
            calls.append((_m, x.detach().clone(), a, kw))
            return _orig(x, *a, **kw)

        m.run = spy  # instance attribute: this object only
        spied.append(m)
    try:
        pre(frames)
    finally:
        for m in spied:
            del m.run
    return calls


def model_only(pre, calls: list) -> tuple[float, float]:
    """Seconds for the recorded detector calls, then the recorded pose calls, replayed."""
    times = []
    for model in (pre.detector.model, pre.estimator.model):
        _sync(pre.device)
        t = time.perf_counter()
        for m, x, a, kw in calls:
            if m is model:
                m.run(x, *a, **kw)
        _sync(pre.device)
        times.append(time.perf_counter() - t)
    return times[0], times[1]


def bench_precision(precision: str, det: Path, pose: Path, frames, args, rows: list, notes: list, write) -> None:
    import torch

    device = frames.device
    n = frames.shape[0]
    t = time.perf_counter()
    try:
        pre = make_preprocessor(det, pose, device, args.batches[0], n)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"{precision}: sessions failed: {type(exc).__name__}: {exc}")
        log(notes[-1])
        rows.append({"precision": precision, "batch": args.batches[0], "frames": n, "error": notes[-1]})
        write()
        return
    log(f"{precision}: sessions ready in {time.perf_counter() - t:.1f} s: {pre.detector.model!r}; {pre.estimator.model!r}")
    if device.type == "cuda" and set(pre.providers.values()) != {"CUDAExecutionProvider"}:
        notes.append(f"{precision}: not on CUDA: {pre.providers}")
    # Model-only replays the pipeline's own model calls, recorded per batch size below.
    pre(frames)
    for b in args.batches:
        if elapsed() > args.budget_s:
            notes.append(f"{precision} batch {b}: skipped, over the {args.budget_s:.0f} s budget")
            log(notes[-1])
            continue
        row = {"precision": precision, "batch": b, "frames": n, "det_io": str(pre.detector.model.input.dtype).replace("torch.", ""),
               "pose_io": str(pre.estimator.model.input.dtype).replace("torch.", ""), "providers": pre.providers}
        try:
            pre.batch_size = b
            t = time.perf_counter()
            pre(frames[: min(b, n)])  # warm-up: ORT allocates and picks kernels per input shape
            calls = record_model_calls(pre, frames)  # this batch size's model calls and inputs
            model_only(pre, calls)
            row["warmup_s"] = round(time.perf_counter() - t, 3)
            pipe, det_t, pose_t, walls_vs_stages, timings = [], [], [], [], None
            for r in range(args.repeats):  # alternate (ABBA), so both see the same machine state
                for what in (("pipe", "model") if r % 2 == 0 else ("model", "pipe")):
                    if what == "model":
                        d, p = model_only(pre, calls)
                        det_t.append(d)
                        pose_t.append(p)
                        continue
                    _sync(device)
                    t = time.perf_counter()
                    res = pre(frames)
                    _sync(device)
                    pipe.append(time.perf_counter() - t)
                    walls_vs_stages.append(pipe[-1] - res.timings["total"]["s"])
                    if timings is None or res.timings["total"]["s"] < timings["total"]["s"]:
                        timings = res.timings
            del calls
            model_t = [d + p for d, p in zip(det_t, pose_t)]
            pairs = [a / m for a, m in zip(pipe, model_t)]
            p_med, m_med = statistics.median(pipe), statistics.median(model_t)
            stages = {k: v["ms_per_frame"] for k, v in timings.items() if isinstance(v, dict)}
            row.update(
                batch_used=pre.batch_size, pipeline_s=round(p_med, 5), model_s=round(m_med, 5),
                pipeline_fps=n / p_med, model_fps=n / m_med, ratio=statistics.median(pairs),
                ratio_min=min(pairs), ratio_max=max(pairs), ratio_pairs=[round(x, 4) for x in pairs],
                det_model_ms=1000 * statistics.median(det_t) / n, pose_model_ms=1000 * statistics.median(pose_t) / n,
                non_model_ms=stages.get("non_model", math.nan), stage_ms=stages,
                outside_stage_timers_ms=1000 * statistics.median(walls_vs_stages) / n,
                spread_pct=100 * (max(pipe) / min(pipe) - 1), pipeline_runs_s=[round(x, 5) for x in pipe],
            )
            log(f"{precision} batch {b}: pipeline {row['pipeline_fps']:.2f} fps, model-only {row['model_fps']:.2f} fps "
                f"(medians), ratio median pair {row['ratio']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f})")
        except Exception as exc:  # noqa: BLE001 - one bad row must not lose the others
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{precision} batch {b}: FAILED {row['error']}")
            traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        write()
    del pre
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- output


def _f(v, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def format_table(meta: dict, rows: list, notes: list) -> str:
    lines = [
        f"## GPU check: {meta.get('card', '?')}, {meta.get('date', '?')}",
        "",
        meta.get("versions", ""),
        "",
        meta.get("setup", ""),
        "",
        "| precision | batch | pipeline fps | model-only fps | pipeline / model-only, median pair (min-max) "
        "| det model ms/frame | pose model ms/frame | non-model ms/frame | outside the stage timers ms/frame |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        batch = str(r["batch"]) if r.get("batch_used", r["batch"]) == r["batch"] else f"{r['batch']} (ran {r['batch_used']})"
        if "error" in r:
            lines.append(f"| {r['precision']} | {batch} | error: {r['error'][:120]} | | | | | | |")
            continue
        lines.append(
            f"| {r['precision']} | {batch} | {_f(r.get('pipeline_fps'), '.2f')} | {_f(r.get('model_fps'), '.2f')} "
            f"| {_f(r.get('ratio'), '.3f')} ({_f(r.get('ratio_min'), '.3f')}-{_f(r.get('ratio_max'), '.3f')}) "
            f"| {_f(r.get('det_model_ms'), '.2f')} | {_f(r.get('pose_model_ms'), '.2f')} "
            f"| {_f(r.get('non_model_ms'), '.2f')} | {_f(r.get('outside_stage_timers_ms'), '.2f')} |"
        )
    lines.append("")
    lines.append("fps: medians of the repeats; pipeline / model-only: wall-time ratio of each back-to-back pair, "
                 "median (min-max) (1.00 = nothing beyond the models); non-model: the pipeline's stage timers "
                 "outside the model runs; outside the stage timers: wall time no stage timer saw (median).")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, meta: dict, rows: list, notes: list) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(meta, rows, notes)
    (out / "gpu_table.md").write_text(table)
    (out / "gpu_check.json").write_text(json.dumps({"meta": meta, "rows": rows, "notes": notes}, indent=1, default=str))
    return table


def versions_line(env: dict) -> str:
    o = env["ort"]
    torch_part = f"torch {o.get('torch')}" + (f" (CUDA {o['torch_cuda']}, cuDNN {o.get('cudnn')})" if o.get("torch_cuda") else "")
    ort_part = f"onnxruntime {o.get('ort_version')} ({', '.join(o.get('session_providers') or o.get('available_providers', []))})"
    return f"{torch_part}, {ort_part}; python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"


# ----------------------------------------------------------------------------- main


def dry_run(args) -> int:
    yolo = find_yolo(args.yolo)
    vit = args.vit_path or args.work_dir / f"vitpose-{args.vit}-standin.onnx"
    plan = [
        f"device {args.device}; frames {args.frames} x {FRAME_W}x{FRAME_H}; batches {args.batches}; "
        f"precisions {args.precisions}; repeats {args.repeats}; budget {args.budget_s:.0f} s",
        f"detector: {'test kit' if args.det == 'testkit' else (yolo or 'YOLO stand-in NOT FOUND (--yolo / $WANPREP_YOLO)')}",
        f"pose: {vit} ({'reuse' if args.vit_path or _done_marker(vit).exists() else 'build'})",
        f"fp16: {'converters.fp16 (keep_io_types=False), else onnxruntime.transformers.float16' if 'fp16' in args.precisions else 'not asked'}",
        f"out: {args.out}/gpu_table.md, gpu_check.json, gpu_env.json",
    ]
    for line in plan:
        log("plan: " + line)
    meta = {"card": "(dry run)", "date": _now(), "versions": "(dry run: nothing imported)", "setup": "; ".join(plan),
            "dry_run": True}
    rows = [{"precision": p, "batch": b, "frames": args.frames, "pipeline_fps": math.nan, "model_fps": math.nan,
             "ratio": math.nan, "det_model_ms": math.nan, "pose_model_ms": math.nan, "non_model_ms": math.nan}
            for p in args.precisions for b in args.batches]
    print(write_outputs(args.out, meta, rows, ["dry run: no numbers"]), flush=True)
    return 0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    import torch

    from wanprep_torch.runtime import physical_cores

    args.out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(physical_cores())
    device = torch.device(args.device if args.device == "cpu" else f"cuda:{torch.cuda.current_device()}"
                          if torch.cuda.is_available() else "cuda")

    # 1. Environment and the CUDA provider, probed with the test kit's detector (tiny).
    env = {"modules": module_versions(), "package_imports": package_imports()}
    probe_model = None
    try:
        probe_model = testkit_models(args.work_dir)["det"]
    except Exception as exc:  # noqa: BLE001 - the YOLO stand-in will do
        log(f"test kit models unavailable ({exc}); probing with the YOLO stand-in")
        probe_model = find_yolo(args.yolo)
    env["ort"] = ort_probe(args.device, probe_model)
    (args.out / "gpu_env.json").write_text(json.dumps(env, indent=1, default=str))
    cuda_failed = args.device == "cuda" and not env["ort"]["cuda_ok"]
    if args.env_only or cuda_failed:
        print_env(env)
    else:
        o = env["ort"]
        log(f"onnxruntime {o['ort_version']} ({o['ort_path']}), session providers {o.get('session_providers')}; "
            f"full report in {args.out / 'gpu_env.json'}")
    if cuda_failed:
        log(f"ONNX Runtime does not run on CUDA here: {env['ort'].get('problem')}")
        for line in env["ort"].get("ldd_not_found", []):
            log(f"  missing library: {line}")
        return 3
    if args.env_only:
        log("CUDA provider OK" if args.device == "cuda" else "environment reported")
        return 0

    # 2. Models.
    notes: list[str] = []
    meta = {"card": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
            "date": _now(), "versions": versions_line(env), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.det == "testkit":
        det32 = testkit_models(args.work_dir)["det"]
    else:
        det32 = find_yolo(args.yolo)
        if det32 is None or not det32.is_file():
            log(f"YOLO stand-in not found ({args.yolo or 'searched $WANPREP_YOLO, ' + str(CARRY) + ', ../shared/models'})")
            return 2
    try:
        vit32 = vit_fp32(args)
    except Exception as exc:  # noqa: BLE001 - say why in the outputs, not only in a traceback
        traceback.print_exc()
        notes.append(f"ViTPose stand-in: {type(exc).__name__}: {exc}")
        meta["setup"] = f"ViTPose-{args.vit.upper()} stand-in unavailable"
        write_outputs(args.out, meta, [], notes)
        return 2
    models = {"fp32": (det32, vit32)}
    meta["setup"] = (f"models: {det32.name} + {vit32.name} (random weights: timing only); {args.frames} frames "
                     f"{FRAME_W}x{FRAME_H} float32 (T,H,W,3) on {device}; gate off; {args.repeats} alternating runs of each kind")
    rows: list[dict] = []

    def write() -> None:
        write_outputs(args.out, meta, rows, notes)

    frames = make_frames(args.frames, device)
    if args.frames < max(args.batches):
        notes.append(f"batches above --frames {args.frames} run all frames as one batch")
    # 3. FP32 rows first: if the FP16 conversion fails or the budget runs out, they are kept.
    for precision in args.precisions:
        if precision == "fp16":
            try:
                vit16, vit_conv = fp16_copy(vit32, args.vit_fp16_path, args.work_dir, notes)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"fp16: pose conversion failed: {type(exc).__name__}: {exc}")
                log(notes[-1])
                write()
                continue
            try:
                det16, det_conv = fp16_copy(det32, args.yolo_fp16_path, args.work_dir, notes)
            except Exception as exc:  # noqa: BLE001 - time the FP16 pose model with the FP32 detector
                det16, det_conv = det32, "none: FP32 detector"
                notes.append(f"fp16 rows: the detector stays FP32 ({exc})")
            models["fp16"] = (det16, vit16)
            notes.append(f"fp16 models: {det16.name} ({det_conv}), {vit16.name} ({vit_conv}); float16 inputs")
            write()
        if elapsed() > args.budget_s:
            notes.append(f"{precision}: skipped, over the {args.budget_s:.0f} s budget")
            log(notes[-1])
            continue
        bench_precision(precision, *models[precision], frames, args, rows, notes, write)
    table = write_outputs(args.out, meta, rows, notes)
    print("\n" + table, flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
