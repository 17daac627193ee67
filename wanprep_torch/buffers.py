"""Reusable scratch tensors for the hot path.

On the CPU a fresh multi-megabyte tensor is mapped from the OS and page-faulted in as it is
first written, which costs several times a reused buffer's write (BENCHMARKS.md). Buffers that live for one group of frames (the
detector input, crops, heatmaps) are therefore kept and reused across groups.
"""

from __future__ import annotations

import torch

__all__ = ["Workspace"]


class Workspace:
    """Named scratch tensors, reallocated only when a larger or different one is needed.

    ``get`` returns a view of the first ``shape[0]`` rows of a buffer at least that long, so a
    short last group reuses the full-size buffer. Contents are undefined on return, and a
    buffer is only valid until the next ``get`` of the same name.
    """

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, channels_last: bool = False
    ) -> torch.Tensor:
        """A (N, ...) tensor; with ``channels_last`` a (N, C, H, W) view of (N, H, W, C) memory."""
        shape = tuple(int(s) for s in shape)
        n, rest = shape[0], shape[1:]
        buf = self._bufs.get(name)
        fits = (
            buf is not None
            and buf.dtype == dtype
            and buf.device == torch.device(device)
            and tuple(buf.shape[1:]) == rest
            and buf.shape[0] >= n
            and buf.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        )
        if not fits:
            if channels_last:
                c, h, w = rest
                buf = torch.empty((n, h, w, c), dtype=dtype, device=device).permute(0, 3, 1, 2)
            else:
                buf = torch.empty(shape, dtype=dtype, device=device)
            self._bufs[name] = buf
        return buf[:n]

    def clear(self) -> None:
        self._bufs.clear()
