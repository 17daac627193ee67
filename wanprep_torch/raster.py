"""The rasteriser shared by the pose painters: OpenCV's integer drawing rules, batched in torch.

The pose styles (:mod:`wanprep_torch.draw`, :mod:`wanprep_torch.onetoall`) turn skeletons
into primitives -- filled convex polygons (``cv2.fillConvexPoly``, ``cv2.ellipse2Poly``),
filled discs (``cv2.circle``), 1-px and thick lines (``cv2.line``) -- for many frames at once;
this module scan-converts them with OpenCV's integer rules reproduced exactly:

1. :class:`Primitives` turns every primitive into per-row x-extents (:class:`Segments`) in
   closed form: polygon outlines as clipped Bresenham / 16.16 sub-pixel lines, the scan-line
   span ends of ``FillConvexPoly``, the midpoint spans of filled circles; a long edge costs
   one entry per row, never one per pixel;
2. :func:`rasterize` fills each (primitive, row) between its extreme segments and expands
   it into pixels, optionally keeping only some canvas rows and columns (a resize that reads
   a few of them never needs the rest; :mod:`wanprep_torch.resample`);
3. :func:`paint` (and :func:`top_order` for callers that composite themselves) resolves
   overlaps as painting in order does: where primitives share a pixel, the highest draw order
   wins (a scatter-max into a small scratch buffer).

The cost follows the painted area, not ``T * H * W``. Dtypes: geometry in float64 (float32
on MPS, which has none; :func:`geometry_dtype`), integer rules in int64, draw orders in a
uint8 scratch on the CPU (int32 elsewhere; :func:`order_scratch`).

Example::

    >>> import torch
    >>> prims = Primitives(8, 8, torch.device("cpu"))
    >>> prims.circles(torch.tensor([[3.0, 3.0]]), 1, frame=torch.tensor([0]), order=torch.tensor([0]))
    >>> shapes = prims.build()
    >>> px = rasterize(shapes.segments, shapes.count, width=8)
    >>> sorted(zip(px.y.tolist(), px.x.tolist()))
    [(2, 3), (3, 2), (3, 3), (3, 4), (4, 3)]
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "Segments",
    "Shapes",
    "Pixels",
    "Primitives",
    "rasterize",
    "top_order",
    "paint",
    "geometry_dtype",
    "order_scratch",
    "lazy_zeros",
    "cpu_threads",
]

# OpenCV's SinTable: sin at integer degrees to 7 decimals, as float32; cos(a) = sin(450 - a).
_SIN_DEG = np.round(np.sin(np.deg2rad(np.arange(451, dtype=np.float64))), 7).astype(np.float32)
_BIG = 1 << 40
_ONE, _HALF = 1 << 16, 1 << 15  # OpenCV's XY_SHIFT fixed point


# --------------------------------------------------------------------------------------
# Dtype policy
# --------------------------------------------------------------------------------------


def geometry_dtype(device: torch.device) -> torch.dtype:
    """Float dtype of keypoint geometry: float64 keeps OpenCV's rounding (truncating pixel
    coordinates is sensitive to float32 noise); MPS has no float64, so float32 there."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def order_scratch(n: int, device: torch.device) -> torch.Tensor:
    """(n,) zeros for the painter's per-pixel draw orders (at most 255 of them): uint8 on the
    CPU keeps the buffer small; int32 elsewhere, where a uint8 scatter-max may be missing."""
    dtype = torch.uint8 if torch.device(device).type == "cpu" else torch.int32
    return lazy_zeros((n,), dtype, device)


