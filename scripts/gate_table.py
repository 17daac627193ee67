"""The gate presets on the test kit's ground-truth scenes, one per motion type: model runs and
keypoint error against ground truth (a Markdown table for README.md / BENCHMARKS.md).

    python scripts/gate_table.py [--size 416x240] [--models-dir DIR]

Uses the analytic test models (accuracy); speed is scripts/bench.py's job (stand-in models).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from wanprep_torch import Preprocessor
from wanprep_torch.testkit import build_test_models, make_clip

SCENES = [("hold", 32), ("slow", 32), ("pan", 40), ("holdslow", 60), ("accel", 32), ("fast", 16), ("enter", 24), ("cut", 24)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="416x240", help="WxH of the scenes (default 416x240)")
    ap.add_argument("--models-dir", default=None, help="where to build the test models (default: a temporary folder)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    models = build_test_models(args.models_dir or tempfile.mkdtemp(), fp16=False)
    print("| motion | frames | preset | pose runs | detector runs | mean error vs ground truth (px) | vs off |")
    print("|---|---|---|---|---|---|---|")
    for motion, t in SCENES:
        clip = make_clip(t, H=h, W=w, motion=motion, background=True, seed=2)
        base = None
        for preset in ("off", "safe", "fast"):
            res = Preprocessor(models["det"], models["pose"], progress=False, gate=preset)(clip.frames)
            err = float((res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible].mean())
            base = err if base is None else base
            print(f"| {motion} | {t} | {preset} | {int(res.pose_ran.sum())} | {int(res.det_ran.sum())} | {err:.3f} | {err - base:+.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
