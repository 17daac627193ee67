"""Time wanprep_torch.draw.draw_pose on a synthetic clip (default: 240 frames, 832 x 480).

    python scripts/bench_draw.py [--frames 240] [--width 832] [--height 480] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from wanprep_torch.draw import draw_pose

# Standing person on an 832 x 480 canvas (pixel coordinates), OpenPose-18 + toes.
_BODY = [
    (416, 80), (416, 140), (356, 140), (300, 170), (250, 200), (476, 140), (532, 170),
    (582, 200), (386, 270), (376, 350), (366, 430), (446, 270), (456, 350), (466, 430),
    (400, 66), (432, 66), (380, 80), (452, 80), (500, 440), (332, 440),
]


def _hand(wx: float, wy: float, direction: float) -> np.ndarray:
    pts = [(wx, wy)]
    for f in range(5):
        ang = direction + (f - 2) * 0.45
        pts += [(wx + 16 * j * math.cos(ang), wy + 16 * j * math.sin(ang)) for j in range(1, 5)]
    return np.array(pts)


def synthetic_metas(frames: int, width: int, height: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    scale = np.array([width / 832, height / 480])
    metas = []
    for t in range(frames):
        sway = np.array([40 * math.sin(t / 15), 10 * math.sin(t / 7)])
        body = (np.array(_BODY, float) + sway + rng.normal(0, 3, (20, 2))) * scale
        lh = (_hand(582, 200, 0.3 + 0.5 * math.sin(t / 9)) + sway) * scale
        rh = (_hand(250, 200, math.pi - 0.3) + sway) * scale

        def norm(px: np.ndarray, score: np.ndarray) -> np.ndarray:
            return np.concatenate([px / [width, height], score[:, None]], 1).astype(np.float32)

        metas.append(
            {
                "width": width,
                "height": height,
                "keypoints_body": norm(body, rng.uniform(0.4, 1.0, 20)),
                "keypoints_left_hand": norm(lh, rng.uniform(0.4, 1.0, 21)),
                "keypoints_right_hand": norm(rh, rng.uniform(0.4, 1.0, 21)),
                "keypoints_face": norm(body[[0]].repeat(69, 0), np.full(69, 0.9)),
            }
        )
    return metas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    metas = synthetic_metas(args.frames, args.width, args.height)
    cases = {
        "native": {},
        "pad 512x512": {"out_size": (512, 512)},
        "crop 832x480": {"out_size": (args.height, args.width), "mode": "crop"},
    }
    draw_pose(metas[:4], device=args.device)  # warm-up
    for name, kw in cases.items():
        times = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = draw_pose(metas, device=args.device, chunk=args.chunk, **kw)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(
            f"{name:>14}: {args.frames} frames {args.width}x{args.height} -> {tuple(out.shape)}"
            f"  best {min(times):.3f} s  median {sorted(times)[len(times) // 2]:.3f} s"
            f"  ({args.threads} threads, chunk {args.chunk}, {args.device})"
        )


if __name__ == "__main__":
    main()
