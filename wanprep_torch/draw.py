"""Torch-native pose rendering, equivalent to the "Draw ViT Pose" node of Wan 2.2 Animate.

The reference draws every frame with OpenCV on a uint8 canvas: ``cv2.ellipse2Poly`` +
``cv2.fillConvexPoly`` for limbs, ``cv2.circle`` for joints, ``cv2.line`` for hand bones.
Here the same primitives are scan-converted for a whole batch of frames at once, with
OpenCV's integer rules reproduced exactly (pixel-identical output):

1. every primitive becomes per-row x-extents ("row segments") in closed form: polygon
   outlines as clipped Bresenham / 16.16 sub-pixel lines, the scan-line span ends of
   ``FillConvexPoly``, and the midpoint spans of filled circles; a long edge costs one
   entry per row, never one per pixel;
2. each (primitive, row) is filled between its extreme segments and expanded into pixels;
3. where primitives overlap the one drawn last wins: a per-pixel max of the draw order
   (scatter-max into a small scratch buffer), as when painting in order.

No per-pixel test over the canvas is needed, so the cost follows the painted area, not
``T * H * W``; only the output itself is full size.

Keypoints are Wan's normalised ``(x / W, y / H, score)`` arrays; the 20 body points are
OpenPose-18 order plus left / right toe (see :data:`LIMBS`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LIMBS",
    "BODY_COLORS",
    "LIMB_COLORS",
    "HAND_EDGES",
    "HAND_COLORS",
    "HAND_JOINT_COLOR",
    "FACE_COLOR",
    "HEAD_POINTS",
    "auto_stick_width",
    "auto_hand_stick_width",
    "stack_pose_metas",
    "ellipse_polygons",
    "line_row_segments",
    "subpixel_line_row_segments",
    "polygon_fill_row_segments",
    "circle_row_segments",
    "rasterize_row_segments",
    "render_pose_pixels",
    "paint_pixels",
    "palette_rgb255",
    "expand_counts",
    "RowSegments",
    "order_scratch",
    "fit_box",
    "draw_pose",
]

# --------------------------------------------------------------------------------------
# Style constants (Wan's draw_aapose_new / draw_handpose_new)
# --------------------------------------------------------------------------------------

#: 19 body limbs as 0-based joint pairs; limb ``i`` uses ``LIMB_COLORS[i]``. The reference
#: zips these with the 20 colours below, so the feet limbs (13, 18), (10, 19) take colours
#: 17 and 18; the foot colours proper go to joints 18, 19.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    (13, 18), (10, 19),
)

#: OpenPose 18-step ramp plus the two foot colours; joint ``i`` uses colour ``i`` (RGB 0-255).
BODY_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
    (200, 200, 0), (100, 100, 0),
)

#: Limb fill colours: the reference paints ``[int(c * 0.6) for c in colour]``.
LIMB_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(float(c) * 0.6) for c in BODY_COLORS[i]) for i in range(len(LIMBS))
)

#: 20 hand bones over the 21 hand points (wrist 0, then thumb..pinky, 4 points each).
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4)
)


def _hsv_bone_color(i: int, n: int) -> tuple[int, int, int]:
    # Same float expression order as matplotlib.colors.hsv_to_rgb (s = v = 1), then
    # cv2's Scalar -> uint8 rounding, so values that land on .5 round the same way.
    h = i / float(n)
    k = int(h * 6.0)
    f = h * 6.0 - k
    p, q, t, v = 0.0, 1.0 - f, 1.0 - (1.0 - f), 1.0
    rgb = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[k % 6]
    return tuple(int(round(c * 255)) for c in rgb)  # type: ignore[return-value]


#: Hand bone colours: HSV hue wheel over the bone index (RGB 0-255).
HAND_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    _hsv_bone_color(i, len(HAND_EDGES)) for i in range(len(HAND_EDGES))
)
HAND_JOINT_COLOR: tuple[int, int, int] = (0, 0, 255)
FACE_COLOR: tuple[int, int, int] = (255, 255, 255)

#: Nose, eyes and ears: dropped (with their limbs) when ``draw_head=False``.
HEAD_POINTS: tuple[int, ...] = (0, 14, 15, 16, 17)

_N_BODY, _N_HAND, _N_FACE = 20, 21, 69
# Draw order == palette index: limbs, body joints, L bones, L joints, R bones, R joints, face.
_O_LIMB = 0
_O_JOINT = _O_LIMB + len(LIMBS)
_O_LHAND = _O_JOINT + _N_BODY
_O_RHAND = _O_LHAND + len(HAND_EDGES) + _N_HAND
_O_FACE = _O_RHAND + len(HAND_EDGES) + _N_HAND


def palette_rgb255() -> list[tuple[int, int, int]]:
    """RGB (0-255) of every draw-order slot used by :func:`render_pose_pixels` (190 entries)."""
    hand = list(HAND_COLORS) + [HAND_JOINT_COLOR] * _N_HAND
    return list(LIMB_COLORS) + list(BODY_COLORS) + hand + hand + [FACE_COLOR] * _N_FACE


# OpenCV's SinTable: sin at integer degrees to 7 decimals, as float32; cos(a) = sin(450 - a).
_SIN_DEG = np.round(np.sin(np.deg2rad(np.arange(451, dtype=np.float64))), 7).astype(np.float32)
_BIG = 1 << 40


def auto_stick_width(height: int, width: int) -> int:
    """Reference auto body stick width: ``max(int(min(H, W) / 200) - 1, 1)``."""
    return max(int(min(height, width) / 200) - 1, 1)


def auto_hand_stick_width(height: int, width: int) -> int:
    """Reference auto hand stick width: half the auto body width, at least 1."""
    return max(auto_stick_width(height, width) // 2, 1)


# --------------------------------------------------------------------------------------
# Input packing
# --------------------------------------------------------------------------------------


def _kp_array(value: Any, n: int) -> np.ndarray:
    out = np.zeros((n, 3), np.float64)
    if value is None:
        return out
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        return out
    k, c = min(arr.shape[0], n), min(arr.shape[1], 3)
    out[:k, :c] = arr[:k, :c]
    return out


def stack_pose_metas(pose_metas: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, int, int]:
    """Stack Wan pose metas into one float64 tensor of normalised keypoints.

    Args:
        pose_metas: T dicts with ``width``, ``height`` and ``keypoints_body`` (20, 3),
            ``keypoints_left_hand`` / ``keypoints_right_hand`` (21, 3), ``keypoints_face``
            (69, 3) as numpy arrays, tensors or lists (missing points count as score 0).

    Returns:
        ``(kps, H, W)``: kps (T, 131, 3) = body 0:20, left hand 20:41, right hand 41:62,
        face 62:131, on the CPU; H, W from the first meta.
    """
    if len(pose_metas) == 0:
        raise ValueError("pose_metas is empty")
    height, width = int(pose_metas[0]["height"]), int(pose_metas[0]["width"])
    rows = [
        np.concatenate(
            [
                _kp_array(m.get("keypoints_body"), _N_BODY),
                _kp_array(m.get("keypoints_left_hand"), _N_HAND),
                _kp_array(m.get("keypoints_right_hand"), _N_HAND),
                _kp_array(m.get("keypoints_face"), _N_FACE),
            ]
        )
        for m in pose_metas
    ]
    return torch.from_numpy(np.stack(rows)), height, width


def _trunc_int(v: torch.Tensor) -> torch.Tensor:
    # Python int() of a pixel coordinate. Snap float noise first: x / W * W can land at
    # 99.99999 for an integer pixel and would truncate to the wrong side.
    r = torch.round(v)
    return torch.trunc(torch.where((v - r).abs() < 1e-4, r, v))


# --------------------------------------------------------------------------------------
# Geometry -> row segments
# --------------------------------------------------------------------------------------


def expand_counts(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """counts (M,) -> (owner (S,), local index (S,)), S = counts.sum()."""
    counts = counts.clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=counts.device) - start[owner]
    return owner, local


def ellipse_polygons(center: torch.Tensor, axes: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
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


_ONE, _HALF = 1 << 16, 1 << 15  # OpenCV's XY_SHIFT fixed point


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


def line_row_segments(
    a: torch.Tensor, b: torch.Tensor, owner: torch.Tensor, height: int, width: int, row_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
    e, k = expand_counts(hi - lo + 1)
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
    return owner[e][ok], y[ok], x_lo[ok], x_hi[ok]


def subpixel_line_row_segments(
    a: torch.Tensor, b: torch.Tensor, owner: torch.Tensor, height: int, width: int, row_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
    e, k = expand_counts(hi - lo + 1)
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
    return (
        torch.cat((owner[e][ok], owner[keep])),
        torch.cat((y[ok], end[keep, 1])),
        torch.cat((x_lo[ok], end[keep, 0])),
        torch.cat((x_hi[ok], end[keep, 0])),
    )


def polygon_fill_row_segments(
    a: torch.Tensor, b: torch.Tensor, owner: torch.Tensor, height: int, row_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
    e, k = expand_counts(hi - lo + 1)
    y = lo[e] + k
    if row_mask is not None:
        e, y = _keep_rows(e, y, row_mask)
    x = (up_pt[e, 0] + (y - r_up[e]) * dxs[e] + _HALF) >> 16
    return owner[e], y, x, x


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


def circle_row_segments(
    center: torch.Tensor, radius: int, owner: torch.Tensor, height: int, row_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
    return (
        owner[:, None].expand_as(y)[keep],
        y[keep],
        (cx - hw[None])[keep],
        (cx + hw[None])[keep],
    )


def rasterize_row_segments(
    owner: torch.Tensor,
    y: torch.Tensor,
    x_lo: torch.Tensor,
    x_hi: torch.Tensor,
    num_owners: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fill each (primitive, row) between its leftmost and rightmost segment.

    This is OpenCV's convex fill: a row of a convex primitive is filled between its outline
    pixels, outline included. Columns are clipped to ``[0, width)``.

    Args:
        owner, y, x_lo, x_hi: (S,) long row segments (see :func:`line_row_segments`).
        num_owners: number of primitive ids.
        width: canvas width.

    Returns:
        ``(owner, y, x)``: (Q,) long, one entry per painted pixel of each primitive.
    """
    device = owner.device
    if owner.numel() == 0:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return z, z, z
    # Compact (owner, row) slots: each owner covers rows [y_min, y_max].
    y_min = torch.full((num_owners,), _BIG, dtype=torch.long, device=device)
    y_min = y_min.scatter_reduce(0, owner, y, "amin")
    y_max = torch.full((num_owners,), -1, dtype=torch.long, device=device)
    y_max = y_max.scatter_reduce(0, owner, y, "amax")
    rows = (y_max - y_min + 1).clamp(min=0)
    start = torch.cumsum(rows, 0) - rows
    slot = start[owner] + (y - y_min[owner])
    n_slots = int(rows.sum())
    lo = torch.full((n_slots,), _BIG, dtype=torch.long, device=device).scatter_reduce(0, slot, x_lo, "amin")
    hi = torch.full((n_slots,), -_BIG, dtype=torch.long, device=device).scatter_reduce(0, slot, x_hi, "amax")
    slot_owner, slot_row = expand_counts(rows)
    slot_y = y_min[slot_owner] + slot_row
    lo, hi = lo.clamp(min=0), hi.clamp(max=width - 1)
    keep = lo <= hi
    slot_owner, slot_y, lo, hi = slot_owner[keep], slot_y[keep], lo[keep], hi[keep]
    s, k = expand_counts(hi - lo + 1)
    return slot_owner[s], slot_y[s], lo[s] + k


