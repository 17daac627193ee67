#!/usr/bin/env python
"""Benchmark: INT8 vs FP32 on the CPU provider, model-only and end to end, with the validation
numbers; and (--ablation) which ops kept in float change the error and the speed.

Every ratio is measured within this one run, FP32 and INT8 alternating (ABBA) pair by pair; the
tables give the median ratio over the pairs with the range. Inputs are real model inputs: the
synthetic person at 832x480 on a noisy background, through the pipeline's detector resize and
pose crop (converters.int8_check.model_inputs), so calibration, validation and timing all see
what a run sees. The stand-ins have random weights: their speed is the real models' speed,
their accuracy numbers say how much INT8 moves their outputs, not how good a real model is.

    python scripts/bench_int8.py                       # ViTPose-B, ViTPose-L, YOLOv10m stand-ins
    python scripts/bench_int8.py --pose b --pairs 5 --e2e-frames 8 --e2e-pairs 3
    python scripts/bench_int8.py --ablation            # also the float groups, ViTPose-B + YOLOv10m
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.int8 import Int8Settings, open_stages, quantize, split_frames  # noqa: E402
from converters.int8_check import model_inputs, validate_detector, validate_pose  # noqa: E402
from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.runtime import OrtModel, physical_cores  # noqa: E402

# The shared stand-ins beside the repository (a worktree's parent may not have them).
SHARED_YOLO = next((p for p in (ROOT.parent / "shared" / "models" / "yolov10m-standin.onnx",
                                Path("/work/shared/models/yolov10m-standin.onnx")) if p.exists()),
                   ROOT.parent / "shared" / "models" / "yolov10m-standin.onnx")


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_frames(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 480, 832, 3) uint8: the synthetic person on a noisy background (as bench.py)."""
    from wanprep_torch.testkit import make_clip

    clip = make_clip(n, motion="slow", seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = (clip.frames + 0.1 * torch.rand(clip.frames.shape, generator=g)).clamp_(0, 1)
    return (x * 255).round().to(torch.uint8)


def spread(values) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(s, digits: int = 2) -> str:
    return f"{s[0]:.{digits}f} ({s[1]:.{digits}f}-{s[2]:.{digits}f})"


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal to quantization noise of an output, dB (higher: closer to FP32)."""
    noise = float(np.sum((ref.astype(np.float64) - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def pairs(fp32, int8, x: torch.Tensor, n: int) -> dict:
    """Model-only: ``n`` alternating pairs of one run each on ``x`` (after a warm-up)."""
    fp32.run(x)
    int8.run(x)
    a, b = [], []
    for r in range(n):
        for which in ("a", "b") if r % 2 == 0 else ("b", "a"):
            m, out = (fp32, a) if which == "a" else (int8, b)
            t0 = time.perf_counter()
            m.run(x)
            out.append(time.perf_counter() - t0)
    return {"fp32_ms": spread([1000 * t for t in a]), "int8_ms": spread([1000 * t for t in b]),
            "ratio": spread([p / q for p, q in zip(a, b)])}


def size_mb(path: Path) -> float:
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 1e6


def quantized(role: str, src: Path, out: Path, inputs, settings: Int8Settings) -> tuple[Path, float]:
    calib, _ = split_frames(len(inputs))
    data = (inputs.pose if role == "pose" else inputs.det)[calib]
    t0 = time.perf_counter()
    quantize(src, out, role, settings, data)
    return out, time.perf_counter() - t0


def check(role, det_stage, pose_stage, int8_path, inputs):
    _, val = split_frames(len(inputs))
    v = inputs.take(val)
    rep = validate_pose(pose_stage, int8_path, v) if role == "pose" else validate_detector(det_stage, int8_path, v)
    return rep


def raw_sqnr(src: Path, q: Path, role: str, inputs) -> float:
    _, val = split_frames(len(inputs))
    x = torch.from_numpy((inputs.pose if role == "pose" else inputs.det)[val])
    a, b = OrtModel(src, "cpu", role=role), OrtModel(q, "cpu", role=role)
    return sqnr_db(a.run(x, batch_size=1).numpy(), b.run(x, batch_size=1).numpy())


def end_to_end(det32, pose32, det8, pose8, frames, n_pairs: int) -> dict:
    """The whole pipeline (gate off: every frame through both models) FP32 vs INT8, alternating."""
    a_pre = Preprocessor(det32, pose32, progress=False, gate="off")
    b_pre = Preprocessor(det8, pose8, progress=False, gate="off")
    warm = frames[:2]
    a_pre(warm)
    b_pre(warm)
    a, b = [], []
    res = {}
    for r in range(n_pairs):
        for which in ("a", "b") if r % 2 == 0 else ("b", "a"):
            pre, out = (a_pre, a) if which == "a" else (b_pre, b)
            t0 = time.perf_counter()
            res[which] = pre(frames)
            out.append(time.perf_counter() - t0)
    n = frames.shape[0]
    d = (res["a"].keypoints[..., :2] - res["b"].keypoints[..., :2]).norm(dim=-1)
    return {"fp32_ms": spread([1000 * t / n for t in a]), "int8_ms": spread([1000 * t / n for t in b]),
            "ratio": spread([p / q for p, q in zip(a, b)]), "frames": n,
            "kp_px_mean": float(d.mean()), "kp_px_p95": float(torch.quantile(d.flatten(), 0.95))}


def fragility(pose_stage, inputs) -> str:
    """FP32 against itself on crops moved by one 8-bit step of noise: how far the model's
    keypoints jump without any quantization (a random-weight model's are noise)."""
    from converters.int8_check import Thresholds, pose_errors
    from wanprep_torch.pose import PoseInput

    _, val = split_frames(len(inputs))
    v = inputs.take(val)
    x = torch.from_numpy(v.pose)
    g = torch.Generator().manual_seed(0)
    noisy = x + torch.randn(x.shape, generator=g) / 255 / 0.226  # one step of 8 bits, ImageNet std
    inp = PoseInput(x, v.center, v.window)
    ref = pose_stage.postprocess(pose_stage.infer(x), inp)
    test = pose_stage.postprocess(pose_stage.infer(noisy.contiguous()), inp)
    return pose_line(pose_errors(ref, test, v.window, Thresholds(), pose_stage.input_hw[0]))


def pose_line(rep) -> str:
    return ", ".join(f"{k} {g.mean:.2f}/{g.p95:.2f}" for k, g in rep.groups.items())


def ablation(work: Path, det_src: Path, pose_src: Path, det_stage, pose_stage, inputs, n_pairs: int) -> list[str]:
    """Each float group alone and all of them, per recipe: output SQNR, validation, speed."""
    rows = ["| model | recipe | kept in float | output SQNR dB | validation | model-only FP32/INT8 |",
            "|---|---|---|---:|---|---:|"]
    x_pose = torch.from_numpy(inputs.pose[:1])
    x_det = torch.from_numpy(inputs.det[:1])
    plans = [("pose", pose_src, "dynamic", [(), ("attention",)]),
             ("pose", pose_src, "static", [(), ("attention",), ("layernorm",), ("head",), ("attention", "layernorm", "head")]),
             ("detector", det_src, "static", [(), ("head",)])]
    for role, src, mode, groups in plans:
        fp32 = OrtModel(src, "cpu", role=role)
        for keep in groups:
            out = work / f"abl-{role}-{mode}-{'-'.join(keep) or 'none'}.onnx"
            try:
                quantized(role, src, out, inputs, Int8Settings(mode, keep))
            except Exception as e:  # a recipe onnxruntime cannot make: reported, the rest goes on
                rows.append(f"| {src.stem} | {mode} | {', '.join(keep) or 'nothing'} | - | failed: {e} | - |")
                continue
            rep = check(role, det_stage, pose_stage, out, inputs)
            val = (f"crop px mean/p95 {pose_line(rep)}" if role == "pose"
                   else f"IoU mean {rep.mean_iou:.3f}, worst {rep.worst_iou:.3f}")
            sp = pairs(fp32, OrtModel(out, "cpu", role=role), x_pose if role == "pose" else x_det, n_pairs)
            rows.append(f"| {src.stem} | {mode} | {', '.join(keep) or 'nothing'} | "
                        f"{raw_sqnr(src, out, role, inputs):.1f} | {val} | {fmt(sp['ratio'])} |")
            print(rows[-1], flush=True)
    rows.append(conv_integer_row(work, det_src, x_det, n_pairs))
    print(rows[-1], flush=True)
    return rows


def conv_integer_row(work: Path, det_src: Path, x: torch.Tensor, n_pairs: int) -> str:
    """Why detectors take the static recipe: onnxruntime's dynamic quantization of Conv
    (ConvInteger) against FP32, model-only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = work / "yolov10m-dynamic-conv.onnx"
    quantize_dynamic(str(det_src), str(out), op_types_to_quantize=["Conv", "MatMul"], weight_type=QuantType.QInt8)
    sp = pairs(OrtModel(det_src, "cpu", role="detector"), OrtModel(out, "cpu", role="detector"), x, n_pairs)
    return f"| {det_src.stem} | dynamic incl. Conv (ConvInteger) | - | - | - | {fmt(sp['ratio'])} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pose", nargs="+", default=["b", "l"], choices=["b", "l", "h"], help="ViTPose stand-in sizes")
    p.add_argument("--standins", type=Path, default=None, help="folder of vitpose-*-standin.onnx (built if missing)")
    p.add_argument("--yolo", type=Path, default=SHARED_YOLO)
    p.add_argument("--frames", type=int, default=24, help="frames for calibration (2 in 3) and validation (1 in 3)")
    p.add_argument("--pairs", type=int, default=5, help="model-only FP32/INT8 pairs per model")
    p.add_argument("--e2e-frames", type=int, default=8)
    p.add_argument("--e2e-pairs", type=int, default=3)
    p.add_argument("--ablation", action="store_true", help="also each float group (ViTPose-B + YOLOv10m)")
    p.add_argument("--ablation-pairs", type=int, default=3)
    args = p.parse_args(argv)

    ms = _load_script("make_standins")
    standins = args.standins or Path(tempfile.gettempdir()) / "wanprep-standins"
    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    poses = {}
    for size in args.pose:
        path = standins / f"vitpose-{size}-standin.onnx"
        if not path.exists():
            print(f"building {path}", flush=True)
            ms.build_vitpose_standin(size, path)
        poses[size] = path
    print(f"# INT8 vs FP32, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{physical_cores()} physical cores, torch {torch.__version__}", flush=True)
    frames = make_frames(args.frames)
    det_stage, _ = open_stages(args.yolo)
    lines, q, noise = [], {}, []
    first_pose = None
    for size, src in poses.items():
        _, pose_stage = open_stages(args.yolo, src)
        inputs = model_inputs(frames, det_stage, pose_stage)
        first_pose = first_pose or (src, pose_stage, inputs)
        out, secs = quantized("pose", src, work / f"{src.stem}.int8.onnx", inputs, Int8Settings())
        q[size] = out
        rep = check("pose", det_stage, pose_stage, out, inputs)
        noise.append(f"| ViTPose-{size.upper()} stand-in | {fragility(pose_stage, inputs)} |")
        sp = pairs(OrtModel(src, "cpu", role="pose"), OrtModel(out, "cpu", role="pose"),
                   torch.from_numpy(inputs.pose[:1]), args.pairs)
        lines.append(f"| ViTPose-{size.upper()} stand-in | dynamic (attention float) | {fmt(sp['fp32_ms'], 0)} | "
                     f"{fmt(sp['int8_ms'], 0)} | **{fmt(sp['ratio'])}** | {size_mb(src):.0f} -> {size_mb(out):.0f} | "
                     f"{secs:.0f} | {raw_sqnr(src, out, 'pose', inputs):.1f} | {pose_line(rep)} |")
        print(lines[-1], flush=True)
        del pose_stage
    src, pose_stage, inputs = first_pose
    det_q, secs = quantized("detector", args.yolo, work / "yolov10m.int8.onnx", inputs, Int8Settings())
    rep = check("detector", det_stage, pose_stage, det_q, inputs)
    sp = pairs(OrtModel(args.yolo, "cpu", role="detector"), OrtModel(det_q, "cpu", role="detector"),
               torch.from_numpy(inputs.det[:1]), args.pairs)
    lines.append(f"| YOLOv10m stand-in | static QDQ (head float) | {fmt(sp['fp32_ms'], 0)} | {fmt(sp['int8_ms'], 0)} | "
                 f"**{fmt(sp['ratio'])}** | {size_mb(args.yolo):.0f} -> {size_mb(det_q):.0f} | {secs:.0f} | "
                 f"{raw_sqnr(args.yolo, det_q, 'detector', inputs):.1f} | chosen-box IoU mean {rep.mean_iou:.3f}, "
                 f"worst {rep.worst_iou:.3f} |")
    print(lines[-1], flush=True)
    print("\nModel-only, batch 1, ms per run: median (min-max) over alternating pairs; validation: INT8 vs FP32 "
          "on every third frame, pose crop px mean/p95 per group\n")
    print("| model | recipe | FP32 ms | INT8 ms | FP32/INT8 | MB | quantize s | output SQNR dB | validation |")
    print("|---|---|---:|---:|---:|---|---:|---:|---|")
    print("\n".join(lines))

    print("\nFP32 against FP32 on crops with one 8-bit step of noise (no quantization), crop px mean/p95:\n")
    print("| model | keypoint distance |\n|---|---|")
    print("\n".join(noise))

    e2e = frames[: args.e2e_frames]
    print(f"\nEnd to end (Preprocessor, gate off, {e2e.shape[0]} frames, {args.e2e_pairs} alternating pairs), ms/frame:\n")
    print("| models | FP32 | INT8 | FP32/INT8 | keypoints INT8 vs FP32 (frame px mean / p95) |")
    print("|---|---:|---:|---:|---|")
    for size, src in poses.items():
        r = end_to_end(args.yolo, src, det_q, q[size], e2e, args.e2e_pairs)
        print(f"| YOLOv10m + ViTPose-{size.upper()} stand-ins | {fmt(r['fp32_ms'], 0)} | {fmt(r['int8_ms'], 0)} | "
              f"**{fmt(r['ratio'])}** | {r['kp_px_mean']:.1f} / {r['kp_px_p95']:.1f} |", flush=True)
    if args.ablation:
        src = poses.get("b") or next(iter(poses.values()))
        _, pose_stage = open_stages(args.yolo, src)
        print("\nAblation: float groups (output SQNR and validation on the validation frames; "
              "speed: alternating pairs, batch 1)\n")
        print("\n".join(ablation(work, args.yolo, src, det_stage, pose_stage, inputs, args.ablation_pairs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
