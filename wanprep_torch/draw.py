"""Torch-native pose rendering, equivalent to the "Draw ViT Pose" node of Wan 2.2 Animate.

The reference draws every frame with OpenCV on a uint8 canvas: ``cv2.ellipse2Poly`` +
``cv2.fillConvexPoly`` for limbs, ``cv2.circle`` for joints, ``cv2.line`` for hand bones.
Here the same primitives are built for a whole batch of frames at once and scan-converted by
:mod:`wanprep_torch.raster` with OpenCV's integer rules reproduced exactly (pixel-identical
output); this module is the style: colours, stick widths, which points and limbs are drawn,
and the framing into the output size (pad or crop, then a uint8 bilinear resize).

Keypoints are Wan's normalised ``(x / W, y / H, score)`` arrays; the 20 body points are
OpenPose-18 order plus left / right toe (see :data:`LIMBS`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .skeleton import BODY_LIMBS, NUM_HAND, WAN_NUM_BODY, WAN_NUM_FACE, WAN_PARTS, WAN_STACK
from .skeleton import HAND_EDGES as SKELETON_HAND_EDGES
from .skeleton import HEAD_POINTS as SKELETON_HEAD_POINTS
from .raster import Primitives, geometry_dtype, lazy_zeros, order_scratch, paint, rasterize

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
    "render_pose_pixels",
    "palette_rgb255",
    "fit_box",
    "draw_pose",
]

# --------------------------------------------------------------------------------------
# Style constants (Wan's draw_aapose_new / draw_handpose_new)
# --------------------------------------------------------------------------------------

#: 19 body limbs as joint pairs over Wan's 20 body rows (:data:`~wanprep_torch.skeleton.BODY_LIMBS`);
#: limb ``i`` uses ``LIMB_COLORS[i]``. The reference zips these with the 20 colours below, so
#: the feet limbs (13, 18), (10, 19) take colours 17 and 18; the foot colours proper go to
#: joints 18, 19.
LIMBS = BODY_LIMBS

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

#: 20 hand bones over the 21 hand points (:data:`~wanprep_torch.skeleton.HAND_EDGES`).
HAND_EDGES = SKELETON_HAND_EDGES


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
HEAD_POINTS = SKELETON_HEAD_POINTS

# Draw order == palette index: limbs, body joints, L bones, L joints, R bones, R joints, face.
_O_LIMB = 0
_O_JOINT = _O_LIMB + len(LIMBS)
_O_LHAND = _O_JOINT + WAN_NUM_BODY
_O_RHAND = _O_LHAND + len(HAND_EDGES) + NUM_HAND
_O_FACE = _O_RHAND + len(HAND_EDGES) + NUM_HAND


def palette_rgb255() -> list[tuple[int, int, int]]:
    """RGB (0-255) of every draw-order slot used by :func:`render_pose_pixels` (190 entries)."""
    hand = list(HAND_COLORS) + [HAND_JOINT_COLOR] * NUM_HAND
    return list(LIMB_COLORS) + list(BODY_COLORS) + hand + hand + [FACE_COLOR] * WAN_NUM_FACE


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
                *(_kp_array(m.get(key), n) for key, n in WAN_PARTS.items()),
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


def _add_body(prims: Primitives, body: torch.Tensor, ok: torch.Tensor, width: int) -> None:
    f, l, la, lb = _edges_both_ok(LIMBS, ok)
    if f.numel():
        pa, pb = body[f, la[l]], body[f, lb[l]]
        dv = pa - pb
        # Reference: ellipse2Poly((int(mx), int(my)), (int(len / 2), w), int(angle), 0, 360, 1).
        center = _trunc_int((pa + pb) / 2)
        half_len = torch.trunc((dv * dv).sum(-1).sqrt() / 2)
        axes = torch.stack((half_len, torch.full_like(half_len, float(width))), -1)
        angle = torch.trunc(torch.rad2deg(torch.atan2(dv[:, 1], dv[:, 0])))
        prims.ellipses(center, axes, angle, f, _O_LIMB + l)
    f, j = ok.nonzero(as_tuple=True)
    prims.circles(_trunc_int(body[f, j]), width, f, _O_JOINT + j)


def _add_hand(prims: Primitives, hand: torch.Tensor, ok: torch.Tensor, width: int, base: int) -> None:
    pt = _trunc_int(hand)
    # Reference skips points whose int() coordinate is not > 0.01, i.e. x < 1 or y < 1.
    ok = ok & (pt[..., 0] >= 1) & (pt[..., 1] >= 1)
    f, e, ea, eb = _edges_both_ok(HAND_EDGES, ok)
    if f.numel():
        prims.thick_lines(pt[f, ea[e]], pt[f, eb[e]], width, f, base + e)
    f, j = ok.nonzero(as_tuple=True)
    prims.circles(pt[f, j], width, f, base + len(HAND_EDGES) + j)


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
        :func:`~wanprep_torch.raster.paint`).
    """
    device = kps.device
    xy = kps[..., :2] * torch.tensor([width, height], dtype=kps.dtype, device=device)
    # Bound absurd coordinates so 16.16 fixed-point products stay inside int64; points
    # that far away are off-canvas garbage anyway.
    xy = xy.clamp(-16000, 16000)
    ok = (kps[..., 2] >= score_threshold) & torch.isfinite(kps).all(-1)
    prims = Primitives(height, width, device)
    if body_stick_width > 0:
        body = WAN_STACK["keypoints_body"]
        body_ok = ok[:, body].clone()
        if not draw_head:
            body_ok[:, list(HEAD_POINTS)] = False
        _add_body(prims, xy[:, body], body_ok, body_stick_width)
    if hand_stick_width > 0:
        for key, base in (("keypoints_left_hand", _O_LHAND), ("keypoints_right_hand", _O_RHAND)):
            s = WAN_STACK[key]
            _add_hand(prims, xy[:, s], ok[:, s], hand_stick_width, base)
    if face_radius > 0:
        s = WAN_STACK["keypoints_face"]
        f, j = ok[:, s].nonzero(as_tuple=True)
        prims.circles(_trunc_int(xy[:, s][f, j]), face_radius, f, _O_FACE + j)
    shapes = prims.build()
    px = rasterize(shapes.segments, shapes.count, width)
    frame = shapes.frame.index_select(0, px.owner)
    return (frame * height + px.y) * width + px.x, shapes.order.index_select(0, px.owner)


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
            paint(out[t0:t1], index, order, palette, scratch)  # contiguous slice
            continue
        frames = canvas[: t1 - t0]
        paint(frames, index, order, palette_u8 if u8 else palette_u8.float(), scratch)
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
