#!/usr/bin/env python
"""Benchmark: the whole pipeline vs model-only time on the same frames and batches.

Model-only replays the model calls the pipeline made (recorded on a run of the same frames):
the same ONNX sessions, inputs, split into runs, IO binding and output buffers, with no
pre/post-processing. Pipeline and model-only alternate (ABBA) ``--repeats`` times; the tables
give wall-clock medians with their range, the pipeline / model-only ratio of each pair, the
stage timers beside the wall time, and the gate presets timed ``--gate-repeats`` times each,
alternating. Every ratio is measured within this one run.

    python scripts/bench.py                       # tiny analytic models + YOLOv10m/ViTPose-B stand-ins
    python scripts/bench.py --suite tiny          # only the tiny models (seconds)
    python scripts/bench.py --frames 16 --batch auto --dtype float
    python scripts/bench.py --suite gate          # gate presets on a clip with holds and slow motion
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.runtime import OrtModel, physical_cores  # noqa: E402

SHARED_YOLO = ROOT.parent / "shared" / "models" / "yolov10m-standin.onnx"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_frames(n: int, dtype: str, seed: int = 0) -> torch.Tensor:
    """832x480 frames in ComfyUI layout: the synthetic person on a noisy background."""
    from wanprep_torch.testkit import make_clip

    clip = make_clip(n, motion="slow", seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = (clip.frames + 0.1 * torch.rand(clip.frames.shape, generator=g)).clamp_(0, 1)
    if dtype == "uint8":
        return (x * 255).round().to(torch.uint8)
    return x


def record_model_calls(pre: Preprocessor, frames: torch.Tensor) -> list:
    """Run the pipeline once and record every model call it makes: (model, input copy, kwargs).

    Replaying these calls (:func:`model_only`) does exactly what the pipeline's runs do: the same
    sessions, the same inputs, the same split into runs and batch sizes, and the same output
    handling (IO binding into torch memory, the reused output buffer where the pipeline passes
    one), with no pre/post-processing in between.
    """
    calls = []
    originals = {}
    for m in (pre.detector.model, pre.estimator.model):
        orig = m.run  # the bound method
        originals[m] = orig

        def spy(x, *a, _m=m, _orig=orig, **kw):
            calls.append((_m, x.detach().clone(), a, kw))
            return _orig(x, *a, **kw)

        m.run = spy  # instance attribute: this object only
    try:
        pre(frames)
    finally:
        for m in originals:
            del m.run  # back to the class's method
    return calls


def model_only(calls: list, sessions: dict | None = None) -> float:
    """Seconds for the recorded model calls, replayed in order (on ``sessions[role]`` instead of
    the pipeline's own sessions when given)."""
    t0 = time.perf_counter()
    for m, x, a, kw in calls:
        (sessions[m.role] if sessions else m).run(x, *a, **kw)
    return time.perf_counter() - t0


def fastest_sessions(det: Path, pose: Path, threads: int | None) -> dict:
    """The two models in sessions with ONNX Runtime's own defaults (threads spin and keep
    spinning after a run): the fastest way to run them alone on these machines."""
    return {
        "detector": OrtModel(det, "cpu", intra_op_threads=threads, role="detector", spin=True, stop_spinning=False),
        "pose": OrtModel(pose, "cpu", intra_op_threads=threads, role="pose", spin=True, stop_spinning=False),
    }


def spin_pipeline(det: Path, pose: Path, threads: int | None, **opts) -> Preprocessor:
    """The pipeline with spinning sessions that stop spinning after each run
    (``session.force_spinning_stop``), the setting the core-reshape issue proposed, for comparison
    with the shipped one (no spinning)."""
    models = [OrtModel(p, "cpu", intra_op_threads=threads, role=r, spin=True, stop_spinning=True) for p, r in ((det, "detector"), (pose, "pose"))]
    return Preprocessor(*models, intra_op_threads=threads, progress=False, gate="off", **opts)


def fresh_write_seconds(like: torch.Tensor) -> float:
    """Seconds to fill a new tensor shaped like ``like``: the machine's price for first writes
    to fresh memory, which the pipeline pays once for its face output (measured beside it, with
    the same result alive, so in the same memory state)."""
    t0 = time.perf_counter()
    fresh = torch.empty_like(like)
    fresh.fill_(1)
    return time.perf_counter() - t0


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def bench_pair(
    name: str, det: Path, pose: Path, frames: torch.Tensor, batch, repeats: int, threads: int | None, face_dtype=torch.float32
) -> dict:
    # Gate off: this compares the same work, every frame through both models.
    pre = Preprocessor(det, pose, batch_size=batch, intra_op_threads=threads, progress=False, gate="off", face_dtype=face_dtype)
    n = frames.shape[0]
    pre(frames)  # warm-up: ORT's first runs allocate
    calls = record_model_calls(pre, frames)  # the models' exact calls and inputs
    model_only(calls)  # warm-up of the replay
    fastest = fastest_sessions(det, pose, threads) if det.suffix == ".onnx" else None
    old = spin_pipeline(det, pose, threads, batch_size=batch, face_dtype=face_dtype)
    old(frames)
    if fastest:
        model_only(calls, fastest)
    pipe_t, model_t, stage_t, fresh_ms, stage_runs = [], [], [], [], []
    fast_t, old_t = [], []
    for r in range(repeats):
        # Alternate the order (ABBA...) so neither side always runs first after the other.
        order = ("pipe", "model", "fastest", "old") if r % 2 == 0 else ("old", "fastest", "model", "pipe")
        for what in order:
            if what == "model":
                model_t.append(model_only(calls))
                continue
            if what == "fastest":
                if fastest:
                    fast_t.append(model_only(calls, fastest))
                continue
            if what == "old":
                t0 = time.perf_counter()
                old(frames)
                old_t.append(time.perf_counter() - t0)
                continue
            t0 = time.perf_counter()
            res = pre(frames)
            pipe_t.append(time.perf_counter() - t0)
            fresh_ms.append(1000 * fresh_write_seconds(res.face_images) / n)
            stage_t.append(res.timings["total"]["s"])
            stage_runs.append({k: v["ms_per_frame"] for k, v in res.timings.items() if isinstance(v, dict)})
            del res
    pairs = [a / b for a, b in zip(pipe_t, model_t)]  # in run order
    # Per stage: the median over the repeats (ms per frame).
    keys = sorted({k for s in stage_runs for k in s})
    stages = {k: statistics.median(s.get(k, 0.0) for s in stage_runs) for k in keys}
    outside = [1000 * (w - s) / n for w, s in zip(pipe_t, stage_t)]  # wall time no stage timer saw
    return {
        "name": name,
        "frames": n,
        "batch": pre.batch_size,
        "model_calls": len(calls),
        "pipeline_ms": spread([1000 * t / n for t in pipe_t]),
        "model_ms": spread([1000 * t / n for t in model_t]),
        "ratio": spread(pairs),
        "pairs": pairs,
        "stage_total_ms": spread([1000 * t / n for t in stage_t]),
        "outside_ms": spread(outside),
        "overhead_ms": spread([1000 * (a - b) / n for a, b in zip(pipe_t, model_t)]),
        "non_model_ms": stages.get("non_model", float("nan")),
        "stages": stages,
        "fresh_write_ms": statistics.median(fresh_ms),
        "repeats": repeats,
        # Against the models alone in sessions with ONNX Runtime's defaults (the fastest here),
        # and the pipeline with spin + force_spinning_stop sessions, pair by pair.
        "ratio_fastest": spread([a / b for a, b in zip(pipe_t, fast_t)]) if fast_t else None,
        "fastest_ms": spread([1000 * t / n for t in fast_t]) if fast_t else None,
        "old_over_new": spread([b / a for a, b in zip(pipe_t, old_t)]),
        "old_ms": spread([1000 * t / n for t in old_t]),
    }


def _fmt(s: tuple[float, float, float], digits: int = 2) -> str:
    med, lo, hi = s
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def print_tables(rows: list[dict], args) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n## Pipeline vs model-only ({now}, {platform.machine()}, {physical_cores()} cores, "
          f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__})")
    print(f"command: `python scripts/bench.py {' '.join(sys.argv[1:])}`; input {args.dtype} (T,H,W,3) 832x480, "
          f"face crops {args.face_dtype}; gate off\n")
    print("Wall-clock ms per frame, median (min-max) over the repeats; pipeline and model-only alternate "
          "(ABBA). Model-only replays the pipeline's own model calls (same sessions, inputs, batches, IO binding "
          "and output buffers) with nothing in between.\n")
    print("| models | frames | batch | repeats | pipeline wall ms/frame | model-only wall ms/frame "
          "| pipeline / model-only, median pair (min-max) | pipeline minus model-only ms/frame "
          "| stage timers' total ms/frame | wall outside the stage timers ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['frames']} | {r['batch']} | {r['repeats']} | {_fmt(r['pipeline_ms'])} | {_fmt(r['model_ms'])} | "
              f"{_fmt(r['ratio'], 3)} | {_fmt(r['overhead_ms'])} | {_fmt(r['stage_total_ms'])} | {_fmt(r['outside_ms'])} |")
    stages = ["detect_pre", "detect_model", "detect_post", "pose_pre", "pose_model", "pose_post", "wan", "faces", "non_model"]
    print("\n| models | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for r in rows:
        print(f"| {r['name']} | " + " | ".join(f"{r['stages'].get(s, 0):.2f}" for s in stages) + " |")
    print("\n(stage timers, ms per frame, median of the repeats; non_model = their total minus the two model stages)")
    for r in rows:
        print(f"\n{r['name']}: filling a new tensor the size of the face output took {r['fresh_write_ms']:.2f} ms/frame "
              "(median of the repeats): the machine's cost of first writes to fresh memory, inside `faces`.")
    print("\n| models | model-only, ORT default sessions, ms/frame | pipeline / that, median pair (min-max) "
          "| pipeline with spin + stop sessions, ms/frame | that / shipped pipeline, median pair (min-max) |")
    print("|---|---|---|---|---|")
    for r in rows:
        fast = _fmt(r["fastest_ms"]) if r["fastest_ms"] else "-"
        ratio = _fmt(r["ratio_fastest"], 3) if r["ratio_fastest"] else "-"
        print(f"| {r['name']} | {fast} | {ratio} | {_fmt(r['old_ms'])} | {_fmt(r['old_over_new'], 3)} |")
    for r in rows:
        print(f"\n{r['name']}: pipeline / model-only of each pair, in run order: "
              + ", ".join(f"{x:.3f}" for x in r["pairs"]))


def bench_gate(args, batch) -> list[dict]:
    """Gate presets on a clip with holds and slow motion: frames run per model and keypoint error
    vs "off" with the analytic models; frames run per model and wall time with the stand-ins,
    each configuration timed ``--gate-repeats`` times, alternating, median and range reported."""
    from wanprep_torch.testkit import build_test_models, make_clip

    clip = make_clip(args.gate_frames, motion="holdslow", seed=4, background=True, noise_px=args.gate_noise)
    frames = clip.frames if args.dtype == "float" else (clip.frames * 255).round().to(torch.uint8)
    tm = build_test_models(args.models_dir / "tiny")
    presets = ["off", "safe", "fast"]
    out = {}
    for p in presets:
        res = Preprocessor(tm["det"], tm["pose"], batch_size=batch, gate=p, progress=False)(frames)
        out[p] = {"analytic": res}
    ref = out["off"]["analytic"].keypoints[..., :2]
    for p in presets:
        res = out[p]["analytic"]
        err = (res.keypoints[..., :2] - ref).norm(dim=-1)[clip.visible]
        out[p]["err_mean"], out[p]["err_max"] = float(err.mean()), float(err.max())
        gt = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
        out[p]["gt_mean"] = float(gt.mean())
        out[p]["pose_frames"], out[p]["det_frames"] = int(res.pose_ran.sum()), int(res.det_ran.sum())
    n = len(clip)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n## Gate presets ({now}, {physical_cores()} cores)")
    print(f"clip: {n} frames 832x480, holds alternating with slow motion (testkit 'holdslow', textured background, "
          f"keypoint discs jittered by {args.gate_noise} px per frame); "
          f"command: `python scripts/bench.py {' '.join(sys.argv[1:])}`\n")
    print("Analytic test models, shipped presets (keypoint errors need ground truth, which only these models have):\n")
    print("| preset | pose runs | detector runs | keypoint error vs off, mean / max px | error vs ground truth, mean px |")
    print("|---|---|---|---|---|")
    for p in presets:
        r = out[p]
        print(f"| {p} | {r['pose_frames']}/{n} | {r['det_frames']}/{n} | {r['err_mean']:.3f} / {r['err_max']:.3f} | {r['gt_mean']:.3f} |")
    rows = [dict(out[p], name=p) for p in presets]
    if args.suite not in ("all", "gate") or not args.yolo.exists():
        return rows
    vit = _load_script("make_standins").build_vitpose_standin("b", args.models_dir / "vitpose-b-standin.onnx")
    # Random-weight stand-ins give meaningless keypoint scores: with the shipped presets every
    # tracked frame "fails" and re-runs the detector, which a real model's keypoints would not
    # do. Both are timed: the shipped presets, and the presets with tracking taken as good
    # (track_min_score 0), closer to what a real model does.
    configs = [
        ("off", "off"),
        ("safe", "safe"),
        ("fast", "fast"),
        ("safe, track_min_score=0", {"preset": "safe", "track_min_score": 0.0}),
        ("fast, track_min_score=0", {"preset": "fast", "track_min_score": 0.0}),
    ]
    pres = {}
    runs = {}
    for label, gate in configs:
        pres[label] = Preprocessor(args.yolo, vit, batch_size=batch, gate=gate, progress=False)
        res = pres[label](frames)  # warm-up on the whole clip
        runs[label] = (int(res.pose_ran.sum()), int(res.det_ran.sum()))
    seconds = {label: [] for label, _ in configs}
    for r in range(args.gate_repeats):
        order = configs if r % 2 == 0 else configs[::-1]
        for label, _ in order:
            t0 = time.perf_counter()
            res = pres[label](frames)
            seconds[label].append(time.perf_counter() - t0)
            assert (int(res.pose_ran.sum()), int(res.det_ran.sum())) == runs[label]  # deterministic
    off = seconds["off"]
    print(f"\nYOLOv10m + ViTPose-B stand-ins (random weights), wall seconds for the {n} frames, median (min-max) of "
          f"{args.gate_repeats} runs each, configurations alternating (forward, then reversed); one Preprocessor per "
          "configuration, built and warmed up on the whole clip once. Speedup: off's median / this median, and the "
          "range of the per-round ratios (same round, back to back):\n")
    print("| configuration | pose runs | detector runs | seconds | speedup vs off |")
    print("|---|---|---|---|---|")
    for label, _ in configs:
        s = seconds[label]
        ratios = [a / b for a, b in zip(off, s)]
        med = statistics.median(off) / statistics.median(s)
        print(f"| {label} | {runs[label][0]}/{n} | {runs[label][1]}/{n} | {_fmt(spread(s), 1)} | "
              f"{med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")
        for row in rows:
            if row["name"] == label:
                row.update(seconds=s, standin_runs=runs[label], speedup=med)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["all", "tiny", "standin", "gate"], default="all")
    ap.add_argument("--gate-frames", type=int, default=32, help="frames of the gate suite's clip")
    ap.add_argument("--gate-noise", type=float, default=0.0, help="per-frame position noise (px) of the gate clip's keypoint discs")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", default="auto", help="'auto' or an int")
    ap.add_argument("--dtype", choices=["float", "uint8"], default="float", help="input frames")
    ap.add_argument("--face-dtype", choices=["float", "uint8"], default="float", help="face crops out")
    ap.add_argument("--repeats", type=int, default=4, help="pipeline / model-only pairs")
    ap.add_argument("--gate-repeats", type=int, default=3, help="timed runs of each gate configuration (stand-ins)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "bench_models")
    ap.add_argument("--yolo", type=Path, default=SHARED_YOLO)
    args = ap.parse_args(argv)
    batch = args.batch if args.batch == "auto" else int(args.batch)
    torch.set_num_threads(physical_cores())
    frames = make_frames(args.frames, args.dtype)
    face_dtype = {"float": torch.float32, "uint8": torch.uint8}[args.face_dtype]
    if args.suite == "gate":
        bench_gate(args, batch)
        return 0
    rows = []
    if args.suite in ("all", "tiny"):
        from wanprep_torch.testkit import build_test_models

        tm = build_test_models(args.models_dir / "tiny")
        rows.append(
            bench_pair("tiny analytic det + pose", tm["det"], tm["pose"], frames, batch, args.repeats, args.threads, face_dtype)
        )
    if args.suite in ("all", "standin"):
        if not args.yolo.exists():
            print(f"skipping stand-ins: {args.yolo} not found", file=sys.stderr)
        else:
            vit = _load_script("make_standins").build_vitpose_standin("b", args.models_dir / "vitpose-b-standin.onnx")
            rows.append(
                bench_pair("YOLOv10m + ViTPose-B stand-ins", args.yolo, vit, frames, batch, args.repeats, args.threads, face_dtype)
            )
    print_tables(rows, args)
    if args.suite == "all":
        bench_gate(args, batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
