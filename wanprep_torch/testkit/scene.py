"""Synthetic scenes with ground-truth COCO-wholebody keypoints.

Each of the 133 keypoints is drawn as a small Gaussian blob whose colour encodes its index:
keypoint k has code (r_k, g_k) = ((k // 12) / 11, (k % 12) / 11) and is drawn as
(R, G, B) = (r_k, g_k, 1) * b_k(x, y). A blob scales all three channels together, so the ratios
R/B and G/B give the code back even after resampling mixes a blob with the black background;
the analytic ONNX models in :mod:`wanprep_torch.testkit.models` rely on that.

Coordinates are pixel-index coordinates (pixel centres at integers), x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

NUM_KEYPOINTS = 133
FACE_SLICE = slice(23, 91)
# Points not drawn when the person turns away: nose, eyes, ears and the 68 face points.
HIDDEN_WHEN_TURNED = np.r_[0:5, 23:91]

KEYPOINT_CODES = np.stack(
    [np.arange(NUM_KEYPOINTS) // 12, np.arange(NUM_KEYPOINTS) % 12], axis=1
).astype(np.float32) / 11.0

# Blob sigma as a fraction of the person's height (keypoint extent): keeps blobs the same size in
# the pose crop whatever the person's scale.
SIGMA_PER_HEIGHT = 0.006


def _ellipse(cx, cy, a, b, angles_deg):
    t = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], axis=1)


def _build_template() -> np.ndarray:
    """Canonical person (133, 2), designed on a grid where the closest points are >= 1 unit apart.

    The person faces the camera, so its left side (COCO "left_*") is at +x (image right).
    Proportions are cartoonish (big head, big hands) because 133 non-overlapping blobs need room.
    """
    p = np.zeros((NUM_KEYPOINTS, 2), dtype=np.float64)
    # --- face (68 points, iBUG order), face centre x = 0; right side of face at -x ---
    f = np.zeros((68, 2))
    # Jaw: from the face's right temple (image left) down round the chin to the left temple.
    f[0:17] = _ellipse(0.0, 3.5, 6.5, 9.2, np.linspace(180.0, 0.0, 17))
    f[17:22] = np.stack([np.linspace(-4.9, -0.9, 5), [1.0, 0.55, 0.4, 0.5, 0.75]], 1)  # right brow
    f[22:27] = np.stack([np.linspace(0.9, 4.9, 5), [0.75, 0.5, 0.4, 0.55, 1.0]], 1)  # left brow
    f[27:31] = np.stack([np.zeros(4), [1.3, 2.3, 3.3, 4.3]], 1)  # nose bridge
    f[31:36] = np.stack([np.linspace(-2.5, 2.5, 5), np.full(5, 6.45)], 1)  # nostrils
    # Eyes: 6 points on an ellipse; outer corner, two top, inner corner, two bottom.
    f[36:42] = _ellipse(-2.5, 3.0, 1.4, 1.1, [180, 240, 300, 0, 60, 120])  # right eye (image left)
    f[42:48] = _ellipse(2.5, 3.0, 1.4, 1.1, [180, 240, 300, 0, 60, 120])  # left eye
    mx, my = 0.0, 9.25  # mouth centre
    outer = np.array([[-3.5, 0], [-2.25, -1.4], [-1.1, -1.75], [0, -1.7], [1.1, -1.75],
                      [2.25, -1.4], [3.5, 0], [2.25, 1.5], [1.1, 1.9], [0, 1.95], [-1.1, 1.9],
                      [-2.25, 1.5]])
    inner = np.array([[-2.15, 0], [-1.0, -0.65], [0, -0.7], [1.0, -0.65],
                      [2.15, 0], [1.0, 0.65], [0, 0.7], [-1.0, 0.65]])
    f[48:60] = outer + [mx, my]
    f[60:68] = inner + [mx, my]
    p[23:91] = f
    # --- head points of the body set, kept clear of the face points ---
    p[0] = [0.0, 5.4]  # nose (just below the bridge)
    p[1] = [2.5, 3.0]  # left eye (centre of the left eye ring)
    p[2] = [-2.5, 3.0]  # right eye
    p[3] = [7.75, 4.0]  # left ear
    p[4] = [-7.75, 4.0]  # right ear
    # --- body (left side at +x, mirrored for right) ---
    for side, s in ((0, 1.0), (1, -1.0)):
        p[5 + side] = [5.2 * s, 14.0]  # shoulder
        p[7 + side] = [7.0 * s, 16.8]  # elbow
        p[9 + side] = [7.6 * s, 19.4]  # wrist
        p[11 + side] = [3.0 * s, 19.0]  # hip
        p[13 + side] = [3.2 * s, 22.6]  # knee
        p[15 + side] = [3.4 * s, 25.6]  # ankle
        foot = 17 + 3 * side
        p[foot + 0] = [2.2 * s, 27.5]  # big toe
        p[foot + 1] = [4.6 * s, 27.5]  # small toe
        p[foot + 2] = [3.4 * s, 26.75]  # heel
        # Hand hanging below the wrist, fingers pointing down as parallel columns
        # (thumb outermost); hand keypoint 0 is the hand's own wrist point.
        hand = 91 + 21 * side
        root = np.array([7.6 * s, 20.5])
        p[hand] = root
        for finger in range(5):
            col_x = root[0] + s * (2.0 - finger)
            for j in range(4):
                p[hand + 1 + 4 * finger + j] = [col_x, root[1] + 1.25 + j]
    # Normalise: height (keypoint extent) 1, centred on the extent's centre.
    lo, hi = p.min(0), p.max(0)
    p = (p - (lo + hi) / 2) / (hi[1] - lo[1])
    return p.astype(np.float32)


# (133, 2) canonical person: keypoint extent has height 1 and is centred on (0, 0).
TEMPLATE = _build_template()
_TEMPLATE_LO = TEMPLATE.min(0)
_TEMPLATE_HI = TEMPLATE.max(0)


def template_min_distance() -> float:
    """Smallest distance between two template points, in person heights."""
    d = np.linalg.norm(TEMPLATE[:, None] - TEMPLATE[None], axis=-1)
    d[np.arange(NUM_KEYPOINTS), np.arange(NUM_KEYPOINTS)] = np.inf
    return float(d.min())


def _render_into(out: np.ndarray, kp: np.ndarray, vis: np.ndarray, sigma: float) -> None:
    """Add the visible blobs into out (H, W, 3) float32 (zeros on entry), then clip to [0, 1].

    Each blob is evaluated only in a +-5 sigma window (exp(-12.5) ~ 4e-6 beyond): the window
    values are computed for all points at once, then added with one small slice-add per point.
    Plain numpy on purpose: torch's tiny multithreaded ops crawl on a busy 2-core box.
    """
    H, W = out.shape[:2]
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, 2)[vis]
    codes = KEYPOINT_CODES[vis]
    if kp.shape[0] == 0:
        return
    sigma = float(sigma)
    r = int(np.ceil(5.0 * sigma))
    off = np.arange(-r, r + 1)
    base = np.floor(kp).astype(np.int64)  # (K, 2)
    inv = 1.0 / (2.0 * sigma * sigma)
    vx = np.exp(-((base[:, 0:1] + off - kp[:, 0:1]) ** 2) * inv)  # (K, P)
    vy = np.exp(-((base[:, 1:2] + off - kp[:, 1:2]) ** 2) * inv)
    blob = (vy[:, :, None] * vx[:, None, :]).astype(np.float32)  # (K, P, P)
    colour = np.concatenate([codes, np.ones((len(codes), 1), np.float32)], 1)  # R, G, B
    for k in range(kp.shape[0]):
        x0, y0 = base[k] - r
        # Window clipped to the frame (points may sit near or beyond an edge).
        xa, xb = max(x0, 0), min(x0 + 2 * r + 1, W)
        ya, yb = max(y0, 0), min(y0 + 2 * r + 1, H)
        if xa >= xb or ya >= yb:
            continue
        patch = blob[k, ya - y0:yb - y0, xa - x0:xb - x0]
        out[ya:yb, xa:xb] += patch[:, :, None] * colour[k]
    np.clip(out, 0.0, 1.0, out=out)


def render_frame(keypoints_xy, visible, H: int, W: int, sigma: float) -> torch.Tensor:
    """Render one frame (H, W, 3) float32 RGB in [0, 1] with a colour-coded blob per visible
    point (keypoints_xy (133, 2) in pixel-index coords, visible (133,) bool; numpy or torch)."""
    out = np.zeros((H, W, 3), dtype=np.float32)
    kp = keypoints_xy.detach().cpu().numpy() if torch.is_tensor(keypoints_xy) else keypoints_xy
    vis = visible.detach().cpu().numpy() if torch.is_tensor(visible) else visible
    _render_into(out, np.asarray(kp), np.asarray(vis, dtype=bool).reshape(-1), sigma)
    return torch.from_numpy(out)


@dataclass
class SyntheticClip:
    """A rendered clip with ground truth.

    frames: (T, H, W, 3) float32 RGB in [0, 1]; keypoints: (T, 133, 2) float32 frame pixels
    (pixel-index coords); visible: (T, 133) bool (False = not drawn); sigma: (T,) float32 blob
    sigma in pixels; height: (T,) float32 person height (keypoint extent) in pixels.
    """

    frames: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    sigma: torch.Tensor
    height: torch.Tensor

    @property
    def boxes(self) -> torch.Tensor:
        """(T, 4) x1, y1, x2, y2 extent of all 133 ground-truth points (drawn or not)."""
        return torch.cat([self.keypoints.amin(1), self.keypoints.amax(1)], dim=1)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


MOTIONS = ("hold", "slow", "fast", "cut", "holdslow", "pan", "accel", "enter")


def _placements(T: int, H: int, W: int, motion: str, height: float, rng: np.random.Generator):
    """Per-frame person centre (T, 2) and height (T,) for the motion pattern."""
    def room(h):
        # Half-range the centre can move while the person (+ blob margin) stays inside the frame.
        margin = 4.0 * SIGMA_PER_HEIGHT * h + 8.0
        half_w = (_TEMPLATE_HI[0] - _TEMPLATE_LO[0]) * h / 2 + margin
        half_h = h / 2 + margin
        return max(W / 2 - half_w, 0.0), max(H / 2 - half_h, 0.0)

    c0 = np.array([W / 2, H / 2], dtype=np.float64)
    t = np.arange(T, dtype=np.float64)
    centers = np.repeat(c0[None], T, 0)
    heights = np.full(T, float(height))
    if motion == "hold":
        pass
    elif motion in ("slow", "holdslow"):
        # Slow drift on a sinusoid (bounded, ~0.3-1 px/frame) plus a slight breathing scale change.
        if motion == "slow":
            tau = t
        else:
            # Alternate holds and moves of 4-8 frames; time only advances while moving.
            moving = np.zeros(T, dtype=bool)
            i, mv = 0, False
            while i < T:
                n = int(rng.integers(4, 9))
                moving[i:i + n] = mv
                mv, i = not mv, i + n
            tau = np.concatenate([[0.0], np.cumsum(moving[1:])])
        heights = height * (1.0 + 0.02 * np.sin(2 * np.pi * tau / 90.0 + rng.uniform(0, 2 * np.pi)))
        rx, ry = room(heights.max())
        speed = rng.uniform(0.5, 0.9)  # peak px/frame
        ax, ay = min(rx, 30.0), min(ry, 10.0)
        wx = speed / max(ax, 1e-6)
        wy = 0.5 * speed / max(ay, 1e-6)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        centers[:, 0] += ax * np.sin(wx * tau + px)
        centers[:, 1] += ay * np.sin(wy * tau + py)
    elif motion == "fast":
        # Bounce horizontally at 15-30 px/frame (mostly x: a tall person leaves little room in y).
        heights = np.full(T, float(height))
        rx, ry = room(height)
        x, y = c0[0] + rng.uniform(-rx, rx), c0[1] + rng.uniform(-ry, ry)
        vx = rng.uniform(15.0, 25.0) * rng.choice([-1.0, 1.0])
        vy = rng.uniform(2.0, 5.0) * rng.choice([-1.0, 1.0])
        for i in range(T):
            centers[i] = (x, y)
            x, y = x + vx, y + vy
            if abs(x - c0[0]) > rx:
                vx = -vx
                x = c0[0] + np.clip(2 * np.sign(x - c0[0]) * rx - (x - c0[0]), -rx, rx)
            if abs(y - c0[1]) > ry:
                vy = -vy
                y = c0[1] + np.clip(2 * np.sign(y - c0[1]) * ry - (y - c0[1]), -ry, ry)
    elif motion in ("pan", "accel"):
        # Steady 1.5 px/frame sideways ("pan"), or speeding up from rest by 0.25 px/frame each
        # frame ("accel"); bounded by the room there is, mirrored at the edge.
        rx, _ = room(height)
        v = np.full(T, 1.5) if motion == "pan" else 0.25 * t
        x = np.cumsum(np.concatenate([[0.0], v[1:]])) - rx
        period = 4 * rx if rx > 0 else 1.0
        x = np.abs(((x + rx) % period) - 2 * rx) - rx  # bounce between -rx and rx
        centers[:, 0] = c0[0] + x
    elif motion == "enter":
        # Walks in from beyond the left edge and out past the right edge at a steady speed.
        span = W + (_TEMPLATE_HI[0] - _TEMPLATE_LO[0]) * height * 1.2
        centers[:, 0] = c0[0] - span / 2 + span * t / max(T - 1, 1)
    elif motion == "cut":
        # First half: full size on the left; second half: smaller, on the right.
        h2 = 0.7 * height
        rx1, _ = room(height)
        rx2, ry2 = room(h2)
        half = T // 2
        centers[:half, 0] = c0[0] - 0.8 * rx1
        centers[half:, 0] = c0[0] + 0.8 * rx2
        centers[half:, 1] = c0[1] - 0.5 * ry2
        heights[half:] = h2
    else:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    return centers, heights


def background_texture(H: int, W: int, seed: int = 0) -> np.ndarray:
    """A static red/green texture (H, W, 3) with a zero blue channel: the analytic models read
    only blobs (blue > 0), while the grayscale signature of the gate sees a real scene."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    tex = np.zeros((H, W), dtype=np.float64)
    for _ in range(6):
        fx, fy = rng.uniform(0.005, 0.05, 2)
        tex += np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    tex = (tex - tex.min()) / max(tex.max() - tex.min(), 1e-9)
    out = np.zeros((H, W, 3), dtype=np.float32)
    out[..., 0] = 0.15 + 0.45 * tex
    out[..., 1] = 0.1 + 0.35 * (1 - tex)
    return out


