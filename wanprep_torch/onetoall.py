"""Pose images for the One-to-All Animation model ("Pose Detection OneToAll Animation").

The reference node turns the pose model's keypoints into DWPose-style poses, optionally
aligns them to a reference character image, and draws them in One-to-All's own style:
OpenPose colours, limbs as filled ellipses with a confidence-dependent strength, hands as
thick lines, face dots, all drawn with OpenCV on a canvas whose short side is 2160 px, then
resized (bilinear) to the output size.

Here the same primitives are scan-converted in torch, batched over frames, with OpenCV's
integer rules (:mod:`wanprep_torch.draw`). The big canvas is never materialised: a bilinear
downscale reads at most two rows and two columns of it per output pixel, so only those rows
and columns are painted (painting is per pixel, so a sampled pixel gets exactly the value the
full canvas would hold there).

Layout of the internal poses (:class:`DwPoses`, normalised x / W, y / H): 18 OpenPose body
points (Wan's 20 without the toes), two hands stacked (right, left) as the reference does,
and the 68 face points.

Where this differs from the reference node:

- "ref" uses this package's retargeting (:mod:`wanprep_torch.retargeting`), and the reference
  keypoints are taken in the reference image's own pixels; the reference normalises
  keypoints found on a resized copy by the original size, which misplaces the pose whenever
  the image was resized. Retargeted hands are labelled by the wrist they hang from; the
  reference sometimes swaps the labels, which only changes which hand is painted on top
  where both overlap.
- The "pose" warp samples like OpenCV >= 4.11 (float bilinear, as the goldens were made);
  older OpenCV steps in 1/32 pixel, a few levels apart at most.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .draw import BODY_COLORS, HAND_EDGES, LIMBS, RowSegments, ellipse_polygons, expand_counts, order_scratch
from .skeleton import LEFT_HAND, RIGHT_HAND, WAN_FACE
from .wan import wan_body

__all__ = [
    "OneToAllOutputs",
    "DwPoses",
    "dwposes_from_keypoints",
    "wan_metas",
    "canvas_size",
    "render_dwposes",
    "align_to_pose",
    "align_to_reference",
    "warp_affine",
    "onetoall",
]

ALIGN_MODES = ("ref", "pose", "none")
STRENGTHS = ("full", "weak", "none")

_N_BODY, _N_LIMB, _N_HAND, _N_FACE = 18, 17, 21, 68
_HEAD = (0, 14, 15, 16, 17)
# Face points left undrawn: the jaw line (0-16) and the nose (27-35).
_FACE_DRAWN = tuple(i for i in range(_N_FACE) if not (i < 17 or 27 <= i < 36))
# Draw order within a frame (= colour-table slot): limbs, body joints, then per hand (right,
# left) its bones and joints, then the face dots.
_O_LIMB = 0
_O_JOINT = _O_LIMB + _N_LIMB
_O_HAND = _O_JOINT + _N_BODY
_HAND_SLOTS = len(HAND_EDGES) + _N_HAND
_O_FACE = _O_HAND + 2 * _HAND_SLOTS
_N_SLOTS = _O_FACE + len(_FACE_DRAWN)
_CANVAS_SHORT = 2160


class OneToAllOutputs(NamedTuple):
    """The node's four outputs, float32 in [0, 1] on the keypoints' device."""

    pose_images: torch.Tensor  # (T, height, width, 3)
    ref_pose_image: torch.Tensor  # (1, h, w, 3): (height, width), or the reference's size for "pose"
    ref_image: torch.Tensor  # (1, h, w, 3): the reference image (warped for "pose"), or black
    ref_mask: torch.Tensor  # (1, h, w): 1 where the "pose" warp left the image, else 0


class DwPoses(NamedTuple):
    """N poses, normalised coordinates (x / W, y / H)."""

    body: torch.Tensor  # (N, 18, 2)
    body_score: torch.Tensor  # (N, 18)
    body_present: torch.Tensor  # (N, 18) bool: score > 0 when detected (DWPose "subset")
    hands: torch.Tensor  # (N, 2, 21, 2): right hand, left hand
    hands_score: torch.Tensor  # (N, 2, 21)
    face: torch.Tensor  # (N, 68, 2)
    face_score: torch.Tensor  # (N, 68)


def _normalised(keypoints: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 133, 3) pixels -> normalised rows (N, 133, 3) and Wan body rows (N, 20, 3).

    Float64 (float32 on MPS) like the reference's goldens: truncating pixel coordinates on
    the 2160 canvas is sensitive to float32 noise. A frame whose every body point has a
    negative coordinate reuses the previous frame's body, as the reference's Wan metas do.
    """
    kp = keypoints.detach().to(_geometry_dtype(keypoints.device)).clone()
    kp[..., 0] /= width
    kp[..., 1] /= height
    body = wan_body(kp)
    lost = body[..., :2].amin(-1).amax(-1) < 0
    if bool(lost[1:].any()):
        ids = torch.arange(body.shape[0], device=body.device)
        src = torch.where(lost, torch.full_like(ids, -1), ids).cummax(0).values
        body = body[torch.where(lost & (src >= 0), src, ids)]
    return kp, body


