"""A try-out clip: the test kit's synthetic person written to a video file that keeps its colour
codes, for `wanprep demo --video FILE` and for trying `wanprep run` without model weights."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .models import build_test_models, default_cache_dir
from .scene import make_clip

__all__ = ["TryoutClip", "write_tryout_clip", "TRYOUT_SIZE"]

TRYOUT_SIZE = (240, 416)  # (H, W): small enough to render and run in seconds on a CPU


class TryoutClip(NamedTuple):
    video: Path
    frames: int
    codec: str  # in words
    det: Path  # the test kit's detector and pose model, which read the clip
    pose: Path


def write_tryout_clip(path, frames: int = 96, fps: int = 24, seed: int = 0, motion: str = "slow") -> TryoutClip:
    """Write a 416x240 clip of the synthetic person (``motion``, see :func:`make_clip`; the face
    turned away on frames ``frames // 3`` onwards for ``frames // 8``) losslessly: FFV1 for a
    ``.mkv``, H.264 in RGB at qp 0 for ``.mp4`` / ``.mov`` (:class:`~wanprep_torch.video.VideoWriter`).
    Builds the test kit's models too. ValueError for a bad name or frame count."""
    import torch

    from ..video import VideoWriter

    path = Path(path)
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise ValueError("use a .mp4 or .mov name (H.264 RGB, lossless) or .mkv (FFV1)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    models = build_test_models(default_cache_dir(), fp16=False)
    hidden = range(frames // 3, frames // 3 + max(frames // 8, 1))
    clip = make_clip(frames, H=TRYOUT_SIZE[0], W=TRYOUT_SIZE[1], motion=motion, face_hidden=hidden, seed=seed)
    with VideoWriter(path, fps, lossless=True) as w:
        for s in range(0, frames, 24):
            w.write((clip.frames[s : s + 24] * 255).round().to(torch.uint8))
    codec = "FFV1" if w.codec == "ffv1" else "H.264 RGB, qp 0"
    return TryoutClip(path, frames, codec, models["det"], models["pose"])
