"""Tests for wanprep_torch.draw (pose rendering equivalent to the reference "Draw ViT Pose").

Besides property checks (colours, widths, thresholds, framing), the renderer is compared
pixel for pixel with a small pure-Python emulation of the OpenCV primitives the reference
uses (ellipse2Poly + fillConvexPoly, filled circle, 1-px and thick lines), written from
OpenCV's documented integer algorithms. OpenCV itself is not a dependency.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wanprep_torch.draw import (
    BODY_COLORS,
    HAND_COLORS,
    HAND_EDGES,
    HEAD_POINTS,
    LIMB_COLORS,
    LIMBS,
    auto_hand_stick_width,
    auto_stick_width,
    draw_pose,
    fit_box,
)
from wanprep_torch.raster import Primitives, paint, rasterize

# --------------------------------------------------------------------------------------
# Fixtures: metas from pixel coordinates
# --------------------------------------------------------------------------------------

# A T-pose-ish skeleton on a 832 x 480 canvas (pixel coordinates), joints well apart.
BODY_PX = {
    0: (416, 80), 1: (416, 140), 2: (356, 140), 3: (300, 170), 4: (250, 200),
    5: (476, 140), 6: (532, 170), 7: (582, 200), 8: (386, 270), 9: (376, 350),
    10: (366, 430), 11: (446, 270), 12: (456, 350), 13: (466, 430), 14: (400, 66),
    15: (432, 66), 16: (380, 80), 17: (452, 80), 18: (500, 440), 19: (332, 440),
}


def _hand_px(wx: float, wy: float, direction: float) -> np.ndarray:
    """21 hand points fanning out from a wrist; fingers 16 px long per bone."""
    pts = [(wx, wy)]
    for f in range(5):
        ang = direction + (f - 2) * 0.45
        for j in range(1, 5):
            pts.append((wx + 16 * j * math.cos(ang), wy + 16 * j * math.sin(ang)))
    return np.array(pts, dtype=np.float64)


def make_meta(
    width: int = 832,
    height: int = 480,
    body: dict | None = None,
    body_score: float | np.ndarray = 0.9,
    lhand: np.ndarray | None = None,
    rhand: np.ndarray | None = None,
    hand_score: float | np.ndarray = 0.9,
    face: np.ndarray | None = None,
    scale: float = 1.0,
) -> dict:
    """Wan meta (normalised keypoints) from pixel coordinates laid out for 832 x 480.

    Coordinates are scaled to the (width, height) canvas times ``scale``; body points
    missing from ``body`` get score 0.
    """
    s = np.array([width / 832, height / 480]) * scale
    body = BODY_PX if body is None else body
    idx = list(body)

    def part(px: np.ndarray | None, score, n: int) -> np.ndarray:
        out = np.zeros((n, 3))
        if px is not None:
            out[:, :2] = np.asarray(px, float) * s / [width, height]
            out[:, 2] = score
        return out

    b = np.zeros((20, 3))
    b[idx, :2] = np.array([body[i] for i in idx], float) * s / [width, height]
    b[idx, 2] = np.broadcast_to(body_score, (20,))[idx]
    return {
        "width": width,
        "height": height,
        "keypoints_body": b,
        "keypoints_left_hand": part(lhand, hand_score, 21),
        "keypoints_right_hand": part(rhand, hand_score, 21),
        "keypoints_face": part(face, 0.9, 69),
    }


def resize_u8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W, 3) float [0, 1] -> bilinear (half-pixel) resize on uint8, back to float."""
    u8 = torch.round(img * 255).to(torch.uint8).reshape(-1, *img.shape[-3:]).permute(0, 3, 1, 2)
    out = F.interpolate(u8, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    return (out / 255).reshape(*img.shape[:-3], *size, 3)


def resize_float(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    flat = img.reshape(-1, *img.shape[-3:]).permute(0, 3, 1, 2)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(*img.shape[:-3], *size, 3)


def rgb(img: torch.Tensor, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in torch.round(img[y, x] * 255).tolist())


def painted(img: torch.Tensor) -> np.ndarray:
    return (img > 0).any(-1).numpy()


def seg_dist(px: np.ndarray, a, b) -> np.ndarray:
    """Distance of points (N, 2) to segment a-b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((px - a) @ d) / max(d @ d, 1e-12), 0, 1)
    return np.linalg.norm(px - (a + t[:, None] * d), axis=1)


# --------------------------------------------------------------------------------------
# Pure-Python emulation of the OpenCV primitives used by the reference
# --------------------------------------------------------------------------------------

_ONE = 1 << 16
_SIN = [float(np.float32(round(math.sin(math.radians(i)), 7))) for i in range(451)]


def _cdiv(a: int, b: int) -> int:  # C integer division (truncates toward zero)
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cv_clip_line(w, h, p1, p2):
    """clipLine: returns clipped end points, or None when the line misses the image."""
    (x1, y1), (x2, y2) = p1, p2
    right, bottom = w - 1, h - 1

    def code(x, y):
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += _cdiv((a - y1) * (x2 - x1), y2 - y1)
            y1, c1 = a, (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += _cdiv((a - y2) * (x2 - x1), y2 - y1)
            y2, c2 = a, (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += _cdiv((a - x1) * (y2 - y1), x2 - x1)
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += _cdiv((a - x2) * (y2 - y1), x2 - x1)
                x2, c2 = a, 0
    return ((x1, y1), (x2, y2)) if (c1 | c2) == 0 else None


def _cv_line(p0, p1, w, h):
    """LineIterator, 8-connected, left_to_right (clipped to the w x h image first)."""
    if not (0 <= p0[0] < w and 0 <= p1[0] < w and 0 <= p0[1] < h and 0 <= p1[1] < h):
        clipped = _cv_clip_line(w, h, p0, p1)
        if clipped is None:
            return []
        p0, p1 = clipped
    (x1, y1), (x2, y2) = p0, p1
    dx, dy = x2 - x1, y2 - y1
    if dx < 0:
        x1, y1, dx, dy = x2, y2, -dx, -dy
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    steep = dy > dx
    if steep:
        dx, dy = dy, dx
    err, plus, minus = dx - 2 * dy, 2 * dx, -2 * dy
    x, y, out = x1, y1, []
    for _ in range(dx + 1):
        out.append((x, y))
        step = err < 0
        err += minus + (plus if step else 0)
        if steep:
            y, x = y + sy, x + (1 if step else 0)
        else:
            x, y = x + 1, y + (sy if step else 0)
    return out


def _cv_line2(p1, p2, w, h):
    """Line2: sub-pixel (16.16) line used for thick-line outlines."""
    clipped = _cv_clip_line(w << 16, h << 16, p1, p2)
    if clipped is None:
        return []
    (x1, y1), (x2, y2) = clipped
    dx, dy = x2 - x1, y2 - y1
    ax, ay = abs(dx), abs(dy)
    if ax > ay:
        if dx < 0:
            x1, y1, x2, y2, dy = x2, y2, x1, y1, -dy
        x_step, y_step, ecount = _ONE, _cdiv(dy << 16, ax | 1), (x2 - x1) >> 16
    else:
        if dy < 0:
            x1, y1, x2, y2, dx = x2, y2, x1, y1, -dx
        x_step, y_step, ecount = _cdiv(dx << 16, ay | 1), _ONE, (y2 - y1) >> 16
    x1, y1 = x1 + _ONE // 2, y1 + _ONE // 2
    out = [((x2 + _ONE // 2) >> 16, (y2 + _ONE // 2) >> 16)]
    if ax > ay:
        x1 >>= 16
        while ecount >= 0:
            out.append((x1, y1 >> 16))
            x1, y1, ecount = x1 + 1, y1 + y_step, ecount - 1
    else:
        y1 >>= 16
        while ecount >= 0:
            out.append((x1 >> 16, y1))
            x1, y1, ecount = x1 + x_step, y1 + 1, ecount - 1
    return out


def _put(img, pts, color):
    h, w = img.shape[:2]
    for x, y in pts:
        if 0 <= x < w and 0 <= y < h:
            img[y, x] = color


def _cv_fill_convex_poly(img, v, color, shift=0):
    """FillConvexPoly with LINE_8 (outline lines + scan-line spans)."""
    h, w = img.shape[:2]
    n = len(v)
    delta = (1 << shift) >> 1
    p0 = v[-1]
    for p in v:
        if shift == 0:
            _put(img, _cv_line(p0, p, w, h), color)
        else:
            _put(img, _cv_line2(p0, p, w, h), color)
        p0 = p
    xs, ys = [p[0] for p in v], [p[1] for p in v]
    imin, ymin = 0, ys[0]
    for i, yy in enumerate(ys):
        if yy < ymin:
            imin, ymin = i, yy
    xmin, xmax = (min(xs) + delta) >> shift, (max(xs) + delta) >> shift
    ymin, ymax = (ymin + delta) >> shift, (max(ys) + delta) >> shift
    if n < 3 or xmax < 0 or ymax < 0 or xmin >= w or ymin >= h:
        return
    ymax = min(ymax, h - 1)
    edges = n
    e = [[imin, 1, -_ONE, 0, ymin], [imin, n - 1, -_ONE, 0, ymin]]  # idx, di, x, dx, ye
    y = ymin
    while True:
        for ed in e:
            if y >= ed[4]:
                idx0, di = ed[0], ed[1]
                idx = (idx0 + di) % n
                while True:
                    go = edges > 0
                    edges -= 1
                    if not go:
                        break
                    ty = (v[idx][1] + delta) >> shift
                    if ty > y:
                        xs0, xe = v[idx0][0] << (16 - shift), v[idx][0] << (16 - shift)
                        ed[4] = ty
                        ed[3] = _cdiv((xe - xs0) * 2 + (ty - y), 2 * (ty - y))
                        ed[2] = xs0
                        ed[0] = idx
                        break
                    idx0, idx = idx, (idx + di) % n
        if edges < 0:
            break
        if y >= 0:
            left, right = (1, 0) if e[0][2] > e[1][2] else (0, 1)
            xx1, xx2 = (e[left][2] + _ONE // 2) >> 16, (e[right][2] + _ONE // 2) >> 16
            if xx2 >= 0 and xx1 < w:
                img[y, max(xx1, 0) : min(xx2, w - 1) + 1] = color
        e[0][2] += e[0][3]
        e[1][2] += e[1][3]
        y += 1
        if y > ymax:
            break


def _cv_circle(img, c, radius, color):
    """Filled Circle (midpoint spans)."""
    h, w = img.shape[:2]
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        for yy, x0, x1 in (
            (c[1] - dy, c[0] - dx, c[0] + dx), (c[1] + dy, c[0] - dx, c[0] + dx),
            (c[1] - dx, c[0] - dy, c[0] + dy), (c[1] + dx, c[0] - dy, c[0] + dy),
        ):
            if 0 <= yy < h and x1 >= 0 and x0 < w:
                img[yy, max(x0, 0) : min(x1, w - 1) + 1] = color
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2


def _cv_ellipse2poly(c, axes, angle):
    while angle < 0:
        angle += 360
    while angle > 360:
        angle -= 360
    alpha, beta = _SIN[450 - angle], _SIN[angle]
    pts, prev = [], None
    for i in range(361):
        x, y = axes[0] * _SIN[450 - i], axes[1] * _SIN[i]
        pt = (int(np.rint(c[0] + x * alpha - y * beta)), int(np.rint(c[1] + x * beta + y * alpha)))
        if pt != prev:
            pts.append(pt)
            prev = pt
    return [c, c] if len(pts) == 1 else pts


def _cv_line_thick(img, p0, p1, color, t):
    """cv2.line(..., thickness=t) with LINE_8."""
    if t <= 1:
        _put(img, _cv_line(p0, p1, img.shape[1], img.shape[0]), color)
        return
    # The segment is first clipped to the image grown by t on every side (a line wholly
    # outside draws nothing), as OpenCV does (checked against cv2 on lines crossing the border).
    grown = (img.shape[1] + 2 * t, img.shape[0] + 2 * t)
    clipped = _cv_clip_line(*grown, (p0[0] + t, p0[1] + t), (p1[0] + t, p1[1] + t))
    if clipped is None:
        return
    p0, p1 = [(x - t, y - t) for x, y in clipped]
    q0, q1 = (p0[0] << 16, p0[1] << 16), (p1[0] << 16, p1[1] << 16)
    dx, dy = (q0[0] - q1[0]) / _ONE, (q1[1] - q0[1]) / _ONE
    r2 = dx * dx + dy * dy
    odd, th = t & 1, t << 15
    if r2 > 2.2e-16:
        r = (th + odd * _ONE * 0.5) / math.sqrt(r2)
        dpx, dpy = int(np.rint(dy * r)), int(np.rint(dx * r))
        quad = [(q0[0] + dpx, q0[1] + dpy), (q0[0] - dpx, q0[1] - dpy)]
        quad += [(q1[0] - dpx, q1[1] - dpy), (q1[0] + dpx, q1[1] + dpy)]
        _cv_fill_convex_poly(img, quad, color, shift=16)
    for q in (q0, q1):
        _cv_circle(img, ((q[0] + _ONE // 2) >> 16, (q[1] + _ONE // 2) >> 16), (th + _ONE // 2) >> 16, color)


def reference_draw(meta: dict, body_w: int, hand_w: int, thr: float = 0.5, draw_head: bool = True) -> np.ndarray:
    """The reference draw_aapose_new / draw_handpose_new on a uint8 canvas, emulated."""
    h, w = meta["height"], meta["width"]
    img = np.zeros((h, w, 3), np.uint8)
    body = np.asarray(meta["keypoints_body"], float) * [w, h, 1]
    if not draw_head:
        body[list(HEAD_POINTS), 2] = 0
    if body_w > 0:
        for i, (a, b) in enumerate(LIMBS):
            k1, k2 = body[a], body[b]
            if k1[2] < thr or k2[2] < thr:
                continue
            mx, my = (k1[0] + k2[0]) / 2, (k1[1] + k2[1]) / 2
            length = ((k1[0] - k2[0]) ** 2 + (k1[1] - k2[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(k1[1] - k2[1], k1[0] - k2[0]))
            poly = _cv_ellipse2poly((int(mx), int(my)), (int(length / 2), body_w), int(angle))
            _cv_fill_convex_poly(img, poly, LIMB_COLORS[i])
        for j in range(20):
            if body[j, 2] >= thr:
                _cv_circle(img, (int(body[j, 0]), int(body[j, 1])), body_w, BODY_COLORS[j])
    if hand_w > 0:
        for key in ("keypoints_left_hand", "keypoints_right_hand"):
            kp = np.asarray(meta[key], float) * [w, h, 1]
            for i, (a, b) in enumerate(HAND_EDGES):
                if kp[a, 2] < thr or kp[b, 2] < thr:
                    continue
                p0, p1 = (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1]))
                if min(p0 + p1) > 0.01:
                    _cv_line_thick(img, p0, p1, HAND_COLORS[i], hand_w)
            for j in range(21):
                p = (int(kp[j, 0]), int(kp[j, 1]))
                if kp[j, 2] >= thr and min(p) > 0.01:
                    _cv_circle(img, p, hand_w, (0, 0, 255))
    return img


def random_meta(rng: np.random.Generator, width: int, height: int) -> dict:
    """BODY_PX skeleton with jitter, random scores and both hands, scaled to the canvas."""
    return make_meta(
        width,
        height,
        body={i: (x + rng.normal(0, 12), y + rng.normal(0, 12)) for i, (x, y) in BODY_PX.items()},
        body_score=rng.uniform(0.3, 1.0, 20),
        lhand=_hand_px(*BODY_PX[7], rng.uniform(-1, 1)) + rng.normal(0, 2, (21, 2)),
        rhand=_hand_px(*BODY_PX[4], math.pi + rng.uniform(-1, 1)) + rng.normal(0, 2, (21, 2)),
        hand_score=rng.uniform(0.3, 1.0, 21),
    )


def to_u8(img: torch.Tensor) -> np.ndarray:
    return torch.round(img * 255).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_style_constants():
    assert len(LIMBS) == 19 and len(BODY_COLORS) == 20 and len(HAND_EDGES) == 20
    # The reference zips 19 limbs with 20 colours: limb i takes colour i, so the feet limbs
    # (13, 18), (10, 19) get ramp colour 17 and (200, 200, 0); joints 18, 19 get the foot colours.
    assert LIMB_COLORS[0] == (153, 0, 0) and LIMB_COLORS[17] == (153, 0, 51) and LIMB_COLORS[18] == (120, 120, 0)
    assert HAND_EDGES[:5] == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5)) and HAND_EDGES[-1] == (19, 20)
    assert HAND_COLORS[0] == (255, 0, 0) and HAND_COLORS[10] == (0, 255, 255)
    assert all(max(c) == 255 and min(c) == 0 for c in HAND_COLORS)
    sizes = [((480, 832), 1, 1), ((720, 1280), 2, 1), ((1080, 1920), 4, 2), ((100, 90), 1, 1), ((1600, 1600), 7, 3)]
    for (h, w), bw, hw in sizes:
        assert auto_stick_width(h, w) == bw and auto_hand_stick_width(h, w) == hw


def test_matches_reference_emulation_exactly():
    # Limbs (ellipse polygons), joints (discs) and 1-px hand bones: pixel-exact.
    rng = np.random.default_rng(0)
    for width, height, bw in [(832, 480, -1), (640, 640, 3), (300, 500, 5)]:
        metas = [random_meta(rng, width, height) for _ in range(3)]
        out = draw_pose(metas, body_stick_width=bw, hand_stick_width=1, chunk=2)
        w_eff = auto_stick_width(height, width) if bw == -1 else bw
        for t, m in enumerate(metas):
            ref = reference_draw(m, w_eff, 1)
            np.testing.assert_array_equal(to_u8(out[t]), ref)


@pytest.mark.parametrize("hand_w", [2, 3, 4])
def test_thick_hand_bones_match_reference_emulation(hand_w):
    # Thick lines: sub-pixel rectangle (Line2 outline + scan-line fill) and round caps.
    rng = np.random.default_rng(hand_w)
    metas = [random_meta(rng, 832, 480) for _ in range(2)]
    out = draw_pose(metas, body_stick_width=hand_w + 1, hand_stick_width=hand_w)
    for t, m in enumerate(metas):
        np.testing.assert_array_equal(to_u8(out[t]), reference_draw(m, hand_w + 1, hand_w))


def test_shapes_crossing_the_border_match_reference_emulation():
    # Lines leaving the canvas are clipped before they are walked (cv2.clipLine).
    rng = np.random.default_rng(7)
    metas = []
    for _ in range(6):
        m = random_meta(rng, 200, 160)
        for k in ("keypoints_body", "keypoints_left_hand", "keypoints_right_hand"):
            m[k][:, :2] = m[k][:, :2] * 2.2 - 0.6
        metas.append(m)
    for bw, hw in [(1, 1), (3, 2), (2, 3)]:
        out = draw_pose(metas, body_stick_width=bw, hand_stick_width=hw)
        for t, m in enumerate(metas):
            np.testing.assert_array_equal(to_u8(out[t]), reference_draw(m, bw, hw))


def test_limb_midpoints_have_60_percent_colour():
    # One frame per limb with only its two joints visible: its midpoint carries the
    # limb colour and nothing but the limb and its two joints is painted.
    metas = []
    for a, b in LIMBS:
        score = np.zeros(20)
        score[[a, b]] = 0.9
        metas.append(make_meta(body_score=score))
    out = draw_pose(metas)
    for i, (a, b) in enumerate(LIMBS):
        (xa, ya), (xb, yb) = BODY_PX[a], BODY_PX[b]
        assert rgb(out[i], int((xa + xb) / 2), int((ya + yb) / 2)) == LIMB_COLORS[i]
        u8 = to_u8(out[i]).reshape(-1, 3).astype(np.int64)
        colours = {(c >> 16, (c >> 8) & 255, c & 255) for c in np.unique(u8 @ [1 << 16, 1 << 8, 1]).tolist()}
        assert colours <= {(0, 0, 0), LIMB_COLORS[i], BODY_COLORS[a], BODY_COLORS[b]}
    # Full skeleton: the limbs' midpoints still show their colours (nothing overlaps them).
    full = draw_pose([make_meta()])[0]
    for i, (a, b) in enumerate(LIMBS):
        (xa, ya), (xb, yb) = BODY_PX[a], BODY_PX[b]
        assert rgb(full, int((xa + xb) / 2), int((ya + yb) / 2)) == LIMB_COLORS[i]


def test_joints_have_full_colour():
    for bw in (-1, 3):
        img = draw_pose([make_meta()], body_stick_width=bw)[0]
        for j, (x, y) in BODY_PX.items():
            assert rgb(img, x, y) == BODY_COLORS[j]


def test_nothing_far_from_skeleton_and_limbs_are_continuous():
    for bw in (-1, 2, 6):
        lh, rh = _hand_px(*BODY_PX[7], 0.3), _hand_px(*BODY_PX[4], math.pi - 0.3)
        img = draw_pose([make_meta(lhand=lh, rhand=rh)], body_stick_width=bw)[0]
        w = auto_stick_width(480, 832) if bw == -1 else bw
        segs = [(BODY_PX[a], BODY_PX[b]) for a, b in LIMBS]
        segs += [(tuple(h[a]), tuple(h[b])) for h in (lh, rh) for a, b in HAND_EDGES]
        ys, xs = np.nonzero(painted(img))
        pts = np.stack([xs, ys], 1).astype(float)
        dist = np.min([seg_dist(pts, a, b) for a, b in segs], axis=0)
        assert dist.max() <= 3 * w + 1
        # And every limb is painted along its whole length (no gaps).
        mask = painted(img)
        for a, b in segs[: len(LIMBS)]:
            for t in np.linspace(0.05, 0.95, 40):
                x, y = (1 - t) * np.array(a) + t * np.array(b)
                assert mask[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2].any()


@pytest.mark.parametrize(
    "size,bw,expected",
    [((480, 832), -1, 1), ((720, 1280), -1, 2), ((1080, 1920), -1, 4), ((1600, 1600), -1, 7), ((480, 832), 5, 5)],
)
def test_body_width_rule(size, bw, expected):
    h, w = size
    score = np.zeros(20)
    score[[1, 2]] = 0.9  # neck - right shoulder: a horizontal limb
    body = {1: (500, 200), 2: (300, 200)}
    img = draw_pose([make_meta(w, h, body=body, body_score=score)], body_stick_width=bw)[0]
    mask = painted(img)
    sx, sy = w / 832, h / 480
    mx, my = int(400 * sx), int(200 * sy)
    col = np.nonzero(mask[:, mx])[0]
    # Painted perpendicular extent at the midpoint: 2 * stick width + 1 rows.
    assert len(col) == 2 * expected + 1 and col.min() == my - expected
    # The joint disc has radius = stick width too.
    jx, jy = int(300 * sx), int(200 * sy)
    row = np.nonzero(mask[jy - expected - 2 : jy + expected + 3, jx])[0]
    assert len(row) == 2 * expected + 1


@pytest.mark.parametrize("hand_w,rows", [(1, 1), (2, 3), (3, 5), (4, 5)])
def test_hand_bone_thickness(hand_w, rows):
    # cv2.line: 1 px for thickness 1; rectangle of half width t/2 (+0.5 if odd) otherwise.
    hand = np.zeros((21, 2))
    hand[0], hand[1] = (300, 200), (400, 200)
    score = np.zeros(21)
    score[[0, 1]] = 0.9
    img = draw_pose([make_meta(body_score=0.0, lhand=hand, hand_score=score)], hand_stick_width=hand_w)[0]
    col = np.nonzero(painted(img)[:, 350])[0]
    assert len(col) == rows
    assert rgb(img, 350, 200) == HAND_COLORS[0]


def test_low_scores_and_threshold():
    score = np.full(20, 0.9)
    score[3] = 0.3  # right elbow
    img = draw_pose([make_meta(body_score=score)])[0]
    x, y = BODY_PX[3]
    assert rgb(img, x, y) == (0, 0, 0)
    for a, b in ((2, 3), (3, 4)):  # both limbs through the elbow vanish
        (xa, ya), (xb, yb) = BODY_PX[a], BODY_PX[b]
        assert rgb(img, int((xa + xb) / 2), int((ya + yb) / 2)) == (0, 0, 0)
    assert rgb(img, *BODY_PX[4]) == BODY_COLORS[4]  # the wrist itself is still drawn
    assert rgb(img, 386, 140) == LIMB_COLORS[0]
    # Reference rule: drawn when score >= threshold.
    score[3] = 0.5
    assert rgb(draw_pose([make_meta(body_score=score)])[0], x, y) == BODY_COLORS[3]
    assert rgb(draw_pose([make_meta(body_score=score)], score_threshold=0.6)[0], x, y) == (0, 0, 0)
    # Non-finite keypoints are ignored.
    meta = make_meta()
    meta["keypoints_body"][5, 0] = np.nan
    img = draw_pose([meta])[0]
    assert rgb(img, *BODY_PX[5]) == (0, 0, 0) and rgb(img, *BODY_PX[2]) == BODY_COLORS[2]


def test_draw_head_false_matches_reference_emulation():
    rng = np.random.default_rng(11)
    metas = [random_meta(rng, 832, 480) for _ in range(2)]
    out = draw_pose(metas, draw_head=False)
    for t, m in enumerate(metas):
        np.testing.assert_array_equal(to_u8(out[t]), reference_draw(m, 1, 1, draw_head=False))


def test_paint_last_drawn_wins():
    canvas = torch.zeros(1, 2, 3, 3)
    palette = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    index = torch.tensor([0, 0, 4, 4, 4, 5])
    order = torch.tensor([2, 0, 1, 2, 0, 1])
    scratch = torch.zeros(6, dtype=torch.uint8)
    paint(canvas, index, order, palette, scratch)
    flat = canvas.view(-1, 3)
    assert flat[0].tolist() == [0, 0, 1] and flat[4].tolist() == [0, 0, 1] and flat[5].tolist() == [0, 1, 0]
    assert flat[[1, 2, 3]].abs().sum() == 0 and scratch.sum() == 0  # scratch left clean


def test_draw_head_false_removes_head_only():
    with_head = draw_pose([make_meta()])[0]
    no_head = draw_pose([make_meta()], draw_head=False)[0]
    for j in HEAD_POINTS:
        assert rgb(no_head, *BODY_PX[j]) == (0, 0, 0)
    # Nothing above the neck joint's disc remains.
    assert not painted(no_head)[: BODY_PX[1][1] - 2].any()
    assert painted(with_head)[: BODY_PX[1][1] - 2].any()
    # Below the head both renders agree.
    np.testing.assert_array_equal(no_head[BODY_PX[1][1] + 3 :].numpy(), with_head[BODY_PX[1][1] + 3 :].numpy())


def test_hands_colours_blue_joints_and_switches():
    lh = _hand_px(650, 300, 0.0)
    rh = _hand_px(150, 300, math.pi)
    meta = make_meta(body_score=0.0, lhand=lh, rhand=rh)
    img = draw_pose([meta], hand_stick_width=2)[0]
    for hand in (lh, rh):
        for j in range(21):
            assert rgb(img, int(hand[j, 0]), int(hand[j, 1])) == (0, 0, 255)
        for i, (a, b) in enumerate(HAND_EDGES):
            if a == 0:
                continue  # wrist bones overlap near the wrist; check the finger bones
            x, y = (hand[a] + hand[b]) / 2
            assert rgb(img, int(x), int(y)) == HAND_COLORS[i], i
    assert not painted(draw_pose([meta], hand_stick_width=0)[0]).any()
    assert not painted(draw_pose([meta], draw_hands=False)[0]).any()
    # Hand points whose pixel coordinate truncates to 0 are skipped (reference eps test).
    edge = lh.copy()
    edge[:, 0] -= edge[:, 0].min() - 0.5
    img = draw_pose([make_meta(body_score=0.0, lhand=edge)], hand_stick_width=1)[0]
    assert rgb(img, 0, int(edge[0, 1])) == (0, 0, 0)


def test_body_switches_and_face():
    lh = _hand_px(*BODY_PX[7], 0.3)
    meta = make_meta(lhand=lh, face=np.array([[400.0, 100.0]] * 69))
    hands_only = draw_pose([meta], draw_body=False)[0]
    assert rgb(hands_only, *BODY_PX[1]) == (0, 0, 0) and rgb(hands_only, int(lh[8, 0]), int(lh[8, 1])) == (0, 0, 255)
    np.testing.assert_array_equal(draw_pose([meta], body_stick_width=0)[0].numpy(), hands_only.numpy())
    assert rgb(draw_pose([meta])[0], 400, 100) == (0, 0, 0)
    assert rgb(draw_pose([meta], draw_face=True)[0], 400, 100) == (255, 255, 255)


def test_inputs_batching_and_degenerate_frames():
    rng = np.random.default_rng(3)
    metas = [random_meta(rng, 320, 240) for _ in range(5)]
    metas[2] = make_meta(320, 240, body_score=0.0)  # an empty frame
    metas[3] = make_meta(320, 240, scale=4.0)  # mostly off-canvas
    ref = draw_pose(metas, chunk=32)
    assert ref.shape == (5, 240, 320, 3) and ref.dtype == torch.float32
    assert ref.min() >= 0 and ref.max() <= 1
    assert not painted(ref[2]).any()
    torch.testing.assert_close(draw_pose(metas, chunk=1), ref, rtol=0, atol=0)
    torch.testing.assert_close(draw_pose(metas, chunk=3), ref, rtol=0, atol=0)
    tensors = [
        {k: torch.as_tensor(v, dtype=torch.float32) if isinstance(v, np.ndarray) else v for k, v in m.items()}
        for m in metas
    ]
    torch.testing.assert_close(draw_pose(tensors), ref, rtol=0, atol=0)


def test_pad_mode_shape_and_placement():
    meta = make_meta()
    native = draw_pose([meta])[0]
    out = draw_pose([meta], out_size=(512, 512), mode="pad")[0]
    assert out.shape == (512, 512, 3)
    top, left, nh, nw = fit_box(480, 832, 512, 512, "pad")
    assert (left, nw) == (0, 512) and nh == int(512 * 480 / 832) and top == (512 - nh) // 2
    assert not painted(out)[:top].any() and not painted(out)[top + nh :].any()
    # Resampled like the reference: bilinear on the uint8 image (within 1/255 of float).
    torch.testing.assert_close(out[top : top + nh], resize_u8(native, (nh, nw)), rtol=0, atol=1e-6)
    assert (out[top : top + nh] - resize_float(native, (nh, nw))).abs().max() <= 1 / 255 + 1e-6
    # Same aspect ratio, other size: no padding; native size: identical to the raw canvas.
    assert draw_pose([meta], out_size=(240, 416))[0].shape == (240, 416, 3)
    torch.testing.assert_close(draw_pose([meta], out_size=(480, 832))[0], native)
    # Tall output: the image is centred horizontally.
    top, left, nh, nw = fit_box(480, 832, 832, 480, "pad")
    tall = draw_pose([meta], out_size=(832, 480))[0]
    assert tall.shape == (832, 480, 3) and not painted(tall)[:top].any() and painted(tall)[top : top + nh].any()


def test_crop_mode_uses_first_frame_bounds():
    m0 = make_meta()
    shifted = {i: (x + 40, y + 10) for i, (x, y) in BODY_PX.items()}
    m1 = make_meta(body=shifted)
    native = draw_pose([m0, m1])
    mask0 = painted(native[0])
    ys, xs = np.nonzero(mask0)
    pad = 16
    y0, y1 = ys.min() - pad, ys.max() + 1 + pad  # well inside the canvas here
    x0, x1 = xs.min() - pad, xs.max() + 1 + pad
    assert y0 >= 0 and x0 >= 0 and y1 <= 480 and x1 <= 832
    out = draw_pose([m0, m1], out_size=(256, 256), mode="crop", retarget_padding=pad)
    assert out.shape == (2, 256, 256, 3)
    top, left, nh, nw = fit_box(y1 - y0, x1 - x0, 256, 256, "crop")
    assert nh == 256 and nw == int(256 * (x1 - x0) / (y1 - y0))
    for t in range(2):  # both frames use frame 0's window
        expect = resize_u8(native[t, y0:y1, x0:x1], (nh, nw))
        torch.testing.assert_close(out[t, top : top + nh, left : left + nw], expect, rtol=0, atol=1e-6)
        assert not painted(out[t])[:, :left].any() and not painted(out[t])[:, left + nw :].any()
    # The skeleton fills the output up to the (scaled) padding.
    ys, xs = np.nonzero(painted(out[0]))
    scale = nh / (y1 - y0)
    assert abs(ys.min() - pad * scale) <= 2 and abs(255 - ys.max() - pad * scale) <= 2
    # Empty first frame: the whole canvas is the window.
    empty = make_meta(body_score=0.0)
    out = draw_pose([empty, m0], out_size=(240, 416), mode="crop")
    assert not painted(out[0]).any() and painted(out[1]).any()


def test_crop_window_past_the_canvas_is_black():
    # The figure touches the canvas's top-left corner: the padded window reaches past it, and
    # that part is black, as the reference pads (clipping would enlarge the figure).
    body = {i: (x - 230, y - 50) for i, (x, y) in BODY_PX.items()}
    m0 = make_meta(body=body)
    native = draw_pose([m0])[0]
    ys, xs = np.nonzero(painted(native))
    pad = 40
    y0, x0 = ys.min() - pad, xs.min() - pad
    y1, x1 = ys.max() + 1 + pad, xs.max() + 1 + pad
    assert y0 < 0 and x0 < 0 and y1 <= 480 and x1 <= 832  # past the top and left edges only
    wh, ww = y1 - y0, x1 - x0
    out = draw_pose([m0], out_size=(wh, ww), mode="crop", retarget_padding=pad)[0]
    # Same size as the window: no resampling; the canvas part sits at (-y0, -x0).
    assert out.shape == (wh, ww, 3)
    assert not painted(out)[:pad].any() and not painted(out)[:, :pad].any()
    torch.testing.assert_close(out[-y0:, -x0:], native[:y1, :x1], rtol=0, atol=0)
    # Resized into another frame: the figure stays smaller than with a clipped window.
    small = draw_pose([m0], out_size=(200, 200), mode="crop", retarget_padding=pad)[0]
    ys2, _ = np.nonzero(painted(small))
    scale, clipped_scale = min(200 / wh, 200 / ww), min(200 / y1, 200 / x1)
    fig = ys.max() - ys.min()
    assert ys2.max() - ys2.min() <= fig * scale + 2 < fig * clipped_scale


def test_rejects_bad_mode():
    with pytest.raises(ValueError):
        draw_pose([make_meta()], mode="stretch")


@pytest.mark.gpu
def test_cuda_matches_cpu():
    from conftest import cuda_unavailable

    if not torch.cuda.is_available():
        cuda_unavailable("torch sees no CUDA device")
    rng = np.random.default_rng(5)
    metas = [random_meta(rng, 832, 480) for _ in range(4)]
    for kw in ({}, {"hand_stick_width": 3}, {"out_size": (512, 512)}, {"out_size": (256, 320), "mode": "crop"}):
        cpu = draw_pose(metas, **kw)
        gpu = draw_pose(metas, device="cuda", **kw)
        assert gpu.device.type == "cuda"
        if "out_size" in kw:  # different bilinear kernels (uint8 vs float): allow 1/255
            assert (gpu.cpu() - cpu).abs().max() <= 1 / 255 + 1e-6
        else:
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)


def test_thick_lines_match_reference_emulation():
    """Thick lines alone, pixel for pixel: caps that touch a row apart from the quad (OpenCV
    fills them separately: no bridge across the gap), and lines clipped at the border."""
    rng = np.random.default_rng(3)
    cases = [((13, 24), (29, 16), 7)]  # the cap's top row meets the quad's apart from it
    for _ in range(60):
        ends = rng.integers(-15, 95, 4).tolist()
        cases.append(((ends[0], ends[1]), (ends[2], ends[3]), int(rng.integers(2, 12))))
    h, w = 60, 80
    for p0, p1, t in cases:
        want = np.zeros((h, w, 3), np.uint8)
        _cv_line_thick(want, p0, p1, (255, 255, 255), t)
        prims = Primitives(h, w, torch.device("cpu"))
        one = torch.tensor([0])
        prims.thick_lines(torch.tensor([p0], dtype=torch.float64), torch.tensor([p1], dtype=torch.float64), t, one, one)
        shapes = prims.build()
        got = np.zeros((h, w), bool)
        px = rasterize(shapes.segments, shapes.count, w)
        got[px.y.numpy(), px.x.numpy()] = True
        np.testing.assert_array_equal(got, want[..., 0] > 0, err_msg=f"{p0} {p1} t={t}")


def test_out_and_on_chunk():
    """Drawing into a caller's zeros gives the same images; on_chunk sees 0, each chunk's end,
    and an exception raised there stops the drawing (the node's interrupt)."""
    rng = np.random.default_rng(11)
    metas = [random_meta(rng, 320, 200) for _ in range(5)]
    for kw in ({}, {"out_size": (150, 160)}, {"out_size": (100, 120), "mode": "crop"}):
        want = draw_pose(metas, **kw)
        out = torch.zeros_like(want)
        seen = []
        got = draw_pose(metas, chunk=2, out=out, on_chunk=seen.append, **kw)
        assert got is out and torch.equal(out, want), kw
        assert seen == [0, 2, 4, 5]
    with pytest.raises(ValueError, match="out must be float32"):
        draw_pose(metas, out=torch.zeros(5, 10, 10, 3))

    def stop(done):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        draw_pose(metas, chunk=2, on_chunk=stop)
