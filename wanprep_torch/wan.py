"""The Wan output layout: pose metas, face boxes and crops, SAM2 key-frame points.

Everything here works on keypoints already in frame pixels, (T, 133, 3) x, y, score, in the
COCO-wholebody order; nothing here knows about ONNX.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .frames import FrameBatch
from .posemeta import PoseMeta
from .poses import Poses, wan_body
from .skeleton import FACE, OPENPOSE_BODY, OPENPOSE_EYES, OPENPOSE_FACE, WAN_KEY_POINT_ROWS
from .timing import NULL_TIMER

__all__ = [
    "wan_body",
    "pose_metas",
    "face_boxes",
    "resolve_face_boxes",
    "fallback_face_box",
    "crop_resize",
    "crop_resize_exact",
    "key_frame_points",
    "key_frame_indices",
    "openpose_frames",
    "KEEP_SCORE",
    "pose_keypoint_frames",
    "everyone_per_frame",
    "openpose_people",
    "WanFrames",
    "FaceConfig",
    "WanAssembler",
]

def pose_metas(keypoints: torch.Tensor, width: int, height: int, last_body: np.ndarray | None = None) -> tuple[list[dict], np.ndarray | None]:
    """Wan pose metas (normalised x/W, y/H, score as float32 arrays on the host).

    When every body row has a negative x or y, the previous frame's body rows are reused, as
    the reference does; ``last_body`` carries that state across chunks
    (:meth:`~wanprep_torch.poses.Poses.from_wholebody`).

    Args:
        keypoints: (T, 133, 3) in frame pixels.

    Returns:
        (list of T dicts, the last body rows for the next chunk).
    """
    if keypoints.shape[0] == 0:
        return [], last_body
    carry = None if last_body is None else torch.from_numpy(np.asarray(last_body))
    poses = Poses.from_wholebody(keypoints.float(), width, height, last_body=carry)
    return poses.to_wan(), poses.part("keypoints_body")[-1].cpu().numpy()


def face_boxes(
    keypoints: torch.Tensor, width: int, height: int, scale: float = 1.3, min_score: float = 0.3, exact: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Face box of each frame from its 68 face points (the reference's expansion rule).

    w, h = the points' extent; area' = scale*w*h; w' = sqrt(area'*w/h), h' = sqrt(area'*h/w);
    the box grows by (w'-w)/2 on each side and by 3*(h'-h)/4 above, (h'-h)/4 below, is clipped
    to the frame and truncated to int (``exact``: kept in float32, for sub-pixel crops).

    Args:
        keypoints: (T, 133, 3) in frame pixels.

    Returns:
        boxes (T, 4) int64 (float32 when ``exact``) x1, y1, x2, y2 and valid (T,) bool: the face is visible (mean
        face-point score >= ``min_score``) and the clipped box is not empty. Invalid rows hold
        zeros, never NaN.
    """
    face = keypoints[:, FACE].float()  # the 68 face points (Wan face rows 1..68)
    xy = face[..., :2]
    lo = xy.amin(dim=1)
    hi = xy.amax(dim=1)
    wh = hi - lo
    w, h = wh[:, 0], wh[:, 1]
    valid = (face[..., 2].mean(dim=1) >= min_score) & (w > 0) & (h > 0) & torch.isfinite(xy).all(dim=(1, 2))
    ws = torch.where(valid, w, torch.ones_like(w))
    hs = torch.where(valid, h, torch.ones_like(h))
    area = ws * hs * scale
    new_w = torch.sqrt(area * ws / hs)
    new_h = torch.sqrt(area * hs / ws)
    dw = (new_w - ws) / 2
    dh = (new_h - hs) / 4
    x1 = (lo[:, 0] - dw).clamp(min=0)
    x2 = torch.minimum(hi[:, 0] + dw, torch.full_like(dw, float(width)))
    y1 = (lo[:, 1] - 3 * dh).clamp(min=0)
    y2 = torch.minimum(hi[:, 1] + dh, torch.full_like(dh, float(height)))
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    boxes = torch.where(valid.unsqueeze(-1), boxes, torch.zeros_like(boxes))
    if not exact:
        boxes = boxes.trunc().long()
    valid = valid & (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes, valid


def fallback_face_box(width: int, height: int) -> tuple[int, int, int, int]:
    """A centred square of 0.3*min(H, W) whose top is at 0.1*H: where no face was ever seen."""
    side = max(int(0.3 * min(width, height)), 1)
    x1 = max((width - side) // 2, 0)
    y1 = int(0.1 * height)
    return x1, y1, min(x1 + side, width), min(y1 + side, height)


def pad_box(box: tuple[int, int, int, int], padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow a box by ``padding`` px on each side, clipped to the frame."""
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, width), min(y2 + padding, height)


def resolve_face_boxes(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    width: int,
    height: int,
    padding: int = 0,
    last_good: tuple[int, int, int, int] | None = None,
    first_good: tuple[int, int, int, int] | None = None,
) -> tuple[list[tuple[int, int, int, int]], list[bool], tuple[int, int, int, int] | None]:
    """Replace invalid face boxes: the last good box, leading frames the first good one, else the
    fallback square; then apply ``padding``.

    ``last_good`` carries state from an earlier chunk; ``first_good`` lets a caller that buffers
    leading faceless frames hand in the first good box found later.

    Returns:
        (T boxes as int tuples, T held flags, the last good box for the next chunk).
    """
    b = boxes.cpu().tolist()
    v = valid.cpu().tolist()
    if first_good is None:
        first_good = next((tuple(bb) for bb, ok in zip(b, v) if ok), None)
    out, held = [], []
    for bb, ok in zip(b, v):
        if ok:
            last_good = tuple(bb)
            box = last_good
        else:
            box = last_good or first_good or fallback_face_box(width, height)
        out.append(pad_box(box, padding, width, height) if padding else tuple(box))
        held.append(not ok)
    return out, held, last_good


def crop_resize(
    frames: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: int = 512, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop each frame's integer box and resize it to size x size: bilinear with half-pixel
    centres and the box's edge pixels repeated, as OpenCV's resize of the sub-image.

    Args:
        frames: (T, C, H, W) float, or uint8 (then resized in uint8, which torch does several
            times faster on the CPU for channels-last memory; results round to integers).
        boxes: T (x1, y1, x2, y2), non-empty, inside the frame.
        out: optional (T, size, size, C) tensor to write into (values cast, not rescaled).

    Returns:
        (T, size, size, C) in the frames' dtype and value range (or ``out``).
    """
    t, c = frames.shape[:2]
    if out is None:
        out = torch.empty((t, size, size, c), dtype=frames.dtype, device=frames.device)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        # Boxes differ in size, so one interpolate per face; T small kernels are cheap next
        # to the models.
        sub = frames[i : i + 1, :, y1:y2, x1:x2]
        face = F.interpolate(sub, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out[i] = face[0].permute(1, 2, 0)
    return out


def crop_resize_exact(
    frames: torch.Tensor, boxes: torch.Tensor, size: int = 512, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop each frame's box at sub-pixel precision and resize it to size x size: output pixel
    u samples x1 + (u + 0.5) * (x2 - x1) / size - 0.5 (pixel-index coordinates), bilinear, the
    frame's edge repeated beyond it. For integer boxes this is :func:`crop_resize` but for the
    box's border pixels (which sample their outside neighbours instead of repeating). A
    smoothed box that moves by a fraction of a pixel moves the crop by that much, instead of
    snapping to whole pixels.

    Args:
        frames: (T, C, H, W) float.
        boxes: (T, 4) float x1, y1, x2, y2 in frame pixels (edges, as :func:`face_boxes`).
        out: optional (T, size, size, C) tensor to write into (values cast).

    Returns:
        (T, size, size, C) float (or ``out``).
    """
    t, c, h, w = frames.shape
    b = boxes.to(device=frames.device, dtype=torch.float32)
    u = (torch.arange(size, device=frames.device, dtype=torch.float32) + 0.5) / size  # (S,)
    xs = b[:, 0:1] + u * (b[:, 2:3] - b[:, 0:1]) - 0.5  # (T, S) pixel-index coordinates
    ys = b[:, 1:2] + u * (b[:, 3:4] - b[:, 1:2]) - 0.5
    gx = (xs + 0.5) / w * 2 - 1  # grid_sample's align_corners=False normalisation
    gy = (ys + 0.5) / h * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(t, size, size), gy[:, :, None].expand(t, size, size)], dim=-1)
    faces = F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    faces = faces.permute(0, 2, 3, 1)
    if out is None:
        return faces
    out.copy_(faces)
    return out


def key_frame_indices(num_frames: int, count: int = 4) -> list[int]:
    """``count`` evenly spaced frame indices (one when the video is shorter than ``count``)."""
    if num_frames < count:
        return [0]
    return [int(round(i * (num_frames - 1) / (count - 1))) for i in range(count)]


def key_frame_points(keypoints: torch.Tensor, min_score: float = 0.3, box: torch.Tensor | None = None) -> list[dict]:
    """SAM2 prompt points of one frame: Wan body rows 0,1,2,5,8,11,10,13 in pixels, leaving out
    points scored under ``min_score`` (or not finite).

    When no point passes and ``box`` is given, the one point is the centre of that person box:
    an empty prompt is of no use to a SAM2 node.

    Args:
        keypoints: (133, 3) in frame pixels.
        box: (>=4,) x1, y1, x2, y2 of the frame's person box, or None.
    """
    body = wan_body(keypoints.unsqueeze(0).float())[0].cpu().tolist()
    pts = []
    for r in WAN_KEY_POINT_ROWS:
        x, y, s = body[r]
        if s >= min_score and math.isfinite(x) and math.isfinite(y):
            pts.append({"x": int(x), "y": int(y)})
    if not pts and box is not None:
        x1, y1, x2, y2 = (float(v) for v in box[:4].tolist())
        pts.append({"x": int((x1 + x2) / 2), "y": int((y1 + y2) / 2)})
    return pts


def _openpose_flat(xy: np.ndarray, p: np.ndarray, min_score: float) -> np.ndarray:
    """(T, N, 2) pixels and (T, N) scores -> (T, 3N) flat x, y, score; unseen points 0, 0, 0."""
    seen = np.isfinite(xy).all(-1) & np.isfinite(p) & (p > 0) & (p >= min_score)
    out = np.concatenate([xy, p[..., None]], axis=-1)
    out[~seen] = 0.0
    return out.reshape(out.shape[0], -1)


# A point with a score under this is unseen in the OpenPose layouts (DWPose's rule in
# comfyui_controlnet_aux). Draw ViT Pose draws from 0.5, so every point it draws passes.
KEEP_SCORE = 0.3


def openpose_frames(pose_metas, min_score: float = KEEP_SCORE) -> list[dict]:
    """Poses in the OpenPose JSON layout, one dict per frame (what pose editors and ControlNet
    tools read)::

        {"people": [{"pose_keypoints_2d": [...], "face_keypoints_2d": [...],
                     "hand_left_keypoints_2d": [...], "hand_right_keypoints_2d": [...]}],
         "canvas_width": W, "canvas_height": H}

    Flat x, y, score triples in pixels of each frame's canvas: 18 body points, 68 face points,
    21 per hand. Points not finite, scored 0 or under ``min_score`` are unseen: 0, 0, 0.

    Args:
        pose_metas: T Wan meta dicts (normalised, as :func:`pose_metas` makes them) or
            :class:`~wanprep_torch.posemeta.PoseMeta` objects (pixels); a missing face is unseen.
    """
    metas = [m if isinstance(m, PoseMeta) else PoseMeta.from_wan(m) for m in pose_metas]
    if not metas:
        return []
    parts = {}
    for name, stem, rows in (
        ("pose_keypoints_2d", "kps_body", OPENPOSE_BODY),
        ("face_keypoints_2d", "kps_face", OPENPOSE_FACE),
        ("hand_left_keypoints_2d", "kps_lhand", slice(None)),
        ("hand_right_keypoints_2d", "kps_rhand", slice(None)),
    ):
        xy = np.stack([getattr(m, stem)[rows] for m in metas])  # (T, N, 2)
        p = np.stack([getattr(m, stem + "_p")[rows] for m in metas])  # (T, N)
        parts[name] = _openpose_flat(xy, p, min_score)
    return [
        {
            "people": [{name: [float(v) for v in flat[t]] for name, flat in parts.items()}],
            "canvas_width": int(m.width),
            "canvas_height": int(m.height),
        }
        for t, m in enumerate(metas)
    ]


def pose_keypoint_frames(frames, threshold: float = KEEP_SCORE) -> list[dict]:
    """Poses as ComfyUI's POSE_KEYPOINT, in comfyui_controlnet_aux's convention (what its DWPose
    node writes and RenderPeopleKps, the pose editors and other packs read)::

        [{"people": [{"pose_keypoints_2d": [x, y, c, ...], "face_keypoints_2d": [...],
                      "hand_left_keypoints_2d": [...], "hand_right_keypoints_2d": [...]}, ...],
          "canvas_width": W, "canvas_height": H}, ...]   # one dict per frame

    x, y are pixels of the frame's canvas (those readers take a part whose points all lie in
    [0, 1] as normalised and any other as pixels; pixels are what the DWPose node writes). c is
    exactly 1.0 for a kept point (finite, score >= ``threshold``) and a dropped point is
    0, 0, 0: the readers drop every point with c < 1. 18 body points (OpenPose order), 70 face
    points (the 68 landmarks, then the right and left eye from the body, as DWPose appends
    them), 21 per hand. A part with no kept point is all zeros where DWPose writes null (a fixed
    layout: some readers index the lists).

    :func:`openpose_frames` is the OpenPose JSON file layout instead: raw scores, 68 face points.

    Args:
        frames: one entry per frame: a pose (:class:`~wanprep_torch.posemeta.PoseMeta` in pixels
            or a Wan meta dict), or a non-empty list of the frame's people (one canvas).
        threshold: the keep rule above.
    """
    people = [list(f) if isinstance(f, (list, tuple)) else [f] for f in frames]
    if any(not p for p in people):
        raise ValueError("pose_keypoint_frames: every frame needs at least one person")
    per_person = openpose_frames([p for ps in people for p in ps], min_score=threshold)

    def kept(flat: list[float]) -> list[float]:
        out = []
        for x, y, c in zip(flat[0::3], flat[1::3], flat[2::3]):
            out += [x, y, 1.0] if c > 0 else [0.0, 0.0, 0.0]
        return out

    result, i = [], 0
    for ps in people:
        persons = []
        for raw in (f["people"][0] for f in per_person[i : i + len(ps)]):
            body = raw["pose_keypoints_2d"]
            eyes = [v for row in OPENPOSE_EYES for v in body[3 * row : 3 * row + 3]]
            person = {key: kept(flat) for key, flat in raw.items()}
            person["face_keypoints_2d"] += kept(eyes)
            persons.append(person)
        canvas = per_person[i]
        result.append({"people": persons, "canvas_width": canvas["canvas_width"], "canvas_height": canvas["canvas_height"]})
        i += len(ps)
    return result


def openpose_people(people: list, present: list, min_score: float = KEEP_SCORE) -> list[dict]:
    """:func:`openpose_frames` for several people: per frame, everyone in view (in the order
    given) in the ``people`` array (empty where nobody is).

    Args:
        people: P lists of T poses; present: P (T,) bool tensors or lists.
    """
    seen = [p.tolist() if hasattr(p, "tolist") else list(p) for p in present]
    per_person = [openpose_frames(poses, min_score) for poses in people]
    frames = []
    for t in range(len(seen[0]) if seen else 0):
        first = per_person[0][t]
        everyone = [f[t]["people"][0] for f, on in zip(per_person, seen) if on[t]]
        frames.append({"people": everyone, "canvas_width": first["canvas_width"], "canvas_height": first["canvas_height"]})
    return frames


def everyone_per_frame(people: list, present: list, fallback: list) -> list:
    """Per frame, the poses of everyone in view, in the order given (for
    :func:`pose_keypoint_frames`); a frame with nobody keeps ``fallback``'s pose (all unseen
    there), as POSE_KEYPOINT readers expect a person per frame.

    Args:
        people: P lists of T poses; present: P (T,) bool tensors or lists; fallback: T poses.
    """
    seen = [p.tolist() if hasattr(p, "tolist") else list(p) for p in present]
    return [[ps[t] for ps, on in zip(people, seen) if on[t]] or [own] for t, own in enumerate(fallback)]


@dataclass
class WanFrames:
    """The Wan outputs of consecutive frames, final (nothing later can change them).

    keypoints: (n, 133, 3); metas: n Wan dicts; face_images: (n, S, S, 3); face_bboxes: n int
    tuples; face_held: n bools; extra: what the caller passed with the frames, per add();
    face_exact: n float tuples, the boxes the crops were taken from (the int boxes unless the
    assembler crops at sub-pixel precision).
    """

    keypoints: list = field(default_factory=list)
    metas: list = field(default_factory=list)
    face_images: list = field(default_factory=list)
    face_bboxes: list = field(default_factory=list)
    face_held: list = field(default_factory=list)
    extra: list = field(default_factory=list)
    face_exact: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.metas)


@dataclass(frozen=True)
class FaceConfig:
    """The face crops' settings (the one home of their defaults).

    size: side of the square crops (the reference's 512).
    dtype: torch.float32 (in [0, 1], the default), torch.float16, or torch.uint8 (4x less memory).
    device: where the crops are kept; None: the frames' device ("cpu" keeps long videos' crops
        off the GPU).
    padding: extra frame pixels on each side of the face box before the resize.
    wait: leading frames with no visible face wait at most this many frames for the first good
        face box (then they take the fallback square); bounds memory on clips with no face.
    """

    size: int = 512
    dtype: torch.dtype = torch.float32
    device: torch.device | None = None
    padding: int = 0
    wait: int = 96

    def __post_init__(self):
        if self.dtype not in (torch.float32, torch.float16, torch.uint8):
            raise ValueError(f"face_dtype must be torch.float32, torch.float16 or torch.uint8, got {self.dtype}")
        for name, low in (("size", 1), ("padding", 0), ("wait", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"face_{name} must be an int >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.device is not None and not isinstance(self.device, torch.device):
            object.__setattr__(self, "device", torch.device(self.device))


class WanAssembler:
    """Turns keypoints into the Wan outputs in frame order, with the state that crosses groups
    of frames (the last body rows, the last good face box) and face crops written straight
    into their output tensors.

    Leading frames with no visible face wait until the first good face box is known, at most
    ``face.wait`` frames: beyond that they take the fallback square (and are marked held), so
    a clip with no face never keeps more than that many frames.

    Args:
        face: the face crops' settings (:class:`FaceConfig`; its ``device`` None: ``device``).
        device: where the frames are processed (face crops on the CPU use uint8 resizing).
        workspace: scratch buffers for frame conversions.
        exact: face boxes kept in float and cropped at sub-pixel precision
            (:func:`crop_resize_exact`): a smoothed face's crop moves smoothly instead of
            snapping to whole pixels; ``face_bboxes`` still report them truncated to int.
    """

    def __init__(
        self,
        face: FaceConfig = FaceConfig(),
        device: torch.device = torch.device("cpu"),
        workspace=None,
        timer=NULL_TIMER,
        exact: bool = False,
    ):
        self.exact = bool(exact)
        self.face = face
        self.device = device
        self.face_device = face.device or device
        self.ws = workspace
        self.timer = timer
        self.width = self.height = None
        self.last_body = None
        self.last_good = None
        self.first_good = None
        self.ready = WanFrames()
        # Leading groups with no face seen yet: (frames view, their face slots, their first
        # frame's and their group's index in ``ready``), cropped once the first good box is
        # known (or the wait runs out).
        self.waiting: list[tuple[torch.Tensor, torch.Tensor, int, int]] = []
        self.waiting_frames = 0

    def add(self, frames: torch.Tensor, keypoints: torch.Tensor, extra=None) -> None:
        """Consecutive frames (n, 3, H, W) and their keypoints (n, 133, 3) in frame pixels;
        ``extra`` travels with them to :meth:`take`."""
        # State changes only after the face crops succeed, so an out-of-memory retry of this
        # group starts from the same state.
        h, w = int(frames.shape[-2]), int(frames.shape[-1])
        n = frames.shape[0]
        self.height, self.width = h, w
        metas, last_body = pose_metas(keypoints, w, h, self.last_body)
        fb_boxes, valid = face_boxes(keypoints, w, h, exact=self.exact)
        first_good = self.first_good
        if first_good is None and bool(valid.any()):
            first_good = tuple(fb_boxes[int(torch.nonzero(valid)[0])].tolist())
        resolved, held, last_good = resolve_face_boxes(
            fb_boxes, valid, w, h, self.face.padding, last_good=self.last_good, first_good=first_good
        )
        slots = torch.empty((n, self.face.size, self.face.size, 3), dtype=self.face.dtype, device=self.face_device)
        if first_good is None:
            # No face seen yet: keep these frames until one is, or the wait would run past
            # ``face_wait`` frames (then the frames waiting so far take the fallback).
            if self.waiting_frames + n > self.face.wait:
                self.flush()
            self.waiting.append((frames, slots, len(self.ready.metas), len(self.ready.extra)))
            self.waiting_frames += n
        else:
            with self.timer("faces"):
                self._crop(FrameBatch(frames, self.ws), resolved, slots)
                self._flush_waiting(first_good)
        self.last_body, self.first_good, self.last_good = last_body, first_good, last_good
        r = self.ready
        r.keypoints.append(keypoints)
        r.metas.extend(metas)
        r.face_images.append(slots)
        r.face_bboxes.extend(_ints(resolved))
        r.face_exact.extend(_floats(resolved))
        r.face_held.extend(held)
        r.extra.append(extra)
        if self.waiting_frames > self.face.wait:  # one group longer than the whole wait
            self.flush()

    def _crop(self, fb: FrameBatch, boxes: list, slots: torch.Tensor) -> None:
        """Face crops of ``fb`` into ``slots`` (n, S, S, 3) in the output's dtype and device."""
        if self.exact:
            faces = crop_resize_exact(fb.float01(), torch.tensor(boxes, dtype=torch.float32), self.face.size)
            if slots.dtype == torch.uint8:
                faces = faces.mul_(255.0).round_().clamp_(0, 255)
            slots.copy_(faces)
            return
        if self.device.type == "cpu" and slots.device.type == "cpu":
            crop_resize(fb.uint8(), boxes, self.face.size, out=slots)  # 0-255 values
            if slots.dtype != torch.uint8:
                slots.mul_(1.0 / 255.0)
            return
        faces = crop_resize(fb.float01(), boxes, self.face.size)
        if slots.dtype == torch.uint8:
            faces = faces.mul_(255.0).round_().clamp_(0, 255)
        slots.copy_(faces)

    def _flush_waiting(self, box) -> None:
        """Crop the waiting leading frames with ``box`` (the first good one, or the fallback)."""
        if not self.waiting:
            return
        w, h = self.width, self.height
        box = pad_box(box, self.face.padding, w, h) if self.face.padding else box
        for view, slots, at, _group in self.waiting:
            self._crop(FrameBatch(view, self.ws), [box] * view.shape[0], slots)
            self.ready.face_bboxes[at : at + view.shape[0]] = _ints([box]) * view.shape[0]
            self.ready.face_exact[at : at + view.shape[0]] = _floats([box]) * view.shape[0]
        self.waiting.clear()
        self.waiting_frames = 0

    def flush(self) -> None:
        """Stop waiting for a face: the waiting frames take the fallback square."""
        if self.waiting:
            with self.timer("faces"):
                self._flush_waiting(fallback_face_box(self.width, self.height))

    def ready_groups(self) -> int:
        """How many added groups are final (those before the first waiting one)."""
        return self.waiting[0][3] if self.waiting else len(self.ready.extra)

    def ready_frames(self) -> int:
        """How many frames are final (those of the groups before the first waiting one)."""
        return sum(k.shape[0] for k in self.ready.keypoints[: self.ready_groups()])

    def take_frames(self, n: int) -> WanFrames | None:
        """The first ``n`` final frames (whole groups: ``n`` must end on a group's boundary)."""
        groups, frames = 0, 0
        while frames < n:
            frames += self.ready.keypoints[groups].shape[0]
            groups += 1
        if frames != n:
            raise ValueError(f"take_frames: {n} frames end inside a group")
        return self.take(groups)

    def take(self, limit: int | None = None) -> WanFrames | None:
        """The frames whose outputs are final (those before the first waiting one; at most
        ``limit`` groups), removed from the assembler (None: none yet)."""
        r = self.ready
        groups = self.ready_groups() if limit is None else min(limit, self.ready_groups())
        if groups == 0:
            return None
        frames = sum(k.shape[0] for k in r.keypoints[:groups])
        out = WanFrames(
            r.keypoints[:groups], r.metas[:frames], r.face_images[:groups], r.face_bboxes[:frames], r.face_held[:frames],
            r.extra[:groups], r.face_exact[:frames],
        )
        self.ready = WanFrames(
            r.keypoints[groups:], r.metas[frames:], r.face_images[groups:], r.face_bboxes[frames:], r.face_held[frames:],
            r.extra[groups:], r.face_exact[frames:],
        )
        self.waiting = [(v, sl, at - frames, g - groups) for v, sl, at, g in self.waiting]
        return out


def _ints(boxes: list) -> list[tuple[int, int, int, int]]:
    """Boxes as the int tuples of ``face_bboxes`` (truncated, as the reference's int())."""
    return [tuple(int(v) for v in b) for b in boxes]


def _floats(boxes: list) -> list[tuple[float, float, float, float]]:
    return [tuple(float(v) for v in b) for b in boxes]
