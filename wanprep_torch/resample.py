"""cv2 ``INTER_LINEAR`` resizing of sparsely painted 8-bit canvases.

A bilinear downscale reads at most two rows and two columns of the source per output pixel.
:class:`LinearResize` names those rows and columns (the sampling that
:func:`wanprep_torch.raster.rasterize` takes, so only they are painted) and adds each painted
sample into the output pixels that read it, with OpenCV's 11-bit fixed-point weights and
rounding: the big canvas is never materialised, and unpainted pixels cost nothing.

Example::

    >>> s0, s1, w1 = linear_taps(8, 4)    # halving: each output pixel averages two sources
    >>> s0.tolist(), s1.tolist(), w1.tolist()
    ([0, 2, 4, 6], [1, 3, 5, 7], [1024, 1024, 1024, 1024])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LinearResize", "linear_taps"]


def _nz(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)


def linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 ``INTER_LINEAR`` taps of one axis (``src`` -> ``dst`` pixels): for every output
    pixel its first source index (dst,), its second, and the second's weight in 1/2048
    (OpenCV's 11-bit fixed point for 8-bit images)."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32).astype(np.float64)
    s = np.floor(f).astype(np.int64)
    f = f - s
    low = s < 0
    s[low], f[low] = 0, 0.0
    high = s >= src - 1
    s[high], f[high] = src - 1, 0.0
    w1 = np.rint(f * 2048).astype(np.int64)
    return s, np.minimum(s + 1, src - 1), w1


def _taps_by_source(src: int, dst: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The taps of one axis grouped by source index: the sampled source indices (S,) sorted,
    and for each the output indices (S, K) and weights (S, K) int32 (0 for padding) of the
    output pixels reading it."""
    s0, s1, w1 = linear_taps(src, dst)
    d = np.arange(dst)
    srcs = np.concatenate((s0, s1))
    dsts = np.concatenate((d, d))
    ws = np.concatenate((2048 - w1, w1))
    keep = ws > 0
    srcs, dsts, ws = srcs[keep], dsts[keep], ws[keep]
    uniq, inv = np.unique(srcs, return_inverse=True)
    counts = np.bincount(inv, minlength=uniq.size)
    k = int(counts.max()) if counts.size else 1
    order = np.argsort(inv, kind="stable")
    slot = np.arange(inv.size) - np.repeat(np.cumsum(counts) - counts, counts)
    dst_tab = np.zeros((uniq.size, k), np.int64)
    w_tab = np.zeros((uniq.size, k), np.int64)
    dst_tab[inv[order], slot] = dsts[order]
    w_tab[inv[order], slot] = ws[order]
    t = lambda a, dt=torch.long: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
    return t(uniq), t(dst_tab), t(w_tab, torch.int32)


@dataclass(frozen=True)
class LinearResize:
    """A cv2 ``INTER_LINEAR`` resize of 8-bit canvases (src_h, src_w) -> (height, width),
    applied to sparsely painted pixels.

    A bilinear resize reads at most two rows and two columns of the source per output pixel;
    :attr:`row_map` and :attr:`col_rank` are :func:`rasterize`'s sampling of exactly those,
    and :meth:`splat` adds each sampled pixel into the output pixels that read it (unpainted
    pixels add nothing), so the source canvas is never materialised.
    """

    height: int
    width: int
    rows: torch.Tensor  # (R,) sampled source rows
    row_dst: torch.Tensor  # (R, K) output rows reading each, row_w (R, K) their weights
    row_w: torch.Tensor
    cols: torch.Tensor  # (C,) sampled source columns, col_dst / col_w as for the rows
    col_dst: torch.Tensor
    col_w: torch.Tensor
    row_map: torch.Tensor  # (src_h,) compact row or -1
    col_rank: torch.Tensor  # (src_w + 1,) sampled columns left of each column

    @classmethod
    def of(cls, src_h: int, src_w: int, height: int, width: int, device: torch.device) -> "LinearResize":
        rows, row_dst, row_w = _taps_by_source(src_h, height, device)
        cols, col_dst, col_w = _taps_by_source(src_w, width, device)
        row_map = torch.full((src_h,), -1, dtype=torch.long, device=device)
        row_map[rows] = torch.arange(rows.numel(), device=device)
        col_rank = torch.zeros(src_w + 1, dtype=torch.long, device=device)
        col_rank[cols + 1] = 1
        return cls(height, width, rows, row_dst, row_w, cols, col_dst, col_w, row_map, col_rank.cumsum(0))

    @property
    def row_mask(self) -> torch.Tensor:
        """(src_h,) bool: the source rows the resize reads (for :class:`Primitives`)."""
        return self.row_map >= 0

    def splat(
        self, acc: torch.Tensor, frame: torch.Tensor, r: torch.Tensor, c: torch.Tensor, rgb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize visible sampled pixels (at most one per source pixel) into output pixels.

        Args:
            acc: (>= frames * height * width, C) int32 zeros, left zeroed.
            frame, r, c: (Q,) long frame, compact row and compact column of each pixel.
            rgb: (Q, C) int32 colour (0-255).

        Returns:
            ``(dst, value)``: flat output pixel indices ``(frame * height + y) * width + x``
            (D,) (repeats carry equal values) and their (D, C) int32 values, rounded as
            OpenCV rounds its 8-bit resize.
        """
        dy, wy = self.row_dst.index_select(0, r), self.row_w.index_select(0, r)  # (Q, K)
        dx, wx = self.col_dst.index_select(0, c), self.col_w.index_select(0, c)
        dst = (frame[:, None, None] * self.height + dy[:, :, None]) * self.width + dx[:, None, :]
        w = wy[:, :, None] * wx[:, None, :]
        keep = _nz(w.view(-1) > 0)
        dst = dst.view(-1).index_select(0, keep)
        src = torch.div(keep, w.shape[1] * w.shape[2], rounding_mode="floor")
        acc.index_add_(0, dst, w.view(-1).index_select(0, keep)[:, None] * rgb.index_select(0, src))
        value = (acc.index_select(0, dst) + (1 << 21)) >> 22
        acc.index_fill_(0, dst, 0)
        return dst, value