# --------------------------------------------------------------------------------------
# Primitive builders (one chunk of frames, pixel coordinates)
# --------------------------------------------------------------------------------------


class RowSegments:
    """Collects row segments; primitive id -> (frame, draw order)."""

    def __init__(self, height: int, width: int, device: torch.device, row_mask: torch.Tensor | None = None):
        self.height, self.width, self.device = height, width, device
        self.row_mask = row_mask  # optional (height,) bool: the only rows anyone reads
        self.frames: list[torch.Tensor] = []
        self.orders: list[torch.Tensor] = []
        self.segs: list[tuple[torch.Tensor, ...]] = []
        self.count = 0

    def new_ids(self, frame: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        ids = torch.arange(self.count, self.count + frame.numel(), device=self.device)
        self.count += frame.numel()
        self.frames.append(frame)
        self.orders.append(order)
        return ids

    def add_circles(self, center: torch.Tensor, radius: int, ids: torch.Tensor) -> None:
        if ids.numel():
            self.segs.append(circle_row_segments(center, radius, ids, self.height, self.row_mask))

    def add_lines(self, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor) -> None:
        """1-px lines between integer points a, b (N, 2)."""
        if ids.numel():
            self.segs.append(line_row_segments(a.long(), b.long(), ids, self.height, self.width, self.row_mask))

    def add_thick_lines(self, p0: torch.Tensor, p1: torch.Tensor, width: int, ids: torch.Tensor) -> None:
        """``cv2.line(p0, p1, thickness=width)`` (LINE_8) between integer points (N, 2)."""
        if ids.numel() == 0:
            return
        if width <= 1:
            self.add_lines(p0, p1, ids)
            return
        # cv2.line first clips the segment to the canvas grown by the thickness on every side
        # (a line wholly outside is not drawn, caps included).
        m = torch.tensor([width, width], dtype=torch.long, device=p0.device)
        a, b, inside = _clip_line(p0.long() + m, p1.long() + m, self.width + 2 * width, self.height + 2 * width)
        p0, p1, ids = (a - m)[inside].to(p0.dtype), (b - m)[inside].to(p1.dtype), ids[inside]
        # cv2 ThickLine: a rectangle of half width t/2 (+0.5 for odd t) in 16.16 fixed
        # point, plus round caps drawn as discs of radius (t + 1) // 2.
        half = (width << 15) + (width & 1) * _HALF
        dx, dy = p0[:, 0] - p1[:, 0], p1[:, 1] - p0[:, 1]
        length = torch.hypot(dx, dy)
        r = half / length.clamp(min=1e-12)
        dp = torch.round(torch.stack((dy * r, dx * r), -1)).long()
        q0, q1 = p0.long() << 16, p1.long() << 16
        quad = torch.stack((q0 + dp, q0 - dp, q1 - dp, q1 + dp), 1)
        has_len = length > 0
        self.add_polygons(quad[has_len], ids[has_len], shift=16)
        # The caps are separate convex fills in OpenCV: own primitive ids (same frame and draw
        # order), or a row that meets the quad and a cap apart would be filled across the gap.
        frames, orders = torch.cat(self.frames), torch.cat(self.orders)
        cap = (width + 1) // 2
        for p in (p0, p1):
            self.add_circles(p, cap, self.new_ids(frames[ids], orders[ids]))

    def add_polygons(self, verts: torch.Tensor, ids: torch.Tensor, shift: int = 0) -> None:
        """Filled convex polygons, verts (N, K, 2) long with ``shift`` fractional bits."""
        if ids.numel() == 0:
            return
        a = verts.reshape(-1, 2)
        b = torch.roll(verts, -1, dims=1).reshape(-1, 2)
        owner = ids.repeat_interleave(verts.shape[1])
        if shift == 0:
            # Outline: an edge shorter than 2 px is just its two end points, so every vertex
            # becomes a pixel and only the longer edges are walked.
            on = (a[:, 1] >= 0) & (a[:, 1] < self.height)
            self.segs.append((owner[on], a[on, 1], a[on, 0], a[on, 0]))
            long = (b - a).abs().amax(-1) >= 2
            self.segs.append(line_row_segments(a[long], b[long], owner[long], self.height, self.width, self.row_mask))
        else:
            self.segs.append(subpixel_line_row_segments(a, b, owner, self.height, self.width, self.row_mask))
        fa, fb = a << (16 - shift), b << (16 - shift)
        step = ((fa[:, 1] + _HALF) >> 16) != ((fb[:, 1] + _HALF) >> 16)  # edges that change row
        self.segs.append(polygon_fill_row_segments(fa[step], fb[step], owner[step], self.height, self.row_mask))


def _edges_both_ok(edges, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (frame, edge) pairs whose two end points are both drawn.

    Args:
        edges: E (a, b) point index pairs; ok: (T, P) bool.

    Returns:
        frame (M,), edge (M,), and the edges' end indices a (E,), b (E,).
    """
    a = torch.tensor([e[0] for e in edges], device=ok.device)
    b = torch.tensor([e[1] for e in edges], device=ok.device)
    f, e = (ok[:, a] & ok[:, b]).nonzero(as_tuple=True)
    return f, e, a, b


def _add_body(prims: RowSegments, body: torch.Tensor, ok: torch.Tensor, width: int) -> None:
    f, l, la, lb = _edges_both_ok(LIMBS, ok)
    ids = prims.new_ids(f, _O_LIMB + l)
    if ids.numel():
        pa, pb = body[f, la[l]], body[f, lb[l]]
        dv = pa - pb
        # Reference: ellipse2Poly((int(mx), int(my)), (int(len / 2), w), int(angle), 0, 360, 1).
        center = _trunc_int((pa + pb) / 2)
        half_len = torch.trunc((dv * dv).sum(-1).sqrt() / 2)
        axes = torch.stack((half_len, torch.full_like(half_len, float(width))), -1)
        angle = torch.trunc(torch.rad2deg(torch.atan2(dv[:, 1], dv[:, 0])))
        prims.add_polygons(ellipse_polygons(center, axes, angle).long(), ids)
    f, j = ok.nonzero(as_tuple=True)
    ids = prims.new_ids(f, _O_JOINT + j)
    prims.add_circles(_trunc_int(body[f, j]), width, ids)


def _add_hand(prims: RowSegments, hand: torch.Tensor, ok: torch.Tensor, width: int, base: int) -> None:
    pt = _trunc_int(hand)
    # Reference skips points whose int() coordinate is not > 0.01, i.e. x < 1 or y < 1.
    ok = ok & (pt[..., 0] >= 1) & (pt[..., 1] >= 1)
    f, e, ea, eb = _edges_both_ok(HAND_EDGES, ok)
    ids = prims.new_ids(f, base + e)
    if ids.numel():
        p0, p1 = pt[f, ea[e]], pt[f, eb[e]]
        prims.add_thick_lines(p0, p1, width, ids)
    f, j = ok.nonzero(as_tuple=True)
    ids = prims.new_ids(f, base + len(HAND_EDGES) + j)
    prims.add_circles(pt[f, j], width, ids)


def render_pose_pixels(
    kps: torch.Tensor,
    height: int,
    width: int,
    body_stick_width: int,
    hand_stick_width: int,
    face_radius: int = 0,
    draw_head: bool = True,
    score_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise a batch of poses into a sparse list of painted pixels.

    Args:
        kps: (T, 131, 3) normalised keypoints as from :func:`stack_pose_metas`, any float
            dtype and device (geometry runs in that dtype; float64 keeps cv2's rounding).
        height, width: canvas size in pixels.
        body_stick_width: limb minor half axis and joint radius; 0 skips the body.
        hand_stick_width: bone thickness and hand-joint radius; 0 skips the hands.
        face_radius: face dot radius; 0 skips the face.
        draw_head: False drops nose, eyes, ears and the limbs touching them.
        score_threshold: a point is drawn when its score is >= this (reference rule).

    Returns:
        ``(index, order)``, each (Q,) long: flat pixel index ``(t * H + y) * W + x`` and
        the draw order of the primitive painting it (= its :func:`palette_rgb255` entry).
        A pixel covered by several primitives repeats; the highest order wins (see
        :func:`paint_pixels`).
    """
    device = kps.device
    xy = kps[..., :2] * torch.tensor([width, height], dtype=kps.dtype, device=device)
    # Bound absurd coordinates so 16.16 fixed-point products stay inside int64; points
    # that far away are off-canvas garbage anyway.
    xy = xy.clamp(-16000, 16000)
    ok = (kps[..., 2] >= score_threshold) & torch.isfinite(kps).all(-1)
    prims = RowSegments(height, width, device)
    if body_stick_width > 0:
        body_ok = ok[:, :_N_BODY].clone()
        if not draw_head:
            body_ok[:, list(HEAD_POINTS)] = False
        _add_body(prims, xy[:, :_N_BODY], body_ok, body_stick_width)
    if hand_stick_width > 0:
        for i, base in ((0, _O_LHAND), (1, _O_RHAND)):
            s = slice(_N_BODY + i * _N_HAND, _N_BODY + (i + 1) * _N_HAND)
            _add_hand(prims, xy[:, s], ok[:, s], hand_stick_width, base)
    if face_radius > 0:
        s = slice(_N_BODY + 2 * _N_HAND, _N_BODY + 2 * _N_HAND + _N_FACE)
        f, j = ok[:, s].nonzero(as_tuple=True)
        ids = prims.new_ids(f, _O_FACE + j)
        prims.add_circles(_trunc_int(xy[:, s][f, j]), face_radius, ids)

    if not prims.segs:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return z, z
    segs = [torch.cat(s) for s in zip(*prims.segs)]
    owner, py, px = rasterize_row_segments(*segs, num_owners=prims.count, width=width)
    frame = torch.cat(prims.frames)[owner]
    order = torch.cat(prims.orders)[owner]
    return (frame * height + py) * width + px, order


def order_scratch(n: int, device: torch.device) -> torch.Tensor:
    # uint8 keeps the CPU buffer small; int32 elsewhere, where uint8 scatter-max may be missing.
    return torch.zeros(n, dtype=torch.uint8 if device.type == "cpu" else torch.int32, device=device)


def paint_pixels(
    canvas: torch.Tensor,
    index: torch.Tensor,
    order: torch.Tensor,
    palette: torch.Tensor,
    scratch: torch.Tensor | None = None,
) -> None:
    """Paint pixels in place; where entries share a pixel, the highest draw order wins.

    This is the painter's algorithm without sorting: a per-pixel max of the draw order is
    scattered into ``scratch``, read back for every entry, and the touched slots reset.

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
    scratch.scatter_reduce_(0, index, (order + 1).to(scratch.dtype), "amax")
    win = scratch[index].long() - 1
    canvas.view(-1, canvas.shape[-1])[index] = palette[win]  # repeats write the same colour
    scratch[index] = 0


# --------------------------------------------------------------------------------------
# Output framing (reference padding_resize / resize_to_bounds)
# --------------------------------------------------------------------------------------


def fit_box(src_h: int, src_w: int, out_h: int, out_w: int, mode: str = "pad") -> tuple[int, int, int, int]:
    """Aspect-preserving placement of a (src_h, src_w) image inside (out_h, out_w).

    Same branches and integer truncation as the reference (``padding_resize`` for
    ``mode="pad"``, ``resize_to_bounds`` for ``mode="crop"``), except that float noise does
    not cost a row: the reference computes ``int(832 * (480 / 832)) == 479`` and resamples
    an 832 x 480 canvas to 832 x 479; here that stays 480.

    Returns:
        ``(top, left, new_h, new_w)``.
    """

    def trunc(v: float) -> int:
        return int(v + 1e-6)

    if mode == "pad":
        src_aspect = src_h / max(src_w, 1e-5)
        dst_aspect = out_h / max(out_w, 1e-5)
        if src_aspect > dst_aspect:
            nh, nw = out_h, trunc(out_h / max(src_aspect, 1e-5))
        else:
            nh, nw = trunc(out_w * src_aspect), out_w
    else:
        crop_aspect = src_w / max(src_h, 1e-5)
        target_aspect = out_w / max(out_h, 1e-5)
        if crop_aspect > target_aspect:
            nh, nw = trunc(out_w / max(crop_aspect, 1e-5)), out_w
        else:
            nh, nw = out_h, trunc(out_h * crop_aspect)
    nh, nw = min(max(nh, 1), out_h), min(max(nw, 1), out_w)
    return (out_h - nh) // 2, (out_w - nw) // 2, nh, nw


def draw_pose(
    pose_metas: Sequence[Mapping[str, Any]],
    out_size: tuple[int, int] | None = None,
    mode: str = "pad",
    retarget_padding: int = 16,
    body_stick_width: int = -1,
    hand_stick_width: int = -1,
    draw_head: bool = True,
    draw_body: bool = True,
    draw_hands: bool = True,
    draw_face: bool = False,
    score_threshold: float = 0.5,
    device: str | torch.device = "cpu",
    chunk: int = 32,
) -> torch.Tensor:
    """Render Wan pose metas as OpenPose-style skeleton images (reference "Draw ViT Pose").

    Frames are drawn at the native size (H, W) = ``(height, width)`` of the first meta,
    then framed into ``out_size``:

    - ``mode="pad"``: resized keeping the aspect ratio, centred, black padding (reference
      ``padding_resize``); no resampling when the size already matches.
    - ``mode="crop"``: every frame is cropped to the bounding box of the pixels drawn in
      frame 0 grown by ``retarget_padding`` px per side, then resized keeping the aspect
      ratio, centred, black padding (``resize_to_bounds``). Where that window leaves the
      canvas it is black, as the reference pads it (not clipped: the figure keeps its margin).

    Resampling is bilinear with half-pixel centres (cv2 ``INTER_LINEAR``, no antialias) on
    uint8 images like the reference, so output values are multiples of 1/255.

    Args:
        pose_metas: T dicts in Wan's format (see :func:`stack_pose_metas`).
        out_size: (out_H, out_W); None keeps (H, W).
        mode: "pad" or "crop".
        retarget_padding: crop margin in native pixels (``mode="crop"``), black where it
            leaves the canvas.
        body_stick_width: -1 auto (:func:`auto_stick_width`), 0 no body, else pixels.
        hand_stick_width: -1 auto (:func:`auto_hand_stick_width`), 0 no hands, else pixels.
        draw_head: draw nose, eyes, ears and their limbs.
        draw_body, draw_hands: switches for the body and both hands.
        draw_face: draw the 69 face points as white dots (radius = auto hand width).
        score_threshold: a point, and a limb / bone whose two points both pass, is drawn
            when its score is >= this value (the reference skips ``score < threshold``).
        device: where to render.
        chunk: frames rendered at once; bounds the working memory.

    Returns:
        (T, out_H, out_W, 3) float32 RGB in [0, 1], black background, on ``device``.
    """
    if mode not in ("pad", "crop"):
        raise ValueError(f"mode must be 'pad' or 'crop', got {mode!r}")
    device = torch.device(device)
    kps_all, height, width = stack_pose_metas(pose_metas)
    n_frames = kps_all.shape[0]
    out_h, out_w = (height, width) if out_size is None else (int(out_size[0]), int(out_size[1]))
    if min(height, width, out_h, out_w) <= 0:
        raise ValueError(f"sizes must be positive: native {(height, width)}, out {(out_h, out_w)}")
    pad = max(int(retarget_padding), 0)
    gdtype = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64

    bw = auto_stick_width(height, width) if body_stick_width == -1 else int(body_stick_width)
    hw = auto_hand_stick_width(height, width) if hand_stick_width == -1 else int(hand_stick_width)
    bw, hw = (bw if draw_body else 0), (hw if draw_hands else 0)
    fr = auto_hand_stick_width(height, width) if draw_face else 0
    palette_u8 = torch.tensor(palette_rgb255(), dtype=torch.uint8, device=device)
    palette = palette_u8 / 255

    def render(t0: int, t1: int) -> tuple[torch.Tensor, torch.Tensor]:
        kps = kps_all[t0:t1].to(device=device, dtype=gdtype)
        return render_pose_pixels(kps, height, width, bw, hw, fr, draw_head, score_threshold)

    # Source window on the native canvas (it may reach past the canvas: black there), and
    # where it lands in the output.
    y0, y1, x0, x1 = 0, height, 0, width
    if mode == "crop":
        index, _ = render(0, 1)
        if index.numel():
            py, px = index // width, index % width
            y0, y1 = int(py.min()) - pad, int(py.max()) + 1 + pad
            x0, x1 = int(px.min()) - pad, int(px.max()) + 1 + pad
    # The part of the window on the canvas, and the black margins around it.
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    margins = (cx0 - x0, x1 - cx1, cy0 - y0, y1 - cy1)  # left, right, top, bottom (F.pad order)
    top, left, nh, nw = fit_box(y1 - y0, x1 - x0, out_h, out_w, mode)
    resize = (y1 - y0, x1 - x0) != (nh, nw)
    # Nothing to crop, resize or pad: paint straight into the output.
    in_place = not resize and (y0, x0, y1, x1, out_h, out_w) == (0, 0, height, width, height, width)

    if device.type == "cpu":
        # calloc'd memory: the OS hands out zero pages lazily, so the 1+ GB output is not
        # written twice (zero fill, then paint).
        out = torch.from_numpy(np.zeros((n_frames, out_h, out_w, 3), dtype=np.float32))
    else:
        out = torch.zeros((n_frames, out_h, out_w, 3), dtype=torch.float32, device=device)
    chunk = max(min(int(chunk), n_frames), 1)
    scratch = order_scratch(chunk * height * width, device)
    # Framing works on a uint8 canvas like the reference: 4x less memory traffic, and the
    # uint8 bilinear kernel rounds to integers as cv2 does (float32 off the CPU, where a
    # uint8 kernel may be missing, rounded afterwards).
    u8 = device.type == "cpu"
    canvas = None
    if not in_place:
        canvas = torch.zeros((chunk, height, width, 3), dtype=torch.uint8 if u8 else torch.float32, device=device)
    for t0 in range(0, n_frames, chunk):
        t1 = min(t0 + chunk, n_frames)
        index, order = render(t0, t1)
        if in_place:
            paint_pixels(out[t0:t1], index, order, palette, scratch)  # contiguous slice
            continue
        frames = canvas[: t1 - t0]
        paint_pixels(frames, index, order, palette_u8 if u8 else palette_u8.float(), scratch)
        src = frames[:, cy0:cy1, cx0:cx1]
        if any(margins):
            src = F.pad(src.permute(0, 3, 1, 2), margins).permute(0, 2, 3, 1)
        if resize:
            # NHWC memory seen as NCHW is channels_last, which F.interpolate handles fast.
            src = src.contiguous().permute(0, 3, 1, 2)
            src = F.interpolate(src, size=(nh, nw), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            if not u8:
                src = src.round()
        torch.div(src, 255, out=out[t0:t1, top : top + nh, left : left + nw])
        frames.view(-1, 3)[index] = 0  # reset only what was painted
    return out
