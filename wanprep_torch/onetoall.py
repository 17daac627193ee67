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

from .draw import BODY_COLORS
from .poses import DwPoses, Poses
from .raster import Primitives, Shapes, cpu_threads, geometry_dtype, lazy_zeros, order_scratch, rasterize, top_order
from .resample import LinearResize
from .retargeting import retarget
from .skeleton import (
    FACE68_CHIN, FACE68_EYE_CORNERS, FACE68_JAW, FACE68_NOSE, FACE68_NOSE_BRIDGE, FACE68_NOSE_TIP,
    HAND_EDGES, HEAD_POINTS, NUM_FACE68, NUM_HAND, OPENPOSE_LIMBS, OPENPOSE_NUM_BODY,
)  # fmt: skip

__all__ = [
    "OneToAllOutputs",
    "DwPoses",
    "dwposes_from_keypoints",
    "wan_metas",
    "canvas_size",
    "render_dwposes",
    "Style",
    "PoseShapes",
    "pose_shapes",
    "align_to_pose",
    "align_to_reference",
    "warp_image_cv",
    "onetoall",
]

ALIGN_MODES = ("ref", "pose", "none")
STRENGTHS = ("full", "weak", "none")

# Face points left undrawn: the jaw line and the nose.
_FACE_DRAWN = tuple(i for i in range(NUM_FACE68) if not (i in range(68)[FACE68_JAW] or i in range(68)[FACE68_NOSE]))
# Draw order within a frame (= colour-table slot): limbs, body joints, then per hand (right,
# left) its bones and joints, then the face dots.
LIMB_SLOTS = len(OPENPOSE_LIMBS)
_O_JOINT = LIMB_SLOTS
_O_HAND = _O_JOINT + OPENPOSE_NUM_BODY
_HAND_SLOTS = len(HAND_EDGES) + NUM_HAND
_O_FACE = _O_HAND + 2 * _HAND_SLOTS
SLOTS = _O_FACE + len(_FACE_DRAWN)
#: The colour factor of a limb with one end in a "weak" head (the reference's 0.35).
WEAK_LIMB = 0.35
_CANVAS_SHORT = 2160


class OneToAllOutputs(NamedTuple):
    """The node's four outputs, float32 in [0, 1] on the keypoints' device."""

    pose_images: torch.Tensor  # (T, height, width, 3)
    ref_pose_image: torch.Tensor  # (1, h, w, 3): (height, width), or the reference's size for "pose"
    ref_image: torch.Tensor  # (1, h, w, 3): the reference image (warped for "pose"), or black
    ref_mask: torch.Tensor  # (1, h, w): 1 where the "pose" warp left the image, else 0


def _poses(keypoints: torch.Tensor, width: int, height: int) -> Poses:
    """(N, 133, 3) pixels -> :class:`Poses` in float64 (float32 on MPS) like the reference's
    goldens: truncating pixel coordinates on the 2160 canvas is sensitive to float32 noise."""
    return Poses.from_wholebody(keypoints.to(geometry_dtype(keypoints.device)), width, height)


def dwposes_from_keypoints(keypoints: torch.Tensor, width: int, height: int) -> DwPoses:
    """The pose model's (N, 133, 3) pixel keypoints -> :class:`DwPoses`, normalised by (W, H)
    (the reference's Wan metas, then its DWPose conversion)."""
    return _poses(keypoints, width, height).to_dwpose()


def wan_metas(keypoints: torch.Tensor, width: int, height: int) -> list[dict]:
    """Wan meta dicts (normalised numpy arrays) of (N, 133, 3) pixel keypoints, in float64
    (:func:`wanprep_torch.wan.pose_metas` gives float32), for the retargeting."""
    return _poses(keypoints, width, height).to_wan()


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
    resize = LinearResize.of(ch, cw, height, width, device)
    n_rows, n_cols = resize.rows.numel(), resize.cols.numel()
    out = lazy_zeros((n * height * width, 3), dtype, device)
    chunk = max(1, min(chunk, n))
    scratch = order_scratch(chunk * n_rows * n_cols, device)
    acc = lazy_zeros((chunk * height * width, 3), torch.int32, device)
    with cpu_threads(device):
        for t0 in range(0, n, chunk):
            part = DwPoses(*(v[t0 : t0 + chunk] for v in poses))
            shapes, colors = pose_shapes(part, ch, cw, Style(draw_face, face_weak, head), rows=resize.row_mask)
            if shapes.count == 0:
                continue
            px = rasterize(shapes.segments, shapes.count, cw, row_map=resize.row_map, col_rank=resize.col_rank)
            f = shapes.frame.index_select(0, px.owner)
            order = shapes.order.index_select(0, px.owner)
            # A frame's primitives have distinct orders, so each sampled pixel has one winner.
            index = (f * n_rows + px.y) * n_cols + px.x
            win = (top_order(index, order, scratch) == order).nonzero().squeeze(1)
            f, r, c, order = (v.index_select(0, win) for v in (f, px.y, px.x, order))
            rgb = colors.view(-1, 3).index_select(0, f * SLOTS + order).to(torch.int32)
            dst, val = resize.splat(acc, f, r, c, rgb)
            val = val.to(dtype) / 255 if dtype.is_floating_point else val.to(dtype)
            out.index_copy_(0, dst + t0 * height * width, val)  # repeated pixels carry equal values
    return out.view(n, height, width, 3)