def dwposes_from_keypoints(keypoints: torch.Tensor, width: int, height: int) -> DwPoses:
    """The pose model's (N, 133, 3) pixel keypoints -> :class:`DwPoses`, normalised by (W, H)
    (the reference's Wan metas, then its DWPose conversion)."""
    kp, body = _normalised(keypoints, width, height)
    body = body[:, :_N_BODY]
    hands = torch.stack((kp[:, RIGHT_HAND], kp[:, LEFT_HAND]), 1)
    face = kp[:, WAN_FACE][:, 1:]
    return DwPoses(
        body[..., :2], body[..., 2], body[..., 2] > 0, hands[..., :2], hands[..., 2], face[..., :2], face[..., 2]
    )


def wan_metas(keypoints: torch.Tensor, width: int, height: int) -> list[dict]:
    """Wan meta dicts (normalised numpy arrays) of (N, 133, 3) pixel keypoints, in float64
    (:func:`wanprep_torch.wan.pose_metas` gives float32), for the retargeting."""
    kp, body = _normalised(keypoints, width, height)
    kp, body = kp.cpu().numpy(), body.cpu().numpy()
    return [
        {
            "width": int(width),
            "height": int(height),
            "keypoints_body": body[t],
            "keypoints_left_hand": kp[t, LEFT_HAND],
            "keypoints_right_hand": kp[t, RIGHT_HAND],
            "keypoints_face": kp[t, WAN_FACE],
        }
        for t in range(kp.shape[0])
    ]


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


def canvas_size(height: int, width: int) -> tuple[int, int]:
    """The reference's drawing canvas: short side 2160, same aspect (int-truncated)."""
    sz = min(height, width)
    sr = _CANVAS_SHORT / sz if sz != _CANVAS_SHORT else 1
    return int(height * sr), int(width * sr)


# The reference's stick-width factor by the canvas's long side (upper bounds, factor).
_STICK_STEPS = ((512, 1.0), (1080, 1.5), (2160, 2.0), (3240, 2.5), (4320, 3.5), (5400, 4.5))


def _stick_width(height: int, width: int, base: int) -> int:
    long_side = max(height, width)
    ratio = next((r for bound, r in _STICK_STEPS if long_side < bound), 4.0)
    return int(base * ratio)


def _hsv_bone_colors() -> np.ndarray:
    # The reference's own float32 hsv -> rgb (s = v = 1), times 255, kept as float32.
    h = np.arange(len(HAND_EDGES), dtype=np.float32) / np.float32(len(HAND_EDGES))
    i = (h * np.float32(6.0)).astype(int)
    f = h * np.float32(6.0) - i
    one = np.float32(1.0)
    q, t, p, v = one - f, one - (one - f), np.zeros_like(f), np.ones_like(f)
    # Channel values per hue sector, as the reference's table of (v, t, p), (q, v, p), ...
    sectors = ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))  # R, G, B per sector
    rgb = np.stack([np.choose(i % 6, ch) for ch in sectors], 1)
    return (rgb.astype(np.float32) * np.float32(255)).astype(np.float32)


_HAND_RGB = _hsv_bone_colors()


