"""The gate presets and the smoothing on noisy test scenes: noise level x motion x preset, with
pose runs, error against ground truth, body accel and face-box accel (a Markdown table for
README.md / BENCHMARKS.md), and the One Euro filter on ``off``'s keypoints for comparison.

    python scripts/noise_table.py [--size 832x480] [--frames 40] [--noise 0,0.3,0.5,1.0]
                                  [--motions hold,slow,holdslow,fast,cut] [--seed 2]

Error: mean distance (px) of the confident, visible body points from the truth. Accel: mean
norm of the second time-difference of the body points (px/frame^2; the smooth truth has
about 0.015). Face accel: the same for the centre of the box the face crop is taken from.
Around a cut: the worst frame within 3 frames of it, above ``off``'s. Uses the analytic test
models (accuracy); speed is scripts/bench.py's job.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from wanprep_torch import Preprocessor
from wanprep_torch.temporal import one_euro
from wanprep_torch.testkit import build_test_models, make_clip
from wanprep_torch.testkit.metrics import body_accel, body_error, box_accel, frame_errors

# (label, gate, smooth)
PRESETS = [("off", "off", "off"), ("off+smooth", "off", "on"), ("safe (default)", "safe", "auto"),
           ("safe, no smoothing", "safe", "off"), ("fast", "fast", "auto")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="832x480", help="WxH of the scenes (default 832x480)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--noise", default="0,0.3,0.5,1.0", help="noise levels (px), comma-separated")
    ap.add_argument("--motions", default="hold,slow,holdslow,fast,cut")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--no-header", action="store_true", help="rows only (to append to an earlier table)")
    ap.add_argument("--models-dir", default=None, help="where to build the test models (default: a temporary folder)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    models = build_test_models(args.models_dir or tempfile.mkdtemp(), fp16=False)
    if not args.no_header:
        print("| motion | noise (px) | preset | pose runs | error (px) | vs off | body accel | vs off | face-box accel | vs off | cut: worst frame vs off | noise estimate (body) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for motion in args.motions.split(","):
        for noise in (float(v) for v in args.noise.split(",")):
            clip = make_clip(args.frames, H=h, W=w, motion=motion, background=True, seed=args.seed, noise_px=noise)
            cuts = [args.frames // 2] if motion == "cut" else []
            base = None
            for label, gate, smooth in PRESETS:
                res = Preprocessor(models["det"], models["pose"], progress=False, gate=gate, smooth=smooth)(clip.frames)
                rows = [(label, res.keypoints, res.face_bboxes_exact, int(res.pose_ran.sum()), res.noise.get("body"))]
                if gate == "off" and smooth == "off":
                    rows.append(("off + One Euro", one_euro(res.keypoints), None, len(clip), None))
                for name, kps, faces, runs, sigma in rows:
                    err = body_error(kps, clip.keypoints, clip.visible)
                    acc = body_accel(kps, cuts=cuts)
                    fa = box_accel(faces, cuts=cuts) if faces is not None else float("nan")
                    per = frame_errors(kps, clip.keypoints, clip.visible)
                    if base is None:
                        base = (err, acc, fa, per)
                    around = ""
                    if cuts:
                        c = cuts[0]
                        around = f"{float((per - base[3])[c - 3 : c + 3].max()):+.2f}"
                    est = "" if sigma is None else f"{sigma:.2f}"
                    print(
                        f"| {motion} | {noise} | {name} | {runs}/{len(clip)} ({100 * runs / len(clip):.0f}%) | {err:.3f} | {_ratio(err, base[0])} "
                        f"| {acc:.3f} | {_ratio(acc, base[1])} | {fa:.3f} | {_ratio(fa, base[2])} | {around} | {est} |",
                        flush=True,
                    )
    return 0


def _ratio(v: float, base: float) -> str:
    return f"{v / base:.2f}x" if base > 1e-9 else "-"


if __name__ == "__main__":
    raise SystemExit(main())