class PoseShapes(NamedTuple):
    """The primitives of a chunk of frames in the One-to-All style and their colours."""

    shapes: Shapes  # primitives; ``order`` is the draw slot (the colour table's index)
    colors: torch.Tensor  # (N, SLOTS, 3) uint8: the colour of every frame's slots


class Style(NamedTuple):
    """What :func:`render_dwposes` draws: the face dots (at 35 % when ``face_weak``) and the
    head's strength ("full", "weak" or "none")."""

    draw_face: bool = True
    face_weak: bool = False
    head: str = "full"


def pose_shapes(
    poses: DwPoses, height: int, width: int, style: Style = Style(), dim_limbs: bool = True, rows: torch.Tensor | None = None
) -> PoseShapes:
    """The primitives of N poses on a (height, width) canvas, and their colours.

    Draw slots (= draw orders) run: limbs (``LIMB_SLOTS`` of them), body joints, per hand
    (right, left) its bones and joints, then the face dots. ``dim_limbs=False`` leaves out the
    reference's 0.6 dimming of the limbs (which it applies to the whole canvas after drawing
    them), for a caller that does that pass itself. ``rows``: the only canvas rows read.
    """
    device = poses.body.device
    fd = geometry_dtype(device)
    colors = torch.zeros((poses.body.shape[0], SLOTS, 3), dtype=torch.uint8, device=device)
    prims = Primitives(height, width, device, rows)
    score = poses.body_score.to(fd).clone()
    if style.head == "weak":
        score[:, list(HEAD_POINTS)] = -2.0
    elif style.head == "none":
        score[:, list(HEAD_POINTS)] = 0.0
    bx = poses.body[..., 0].to(fd) * width
    by = poses.body[..., 1].to(fd) * height
    bw = _stick_width(height, width, 3)
    _add_limbs(prims, colors, bx, by, score, poses.body_present, bw, dim_limbs)
    _add_joints(prims, colors, bx, by, score, poses.body_present, bw)
    hw = _stick_width(height, width, 2)
    for h in range(2):
        _add_hand(prims, colors, poses, h, hw)
    if style.draw_face:
        _add_face(prims, colors, poses, hw, style.face_weak)
    return PoseShapes(prims.build(), colors)


def _add_limbs(prims: Primitives, colors, bx, by, score, present, bw: int, dim: bool) -> None:
    """Limbs: ellipse2Poly + fillConvexPoly, colour scaled by the product of the two scores
    (``WEAK_LIMB`` when one is negative, 0 when one is 0), then the whole canvas times 0.6."""
    fd = bx.dtype
    body_rgb = torch.tensor(BODY_COLORS[:OPENPOSE_NUM_BODY], dtype=fd, device=bx.device)
    la = torch.tensor([a for a, _ in OPENPOSE_LIMBS], device=bx.device)
    lb = torch.tensor([b for _, b in OPENPOSE_LIMBS], device=bx.device)
    f, l = (present[:, la] & present[:, lb]).nonzero(as_tuple=True)
    if f.numel() == 0:
        return
    a, b = la[l], lb[l]
    c0, c1 = score[f, a], score[f, b]
    base = body_rgb[l]
    both = (c0 > 0) & (c1 > 0)
    strong = torch.trunc(base * (c0 * c1).clamp(min=0)[:, None])
    weak = torch.trunc(base * WEAK_LIMB)
    col = torch.where(both[:, None], strong, weak)
    col = torch.where(((c0 == 0) | (c1 == 0))[:, None], torch.zeros_like(col), col)
    if dim:
        col = torch.trunc(col.to(fd) * 0.6)
    colors[f, l] = col.to(torch.uint8)
    x0, x1, y0, y1 = bx[f, a], bx[f, b], by[f, a], by[f, b]
    center = torch.stack((torch.trunc((x0 + x1) / 2), torch.trunc((y0 + y1) / 2)), -1).to(fd)
    length = ((y0 - y1) ** 2 + (x0 - x1) ** 2) ** 0.5
    half = torch.trunc(length / 2).to(fd)
    axes = torch.stack((half, torch.full_like(half, float(bw))), -1)
    angle = torch.trunc(torch.rad2deg(torch.atan2((y0 - y1).to(fd), (x0 - x1).to(fd))))
    prims.ellipses(center, axes, angle, f, l)


