"""FP16 vs FP32 models on ONNX Runtime's CPU provider: the figure behind `wanprep run --fp16`'s
warning on the CPU.

    python scripts/bench_fp16_cpu.py [--model /work/shared/models/yolov10m-standin.onnx] [--pairs 8] [--batch 1]

The FP16 copy is made the way `--fp16` makes it (float16 inputs and outputs, the pipeline feeds
float16), into a temporary cache. Each pair runs FP32 then FP16 on the same random input, the
order alternating between pairs (the machine is shared and noisy); the report is the median of
the per-pair ratios FP16 / FP32 with their range, and each one's median seconds per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from wanprep_torch.runner import RunOptions, resolve_models  # noqa: E402


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def timed(sess, x) -> float:
    name = sess.get_inputs()[0].name
    t0 = time.perf_counter()
    sess.run(None, {name: x})
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/work/shared/models/yolov10m-standin.onnx"))
    ap.add_argument("--role", default="detector", choices=("detector", "pose"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        key = "det" if args.role == "detector" else "pose"
        other = {"det": "pose", "pose": "det"}[key]
        # resolve_models converts both roles; the other one gets a tiny FP16 model (passed as is).
        from wanprep_torch.testkit import build_test_models

        tiny = build_test_models(Path(cache) / "tiny")[f"{other}_fp16"]
        opts = RunOptions(**{key: str(args.model), other: str(tiny)}, fp16=True)
        fp16 = Path(getattr(resolve_models(opts, Path(cache), log=lambda m: None), key))
        s32, s16 = session(args.model, args.threads), session(fp16, args.threads)
        dims = s32.get_inputs()[0].shape  # symbolic: batch first, then 640 (detector) / 256x192 (pose)
        default = [args.batch, 3, 640, 640] if args.role == "detector" else [args.batch, 3, 256, 192]
        shape = [d if isinstance(d, int) else default[i] for i, d in enumerate(dims)]
        x32 = np.random.default_rng(0).random(shape, dtype=np.float32)
        x16 = x32.astype(np.float16)
        timed(s32, x32), timed(s16, x16)  # warm-up
        t32, t16, ratios = [], [], []
        for i in range(args.pairs):
            if i % 2:
                b, a = timed(s16, x16), timed(s32, x32)
            else:
                a, b = timed(s32, x32), timed(s16, x16)
            t32.append(a), t16.append(b), ratios.append(b / a)
    print(f"model {args.model.name}, input {shape}, CPU provider, {args.threads} threads, {args.pairs} alternating pairs")
    print(f"FP32 median {statistics.median(t32):.3f} s/run, FP16 median {statistics.median(t16):.3f} s/run")
    print(f"FP16 / FP32 per pair: median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
