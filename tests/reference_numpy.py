"""Independent NumPy references for the pure tensor stages of ``wanprep_torch``.

Written from the specification (mmpose's "unbiased" DARK decoding, OpenCV's resize and
warpAffine conventions, the Wan layout rules), deliberately simple and loop-based, so that the
torch implementations are checked against a second, literal reading of the rules rather than
against themselves. Nothing here imports ``wanprep_torch``.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------
# 1. Heatmap decoding (argmax + DARK)
# ----------------------------------------------------------------------------------------------


def cv_gaussian_kernel(ksize: int = 11) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, 0) for ksize > 7 (sigma from the size), float64, sums to 1."""
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """preds (N, K, 2) = (idx % W, idx // W) of the first argmax, -1 where max <= 0;
    maxvals (N, K)."""
    n, k, h, w = heatmaps.shape
    preds = np.zeros((n, k, 2), dtype=np.float32)
    maxvals = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            flat = heatmaps[i, j].reshape(-1)
            idx = int(np.argmax(flat))  # first occurrence
            mv = flat[idx]
            maxvals[i, j] = mv
            if mv > 0:
                preds[i, j] = (idx % w, idx // w)
            else:
                preds[i, j] = (-1.0, -1.0)
    return preds, maxvals


def gaussian_blur_map(hm: np.ndarray, ksize: int = 11) -> np.ndarray:
    """One map: zero-pad by ksize//2, separable Gaussian, crop back, rescale to the original max."""
    border = (ksize - 1) // 2
    h, w = hm.shape
    origin_max = float(np.max(hm))
    padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float64)
    padded[border:-border, border:-border] = hm
    g = cv_gaussian_kernel(ksize)
    ph, pw = padded.shape
    # Horizontal pass (valid part only, the zero border is wide enough for the crop).
    tmp = np.zeros((ph, w), dtype=np.float64)
    for a in range(ksize):
        tmp += g[a] * padded[:, a : a + w]
    out = np.zeros((h, w), dtype=np.float64)
    for a in range(ksize):
        out += g[a] * tmp[a : a + h, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = out * (origin_max / np.max(out))
    return out


def taylor_step(hm: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """One Newton step of the 2nd-order Taylor expansion of the log-map at the peak (mmpose)."""
    h, w = hm.shape
    px, py = int(coord[0]), int(coord[1])
    coord = coord.astype(np.float64).copy()
    if 1 < px < w - 2 and 1 < py < h - 2:
        dx = 0.5 * (hm[py][px + 1] - hm[py][px - 1])
        dy = 0.5 * (hm[py + 1][px] - hm[py - 1][px])
        dxx = 0.25 * (hm[py][px + 2] - 2 * hm[py][px] + hm[py][px - 2])
        dxy = 0.25 * (hm[py + 1][px + 1] - hm[py - 1][px + 1] - hm[py + 1][px - 1] + hm[py - 1][px - 1])
        dyy = 0.25 * (hm[py + 2][px] - 2 * hm[py][px] + hm[py - 2][px])
        if dxx * dyy - dxy**2 != 0:
            derivative = np.array([[dx], [dy]])
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            offset = -np.linalg.inv(hessian) @ derivative
            coord += offset.reshape(2)
    return coord


def decode_heatmaps_ref(heatmaps: np.ndarray, ksize: int = 11, dark: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Literal mmpose 'unbiased' keypoint decoding.

    Returns coords (N, K, 2) float64 in heatmap pixels and scores (N, K) float32.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    preds, maxvals = get_max_preds(heatmaps)
    coords = preds.astype(np.float64)
    if not dark:
        return coords, maxvals
    n, k = heatmaps.shape[:2]
    for i in range(n):
        for j in range(k):
            blurred = gaussian_blur_map(heatmaps[i, j], ksize)
            lg = np.log(np.maximum(blurred, 1e-10))
            coords[i, j] = taylor_step(lg, coords[i, j])
    return coords, maxvals


# ----------------------------------------------------------------------------------------------
# 2. Pose crop
# ----------------------------------------------------------------------------------------------


def box_to_center_window_ref(boxes: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64)
    centers, windows = [], []
    for x1, y1, x2, y2 in boxes[:, :4]:
        w, h = x2 - x1, y2 - y1
        size = max(w * 256.0 / 192.0, h)
        centers.append(((x1 + x2) / 2.0, (y1 + y2) / 2.0))
        windows.append((padding * size * 192.0 / 256.0, padding * size))
    return np.array(centers).reshape(-1, 2), np.array(windows).reshape(-1, 2)


def bilinear_sample_zero(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Sample (C, H, W) at pixel-index coordinates (x, y); pixels outside the frame are 0."""
    c, h, w = img.shape
    x0 = math.floor(x)
    y0 = math.floor(y)
    fx = x - x0
    fy = y - y0
    out = np.zeros(c, dtype=np.float64)
    for yy, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def bilinear_sample_zero_grid(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Vectorised :func:`bilinear_sample_zero` on the grid xs (ow,) x ys (oh,) -> (C, oh, ow)."""
    c, h, w = img.shape
    X = np.broadcast_to(xs[None, :], (ys.size, xs.size))
    Y = np.broadcast_to(ys[:, None], (ys.size, xs.size))
    x0 = np.floor(X).astype(np.int64)
    y0 = np.floor(Y).astype(np.int64)
    fx = X - x0
    fy = Y - y0
    out = np.zeros((c,) + X.shape)
    for yy, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = img[:, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            out += np.where(inside, wy * wx, 0.0)[None] * vals
    return out


def crop_windows_ref(frames, center, window, out_hw=(256, 192), frame_index=None) -> np.ndarray:
    """(N, C, oh, ow): crop pixel (v, u) samples x = x0 + u*ww/ow, y = y0 + v*wh/oh."""
    frames = np.asarray(frames, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)
    window = np.asarray(window, dtype=np.float64)
    n = center.shape[0]
    oh, ow = out_hw
    out = []
    for i in range(n):
        f = frames[i if frame_index is None else int(frame_index[i])]
        cx, cy = center[i]
        ww, wh = window[i]
        x0, y0 = cx - ww / 2.0, cy - wh / 2.0
        xs = x0 + np.arange(ow) * (ww / ow)
        ys = y0 + np.arange(oh) * (wh / oh)
        out.append(bilinear_sample_zero_grid(f, xs, ys))
    return np.stack(out)


def heatmap_to_frame_ref(coords, center, window, heatmap_hw=(64, 48)) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)
    window = np.asarray(window, dtype=np.float64)
    hh, hw = heatmap_hw
    out = np.empty_like(coords)
    for i in range(coords.shape[0]):
        x0 = center[i, 0] - window[i, 0] / 2.0
        y0 = center[i, 1] - window[i, 1] / 2.0
        for j in range(coords.shape[1]):
            out[i, j, 0] = x0 + coords[i, j, 0] * window[i, 0] / hw
            out[i, j, 1] = y0 + coords[i, j, 1] * window[i, 1] / hh
    return out


# ----------------------------------------------------------------------------------------------
# 3. Wan layout
# ----------------------------------------------------------------------------------------------

BODY_A_REF = [0, 6, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 20]
BODY_B_REF = [0, 5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 18, 21]


def wan_body_ref(kps: np.ndarray) -> np.ndarray:
    """(T, 133, C) -> (T, 20, C)."""
    kps = np.asarray(kps, dtype=np.float64)
    out = np.zeros((kps.shape[0], 20, kps.shape[2]))
    for t in range(kps.shape[0]):
        for i in range(20):
            out[t, i] = (kps[t, BODY_A_REF[i]] + kps[t, BODY_B_REF[i]]) / 2.0
    return out


def pose_metas_ref(kps: np.ndarray, width: int, height: int, last_body=None):
    kps = np.asarray(kps, dtype=np.float64)
    norm = kps.copy()
    norm[..., 0] /= width
    norm[..., 1] /= height
    body = wan_body_ref(norm)
    metas = []
    for t in range(kps.shape[0]):
        b = body[t]
        all_negative = all(min(row[0], row[1]) < 0 for row in b)
        if all_negative and last_body is not None:
            b = last_body
        last_body = b
        metas.append(
            {
                "width": width,
                "height": height,
                "keypoints_body": b.copy(),
                "keypoints_left_hand": norm[t, 91:112].copy(),
                "keypoints_right_hand": norm[t, 112:133].copy(),
                "keypoints_face": norm[t, 22:91].copy(),
            }
        )
    return metas, last_body


def face_box_ref(kps_frame: np.ndarray, width: int, height: int, scale: float = 1.3, min_score: float = 0.3):
    """One frame -> ((x1, y1, x2, y2) ints, valid)."""
    face = np.asarray(kps_frame, dtype=np.float64)[23:91]
    xs, ys, sc = face[:, 0], face[:, 1], face[:, 2]
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return (0, 0, 0, 0), False
    min_x, max_x = xs.min(), xs.max()
    min_y, max_y = ys.min(), ys.max()
    w, h = max_x - min_x, max_y - min_y
    if not (sc.mean() >= min_score and w > 0 and h > 0):
        return (0, 0, 0, 0), False
    area = scale * w * h
    nw = math.sqrt(area * w / h)
    nh = math.sqrt(area * h / w)
    dw = (nw - w) / 2.0
    dh = (nh - h) / 4.0
    x1 = int(max(min_x - dw, 0))
    x2 = int(min(max_x + dw, width))
    y1 = int(max(min_y - 3 * dh, 0))
    y2 = int(min(max_y + dh, height))
    if x2 <= x1 or y2 <= y1:
        return (x1, y1, x2, y2), False
    return (x1, y1, x2, y2), True


def fallback_face_box_ref(width: int, height: int):
    side = int(0.3 * min(height, width))
    x1 = (width - side) // 2
    y1 = int(0.1 * height)
    return x1, y1, x1 + side, y1 + side


def resolve_face_boxes_ref(boxes, valid, width, height, padding=0):
    boxes = [tuple(int(v) for v in b) for b in boxes]
    good = [b for b, ok in zip(boxes, valid) if ok]
    first = good[0] if good else None
    out = []
    last = None
    for b, ok in zip(boxes, valid):
        if ok:
            last = b
            box = b
        elif last is not None:
            box = last
        elif first is not None:
            box = first
        else:
            box = fallback_face_box_ref(width, height)
        x1, y1, x2, y2 = box
        out.append((max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, width), min(y2 + padding, height)))
    return out


def key_frame_points_ref(kps_frame: np.ndarray, min_score: float = 0.3):
    body = wan_body_ref(np.asarray(kps_frame)[None])[0]
    pts = []
    for r in (0, 1, 2, 5, 8, 11, 10, 13):
        x, y, s = body[r]
        if s >= min_score:
            pts.append({"x": int(x), "y": int(y)})
    return pts


# ----------------------------------------------------------------------------------------------
# Half-pixel bilinear resize (OpenCV INTER_LINEAR / torch align_corners=False)
# ----------------------------------------------------------------------------------------------


def _linear_taps(in_size: int, out_size: int):
    """For each output index: (i0, i1, w0, w1) with src = (dst + 0.5) * scale - 0.5 clamped."""
    scale = in_size / out_size
    taps = []
    for d in range(out_size):
        src = (d + 0.5) * scale - 0.5
        src = min(max(src, 0.0), in_size - 1.0)
        i0 = int(math.floor(src))
        f = src - i0
        i1 = min(i0 + 1, in_size - 1)
        taps.append((i0, i1, 1.0 - f, f))
    return taps


def resize_linear_ref(img_hwc: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(H, W, C) -> (out_h, out_w, C), separable half-pixel bilinear, edge replicated."""
    img = np.asarray(img_hwc, dtype=np.float64)
    h, w, c = img.shape
    tx = _linear_taps(w, out_w)
    ty = _linear_taps(h, out_h)
    ix0 = np.array([t[0] for t in tx])
    ix1 = np.array([t[1] for t in tx])
    wx0 = np.array([t[2] for t in tx])[None, :, None]
    wx1 = np.array([t[3] for t in tx])[None, :, None]
    rows = img[:, ix0] * wx0 + img[:, ix1] * wx1  # (H, out_w, C)
    out = np.empty((out_h, out_w, c))
    for d, (i0, i1, w0, w1) in enumerate(ty):
        out[d] = rows[i0] * w0 + rows[i1] * w1
    return out


def crop_resize_ref(frames_tchw: np.ndarray, boxes, size: int) -> np.ndarray:
    """(T, C, H, W), T integer boxes -> (T, size, size, C): cv2.resize(frame[y1:y2, x1:x2])."""
    frames = np.asarray(frames_tchw, dtype=np.float64)
    out = []
    for f, (x1, y1, x2, y2) in zip(frames, boxes):
        sub = f.transpose(1, 2, 0)[y1:y2, x1:x2]
        out.append(resize_linear_ref(sub, size, size))
    return np.stack(out)


def key_frame_indices_props(idx: list[int], t: int) -> None:
    if t < 4:
        assert idx == [0]
        return
    assert len(idx) == 4 and idx[0] == 0 and idx[-1] == t - 1
    steps = np.diff(idx)
    assert (steps > 0).all()
    assert steps.max() - steps.min() <= 1


# ----------------------------------------------------------------------------------------------
# 4. Detection
# ----------------------------------------------------------------------------------------------


def iou_ref(a, b) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    area_a = max(ax2 - ax1, 0.0) * max(ay2 - ay1, 0.0)
    area_b = max(bx2 - bx1, 0.0) * max(by2 - by1, 0.0)
    iw = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    ih = max(min(ay2, by2) - max(ay1, by1), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def greedy_nms_ref(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Plain greedy NMS; returns kept indices, highest score first (stable on ties)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if not keep:
            keep.append(i)
            continue
        kb = boxes[keep]
        b = boxes[i]
        area_i = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
        area_k = np.clip(kb[:, 2] - kb[:, 0], 0, None) * np.clip(kb[:, 3] - kb[:, 1], 0, None)
        iw = np.clip(np.minimum(kb[:, 2], b[2]) - np.maximum(kb[:, 0], b[0]), 0, None)
        ih = np.clip(np.minimum(kb[:, 3], b[3]) - np.maximum(kb[:, 1], b[1]), 0, None)
        inter = iw * ih
        union = area_i + area_k - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        if (iou <= thr).all():
            keep.append(i)
    return keep


def greedy_nms_scalar_ref(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """The same, one pair at a time (cross-check of the vectorised version)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(iou_ref(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


def decode_detections_ref(output: np.ndarray, score_thr=0.05, iou_thr=0.5) -> list[np.ndarray]:
    out = np.asarray(output, dtype=np.float64)
    res = []
    for frame in out:
        if out.shape[-1] == 6:
            rows = [(r[:4], r[4]) for r in frame if r[4] >= score_thr and round(r[5]) == 0]
        else:
            rows = []
            for a in range(frame.shape[1]):
                cx, cy, w, h = frame[:4, a]
                s = frame[4, a]
                if s >= score_thr:
                    rows.append((np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), s))
        if not rows:
            res.append(np.zeros((0, 5)))
            continue
        b = np.stack([r[0] for r in rows])
        s = np.array([r[1] for r in rows])
        keep = greedy_nms_ref(b, s, iou_thr)
        res.append(np.concatenate([b[keep], s[keep, None]], axis=1))
    return res


def select_person_ref(dets: np.ndarray, min_side_ratio=0.4, other_area=0.1):
    if len(dets) == 0:
        return None, 0
    dets = np.asarray(dets, dtype=np.float64)
    longer = [max(d[2] - d[0], d[3] - d[1]) for d in dets]
    areas = [(d[2] - d[0]) * (d[3] - d[1]) for d in dets]
    lmax = max(longer)
    best = None
    for i in range(len(dets)):
        if longer[i] >= min_side_ratio * lmax and (best is None or areas[i] > areas[best]):
            best = i
    others = sum(1 for i in range(len(dets)) if i != best and areas[i] > other_area * areas[best])
    return best, others


def detect_boxes_ref(output: np.ndarray, frame_hw, input_hw=(640, 640)):
    fh, fw = frame_hw
    ih, iw = input_hw
    boxes, others = [], []
    for d in decode_detections_ref(output):
        best, n_other = select_person_ref(d)
        if best is not None:
            x1, y1, x2, y2, s = d[best]
            b = [x1 * fw / iw, y1 * fh / ih, x2 * fw / iw, y2 * fh / ih]
            if min(b[2] - b[0], b[3] - b[1]) >= 10:
                boxes.append(b + [s])
                others.append(n_other)
                continue
        boxes.append([0.0, 0.0, float(fw), float(fh), -1.0])
        others.append(0)
    return np.array(boxes), np.array(others)
