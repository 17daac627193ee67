"""Memory the run will need, estimated before anything is allocated, and the check against
what the machine has: a size that cannot fit is refused with one line, not killed by the
kernel's out-of-memory killer half-way.

The estimate counts the buffers one chunk of ``chunk`` frames holds at once, in bytes:
the decoded source frames (uint8), the resized frames (uint8), the stages' uint8 and float32
conversions (``FrameBatch``), the face crops (512 x 512 uint8) and the pose drawing's float
canvases (8 frames, two of them). The models' own memory comes on top; the check keeps a
margin for it.

    >>> est = estimate_bytes((480, 832), (480, 832), chunk=64)
    >>> round(est / 2**20)  # MiB
    633
"""

from __future__ import annotations

import os

from .errors import RunError

__all__ = ["estimate_bytes", "available_bytes", "check_fits", "MODEL_MARGIN"]

MODEL_MARGIN = 2 << 30  # room left for the models, sessions and the interpreter (bytes)
_FACE = 512 * 512 * 3
_DRAW_FRAMES = 8  # outputs.StreamWriter draws this many pose frames per step


def estimate_bytes(source_hw: tuple[int, int], hw: tuple[int, int], chunk: int, face_size: int = 512) -> int:
    """Bytes of the per-chunk buffers for ``chunk`` frames decoded at ``source_hw`` and
    processed at ``hw`` (H, W)."""
    src = int(source_hw[0]) * int(source_hw[1]) * 3
    px = int(hw[0]) * int(hw[1]) * 3
    per_frame = src + px * (1 + 1 + 4)  # decoded, resized, uint8 + float32 views
    faces = chunk * face_size * face_size * 3
    drawing = 2 * _DRAW_FRAMES * px * 4
    return chunk * per_frame + faces + drawing


def available_bytes(device) -> int | None:
    """Memory free for the run on ``device`` (CUDA: the device's free memory; else the
    system's available memory), or None when it cannot be told."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(source_hw, hw, chunk: int, device, available: int | None = None) -> int:
    """RunError (exit 2) when the estimate plus :data:`MODEL_MARGIN` exceeds the memory
    available; returns the estimate in bytes."""
    need = estimate_bytes(source_hw, hw, chunk)
    have = available if available is not None else available_bytes(device)
    if have is not None and need + MODEL_MARGIN > have:
        gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
        raise RunError(
            f"{hw[1]}x{hw[0]} frames in chunks of {chunk} need about {gib(need)} of buffers (+{gib(MODEL_MARGIN)} for "
            f"the models) but {device} has {gib(have)} available: choose a smaller --width/--height or --chunk"
        )
    return need