def _resize_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR taps for one axis: first source index, second, and the second's
    weight in 1/2048 (OpenCV's 11-bit fixed point for 8-bit images)."""
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


def _rasterize_sampled(
    owner: torch.Tensor,
    y: torch.Tensor,
    x_lo: torch.Tensor,
    x_hi: torch.Tensor,
    num_owners: int,
    row_map: torch.Tensor,
    col_rank: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`draw.rasterize_row_segments`, keeping only sampled rows and columns.

    Args:
        owner, y, x_lo, x_hi: (S,) long row segments on the big canvas.
        row_map: (H_big,) long: compact row of each canvas row, -1 where not sampled.
        col_rank: (W_big + 1,) long: number of sampled canvas columns left of each column.

    Returns:
        ``(owner, compact_row, compact_col)``, (Q,) long each.
    """
    device = owner.device
    r = row_map[y]
    keep = r >= 0
    owner, r, x_lo, x_hi = owner[keep], r[keep], x_lo[keep], x_hi[keep]
    z = torch.zeros(0, dtype=torch.long, device=device)
    if owner.numel() == 0:
        return z, z, z
    big = 1 << 40
    r_min = torch.full((num_owners,), big, dtype=torch.long, device=device).scatter_reduce(0, owner, r, "amin")
    r_max = torch.full((num_owners,), -1, dtype=torch.long, device=device).scatter_reduce(0, owner, r, "amax")
    rows = (r_max - r_min + 1).clamp(min=0)
    start = torch.cumsum(rows, 0) - rows
    slot = start[owner] + (r - r_min[owner])
    n = int(rows.sum())
    lo = torch.full((n,), big, dtype=torch.long, device=device).scatter_reduce(0, slot, x_lo, "amin")
    hi = torch.full((n,), -big, dtype=torch.long, device=device).scatter_reduce(0, slot, x_hi, "amax")
    s_owner, s_row = expand_counts(rows)
    s_r = r_min[s_owner] + s_row
    # A convex primitive fills each row between its extreme outline pixels.
    last = col_rank.numel() - 1
    c_lo = col_rank[lo.clamp(0, last)]
    c_hi = col_rank[(hi + 1).clamp(0, last)]
    ok = c_lo < c_hi
    s_owner, s_r, c_lo, c_hi = s_owner[ok], s_r[ok], c_lo[ok], c_hi[ok]
    e, k = expand_counts(c_hi - c_lo)
    return s_owner[e], s_r[e], c_lo[e] + k


def _geometry_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def render_dwposes(
    poses: DwPoses,
    height: int,
    width: int,
    draw_face: bool = True,
    face_weak: bool = False,
    head: str = "full",
    chunk: int = 32,
    dtype: torch.dtype = torch.uint8,
) -> torch.Tensor:
    """Draw poses in the One-to-All style (reference ``draw_pose_aligned``), resized.

    Args:
        poses: N poses (:class:`DwPoses`), normalised coordinates.
        height, width: output size; the drawing canvas is :func:`canvas_size` of it.
        draw_face: draw the face dots (``without_face=False``).
        face_weak: face dots at 35 % strength (``face_change``).
        head: "full", "weak" (head limbs at 35 %, head joints black) or "none" (head limbs
            and joints black), the reference's ``head_strength``.
        chunk: frames painted at once (bounds the working memory).
        dtype: torch.uint8 or a float dtype.

    Returns:
        (N, height, width, 3) RGB on the poses' device: uint8, or ``dtype`` float in [0, 1]
        (multiples of 1/255).
    """
    if head not in STRENGTHS:
        raise ValueError(f"head must be one of {STRENGTHS}, got {head!r}")
    device = poses.body.device
    n = poses.body.shape[0]
    ch, cw = canvas_size(height, width)
    rows, row_dst, row_w = _taps_by_source(ch, height, device)
    cols, col_dst, col_w = _taps_by_source(cw, width, device)
    row_map = torch.full((ch,), -1, dtype=torch.long, device=device)
    row_map[rows] = torch.arange(rows.numel(), device=device)
    n_rows, n_cols = rows.numel(), cols.numel()
    col_rank = torch.zeros(cw + 1, dtype=torch.long, device=device)
    col_rank[cols + 1] = 1
    col_rank = col_rank.cumsum(0)

    float_out = dtype.is_floating_point
    out = _zeros((n * height * width, 3), dtype, device)
    chunk = max(1, min(chunk, n))
    scratch = _zeros((chunk * n_rows * n_cols,), order_scratch(0, device).dtype, device)
    acc = _zeros((chunk * height * width, 3), torch.int32, device)
    for t0 in range(0, n, chunk):
        t1 = min(t0 + chunk, n)
        part = DwPoses(*(v[t0:t1] for v in poses))
        owner_frame, owner_slot, colors, segs, count = _primitives(
            part, ch, cw, draw_face, face_weak, head, row_mask=row_map >= 0
        )
        if count == 0:
            continue
        o, r, c = _rasterize_sampled(*segs, num_owners=count, row_map=row_map, col_rank=col_rank)
        # index_select / index_fill_ / index_copy_ rather than x[idx]: same result, much
        # cheaper kernels on the CPU for these 1-D gathers and scatters.
        f = owner_frame.index_select(0, o)
        index = (f * n_rows + r) * n_cols + c
        order = (owner_slot.index_select(0, o) + 1).to(scratch.dtype)
        # Painter's algorithm: the primitive drawn last wins each pixel (as draw.paint_pixels);
        # a frame's primitives have distinct orders, so each pixel has exactly one winner.
        scratch.scatter_reduce_(0, index, order, "amax")
        win = (scratch.index_select(0, index) == order).nonzero().squeeze(1)
        scratch.index_fill_(0, index, 0)
        f, r, c, order = f.index_select(0, win), r.index_select(0, win), c.index_select(0, win), order.index_select(0, win)
        rgb = colors.index_select(0, f * _N_SLOTS + order.long() - 1).to(torch.int32)
        # Bilinear resize by scattering each sampled pixel into the output pixels that read
        # it (OpenCV's 11-bit fixed-point weights); unpainted pixels contribute nothing, so
        # only the touched output pixels are ever computed.
        dy, wy = row_dst.index_select(0, r), row_w.index_select(0, r)  # (Q, K)
        dx, wx = col_dst.index_select(0, c), col_w.index_select(0, c)
        dst = (f[:, None, None] * height + dy[:, :, None]) * width + dx[:, None, :]
        w = wy[:, :, None] * wx[:, None, :]
        keep = (w > 0).view(-1).nonzero().squeeze(1)
        dst = dst.view(-1).index_select(0, keep)
        src_px = torch.div(keep, w.shape[1] * w.shape[2], rounding_mode="floor")
        acc.index_add_(0, dst, w.view(-1).index_select(0, keep)[:, None] * rgb.index_select(0, src_px))
        val = (acc.index_select(0, dst) + (1 << 21)) >> 22
        acc.index_fill_(0, dst, 0)
        val = val.to(dtype) / 255 if float_out else val.to(dtype)
        out.index_copy_(0, dst + t0 * height * width, val)  # repeated pixels carry equal values
    return out.view(n, height, width, 3)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # On the CPU, calloc'd numpy memory: zero pages are mapped lazily, so buffers that are
    # only sparsely written cost nothing for their untouched parts.
    if device.type == "cpu":
        return torch.from_numpy(np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))
    return torch.zeros(shape, dtype=dtype, device=device)


def _taps_by_source(src: int, dst: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The resize taps of one axis grouped by source index.

    Returns:
        sampled source indices (S,) sorted, and for each the destination indices (S, K) and
        weights (S, K) int32 (in 1/2048, 0 for padding) of the output pixels reading it.
    """
    s0, s1, w1 = _resize_taps(src, dst)
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


def _primitives(
    poses: DwPoses,
    ch: int,
    cw: int,
    draw_face: bool,
    face_weak: bool,
    head: str,
    dim_limbs: bool = True,
    row_mask: torch.Tensor | None = None,
):
    """Row segments of every primitive of a chunk of frames and its colour table.

    ``dim_limbs=False`` leaves out the reference's 0.6 dimming of the limbs (which it applies
    to the whole canvas after drawing them), for a caller that does that pass itself.

    Returns:
        owner frame (P,), owner draw slot (P,), colours (N * slots, 3) uint8, the row
        segments ``(owner, y, x_lo, x_hi)`` and the number of primitives P.
    """
    device = poses.body.device
    n = poses.body.shape[0]
    f32, fd = torch.float32, _geometry_dtype(device)
    colors = torch.zeros((n, _N_SLOTS, 3), dtype=torch.uint8, device=device)
    prims = RowSegments(ch, cw, device, row_mask)
    bw = _stick_width(ch, cw, 3)
    hw = _stick_width(ch, cw, 2)

    score = poses.body_score.to(fd).clone()
    if head == "weak":
        score[:, list(_HEAD)] = -2.0
    elif head == "none":
        score[:, list(_HEAD)] = 0.0
    present = poses.body_present
    bx = poses.body[..., 0].to(fd) * cw
    by = poses.body[..., 1].to(fd) * ch
    body_rgb = torch.tensor(BODY_COLORS[:_N_BODY], dtype=fd, device=device)

    # Limbs: ellipse2Poly + fillConvexPoly, colour scaled by the product of the two scores
    # (0.35 when one is negative, 0 when one is 0), then the whole canvas times 0.6.
    la = torch.tensor([a for a, _ in LIMBS[:_N_LIMB]], device=device)
    lb = torch.tensor([b for _, b in LIMBS[:_N_LIMB]], device=device)
    f, l = (present[:, la] & present[:, lb]).nonzero(as_tuple=True)
    if f.numel():
        a, b = la[l], lb[l]
        c0, c1 = score[f, a], score[f, b]
        base = body_rgb[l]
        both = (c0 > 0) & (c1 > 0)
        strong = torch.trunc(base * (c0 * c1).clamp(min=0)[:, None])
        weak = torch.trunc(base * 0.35)
        col = torch.where(both[:, None], strong, weak)
        col = torch.where(((c0 == 0) | (c1 == 0))[:, None], torch.zeros_like(col), col)
        if dim_limbs:
            col = torch.trunc(col.to(fd) * 0.6)
        colors[f, _O_LIMB + l] = col.to(torch.uint8)
        x0, x1, y0, y1 = bx[f, a], bx[f, b], by[f, a], by[f, b]
        center = torch.stack((torch.trunc((x0 + x1) / 2), torch.trunc((y0 + y1) / 2)), -1).to(fd)
        length = ((y0 - y1) ** 2 + (x0 - x1) ** 2) ** 0.5
        half = torch.trunc(length / 2).to(fd)
        axes = torch.stack((half, torch.full_like(half, float(bw))), -1)
        angle = torch.trunc(torch.rad2deg(torch.atan2((y0 - y1).to(fd), (x0 - x1).to(fd))))
        ids = prims.new_ids(f, _O_LIMB + l)
        prims.add_polygons(ellipse_polygons(center, axes, angle).long(), ids)

    # Body joints: discs, colour times the score (black for a "weak" head).
    f, j = present.nonzero(as_tuple=True)
    if f.numel():
        s = score[f, j]
        alpha = torch.where(s == -2, torch.zeros_like(s), s.clamp(min=0))
        colors[f, _O_JOINT + j] = torch.trunc(body_rgb[j] * alpha[:, None]).to(torch.uint8)
        pt = torch.stack((torch.trunc(bx[f, j]), torch.trunc(by[f, j])), -1)
        prims.add_circles(pt, bw, prims.new_ids(f, _O_JOINT + j))

    # Hands (right, then left): bones as thick lines, joints as blue discs; points under
    # 0.3 are skipped, and so are points whose integer coordinate is not >= 1.
    hand_rgb = torch.as_tensor(_HAND_RGB, device=device)
    ea = torch.tensor([e[0] for e in HAND_EDGES], device=device)
    eb = torch.tensor([e[1] for e in HAND_EDGES], device=device)
    for h in range(2):
        base_slot = _O_HAND + h * _HAND_SLOTS
        hs = poses.hands_score[:, h].to(fd)
        px = torch.trunc(poses.hands[:, h, :, 0].to(fd) * cw)
        py = torch.trunc(poses.hands[:, h, :, 1].to(fd) * ch)
        ok = hs >= 0.3
        on = (px >= 1) & (py >= 1)
        f, e = (ok[:, ea] & ok[:, eb] & on[:, ea] & on[:, eb]).nonzero(as_tuple=True)
        if f.numel():
            sc = torch.trunc(hs[f, ea[e]] * hs[f, eb[e]] * 255)
            # float32 like the reference's colour arithmetic
            colors[f, base_slot + e] = torch.trunc(hand_rgb[e] * sc.to(f32)[:, None] / 255).to(torch.uint8)
            p0 = torch.stack((px[f, ea[e]], py[f, ea[e]]), -1).to(fd)
            p1 = torch.stack((px[f, eb[e]], py[f, eb[e]]), -1).to(fd)
            prims.add_thick_lines(p0, p1, hw, prims.new_ids(f, base_slot + e))
        f, j = (ok & on).nonzero(as_tuple=True)
        if f.numel():
            colors[f, base_slot + len(HAND_EDGES) + j, 2] = torch.trunc(hs[f, j] * 255).to(torch.uint8)
            pt = torch.stack((px[f, j], py[f, j]), -1)
            prims.add_circles(pt, hw, prims.new_ids(f, base_slot + len(HAND_EDGES) + j))

    # Face: grey dots, strength = score (x 0.35 when weak); jaw and nose points skipped.
    if draw_face:
        idx = torch.tensor(_FACE_DRAWN, device=device)
        fs = poses.face_score[:, idx].to(fd)
        px = torch.trunc(poses.face[:, idx, 0].to(fd) * cw)
        py = torch.trunc(poses.face[:, idx, 1].to(fd) * ch)
        f, j = ((fs >= 0.3) & (px >= 1) & (py >= 1)).nonzero(as_tuple=True)
        if f.numel():
            conf = torch.trunc(fs[f, j] * 255)
            if face_weak:
                conf = torch.trunc(conf * 0.35)
            colors[f, _O_FACE + j] = conf.to(torch.uint8)[:, None].expand(-1, 3)
            pt = torch.stack((px[f, j], py[f, j]), -1)
            prims.add_circles(pt, hw, prims.new_ids(f, _O_FACE + j))

    if not prims.segs:
        return None, None, colors.view(-1, 3), None, 0
    segs = tuple(torch.cat(s) for s in zip(*prims.segs))
    return torch.cat(prims.frames), torch.cat(prims.orders), colors.view(-1, 3), segs, prims.count


# --------------------------------------------------------------------------------------
# Alignment (reference infer_function / utils of One-to-All)
# --------------------------------------------------------------------------------------

_CONF = 0.9  # the reference's "reliable point" score for alignment
_NOSE_TIP, _MOUTH_L, _MOUTH_R = 30, 48, 54


def _pick(pose: DwPoses, i: int) -> DwPoses:
    return DwPoses(*(v[i : i + 1] for v in pose))


def _norm(v: torch.Tensor) -> torch.Tensor:
    return (v * v).sum(-1).sqrt()


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    den_f = float(den)
    return float(num) / den_f if den_f > 1e-6 else 1.0


def pose_scale_ratio(target: DwPoses, source: DwPoses) -> float:
    """How much ``source`` (one pose) must be scaled to match ``target``'s size.

    Shoulder width and torso height when both poses have reliable shoulders and hips, the
    shoulder distance with shoulders only, else the ear distance (normalised coordinates,
    as the reference).
    """
    t, s = target.body[0].double(), source.body[0].double()
    ts, ss = target.body_score[0], source.body_score[0]
    ok = lambda sc, ids: all(float(sc[i]) >= _CONF for i in ids)  # noqa: E731
    shoulders = ok(ts, (2, 5)) and ok(ss, (2, 5))
    hips = ok(ts, (8, 11)) and ok(ss, (8, 11))
    if shoulders and hips:
        x = _ratio((t[5, 0] - t[2, 0]).abs(), (s[5, 0] - s[2, 0]).abs())
        torso = lambda p: (p[[8, 11], 1].mean() - p[[2, 5], 1].mean()).abs()  # noqa: E731
        return (x + _ratio(torso(t), torso(s))) / 2
    if shoulders:
        return _ratio(_norm(t[2] - t[5]), _norm(s[2] - s[5]))
    return _ratio(_norm(t[16] - t[17]), _norm(s[16] - s[17]))


def _scale_face(src: torch.Tensor, ref: torch.Tensor, nose: torch.Tensor) -> torch.Tensor:
    """Face points (N, 68, 2) scaled per axis to the reference face's proportions (outer eye
    corners for x, nose bridge to chin for y), nose tip moved onto ``nose`` (N, 2).

    The reference scales about the mean of eyes / nose / mouth anchors and then moves the
    nose tip, which leaves only the scale about the nose tip.
    """
    src, ref, nose = src.double(), ref.double(), nose.double()

    def scale(a: int, b: int) -> torch.Tensor:
        s_len, r_len = _norm(src[:, a] - src[:, b]), _norm(ref[:, a] - ref[:, b])
        return torch.where(s_len > 1e-6, r_len / s_len.clamp(min=1e-300), torch.ones_like(s_len))

    k = torch.stack((scale(36, 45), scale(27, 8)), -1)[:, None]
    return nose[:, None] + (src - src[:, _NOSE_TIP : _NOSE_TIP + 1]) * k


def _limb_ratios(ref: DwPoses, src: DwPoses) -> dict[tuple[int, int], float]:
    """Per-bone length ratios reference / template, enabled group by group as more points
    are reliable in both (the reference's compute_ratios_stepwise), left / right averaged."""
    r, s = ref.body[0].double(), src.body[0].double()
    valid = [float(ref.body_score[0, i]) >= _CONF and float(src.body_score[0, i]) >= _CONF for i in range(_N_BODY)]
    pairs = ((0, 1), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (0, 14), (0, 15), (14, 16), (15, 17),
             (8, 9), (9, 10), (11, 12), (12, 13), (1, 8), (1, 11))  # fmt: skip
    ratios = {p: 1.0 for p in pairs}
    own = lambda a, b: _ratio(_norm(r[a] - r[b]), _norm(s[a] - s[b]))  # noqa: E731
    all_ok = lambda ids: all(valid[i] for i in ids)  # noqa: E731
    head = [0, 1, 14, 15, 16, 17]
    steps = (
        (head, ((0, 1), (0, 14), (0, 15), (14, 16), (15, 17)), ()),
        (head + [2, 5], ((1, 2), (1, 5)), ()),
        (head + [2, 5, 3, 6], ((2, 3), (5, 6)), (((3, 4), (2, 3)), ((6, 7), (5, 6)))),
        (head + [2, 5, 3, 6, 8, 11], ((1, 8), (1, 11)), ()),
        (head + [2, 5, 3, 6, 8, 11, 4, 7], ((3, 4), (6, 7)), ()),
        (head + [2, 5, 3, 6, 8, 11, 4, 7, 9, 12], ((8, 9), (11, 12)), (((9, 10), (8, 9)), ((12, 13), (11, 12)))),
        (list(range(_N_BODY)), pairs, ()),
    )
    for needed, mine, inherited in steps:
        if all_ok(needed):
            for p in mine:
                ratios[p] = own(*p)
            for p, parent in inherited:
                ratios[p] = ratios[parent]
    for a, b in (((1, 2), (1, 5)), ((2, 3), (5, 6)), ((3, 4), (6, 7)), ((8, 9), (11, 12)), ((9, 10), (12, 13))):
        ratios[a] = ratios[b] = (ratios[a] + ratios[b]) / 2.0
    return ratios


def align_to_pose(reference: DwPoses, template: DwPoses) -> DwPoses:
    """Template poses with their bones stretched toward the reference's proportions.

    The reference pose is first scaled about its neck to the size of template frame 0 and
    moved onto its neck; bone ratios (reference / template frame 0) then move each template
    frame's joints chain by chain, the hands riding along, and the face is rescaled to the
    reference face and put on the new nose. (As in the reference, the right arm's moves are
    applied to the hand stored second, the left arm's to the first.)
    """
    first = _pick(template, 0)
    s = pose_scale_ratio(first, reference)
    neck, to = reference.body[0, 1].double(), first.body[0, 1].double()
    ref_body = (reference.body[0].double() - neck) * s + to
    ref_face = (reference.face[0].double() - neck) * s + to
    ratios = _limb_ratios(DwPoses(ref_body[None], *reference[1:]), first)

    c = template.body.double().clone()
    hands = template.hands.double().clone()

    def move(points, off, hand=None):
        c[:, list(points)] += off[:, None]
        if hand is not None:
            hands[:, hand] += off[:, None]

    def toward(parent: int, child: int, ratio: float) -> torch.Tensor:
        # The move that makes the bone parent -> child ``ratio`` times as long.
        return (c[:, parent] - c[:, child]) * (1.0 - ratio)

    move((0, 14, 15, 16, 17), toward(1, 0, ratios[(0, 1)]))
    move((2, 3, 4), toward(1, 2, ratios[(1, 2)]), hand=1)
    move((5, 6, 7), toward(1, 5, ratios[(1, 5)]), hand=0)
    move((3, 4), toward(2, 3, ratios[(2, 3)]), hand=1)
    move((4,), toward(3, 4, ratios[(3, 4)]), hand=1)
    move((6, 7), toward(5, 6, ratios[(5, 6)]), hand=0)
    move((7,), toward(6, 7, ratios[(6, 7)]), hand=0)
    for p1, p2 in ((0, 14), (0, 15), (14, 16), (15, 17)):
        move((p2,), toward(p1, p2, ratios[(p1, p2)]))
    move((8,), toward(1, 8, ratios[(1, 8)]))
    move((11,), toward(1, 11, ratios[(1, 11)]))
    move((9, 10), toward(8, 9, ratios[(8, 9)]))
    move((10,), toward(9, 10, ratios[(9, 10)]))
    move((12, 13), toward(11, 12, ratios[(11, 12)]))
    move((13,), toward(12, 13, ratios[(12, 13)]))
    face = _scale_face(template.face, ref_face[None].expand_as(template.face), c[:, 0])
    return template._replace(body=c, hands=hands, face=face)


def align_to_reference(
    reference: DwPoses,
    template: DwPoses,
    template_metas: list[dict],
    reference_meta: dict,
) -> DwPoses:
    """Template poses retargeted onto the reference's body (frame 0 as the anchor), in the
    reference's normalised coordinates, faces rescaled to the reference face and placed on
    the retargeted nose (the reference's ``align_to_reference``).

    Args:
        reference: the reference pose (one); template: the T template poses.
        template_metas, reference_meta: the same poses as Wan meta dicts, for the retargeting.
    """
    try:
        from .retargeting import retarget
    except ImportError as e:  # pragma: no cover - depends on the retargeting module being merged
        raise ImportError("align_to='ref' needs wanprep_torch.retargeting (the Wan retargeting)") from e
    metas = retarget(template_metas, reference_meta)
    device = template.body.device
    wh = np.array([metas[0].width, metas[0].height], np.float64)
    norm = lambda a: torch.from_numpy(np.nan_to_num(np.stack(a).astype(np.float64)) / wh).to(device)  # noqa: E731
    score = lambda a: torch.from_numpy(np.nan_to_num(np.stack(a).astype(np.float64))).to(device)  # noqa: E731
    body = norm([m.kps_body for m in metas])[:, :_N_BODY]
    body_p = score([m.kps_body_p for m in metas])[:, :_N_BODY]
    hands = torch.stack((norm([m.kps_rhand for m in metas]), norm([m.kps_lhand for m in metas])), 1)
    hands_p = torch.stack((score([m.kps_rhand_p for m in metas]), score([m.kps_lhand_p for m in metas])), 1)
    face = _scale_face(template.face, reference.face.expand_as(template.face), body[:, 0])
    return DwPoses(body, body_p, body_p > 0, hands, hands_p, face, template.face_score)


# --------------------------------------------------------------------------------------
# Reference image warp (cv2.warpAffine rules)
# --------------------------------------------------------------------------------------


def warp_affine(
    image: torch.Tensor, matrix: np.ndarray, nearest: bool = False, border: float = 0.0
) -> torch.Tensor:
    """``cv2.warpAffine(image, matrix, (w, h))`` with a constant border, in torch.

    OpenCV inverts the matrix and samples the source at the mapped point of every output
    pixel: bilinear in float (OpenCV >= 4.11's warp kernels; 8-bit results rounded), or,
    for nearest, at the pixel its 1/1024 fixed-point coordinate rounds to.

    Args:
        image: (h, w, C) or (h, w), uint8 or float.
        matrix: (2, 3) forward (source -> destination) matrix.
        nearest: INTER_NEAREST instead of INTER_LINEAR.
        border: value of pixels taken from outside the image.

    Returns:
        Same shape and dtype as ``image``.
    """
    m = np.asarray(matrix, np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22, a12, a21 = m[1, 1] * det, m[0, 0] * det, -m[0, 1] * det, -m[1, 0] * det
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    h, w = image.shape[:2]
    device = image.device
    x = torch.arange(w, device=device, dtype=torch.float64)[None]
    y = torch.arange(h, device=device, dtype=torch.float64)[:, None]
    extra = [1] * (image.dim() - 2)
    if nearest:
        fx = (torch.round(a11 * x * 1024).long() + torch.round((a12 * y + b1) * 1024).long() + 512) >> 10
        fy = (torch.round(a21 * x * 1024).long() + torch.round((a22 * y + b2) * 1024).long() + 512) >> 10
        inside = ((fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)).view(h, w, *extra)
        src = image[fy.clamp(0, h - 1), fx.clamp(0, w - 1)]
        return torch.where(inside, src, torch.full_like(src, border))
    sx, sy = a11 * x + a12 * y + b1, a21 * x + a22 * y + b2
    x0, y0 = torch.floor(sx), torch.floor(sy)
    ax, ay = sx - x0, sy - y0
    x0, y0 = x0.long(), y0.long()
    acc = torch.zeros(image.shape, dtype=torch.float64, device=device)
    for dy, wy in ((0, 1 - ay), (1, ay)):
        for dx, wx in ((0, 1 - ax), (1, ax)):
            px, py = x0 + dx, y0 + dy
            inside = ((px >= 0) & (px < w) & (py >= 0) & (py < h)).view(h, w, *extra)
            v = image[py.clamp(0, h - 1), px.clamp(0, w - 1)].to(torch.float64)
            acc += (wy * wx).view(h, w, *extra) * torch.where(inside, v, torch.full_like(v, border))
    if image.dtype.is_floating_point:
        return acc.to(image.dtype)
    return torch.round(acc).clamp(0, 255).to(image.dtype)


def _warp_matrix(reference: DwPoses, first: DwPoses, width: int, height: int) -> np.ndarray:
    """Scale about the reference's neck to template frame 0's size, then move the neck onto
    frame 0's neck (both in the reference image's pixels), float32 like the reference."""
    s = np.float32(pose_scale_ratio(first, reference))
    f32 = lambda v: np.float32(float(v))  # noqa: E731
    x0, y0 = f32(reference.body[0, 1, 0]) * np.float32(width), f32(reference.body[0, 1, 1]) * np.float32(height)
    dx = f32(first.body[0, 1, 0]) * np.float32(width) - x0
    dy = f32(first.body[0, 1, 1]) * np.float32(height) - y0
    one = np.float32(1)
    return np.array([[s, 0, (one - s) * x0 + dx], [0, s, (one - s) * y0 + dy]], dtype=np.float32)


# --------------------------------------------------------------------------------------
# The node's function
# --------------------------------------------------------------------------------------


def _as_tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor or numpy array, got {type(value).__name__}")
    return value


def onetoall(
    template_keypoints: torch.Tensor,
    width: int,
    height: int,
    align_to: str = "ref",
    draw_face_points: str = "full",
    draw_head: str = "full",
    reference_keypoints: torch.Tensor | None = None,
    reference_image: torch.Tensor | None = None,
    *,
    frame_size: tuple[int, int] | None = None,
) -> OneToAllOutputs:
    """The "Pose Detection OneToAll Animation" node after its two models.

    Args:
        template_keypoints: (T, 133, 3) the pose model's keypoints of the video frames, x, y
            in frame pixels, score.
        width, height: output size of the pose images.
        align_to: "ref" (retarget the template poses onto the reference's body), "pose" (warp
            the reference image onto template frame 0 and stretch the template's bones toward
            the reference's proportions) or "none".
        draw_face_points: "full", "weak" (35 % strength) or "none".
        draw_head: "full", "weak" or "none" (see :func:`render_dwposes`).
        reference_keypoints: (133, 3) the pose model's keypoints of the reference image, in
            its own pixels; with ``reference_image``, or neither.
        reference_image: (h, w, 3) uint8 (or float in [0, 1]) reference image; a leading
            batch axis of 1 is accepted.
        frame_size: (H, W) of the video frames the template keypoints were measured on;
            default (height, width).

    Returns:
        :class:`OneToAllOutputs` (float32 in [0, 1], on the keypoints' device):
        pose_images (T, height, width, 3); ref_pose_image (1, height, width, 3), or
        (1, h, w, 3) for "pose"; ref_image (1, h, w, 3) (black (1, height, width, 3) without
        a reference); ref_mask (1, h, w) (zeros (1, height, width) without a reference).

    Raises:
        ValueError / TypeError: bad shapes, sizes or option values, a reference image without
        keypoints (or the reverse), or, for "ref" / "pose", a reference with no body point
        detected (nothing to align to).
    """
    kps = _as_tensor(template_keypoints, "template_keypoints")
    if kps.dim() != 3 or kps.shape[1:] != (133, 3) or kps.shape[0] == 0:
        raise ValueError(f"template_keypoints must have shape (T, 133, 3) with T >= 1, got {tuple(kps.shape)}")
    for name, v in (("width", width), ("height", height)):
        if int(v) != v or int(v) < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    width, height = int(width), int(height)
    options = (("align_to", align_to, ALIGN_MODES), ("draw_face_points", draw_face_points, STRENGTHS))
    for name, v, allowed in options + (("draw_head", draw_head, STRENGTHS),):
        if v not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {v!r}")
    frame_h, frame_w = (height, width) if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
    if min(frame_h, frame_w) < 1:
        raise ValueError(f"frame_size must be positive (H, W), got {frame_size!r}")
    if (reference_keypoints is None) != (reference_image is None):
        raise ValueError("reference_keypoints and reference_image go together: pass both or neither")
    device = kps.device
    template = dwposes_from_keypoints(kps, frame_w, frame_h)
    draw = dict(draw_face=draw_face_points != "none", face_weak=draw_face_points == "weak", head=draw_head)
    f32 = torch.float32

    if reference_image is None:
        pose_images = render_dwposes(template, height, width, dtype=f32, **draw)
        black = torch.zeros((1, height, width, 3), dtype=f32, device=device)
        no_mask = torch.zeros((1, height, width), dtype=f32, device=device)
        return OneToAllOutputs(pose_images, black, black.clone(), no_mask)

    ref_kps = _as_tensor(reference_keypoints, "reference_keypoints").to(device)
    if ref_kps.dim() == 3 and ref_kps.shape[0] == 1:
        ref_kps = ref_kps[0]
    if ref_kps.shape != (133, 3):
        raise ValueError(f"reference_keypoints must have shape (133, 3), got {tuple(ref_kps.shape)}")
    image = _as_tensor(reference_image, "reference_image").to(device)
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"reference_image must have shape (h, w, 3), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image_255 = image.to(torch.float64)
    elif image.dtype.is_floating_point:
        image_255 = image.to(torch.float64) * 255
    else:
        raise TypeError(f"reference_image must be uint8 or float in [0, 1], got {image.dtype}")
    ref_h, ref_w = image.shape[:2]
    reference = dwposes_from_keypoints(ref_kps[None], ref_w, ref_h)
    if align_to != "none" and not bool((reference.body_score > 0).any()):
        raise ValueError(
            f"align_to={align_to!r}: no person in the reference image (no body keypoint with a score above 0)"
        )

    if align_to == "pose":
        first = _pick(template, 0)
        matrix = _warp_matrix(reference, first, ref_w, ref_h)
        ref_pose = render_dwposes(reference, ref_h, ref_w, draw_face=False)[0]
        ref_pose_image = (warp_affine(ref_pose, matrix).to(f32) / 255)[None]
        ref_image = (warp_affine(image_255, matrix) / 255).clamp(0, 1).to(f32)[None]
        inside = torch.zeros((ref_h, ref_w), dtype=torch.uint8, device=device)
        ref_mask = (warp_affine(inside, matrix, nearest=True, border=255).to(f32) / 255)[None]
        template = align_to_pose(reference, template)
    else:
        ref_pose_image = render_dwposes(reference, height, width, draw_face=False, dtype=f32)
        ref_image = (image_255 / 255).to(f32)[None]
        ref_mask = torch.zeros((1, ref_h, ref_w), dtype=f32, device=device)
        if align_to == "ref":
            template_metas = wan_metas(kps, frame_w, frame_h)
            reference_meta = wan_metas(ref_kps[None], ref_w, ref_h)[0]
            template = align_to_reference(reference, template, template_metas, reference_meta)
    pose_images = render_dwposes(template, height, width, dtype=f32, **draw)
    return OneToAllOutputs(pose_images, ref_pose_image, ref_image, ref_mask)