def _add_joints(prims: Primitives, colors, bx, by, score, present, bw: int) -> None:
    """Body joints: discs, colour times the score (black for a "weak" head)."""
    f, j = present.nonzero(as_tuple=True)
    if f.numel() == 0:
        return
    body_rgb = torch.tensor(BODY_COLORS[:OPENPOSE_NUM_BODY], dtype=bx.dtype, device=bx.device)
    s = score[f, j]
    alpha = torch.where(s == -2, torch.zeros_like(s), s.clamp(min=0))
    colors[f, _O_JOINT + j] = torch.trunc(body_rgb[j] * alpha[:, None]).to(torch.uint8)
    pt = torch.stack((torch.trunc(bx[f, j]), torch.trunc(by[f, j])), -1)
    prims.circles(pt, bw, f, _O_JOINT + j)


def _add_hand(prims: Primitives, colors, poses: DwPoses, h: int, hw: int) -> None:
    """Hand ``h`` (0 right, 1 left): bones as thick lines, joints as blue discs; points under
    0.3 are skipped, and so are points whose integer coordinate is not >= 1."""
    fd, device = geometry_dtype(poses.body.device), poses.body.device
    base_slot = _O_HAND + h * _HAND_SLOTS
    hs = poses.hands_score[:, h].to(fd)
    px = torch.trunc(poses.hands[:, h, :, 0].to(fd) * prims.width)
    py = torch.trunc(poses.hands[:, h, :, 1].to(fd) * prims.height)
    ok = (hs >= 0.3) & (px >= 1) & (py >= 1)
    ea = torch.tensor([e[0] for e in HAND_EDGES], device=device)
    eb = torch.tensor([e[1] for e in HAND_EDGES], device=device)
    f, e = (ok[:, ea] & ok[:, eb]).nonzero(as_tuple=True)
    if f.numel():
        sc = torch.trunc(hs[f, ea[e]] * hs[f, eb[e]] * 255)
        hand_rgb = torch.as_tensor(_HAND_RGB, device=device)
        # float32 like the reference's colour arithmetic
        colors[f, base_slot + e] = torch.trunc(hand_rgb[e] * sc.to(torch.float32)[:, None] / 255).to(torch.uint8)
        p0 = torch.stack((px[f, ea[e]], py[f, ea[e]]), -1).to(fd)
        p1 = torch.stack((px[f, eb[e]], py[f, eb[e]]), -1).to(fd)
        prims.thick_lines(p0, p1, hw, f, base_slot + e)
    f, j = ok.nonzero(as_tuple=True)
    if f.numel():
        colors[f, base_slot + len(HAND_EDGES) + j, 2] = torch.trunc(hs[f, j] * 255).to(torch.uint8)
        pt = torch.stack((px[f, j], py[f, j]), -1)
        prims.circles(pt, hw, f, base_slot + len(HAND_EDGES) + j)


def _add_face(prims: Primitives, colors, poses: DwPoses, hw: int, weak: bool) -> None:
    """Face: grey dots, strength = score (x 0.35 when weak); jaw and nose points skipped."""
    fd, device = geometry_dtype(poses.body.device), poses.body.device
    idx = torch.tensor(_FACE_DRAWN, device=device)
    fs = poses.face_score[:, idx].to(fd)
    px = torch.trunc(poses.face[:, idx, 0].to(fd) * prims.width)
    py = torch.trunc(poses.face[:, idx, 1].to(fd) * prims.height)
    f, j = ((fs >= 0.3) & (px >= 1) & (py >= 1)).nonzero(as_tuple=True)
    if f.numel():
        conf = torch.trunc(fs[f, j] * 255)
        if weak:
            conf = torch.trunc(conf * 0.35)
        colors[f, _O_FACE + j] = conf.to(torch.uint8)[:, None].expand(-1, 3)
        pt = torch.stack((px[f, j], py[f, j]), -1)
        prims.circles(pt, hw, f, _O_FACE + j)