@contextmanager
def cpu_threads(device: torch.device, n: int = 1):
    """Run torch's CPU kernels in this thread with at most ``n`` intra-op threads.

    The rasteriser's kernels are memory-bound gathers and scatters over ~10^5 elements, where
    OpenMP's fork / join gains little on an idle CPU and, on a loaded one, costs a multiple of
    the work (waits at every barrier for a thread that is not scheduled): drawing 120 frames
    took 0.6-1.0 s of CPU with one thread and 0.9-2.9 s with two, run to run, on a loaded
    2-core machine. With OpenMP the setting is the calling thread's own; it is restored.
    """
    if torch.device(device).type != "cpu" or torch.get_num_threads() <= n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros; on the CPU from calloc'd memory, whose zero pages the OS maps lazily, so a large
    buffer that is only sparsely written is not written twice (zero fill, then paint)."""
    if torch.device(device).type == "cpu":
        return torch.from_numpy(np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))
    return torch.zeros(shape, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


class Segments(NamedTuple):
    """Row segments: primitive ``owner`` covers columns ``x_lo..x_hi`` of canvas row ``y``.

    All (S,) long. A primitive's segments on one row need not touch: the row is filled
    between their extremes (the primitives are convex).
    """

    owner: torch.Tensor
    y: torch.Tensor
    x_lo: torch.Tensor
    x_hi: torch.Tensor

    @classmethod
    def cat(cls, parts: list["Segments"], device: torch.device) -> "Segments":
        if not parts:
            z = torch.zeros(0, dtype=torch.long, device=device)
            return cls(z, z, z, z)
        return cls(*(torch.cat(p) for p in zip(*parts)))

    def index_select(self, keep: torch.Tensor) -> "Segments":
        return Segments(*(v.index_select(0, keep) for v in self))


class Shapes(NamedTuple):
    """What :meth:`Primitives.build` collected: P primitives and their row segments."""

    frame: torch.Tensor  # (P,) long: the canvas (frame) each primitive is drawn on
    order: torch.Tensor  # (P,) long: its draw order (the highest wins a shared pixel)
    segments: Segments  # owners are primitive ids 0..P-1
    count: int  # P


class Pixels(NamedTuple):
    """Painted pixels: (Q,) long each; one entry per pixel of each primitive."""

    owner: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor


def _nz(mask: torch.Tensor) -> torch.Tensor:
    # One nonzero, then index_select per tensor: boolean indexing would search the mask again
    # for every tensor it selects from.
    return mask.nonzero().squeeze(1)


def _expand_counts(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """counts (M,) -> (owner (S,), local index (S,)), S = counts.sum()."""
    counts = counts.clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=counts.device) - start.index_select(0, owner)
    return owner, local


def _ellipse_polygons(center: torch.Tensor, axes: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Vertices of ``cv2.ellipse2Poly(center, axes, angle, 0, 360, delta=1)``.

    Args:
        center: (N, 2) integer-valued (x, y).
        axes: (N, 2) integer-valued half axes (along the angle, across it).
        angle_deg: (N,) integer-valued rotation in degrees (any sign).

    Returns:
        (N, 361, 2) integer-valued vertices (rounded half to even, like ``cvRound``).
    """
    dtype, device = center.dtype, center.device
    table = torch.as_tensor(_SIN_DEG, device=device).to(dtype)
    ang = torch.remainder(angle_deg, 360).long()  # same sin / cos as cv2's 0..360 range
    alpha, beta = table[450 - ang][:, None], table[ang][:, None]
    deg = torch.arange(361, device=device)
    ex = axes[:, :1] * table[450 - deg][None]
    ey = axes[:, 1:] * table[deg][None]
    vx = center[:, :1] + ex * alpha - ey * beta
    vy = center[:, 1:] + ex * beta + ey * alpha
    return torch.round(torch.stack((vx, vy), -1))


def _floordiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def _ceildiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -torch.div(-a, b, rounding_mode="floor")


