"""What `--overlay` adds to a run: drawing the result on the source frames (draw_overlay) against
drawing pose.mp4's images (draw_pose), per 8-frame chunk as `wanprep run` draws them, and the
H.264 encoding of each. Alternating pairs in one process.

    python scripts/bench_overlay.py [--frames 48] [--pairs 6]

The poses come from one pipeline run (gate off) on the test kit's person at 832x480.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.draw import draw_pose  # noqa: E402
from wanprep_torch.overlay import draw_overlay  # noqa: E402
from wanprep_torch.poses import Poses  # noqa: E402
from wanprep_torch.testkit import build_test_models, make_clip  # noqa: E402
from wanprep_torch.video import VideoWriter  # noqa: E402

CHUNK = 8


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args(argv)
    models = build_test_models()
    frames = (make_clip(args.frames, motion="slow", seed=0).frames * 255).round().to(torch.uint8)
    res = Preprocessor(models["det"], models["pose"], gate="off", progress=False)(frames)
    poses = Poses.from_metas(res.pose_metas)

    def pose_images(writer):
        for s in range(0, args.frames, CHUNK):
            img = draw_pose(res.pose_metas[s : s + CHUNK])
            if writer is not None:
                writer.write(img)

    def overlay(writer):
        for s in range(0, args.frames, CHUNK):
            e = s + CHUNK
            img = draw_overlay(frames[s:e], Poses(poses.keypoints[s:e], poses.width, poses.height),
                               res.bboxes[s:e], res.face_bboxes[s:e], res.face_held[s:e])
            if writer is not None:
                writer.write(img)

    def timed(fn, encode, tmp):
        t0 = time.perf_counter()
        if encode:
            with VideoWriter(Path(tmp) / "v.mp4", 24) as w:
                fn(w)
        else:
            fn(None)
        return (time.perf_counter() - t0) * 1000 / args.frames

    with tempfile.TemporaryDirectory() as tmp:
        for encode in (False, True):
            a, b, r = [], [], []
            timed(pose_images, encode, tmp), timed(overlay, encode, tmp)  # warm-up
            for i in range(args.pairs):
                if i % 2:
                    y, x = timed(overlay, encode, tmp), timed(pose_images, encode, tmp)
                else:
                    x, y = timed(pose_images, encode, tmp), timed(overlay, encode, tmp)
                a.append(x), b.append(y), r.append(y / x)
            what = "drawing + H.264 encoding" if encode else "drawing only"
            print(f"{what}, {args.frames} frames 832x480, {args.pairs} pairs: pose images {statistics.median(a):.2f} ms/frame "
                  f"({min(a):.2f}-{max(a):.2f}), overlay {statistics.median(b):.2f} ms/frame ({min(b):.2f}-{max(b):.2f}); "
                  f"overlay / pose images per pair: median {statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