# --------------------------------------------------------------------------------------
# Alignment (reference infer_function / utils of One-to-All)
# --------------------------------------------------------------------------------------

_CONF = 0.9  # the reference's "reliable point" score for alignment


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

    k = torch.stack((scale(*FACE68_EYE_CORNERS), scale(FACE68_NOSE_BRIDGE, FACE68_CHIN)), -1)[:, None]
    return nose[:, None] + (src - src[:, FACE68_NOSE_TIP : FACE68_NOSE_TIP + 1]) * k


def _limb_ratios(ref: DwPoses, src: DwPoses) -> dict[tuple[int, int], float]:
    """Per-bone length ratios reference / template, enabled group by group as more points
    are reliable in both (the reference's compute_ratios_stepwise), left / right averaged."""
    r, s = ref.body[0].double(), src.body[0].double()
    valid = [float(ref.body_score[0, i]) >= _CONF and float(src.body_score[0, i]) >= _CONF for i in range(OPENPOSE_NUM_BODY)]
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
        (list(range(OPENPOSE_NUM_BODY)), pairs, ()),
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
    metas = retarget(template_metas, reference_meta)
    device = template.body.device
    wh = np.array([metas[0].width, metas[0].height], np.float64)
    norm = lambda a: torch.from_numpy(np.nan_to_num(np.stack(a).astype(np.float64)) / wh).to(device)  # noqa: E731
    score = lambda a: torch.from_numpy(np.nan_to_num(np.stack(a).astype(np.float64))).to(device)  # noqa: E731
    body = norm([m.kps_body for m in metas])[:, :OPENPOSE_NUM_BODY]
    body_p = score([m.kps_body_p for m in metas])[:, :OPENPOSE_NUM_BODY]
    hands = torch.stack((norm([m.kps_rhand for m in metas]), norm([m.kps_lhand for m in metas])), 1)
    hands_p = torch.stack((score([m.kps_rhand_p for m in metas]), score([m.kps_lhand_p for m in metas])), 1)
    face = _scale_face(template.face, reference.face.expand_as(template.face), body[:, 0])
    return DwPoses(body, body_p, body_p > 0, hands, hands_p, face, template.face_score)


# --------------------------------------------------------------------------------------
# Reference image warp (cv2.warpAffine rules)
# --------------------------------------------------------------------------------------


def warp_image_cv(
    image: torch.Tensor, matrix: np.ndarray, nearest: bool = False, border: float = 0.0
) -> torch.Tensor:
    """``cv2.warpAffine(image, matrix, (w, h))`` on one (h, w[, C]) image with a constant border,
    in torch (OpenCV's rules; not kornia's ``warp_affine``, which the pose crop uses).

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


def _check_reference(
    reference_keypoints, reference_image, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's (133, 3) keypoints and its (h, w, 3) image as float64 0-255, checked."""
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
        return ref_kps, image.to(torch.float64)
    if image.dtype.is_floating_point:
        return ref_kps, image.to(torch.float64) * 255
    raise TypeError(f"reference_image must be uint8 or float in [0, 1], got {image.dtype}")


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

    ref_kps, image_255 = _check_reference(reference_keypoints, reference_image, device)
    ref_h, ref_w = image_255.shape[:2]
    reference = dwposes_from_keypoints(ref_kps[None], ref_w, ref_h)
    if align_to != "none" and not bool((reference.body_score > 0).any()):
        raise ValueError(
            f"align_to={align_to!r}: no person in the reference image (no body keypoint with a score above 0)"
        )

    if align_to == "pose":
        first = _pick(template, 0)
        matrix = _warp_matrix(reference, first, ref_w, ref_h)
        ref_pose = render_dwposes(reference, ref_h, ref_w, draw_face=False)[0]
        ref_pose_image = (warp_image_cv(ref_pose, matrix).to(f32) / 255)[None]
        ref_image = (warp_image_cv(image_255, matrix) / 255).clamp(0, 1).to(f32)[None]
        inside = torch.zeros((ref_h, ref_w), dtype=torch.uint8, device=device)
        ref_mask = (warp_image_cv(inside, matrix, nearest=True, border=255).to(f32) / 255)[None]
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
