"""Do the test kit's colour-coded people survive a video codec? The table behind `wanprep run`'s
colour-code warning and `wanprep demo --video`'s choice of codec (BENCHMARKS.md).

    python scripts/codec_colour_codes.py [--frames 12]

Renders the kit's person (832x480, slow motion), encodes it with each setting, decodes it, runs
the pipeline (gate off) with the kit's analytic models and prints, per frame on average, the
body points seen (Wan body, score >= 0.3), the wholebody points seen and the mean error against
the ground truth over the points seen.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.testkit import build_test_models, make_clip  # noqa: E402

SETTINGS = (  # name, codec, pixel format, options, container suffix
    ("H.264 crf 18", "libx264", "yuv420p", {"crf": "18"}, "mp4"),
    ("H.264 crf 23", "libx264", "yuv420p", {}, "mp4"),
    ("H.264 crf 18 4:4:4", "libx264", "yuv444p", {"crf": "18"}, "mp4"),
    ("H.264 qp 0 4:4:4", "libx264", "yuv444p", {"qp": "0"}, "mp4"),
    ("H.264 RGB qp 0", "libx264rgb", "rgb24", {"qp": "0"}, "mp4"),
    ("H.264 RGB crf 18", "libx264rgb", "rgb24", {"crf": "18"}, "mp4"),
    ("FFV1", "ffv1", "bgr0", {}, "mkv"),
)


def roundtrip(frames: np.ndarray, path: str, codec: str, pix: str, opts: dict):
    import av

    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=24)
        s.width, s.height, s.pix_fmt, s.options = frames.shape[2], frames.shape[1], pix, opts
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(path) as c:
        s = c.streams.video[0]
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])), s.codec_context.pix_fmt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=12)
    args = ap.parse_args(argv)
    models = build_test_models()
    clip = make_clip(args.frames, motion="slow", seed=0)
    u8 = (clip.frames * 255).round().to(torch.uint8)
    pre = Preprocessor(models["det"], models["pose"], gate="off", progress=False)
    print(f"{'encoding':<22}{'pix_fmt':<10}{'body seen /20':>14}{'all seen /133':>15}{'error px':>10}{'kB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, codec, pix, opts, ext in (("none", None, None, None, None),) + SETTINGS:
            if codec is None:
                frames, fmt, kb = u8, "-", 0.0
            else:
                path = os.path.join(tmp, f"clip.{ext}")
                frames, fmt = roundtrip(u8.numpy(), path, codec, pix, opts)
                kb = os.path.getsize(path) / 1e3
            res = pre(frames)
            body = np.stack([m["keypoints_body"][:, 2] for m in res.pose_metas])
            seen = res.keypoints[..., 2] >= 0.3
            err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible & seen].mean()
            print(f"{name:<22}{fmt:<10}{(body >= 0.3).sum(1).mean():>14.1f}{seen.float().sum(1).mean():>15.1f}"
                  f"{float(err):>10.2f}{kb:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