def _over_background(frame: np.ndarray, bg: np.ndarray) -> None:
    """Put ``bg`` wherever no blob reaches (each blob's +-5 sigma window stays black), in place:
    blob tails stay on black, so their colour ratios stay exact."""
    empty = frame[..., 2] == 0
    frame[empty] = np.maximum(frame[empty], bg[empty])


def make_clip(
    T: int,
    H: int = 480,
    W: int = 832,
    motion: str = "slow",
    face_hidden: Iterable[int] = (),
    seed: int = 0,
    person_height: float | None = None,
    background: bool = False,
    noise_px: float = 0.0,
    dropouts: Iterable[tuple[Iterable[int], Iterable[int]]] = (),
) -> SyntheticClip:
    """Render a T-frame clip of the synthetic person.

    motion: "hold", "slow" (<~1 px/frame drift, +-2% scale), "pan" (steady 1.5 px/frame),
    "accel" (from rest, 0.25 px/frame faster each frame), "enter" (walks in from beyond the left
    edge and out past the right; points outside the frame are not visible), "fast" (15-30 px/frame bounce),
    "cut" (first half big on the left, second half 0.7x on the right), "holdslow" (4-8 frame
    holds alternating with slow motion). face_hidden: frame indices where the face (23..90) and
    nose/eyes/ears (0..4) are not drawn. person_height: keypoint extent in px (default 0.75*H).
    background: a static textured scene behind the person (red/green only, see
    :func:`background_texture`); with motion "cut" the scene changes at the cut too.
    noise_px: each drawn blob sits off its true position by Gaussian noise of this standard
        deviation (px, per coordinate, independent per frame and point; seeded apart from the
        motion, so the same seed gives the same motion at every noise level): the frame-to-frame
        jitter of a real pose model. ``keypoints`` stay the smooth truth.
    dropouts: (keypoint indices, frame indices) pairs: those points are not drawn on those
        frames (a point the model loses for a few frames); they are not ``visible`` there.
    """
    rng = np.random.default_rng(seed)
    height = 0.75 * H if person_height is None else float(person_height)
    centers, heights = _placements(T, H, W, motion, height, rng)
    kps = centers[:, None, :] + TEMPLATE[None].astype(np.float64) * heights[:, None, None]
    visible = np.ones((T, NUM_KEYPOINTS), dtype=bool)
    for i in face_hidden:
        if 0 <= i < T:
            visible[i, HIDDEN_WHEN_TURNED] = False
    for points, frames_out in dropouts:
        rows = [i for i in frames_out if 0 <= i < T]
        visible[np.ix_(rows, list(points))] = False
    drawn = kps
    if noise_px > 0:
        # Its own generator: the motion (from ``rng``) does not depend on the noise level.
        jitter = np.random.default_rng([seed, 7919]).normal(0.0, float(noise_px), kps.shape)
        drawn = kps + jitter
    visible &= (kps[..., 0] >= 0) & (kps[..., 0] < W) & (kps[..., 1] >= 0) & (kps[..., 1] < H)
    sigmas = SIGMA_PER_HEIGHT * heights
    frames = np.zeros((T, H, W, 3), dtype=np.float32)
    bgs = None
    if background:
        bgs = [background_texture(H, W, seed), background_texture(H, W, seed + 1000)]
    for i in range(T):
        _render_into(frames[i], drawn[i], visible[i], sigmas[i])
        if bgs is not None:
            _over_background(frames[i], bgs[1] if motion == "cut" and i >= T // 2 else bgs[0])
    return SyntheticClip(
        frames=torch.from_numpy(frames),
        keypoints=torch.from_numpy(kps.astype(np.float32)),
        visible=torch.from_numpy(visible),
        sigma=torch.from_numpy(sigmas.astype(np.float32)),
        height=torch.from_numpy(heights.astype(np.float32)),
    )


def make_two_person_clip(
    T: int, big_frames: Iterable[int] = (), H: int = 480, W: int = 832, seed: int = 0
) -> tuple[SyntheticClip, torch.Tensor]:
    """Two people on a textured background: the subject (height 0.62*H) drifting slowly on the
    left third, and a second person on the right who is smaller (0.45*H) except on
    ``big_frames``, where they are larger (0.8*H) than the subject. Made for the two-person detector
    (:func:`~wanprep_torch.testkit.models.make_two_person_detector`), which boxes each half.

    Returns:
        (the clip, whose keypoints/visible are the subject's; the other person's keypoints (T, 133, 2)).
    """
    rng = np.random.default_rng(seed)
    big = set(big_frames)
    t = np.arange(T, dtype=np.float64)
    ha = 0.62 * H
    ca = np.stack([0.28 * W + 3.0 * np.sin(0.2 * t + rng.uniform(0, 6)), np.full(T, H / 2)], axis=1)
    hb = np.array([0.8 * H if i in big else 0.45 * H for i in range(T)])
    cb = np.stack([np.full(T, 0.75 * W), np.full(T, H / 2)], axis=1)
    ka = ca[:, None, :] + TEMPLATE[None] * ha
    kb = cb[:, None, :] + TEMPLATE[None] * hb[:, None, None]
    vis = np.ones((T, NUM_KEYPOINTS), dtype=bool)
    frames = np.zeros((T, H, W, 3), dtype=np.float32)
    bg = background_texture(H, W, seed)
    for i in range(T):
        _render_into(frames[i], ka[i], vis[i], SIGMA_PER_HEIGHT * ha)
        other = np.zeros((H, W, 3), dtype=np.float32)
        _render_into(other, kb[i], vis[i], SIGMA_PER_HEIGHT * hb[i])
        frames[i] = np.clip(frames[i] + other, 0.0, 1.0)
        _over_background(frames[i], bg)
    clip = SyntheticClip(
        frames=torch.from_numpy(frames),
        keypoints=torch.from_numpy(ka.astype(np.float32)),
        visible=torch.from_numpy(vis),
        sigma=torch.full((T,), SIGMA_PER_HEIGHT * ha, dtype=torch.float32),
        height=torch.full((T,), ha, dtype=torch.float32),
    )
    return clip, torch.from_numpy(kb.astype(np.float32))


@dataclass
class PeopleClip:
    """A rendered clip of several people with ground truth per person.

    frames: (T, H, W, 3) float32 RGB in [0, 1]; keypoints: (P, T, 133, 2) frame pixels;
    visible: (P, T, 133) bool (drawn and inside the frame); present: (P, T) bool, the person
    counts as in view (at least ``PRESENT_BODY`` of the 17 body points visible); height: (P,)
    person heights in px. People are listed in the order they were specified.
    """

    frames: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    present: torch.Tensor
    height: torch.Tensor

    def __len__(self) -> int:
        return int(self.frames.shape[0])


PRESENT_BODY = 9  # of the 17 body points: a person "in view" for the accuracy figures


def make_people_clip(
    centers, heights, hidden=(), H: int = 480, W: int = 1280, background: bool = True, seed: int = 0, noise_px: float = 0.0
) -> PeopleClip:
    """Render several synthetic people (side by side; the test kit's multi-person detector
    separates them by the columns they cover).

    Args:
        centers: (P, T, 2) each person's centre per frame, frame pixels (off-frame is allowed).
        heights: (P,) person heights (keypoint extent) in px.
        hidden: P iterables of frame indices where that person is not drawn (occluded or absent).
        background: a static textured scene behind the people.
        noise_px: each drawn blob sits off its true position by Gaussian noise of this
            standard deviation per coordinate, drawn afresh every frame (as in
            :func:`make_clip`; the ground truth stays the smooth motion).
    """
    centers = np.asarray(centers, dtype=np.float64)
    heights = np.asarray(heights, dtype=np.float64)
    P, T = centers.shape[:2]
    hidden = list(hidden) + [()] * (P - len(hidden))
    kps = centers[:, :, None, :] + TEMPLATE[None, None].astype(np.float64) * heights[:, None, None, None]
    visible = np.ones((P, T, NUM_KEYPOINTS), dtype=bool)
    for p, frames_off in enumerate(hidden):
        for i in frames_off:
            if 0 <= i < T:
                visible[p, i] = False
    visible &= (kps[..., 0] >= 0) & (kps[..., 0] < W) & (kps[..., 1] >= 0) & (kps[..., 1] < H)
    drawn = kps
    if noise_px > 0:  # its own generator, as make_clip's
        drawn = kps + np.random.default_rng([seed, 7919]).normal(0.0, float(noise_px), kps.shape)
    frames = np.zeros((T, H, W, 3), dtype=np.float32)
    bg = background_texture(H, W, seed) if background else None
    for i in range(T):
        for p in range(P):
            one = np.zeros((H, W, 3), dtype=np.float32)
            _render_into(one, drawn[p, i], visible[p, i], SIGMA_PER_HEIGHT * heights[p])
            frames[i] += one
        np.clip(frames[i], 0.0, 1.0, out=frames[i])
        if bg is not None:
            _over_background(frames[i], bg)
    present = visible[:, :, :17].sum(-1) >= PRESENT_BODY
    return PeopleClip(
        frames=torch.from_numpy(frames),
        keypoints=torch.from_numpy(kps.astype(np.float32)),
        visible=torch.from_numpy(visible),
        present=torch.from_numpy(present),
        height=torch.from_numpy(heights.astype(np.float32)),
    )


def make_crowd_clip(
    T: int = 32, H: int = 480, W: int = 1280, hidden=range(8, 16), enter: int = 16, seed: int = 0, background: bool = True,
    noise_px: float = 0.0,
) -> PeopleClip:
    """Three people at 0.6*H on a textured scene: person 0 walks right along the left third
    (~10 px/frame), person 1 stands in the middle drifting slowly and is hidden (occluded) on
    ``hidden`` frames, person 2 walks in from beyond the right edge from frame ``enter`` (not
    in view before) and stops on the right third. They never overlap: the multi-person
    detector and the tracker see three separate people. ``background=False``: black behind
    them (for clips that go through a lossy codec, whose chroma would bleed into the blobs)."""
    rng = np.random.default_rng(seed)
    h = 0.6 * H
    half_w = (_TEMPLATE_HI[0] - _TEMPLATE_LO[0]) * h / 2
    t = np.arange(T, dtype=np.float64)
    walk = np.stack([0.12 * W + 0.2 * W * t / max(T - 1, 1), H / 2 + 4.0 * np.sin(0.3 * t)], axis=1)
    stand = np.stack([0.53 * W + 3.0 * np.sin(0.2 * t + rng.uniform(0, 6)), np.full(T, H / 2)], axis=1)
    stop = 0.84 * W
    x = W - 0.1 * half_w - 28.0 * (t - enter)
    x = np.where(t < enter, W + 4 * half_w, np.maximum(x, stop))
    come = np.stack([x, np.full(T, H / 2 + 2.0)], axis=1)
    not_yet = range(0, enter)
    return make_people_clip(
        np.stack([walk, stand, come]), [h, h, h], hidden=[(), hidden, not_yet], H=H, W=W, background=background, seed=seed,
        noise_px=noise_px,
    )


def pose_crop_window(box, aspect: float = 192 / 256, padding: float = 1.25, out_h: int = 256):
    """Pose crop for a person box (x1, y1, x2, y2): returns (x0, y0, s) such that crop pixel
    (u, v) samples the frame at (x0 + u*s, y0 + v*s) -- the convention the test models assume.

    Window height = padding * max(box_w / aspect, box_h), width = height * aspect, centred on the
    box centre (mmpose-style top-down crop without rotation).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    wh = padding * max((x2 - x1) / aspect, y2 - y1)
    s = wh / out_h
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    out_w = int(round(out_h * aspect))
    # mmpose/cv2.warpAffine convention: the box centre lands on crop pixel (out_w/2, out_h/2).
    x0 = cx - s * out_w / 2
    y0 = cy - s * out_h / 2
    return x0, y0, s


def sigma_for_height(height: float) -> float:
    return SIGMA_PER_HEIGHT * float(height)


__all__ = [
    "KEYPOINT_CODES",
    "NUM_KEYPOINTS",
    "HIDDEN_WHEN_TURNED",
    "TEMPLATE",
    "SyntheticClip",
    "PeopleClip",
    "make_clip",
    "make_people_clip",
    "make_crowd_clip",
    "render_frame",
    "pose_crop_window",
    "template_min_distance",
    "sigma_for_height",
    "MOTIONS",
]
