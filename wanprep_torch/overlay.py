"""The result drawn on the source frames: skeleton, face box and subject box (``overlay.mp4``).

The skeleton is the pose images' drawing (:func:`wanprep_torch.draw.render_pose_pixels`, the
"Draw ViT Pose" style, face points as dots) and the boxes are rectangle outlines, all
rasterised by :mod:`wanprep_torch.raster` and painted over a copy of the frames, so a frame of
the overlay is its source frame plus the drawing: nothing is resized or shifted.

:class:`FrameQueue` keeps the decoded frames until the pipeline's results for them are final
(the gate's lookahead delays them), so that each part is drawn on its own frames.
"""

from __future__ import annotations

import torch

from .draw import auto_hand_stick_width, auto_stick_width, palette_rgb255, render_pose_pixels
from .poses import Poses
from .raster import Primitives, cpu_threads, geometry_dtype, order_scratch, paint, rasterize

__all__ = ["SUBJECT_COLOR", "FACE_COLOR", "HELD_FACE_COLOR", "draw_overlay", "FrameQueue"]

SUBJECT_COLOR = (0, 255, 0)  # the person box the pose model was given
FACE_COLOR = (255, 255, 255)  # the face box of a frame whose face is visible
HELD_FACE_COLOR = (128, 128, 128)  # a face box held from another frame (face not visible)

# Draw orders after the skeleton's (palette_rgb255's 190 slots): boxes are painted on top.
_PALETTE = palette_rgb255() + [SUBJECT_COLOR, FACE_COLOR, HELD_FACE_COLOR]
_O_SUBJECT, _O_FACE, _O_HELD = len(_PALETTE) - 3, len(_PALETTE) - 2, len(_PALETTE) - 1


def _rectangles(prims: Primitives, boxes: torch.Tensor, frame: torch.Tensor, order: torch.Tensor, thickness: int) -> None:
    """Outlines of (N, 4) integer-valued x1, y1, x2, y2 boxes: four lines each."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = [torch.stack(c, -1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
    for a, b in zip(corners, corners[1:] + corners[:1]):
        prims.thick_lines(a, b, thickness, frame, order)


def draw_overlay(
    frames: torch.Tensor,
    poses: Poses,
    boxes: torch.Tensor | None = None,
    face_boxes=None,
    face_held: torch.Tensor | None = None,
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """Draw the poses, subject boxes and face boxes over the frames they were found on.

    Args:
        frames: (T, H, W, 3) uint8 RGB; not modified.
        poses: T poses on the frames' canvas (``poses.width == W``, ``poses.height == H``).
        boxes: optional (T, >=5) x1, y1, x2, y2, score in pixels; a box with score -1 (the
            full-frame fallback: nobody detected) is not drawn.
        face_boxes: optional T (x1, y1, x2, y2) pixel boxes (list or (T, 4) tensor).
        face_held: optional (T,) bool: the face box is held (drawn grey, not white).
        score_threshold: a point (and a limb whose two points pass) is drawn at or above it.

    Returns:
        (T, H, W, 3) uint8: the frames with the drawing on top (line widths as the pose images').
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {tuple(frames.shape)}")
    n, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    if len(poses) != n or (poses.height, poses.width) != (height, width):
        raise ValueError(f"poses must be {n} on a {width}x{height} canvas, got {len(poses)} on {poses.width}x{poses.height}")
    device = frames.device
    out = frames.contiguous().clone()
    if n == 0:
        return out
    bw, hw = auto_stick_width(height, width), auto_hand_stick_width(height, width)
    with cpu_threads(device):
        kps = poses.keypoints.to(device=device, dtype=geometry_dtype(device))
        index, order = render_pose_pixels(kps, height, width, bw, hw, hw, True, score_threshold)
        prims = Primitives(height, width, device)
        ids = torch.arange(n, device=device)
        if boxes is not None:
            b = torch.as_tensor(boxes).to(device=device, dtype=torch.float64)
            keep = b[:, 4] != -1
            _rectangles(prims, b[keep, :4].round(), ids[keep], torch.tensor(_O_SUBJECT, device=device), bw)
        if face_boxes is not None and len(face_boxes):
            fb = torch.as_tensor(face_boxes if torch.is_tensor(face_boxes) else [list(x) for x in face_boxes],
                                 dtype=torch.float64, device=device).round()
            held = torch.zeros(n, dtype=torch.bool, device=device) if face_held is None else face_held.to(device).bool()
            order_f = torch.where(held, _O_HELD, _O_FACE)
            _rectangles(prims, fb, ids, order_f, bw)
        shapes = prims.build()
        px = rasterize(shapes.segments, shapes.count, width)
        box_index = (shapes.frame.index_select(0, px.owner) * height + px.y) * width + px.x
        index = torch.cat((index, box_index))
        order = torch.cat((order, shapes.order.index_select(0, px.owner)))
        palette = torch.tensor(_PALETTE, dtype=torch.uint8, device=device)
        paint(out, index, order, palette, order_scratch(n * height * width, device))
    return out


class FrameQueue:
    """Decoded frames kept, in order, until their results are drawn.

    ``push`` each chunk as it goes to the pipeline; ``take(start, n)`` hands back frames
    ``start`` .. ``start + n - 1`` (the next ones not yet taken) and forgets them, so what is
    held is the pipeline's lookahead, not the video.
    """

    def __init__(self):
        self._chunks: list[torch.Tensor] = []
        self._base = 0  # index of the first frame held
        self.held = 0

    def push(self, chunk: torch.Tensor) -> None:
        self._chunks.append(chunk)
        self.held += int(chunk.shape[0])

    def take(self, start: int, n: int) -> torch.Tensor:
        if start != self._base or n > self.held:
            raise ValueError(f"frames {start}..{start + n - 1} asked for; holding {self._base}..{self._base + self.held - 1}")
        got, need = [], n
        while need:
            c = self._chunks[0]
            if c.shape[0] <= need:
                got.append(self._chunks.pop(0))
                need -= int(c.shape[0])
            else:
                got.append(c[:need])
                self._chunks[0] = c[need:]
                need = 0
        self._base += n
        self.held -= n
        return got[0] if len(got) == 1 else torch.cat(got)
