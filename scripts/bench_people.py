"""Frames/s with 1, 2 and 3 people in view (Preprocessor(people=...)), in one run.

    python scripts/bench_people.py [--frames 24] [--rounds 5] [--gate safe off] [--threads 2]

Clips: the test kit's crowd scene at 1280x480 (make_crowd_clip: a walker, a person standing,
a person entering) cut to the first 1, 2 or 3 of its people, all in view on every frame
(nobody hidden, the third walks in from frame 0). Models: the test kit's analytic detector for
several people and its analytic pose model (real signatures; the pose model's cost per crop is
fixed, so the ratios show how the work grows with people). Configurations, run in alternating
order each round (the machine is shared: medians and spreads, never one run):

- ``single``: people=1 (today's single-subject path) on the one-person clip: the baseline;
- ``people=3 / k in view``: people=3 on the clip with k people.

Prints frames/s (median and min-max over rounds), pose crops per frame, and the ratio of each
median to the baseline's.
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

import torch  # noqa: E402

from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.testkit import build_test_models, make_people_clip  # noqa: E402
from wanprep_torch.testkit.scene import make_crowd_clip  # noqa: E402


def clips(frames: int) -> dict[int, torch.Tensor]:
    """k -> (T, H, W, 3) frames with the crowd scene's first k people, all in view."""
    base = make_crowd_clip(frames, hidden=(), enter=-40)
    centres = (base.keypoints.amin(2) + base.keypoints.amax(2)) / 2  # (P, T, 2) keypoint-extent centres
    out = {}
    for k in (1, 2, 3):
        clip = make_people_clip(centres[:k].numpy().astype(np.float64), base.height[:k].numpy(), H=480, W=1280)
        assert bool(clip.present.all()), "every person in view on every frame"
        out[k] = clip.frames
    return out


STAGES = ("detect_model", "pose_model", "pose_pre", "pose_post", "faces", "wan", "gate")


def run_once(pre: Preprocessor, frames: torch.Tensor) -> tuple[float, int, dict]:
    crops = []
    real = pre.estimator.estimate

    def counting(fb, boxes, timer=None, frame_index=None):
        crops.append(boxes.shape[0])
        return real(fb, boxes, timer, frame_index=frame_index)

    pre.estimator.estimate = counting
    try:
        t0 = time.perf_counter()
        res = pre(frames)
        wall = time.perf_counter() - t0
        stages = {k: res.timings[k]["ms_per_frame"] for k in STAGES if k in res.timings}
        return wall, sum(crops), stages
    finally:
        pre.estimator.estimate = real


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gate", nargs="+", default=["safe", "off"])
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = build_test_models(Path(tempfile.gettempdir()) / "wanprep_bench_people_models", fp16=False)
    scenes = clips(args.frames)
    T = args.frames
    for gate in args.gate:
        configs = {"single (people=1), 1 in view": (1, 1)}
        configs.update({f"people=3, {k} in view": (3, k) for k in (1, 2, 3)})
        pres = {
            name: Preprocessor(models["det_multi"], models["pose"], progress=False, gate=gate, people=n, intra_op_threads=args.threads)
            for name, (n, _k) in configs.items()
        }
        for name, (_n, k) in configs.items():  # warm-up: sessions, allocations
            run_once(pres[name], scenes[k][:4])
        times = {name: [] for name in configs}
        crops, stages = {}, {name: [] for name in configs}
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))  # alternate the order
            for name in order:
                dt, c, st = run_once(pres[name], scenes[configs[name][1]])
                times[name].append(dt)
                crops[name] = c
                stages[name].append(st)
        base = statistics.median(times[next(iter(configs))])
        print(f"\ngate={gate}, {T} frames at 1280x480, {args.rounds} rounds, {args.threads} threads")
        print(f"{'configuration':<32}{'frames/s median':>16}{'min-max':>16}{'pose crops/frame':>18}{'time vs single':>16}")
        for name in configs:
            med = statistics.median(times[name])
            lo, hi = T / max(times[name]), T / min(times[name])
            print(f"{name:<32}{T / med:>16.1f}{f'{lo:.1f}-{hi:.1f}':>16}{crops[name] / T:>18.2f}{med / base:>15.2f}x")
        print("stage ms/frame (median over rounds): " + ", ".join(STAGES))
        for name in configs:
            row = [statistics.median(r.get(k, 0.0) for r in stages[name]) for k in STAGES]
            print(f"{name:<32}" + "".join(f"{v:>10.1f}" for v in row))


if __name__ == "__main__":
    main()