def _clip_line(
    a: torch.Tensor, b: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cv2.clipLine on (M, 2) long end points: clipped end points and an inside flag.

    Lines are clipped before they are walked, which shifts the pixel pattern of a line that
    leaves the canvas; doing the same keeps such limbs identical to the reference.
    """
    right, bottom = width - 1, height - 1

    def code(p: torch.Tensor) -> torch.Tensor:
        x, y = p[:, 0], p[:, 1]
        return (x < 0).long() + (x > right).long() * 2 + (y < 0).long() * 4 + (y > bottom).long() * 8

    x1, y1, x2, y2 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    c1, c2 = code(a), code(b)
    todo = ((c1 & c2) == 0) & ((c1 | c2) != 0)

    def trunc_div(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return torch.div(n, torch.where(d == 0, torch.ones_like(d), d), rounding_mode="trunc")

    m = todo & ((c1 & 12) != 0)
    t = torch.where(c1 < 8, torch.zeros_like(y1), torch.full_like(y1, bottom))
    x1 = torch.where(m, x1 + trunc_div((t - y1) * (x2 - x1), y2 - y1), x1)
    y1 = torch.where(m, t, y1)
    c1 = torch.where(m, (x1 < 0).long() + (x1 > right).long() * 2, c1)
    m = todo & ((c2 & 12) != 0)
    t = torch.where(c2 < 8, torch.zeros_like(y2), torch.full_like(y2, bottom))
    x2 = torch.where(m, x2 + trunc_div((t - y2) * (x2 - x1), y2 - y1), x2)
    y2 = torch.where(m, t, y2)
    c2 = torch.where(m, (x2 < 0).long() + (x2 > right).long() * 2, c2)
    todo = todo & ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = todo & (c1 != 0)
    t = torch.where(c1 == 1, torch.zeros_like(x1), torch.full_like(x1, right))
    y1 = torch.where(m, y1 + trunc_div((t - x1) * (y2 - y1), x2 - x1), y1)
    x1 = torch.where(m, t, x1)
    c1 = torch.where(m, torch.zeros_like(c1), c1)
    m = todo & (c2 != 0)
    t = torch.where(c2 == 1, torch.zeros_like(x2), torch.full_like(x2, right))
    y2 = torch.where(m, y2 + trunc_div((t - x2) * (y2 - y1), x2 - x1), y2)
    x2 = torch.where(m, t, x2)
    c2 = torch.where(m, torch.zeros_like(c2), c2)
    return torch.stack((x1, y1), -1), torch.stack((x2, y2), -1), (c1 | c2) == 0


def _clip_lines(
    a: torch.Tensor, b: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_clip_line` applied only to the lines with an end point off the canvas."""
    size = torch.tensor([width, height], device=a.device)
    out = ((a < 0) | (a >= size) | (b < 0) | (b >= size)).any(-1)
    idx = out.nonzero().squeeze(1)
    keep = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    if idx.numel():
        ca, cb, ok = _clip_line(a[idx], b[idx], width, height)
        a, b = a.index_put((idx,), ca), b.index_put((idx,), cb)
        keep[idx] = ok
    return a, b, keep


def _keep_rows(e: torch.Tensor, y: torch.Tensor, row_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Callers that read only some canvas rows (a resize) skip the rest's arithmetic.
    keep = row_mask[y]
    return e[keep], y[keep]


def _line_segments(
    a: torch.Tensor, b: torch.Tensor, owner: torch.Tensor, height: int, width: int, row_mask: torch.Tensor | None = None
) -> Segments:
    """Pixels of ``cv2.line(thickness=1)`` / polygon outlines, as per-row extents.

    Exact 8-connected ``LineIterator`` walk: clipped to the canvas, started from the left
    end, half-way steps rounded toward it. Each row the line touches gives its leftmost and
    rightmost pixel in closed form, so a long line costs one entry per row.

    Args:
        a, b: (M, 2) long integer (x, y) end points.
        owner: (M,) long primitive id of each line.
        height, width: canvas size.
        row_mask: optional (height,) bool: only these rows are returned.

    Returns:
        ``(owner, y, x_lo, x_hi)``, each (S,) long.
    """
    a, b, inside = _clip_lines(a, b, width, height)
    a, b, owner = a[inside], b[inside], owner[inside]
    swap = (a[:, 0] > b[:, 0])[:, None]
    a, b = torch.where(swap, b, a), torch.where(swap, a, b)
    dx = b[:, 0] - a[:, 0]  # >= 0
    dy = b[:, 1] - a[:, 1]
    n = torch.maximum(dx, dy.abs())
    lo = torch.minimum(a[:, 1], b[:, 1]).clamp(min=0)
    hi = torch.maximum(a[:, 1], b[:, 1]).clamp(max=height - 1)
    e, k = _expand_counts(hi - lo + 1)
    y = lo[e] + k
    if row_mask is not None:
        e, y = _keep_rows(e, y, row_mask)
    ax, ay, dxe, q, ne = a[e, 0], a[e, 1], dx[e], dy[e].abs(), n[e]
    # Step j lands on row offset s when j * q / n is within (s - 1/2, s + 1/2].
    s = (y - ay).abs()
    qs = q.clamp(min=1)
    j_lo = _floordiv(ne * (2 * s - 1), 2 * qs) + 1
    j_hi = _floordiv(ne * (2 * s + 1), 2 * qs)
    flat = q == 0
    j_lo = torch.where(flat, torch.zeros_like(j_lo), j_lo).clamp(min=0)
    j_hi = torch.minimum(torch.where(flat, ne, j_hi), ne)
    ns = ne.clamp(min=1)
    # x = ax + ceil(j * dx / n - 1/2): half-way columns also round toward the left end.
    x_lo = ax + _ceildiv(2 * j_lo * dxe - ns, 2 * ns)
    x_hi = ax + _ceildiv(2 * j_hi * dxe - ns, 2 * ns)
    ok = j_lo <= j_hi
    return Segments(owner[e][ok], y[ok], x_lo[ok], x_hi[ok])


def _subpixel_line_segments(
    a: torch.Tensor, b: torch.Tensor, owner: torch.Tensor, height: int, width: int, row_mask: torch.Tensor | None = None
) -> Segments:
    """Pixels of OpenCV's sub-pixel ``Line2`` (outlines of thick lines), per-row extents.

    Args:
        a, b: (M, 2) long end points in 16.16 fixed point.
        owner: (M,) long primitive id of each line.
        height, width: canvas size.
        row_mask: optional (height,) bool: only these rows are returned.

    Returns:
        ``(owner, y, x_lo, x_hi)``, each (S,) long.
    """
    a, b, inside = _clip_lines(a, b, width << 16, height << 16)
    a, b, owner = a[inside], b[inside], owner[inside]
    d = b - a
    shallow = d[:, 0].abs() > d[:, 1].abs()
    swap = torch.where(shallow, d[:, 0] < 0, d[:, 1] < 0)[:, None]
    a, b = torch.where(swap, b, a), torch.where(swap, a, b)
    d = b - a
    # Walk the major axis pixel by pixel from the rounded start; the minor coordinate
    # advances by a truncated 16.16 step and is floored after adding one half.
    major = torch.where(shallow, a[:, 0], a[:, 1])
    minor = torch.where(shallow, a[:, 1], a[:, 0]) + _HALF
    d_major = torch.where(shallow, d[:, 0], d[:, 1])
    d_minor = torch.where(shallow, d[:, 1], d[:, 0])
    step = torch.div(d_minor * _ONE, d_major.abs() | 1, rounding_mode="trunc")
    count = d_major >> 16  # samples 0..count
    major0 = (major + _HALF) >> 16
    minor_end = (minor + count * step) >> 16
    r0 = torch.where(shallow, minor >> 16, major0)
    r1 = torch.where(shallow, minor_end, major0 + count)
    lo = torch.minimum(r0, r1).clamp(min=0)
    hi = torch.maximum(r0, r1).clamp(max=height - 1)
    e, k = _expand_counts(hi - lo + 1)
    y = lo[e] + k
    if row_mask is not None:
        e, y = _keep_rows(e, y, row_mask)
    sh, m0, mi, st, cnt = shallow[e], major0[e], minor[e], step[e], count[e]
    # Steep: one pixel per row. Shallow: samples whose floored minor coordinate is y.
    steep_x = (mi + (y - m0) * st) >> 16
    top, bot = y * _ONE - mi, (y + 1) * _ONE - 1 - mi
    sts = torch.where(st == 0, torch.ones_like(st), st)
    k_lo = torch.where(st > 0, _ceildiv(top, sts), _ceildiv(bot, sts))
    k_hi = torch.where(st > 0, _floordiv(bot, sts), _floordiv(top, sts))
    k_lo = torch.where(st == 0, torch.zeros_like(k_lo), k_lo).clamp(min=0)
    k_hi = torch.minimum(torch.where(st == 0, cnt, k_hi), cnt)
    x_lo = torch.where(sh, m0 + k_lo, steep_x)
    x_hi = torch.where(sh, m0 + k_hi, steep_x)
    ok = ~sh | (k_lo <= k_hi)
    # Line2 also plots the rounded end point.
    end = (b + _HALF) >> 16
    keep = (end[:, 1] >= 0) & (end[:, 1] < height)
    return Segments(
        torch.cat((owner[e][ok], owner[keep])),
        torch.cat((y[ok], end[keep, 1])),
        torch.cat((x_lo[ok], end[keep, 0])),
        torch.cat((x_hi[ok], end[keep, 0])),
    )


def _fill_segments(
    a: torch.Tensor, b: torch.Tensor, owner: torch.Tensor, height: int, row_mask: torch.Tensor | None = None
) -> Segments:
    """Scan-line span ends of ``FillConvexPoly`` contributed by polygon edges a-b.

    Each edge serves the rows from its upper vertex's row down to (excluding) its lower
    one; its x walks in 16.16 fixed point with a rounded per-row step and is rounded half
    up, as OpenCV does. The spans' extremes plus the outline give the filled rows.

    Args:
        a, b: (M, 2) long edge end points in 16.16 fixed point.
        owner: (M,) long primitive id of each edge.
        height: canvas height.
        row_mask: optional (height,) bool: only these rows are returned.

    Returns:
        ``(owner, y, x, x)``, each (S,) long.
    """
    ra, rb = (a[:, 1] + _HALF) >> 16, (b[:, 1] + _HALF) >> 16
    down = ra < rb
    up_pt, low_pt = torch.where(down[:, None], a, b), torch.where(down[:, None], b, a)
    r_up, r_low = torch.minimum(ra, rb), torch.maximum(ra, rb)
    rows = r_low - r_up
    dxs = torch.div(
        (low_pt[:, 0] - up_pt[:, 0]) * 2 + rows, 2 * rows.clamp(min=1), rounding_mode="trunc"
    )
    lo = r_up.clamp(min=0)
    hi = torch.minimum(r_low - 1, torch.full_like(r_low, height - 1))
    e, k = _expand_counts(hi - lo + 1)
    y = lo[e] + k
    if row_mask is not None:
        e, y = _keep_rows(e, y, row_mask)
    x = (up_pt[e, 0] + (y - r_up[e]) * dxs[e] + _HALF) >> 16
    return Segments(owner[e], y, x, x)



def _circle_half_widths(radius: int) -> list[int]:
    # Filled cv2.circle (LINE_8) paints the row spans of its integer midpoint circle.
    half = [-1] * (radius + 1)
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        half[dy] = max(half[dy], dx)
        half[dx] = max(half[dx], dy)
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2
    return half


def _circle_segments(
    center: torch.Tensor, radius: int, owner: torch.Tensor, height: int, row_mask: torch.Tensor | None = None
) -> Segments:
    """Row spans of filled ``cv2.circle`` discs.

    Args:
        center: (N, 2) integer-valued (x, y) centres.
        radius: integer radius (>= 0) shared by all discs.
        owner: (N,) long primitive id of each disc.
        height: canvas height.
        row_mask: optional (height,) bool: only these rows are returned.

    Returns:
        ``(owner, y, x_lo, x_hi)``, each (S,) long; rows outside ``[0, height)`` dropped.
    """
    device = center.device
    half = _circle_half_widths(radius)
    dy = torch.arange(-radius, radius + 1, device=device)
    hw = torch.tensor([half[abs(v)] for v in range(-radius, radius + 1)], device=device)
    c = center.long()
    y = c[:, 1:] + dy[None]
    keep = (y >= 0) & (y < height)
    if row_mask is not None:
        keep &= row_mask[y.clamp(0, height - 1)]
    cx = c[:, :1].expand_as(y)
    return Segments(
        owner[:, None].expand_as(y)[keep],
        y[keep],
        (cx - hw[None])[keep],
        (cx + hw[None])[keep],
    )




# --------------------------------------------------------------------------------------
# Primitives -> row segments
# --------------------------------------------------------------------------------------


class Primitives:
    """Collects the row segments of filled primitives drawn on a batch of canvases.

    Every primitive belongs to a canvas (``frame``) and has a draw order (``order``; where
    primitives overlap the highest order wins). Coordinates are integer-valued pixels (float
    or long tensors); primitives may reach past the canvas (clipped as OpenCV clips them).

    Args:
        height, width: canvas size.
        device: where the segments are built.
        rows: optional (height,) bool: the only canvas rows anyone reads (segments on other
            rows are skipped early; see :func:`rasterize`'s sampling).
    """

    def __init__(self, height: int, width: int, device: torch.device, rows: torch.Tensor | None = None):
        self.height, self.width, self.device = int(height), int(width), torch.device(device)
        self._rows = rows
        self._frames: list[torch.Tensor] = []
        self._orders: list[torch.Tensor] = []
        self._segs: list[Segments] = []
        self._count = 0

    def _ids(self, frame: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        n = frame.numel()
        ids = torch.arange(self._count, self._count + n, device=self.device)
        self._count += n
        self._frames.append(frame.reshape(-1).long())
        self._orders.append(torch.as_tensor(order, device=self.device).long().expand(n).reshape(-1))
        return ids

    def circles(self, center: torch.Tensor, radius: int, frame: torch.Tensor, order: torch.Tensor) -> None:
        """Filled ``cv2.circle`` discs (LINE_8) of one radius; center (N, 2), frame / order (N,)."""
        if frame.numel():
            ids = self._ids(frame, order)
            self._segs.append(_circle_segments(center, int(radius), ids, self.height, self._rows))

    def lines(self, a: torch.Tensor, b: torch.Tensor, frame: torch.Tensor, order: torch.Tensor) -> None:
        """1-px ``cv2.line`` (LINE_8) between points a, b (N, 2)."""
        if frame.numel():
            ids = self._ids(frame, order)
            self._segs.append(_line_segments(a.long(), b.long(), ids, self.height, self.width, self._rows))

    def thick_lines(
        self, p0: torch.Tensor, p1: torch.Tensor, thickness: int, frame: torch.Tensor, order: torch.Tensor
    ) -> None:
        """``cv2.line(p0, p1, thickness=t)`` (LINE_8) between points (N, 2)."""
        if frame.numel() == 0:
            return
        if thickness <= 1:
            self.lines(p0, p1, frame, order)
            return
        order = torch.as_tensor(order, device=self.device).long().expand(frame.numel())
        # cv2.line first clips the segment to the canvas grown by the thickness on every side
        # (a line wholly outside is not drawn, caps included).
        m = torch.tensor([thickness, thickness], dtype=torch.long, device=p0.device)
        a, b, inside = _clip_line(p0.long() + m, p1.long() + m, self.width + 2 * thickness, self.height + 2 * thickness)
        keep = _nz(inside)
        p0 = (a - m).index_select(0, keep).to(p0.dtype)
        p1 = (b - m).index_select(0, keep).to(p1.dtype)
        frame, order = frame.index_select(0, keep), order.index_select(0, keep)
        # cv2 ThickLine: a rectangle of half width t/2 (+0.5 for odd t) in 16.16 fixed
        # point, plus round caps drawn as discs of radius (t + 1) // 2.
        half = (thickness << 15) + (thickness & 1) * _HALF
        dx, dy = p0[:, 0] - p1[:, 0], p1[:, 1] - p0[:, 1]
        length = torch.hypot(dx, dy)
        r = half / length.clamp(min=1e-12)
        dp = torch.round(torch.stack((dy * r, dx * r), -1)).long()
        q0, q1 = p0.long() << 16, p1.long() << 16
        quad = torch.stack((q0 + dp, q0 - dp, q1 - dp, q1 + dp), 1)
        has_len = _nz(length > 0)
        self.polygons(quad.index_select(0, has_len), frame.index_select(0, has_len), order.index_select(0, has_len), shift=16)
        # The caps are separate convex fills in OpenCV: own primitives (same frame and draw
        # order), or a row that meets the quad and a cap apart would be filled across the gap.
        cap = (thickness + 1) // 2
        for p in (p0, p1):
            self.circles(p, cap, frame, order)

    def polygons(self, verts: torch.Tensor, frame: torch.Tensor, order: torch.Tensor, shift: int = 0) -> None:
        """Filled convex polygons (``cv2.fillConvexPoly``): verts (N, K, 2) integer-valued with
        ``shift`` fractional bits, frame / order (N,)."""
        if frame.numel() == 0:
            return
        ids = self._ids(frame, order)
        verts = verts.long()
        k = verts.shape[1]
        nxt = torch.roll(verts, -1, dims=1)
        # Zero-length edges add nothing but their vertex, which the next edge starts from
        # (edge 0 is kept, so a polygon that is one point still paints it).
        moves = (verts != nxt).any(-1)
        moves[:, 0] = True
        e = _nz(moves.view(-1))
        a, b = verts.view(-1, 2).index_select(0, e), nxt.view(-1, 2).index_select(0, e)
        owner = ids.index_select(0, torch.div(e, k, rounding_mode="floor"))
        if shift == 0:
            # Outline: an edge shorter than 2 px is just its two end points, so every vertex
            # becomes a pixel and only the longer edges are walked.
            on = _nz((a[:, 1] >= 0) & (a[:, 1] < self.height))
            ay, ax = a[:, 1].index_select(0, on), a[:, 0].index_select(0, on)
            self._segs.append(Segments(owner.index_select(0, on), ay, ax, ax))
            long = _nz((b - a).abs().amax(-1) >= 2)
            la, lb, lo = a.index_select(0, long), b.index_select(0, long), owner.index_select(0, long)
            self._segs.append(_line_segments(la, lb, lo, self.height, self.width, self._rows))
        else:
            self._segs.append(_subpixel_line_segments(a, b, owner, self.height, self.width, self._rows))
        fa, fb = a << (16 - shift), b << (16 - shift)
        step = _nz(((fa[:, 1] + _HALF) >> 16) != ((fb[:, 1] + _HALF) >> 16))  # edges that change row
        sa, sb, so = fa.index_select(0, step), fb.index_select(0, step), owner.index_select(0, step)
        self._segs.append(_fill_segments(sa, sb, so, self.height, self._rows))

    def ellipses(
        self, center: torch.Tensor, axes: torch.Tensor, angle_deg: torch.Tensor, frame: torch.Tensor, order: torch.Tensor
    ) -> None:
        """Filled ``cv2.ellipse2Poly(center, axes, angle, 0, 360, 1)`` polygons.

        Args:
            center: (N, 2) integer-valued (x, y); axes: (N, 2) integer-valued half axes (along
                the angle, across it); angle_deg: (N,) integer-valued degrees, any sign;
                float64 keeps OpenCV's rounding.
        """
        if frame.numel():
            self.polygons(_ellipse_polygons(center, axes, angle_deg), frame, order)

    def build(self) -> Shapes:
        """Everything added so far (the builder can be reused after)."""
        z = torch.zeros(0, dtype=torch.long, device=self.device)
        frame = torch.cat(self._frames) if self._frames else z
        order = torch.cat(self._orders) if self._orders else z
        return Shapes(frame, order, Segments.cat(self._segs, self.device), self._count)


# --------------------------------------------------------------------------------------
# Row segments -> pixels
# --------------------------------------------------------------------------------------


def rasterize(
    segments: Segments,
    num_owners: int,
    width: int,
    row_map: torch.Tensor | None = None,
    col_rank: torch.Tensor | None = None,
) -> Pixels:
    """Fill each (primitive, row) between its leftmost and rightmost segment.

    This is OpenCV's convex fill: a row of a convex primitive is filled between its outline
    pixels, outline included. Columns are clipped to ``[0, width)``.

    Args:
        segments: row segments of ``num_owners`` primitives (owners 0..num_owners-1).
        width: canvas width.
        row_map: optional (height,) long: the compact row of each sampled canvas row, -1 for
            rows not sampled (their pixels are dropped).
        col_rank: optional (width + 1,) long: how many sampled columns lie left of each
            column (``col_rank[x + 1] - col_rank[x]`` is 1 where column x is sampled).

    Returns:
        :class:`Pixels` ``(owner, y, x)``: one entry per painted (sampled) pixel; with
        sampling, ``y`` and ``x`` are compact row and column indices.
    """
    owner, y, x_lo, x_hi = segments
    device = owner.device
    if row_map is not None:
        r = row_map.index_select(0, y)
        keep = _nz(r >= 0)
        owner, y, x_lo, x_hi = owner.index_select(0, keep), r.index_select(0, keep), x_lo.index_select(0, keep), x_hi.index_select(0, keep)
    if owner.numel() == 0:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return Pixels(z, z, z)
    # Compact (owner, row) slots: each owner covers rows [y_min, y_max].
    y_min = torch.full((num_owners,), _BIG, dtype=torch.long, device=device).scatter_reduce(0, owner, y, "amin")
    y_max = torch.full((num_owners,), -1, dtype=torch.long, device=device).scatter_reduce(0, owner, y, "amax")
    rows = (y_max - y_min + 1).clamp(min=0)
    start = torch.cumsum(rows, 0) - rows
    slot = start.index_select(0, owner) + (y - y_min.index_select(0, owner))
    n_slots = int(rows.sum())
    lo = torch.full((n_slots,), _BIG, dtype=torch.long, device=device).scatter_reduce(0, slot, x_lo, "amin")
    hi = torch.full((n_slots,), -_BIG, dtype=torch.long, device=device).scatter_reduce(0, slot, x_hi, "amax")
    slot_owner, slot_row = _expand_counts(rows)
    slot_y = y_min.index_select(0, slot_owner) + slot_row
    # Columns [lo, hi] -> compact columns [c_lo, c_hi) (the identity without sampling).
    if col_rank is None:
        c_lo, c_hi = lo.clamp(0, width), (hi + 1).clamp(0, width)
    else:
        last = col_rank.numel() - 1
        c_lo, c_hi = col_rank.index_select(0, lo.clamp(0, last)), col_rank.index_select(0, (hi + 1).clamp(0, last))
    keep = _nz(c_lo < c_hi)
    slot_owner, slot_y, c_lo, c_hi = (v.index_select(0, keep) for v in (slot_owner, slot_y, c_lo, c_hi))
    s, k = _expand_counts(c_hi - c_lo)
    return Pixels(slot_owner.index_select(0, s), slot_y.index_select(0, s), c_lo.index_select(0, s) + k)


# --------------------------------------------------------------------------------------
# The painter
# --------------------------------------------------------------------------------------


def top_order(index: torch.Tensor, order: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """The highest draw order among the entries sharing each entry's pixel.

    The painter's algorithm without sorting: a per-pixel max of the draw order is scattered
    into ``scratch``, read back for every entry, and the touched slots reset.

    Args:
        index: (Q,) long flat pixel indices (repeats allowed).
        order: (Q,) long draw orders, ``0 <= order < 255`` with a uint8 scratch.
        scratch: (> index.max(),) integer zeros (:func:`order_scratch`); left zeroed.

    Returns:
        (Q,) long: the winning order at ``index[i]``; entry i is visible where it equals
        ``order[i]``.
    """
    scratch.scatter_reduce_(0, index, (order + 1).to(scratch.dtype), "amax")
    win = scratch.index_select(0, index).long() - 1
    scratch.index_fill_(0, index, 0)
    return win


def paint(
    canvas: torch.Tensor,
    index: torch.Tensor,
    order: torch.Tensor,
    palette: torch.Tensor,
    scratch: torch.Tensor | None = None,
) -> None:
    """Paint pixels in place; where entries share a pixel, the highest draw order wins.

    Args:
        canvas: (T, H, W, C) contiguous tensor to paint.
        index: (Q,) long flat pixel indices into ``T * H * W`` (repeats allowed).
        order: (Q,) long draw order of each entry, ``0 <= order < len(palette) <= 255``.
        palette: (P, C) colour of each draw order, canvas dtype.
        scratch: optional (>= T * H * W,) integer zeros reused across calls; left zeroed.
    """
    if index.numel() == 0:
        return
    if scratch is None:
        scratch = order_scratch(canvas.shape[0] * canvas.shape[1] * canvas.shape[2], canvas.device)
    win = top_order(index, order, scratch)
    # Repeated indices write the same colour, so the copy's order among them does not matter.
    canvas.view(-1, canvas.shape[-1]).index_copy_(0, index, palette.index_select(0, win))
