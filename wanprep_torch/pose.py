"""Pose model pre/post-processing: box -> window, affine crop, normalisation, heatmaps -> frame.

Conventions (the ones ViTPose was trained with, mmpose's non-UDP pipeline, which the
reference node decodes with):
- a box becomes a window of aspect 192:256 (w:h), 1.25x the box's fitted size, centred on it;
- crop pixel index u samples the frame at x = x0 + u * s (pixel-index coordinates, bilinear,
  zeros outside the frame), with x0 the window's left edge and s = window_w / 192;
- heatmap pixel v is crop pixel 4 v, so a decoded heatmap x maps back to x0 + x * window_w / 48.
The reference rounds the window to whole pixels before an OpenCV resize; here the placement is
exact and sub-pixel (kornia's ``warp_affine``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .buffers import Workspace
from .codec import decode_heatmaps
from .frames import FrameBatch, as_tchw
from .runtime import OrtModel, as_model, check_pose, resolve_batch_size
from .timing import NULL_TIMER

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "box_to_center_window",
    "window_matrix",
    "crop_windows",
    "window_pixel_bounds",
    "heatmap_to_frame",
    "decode_pose",
    "crop_source",
    "PoseInput",
    "PoseEstimator",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def box_to_center_window(
    boxes: torch.Tensor, input_hw: tuple[int, int] = (256, 192), padding: float = 1.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose window of each box.

    size = max(w * H_in / W_in, h); window = (padding * size * W_in / H_in, padding * size).

    Args:
        boxes: (N, >=4) x1, y1, x2, y2 in frame pixels.

    Returns:
        center (N, 2) x, y and window (N, 2) width, height, in frame pixels.
    """
    ih, iw = input_hw
    b = boxes[:, :4].float()
    center = (b[:, :2] + b[:, 2:4]) * 0.5
    wh = b[:, 2:4] - b[:, :2]
    size = torch.maximum(wh[:, 0] * (ih / iw), wh[:, 1]) * padding
    window = torch.stack([size * (iw / ih), size], dim=-1)
    return center, window


def window_matrix(center: torch.Tensor, window: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """(N, 2, 3) affine map frame pixel -> crop pixel: u = (x - x0) / s, with x0 the window's
    left (top) edge and s = window / out size (pixel-index coordinates).

    Args:
        center, window: (N, 2) from :func:`box_to_center_window`.
    """
    oh, ow = out_hw
    s = window / torch.tensor([ow, oh], device=window.device, dtype=window.dtype)
    x0 = center - window * 0.5
    m = torch.zeros((center.shape[0], 2, 3), device=center.device, dtype=center.dtype)
    m[:, 0, 0] = 1.0 / s[:, 0]
    m[:, 1, 1] = 1.0 / s[:, 1]
    m[:, :, 2] = -x0 / s
    return m


def window_pixel_bounds(
    center: torch.Tensor, window: torch.Tensor, out_hw: tuple[int, int], frame_hw: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The frame pixels a bilinear crop of these windows can read: (x0, y0, x1, y1), end
    exclusive, clipped to the frame; None when every window lies outside it, the whole frame
    when a window is not finite.

    A crop of ``frames[..., y0:y1, x0:x1]`` with the centres moved by (-x0, -y0) equals the
    crop of the whole frame: every tap inside the frame is inside the rectangle, and taps
    outside the frame read zeros either way. So only that part needs a float copy.

    Args:
        center, window: (N, 2) from :func:`box_to_center_window` (a host sync on GPUs).
    """
    oh, ow = out_hw
    fh, fw = frame_hw
    c, win = center.float(), window.float()
    step = win / torch.tensor([ow, oh], device=win.device, dtype=win.dtype)
    first = c - win * 0.5  # sample u = 0
    last = first + step * torch.tensor([ow - 1, oh - 1], device=win.device, dtype=win.dtype)
    lo = torch.minimum(first, last).amin(dim=0).floor()
    hi = torch.maximum(first, last).amax(dim=0).floor()
    if not bool(torch.isfinite(torch.cat([lo, hi])).all()):
        return 0, 0, fw, fh  # a NaN/inf box (a broken model output): the whole frame, as before
    # Taps are floor(x) and floor(x) + 1; one more pixel each side absorbs float rounding.
    x0, y0 = (int(v) - 1 for v in lo.tolist())
    x1, y1 = (int(v) + 3 for v in hi.tolist())
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def crop_windows(
    frames: torch.Tensor,
    center: torch.Tensor,
    window: torch.Tensor,
    out_hw: tuple[int, int] = (256, 192),
    frame_index: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bilinear crop of each window to ``out_hw``, zeros outside the frame (kornia's
    ``warp_affine`` with :func:`window_matrix`; align_corners=True is the pixel-index convention).

    Args:
        frames: (T, C, H, W) float (any memory format).
        center, window: (N, 2) from :func:`box_to_center_window`.
        frame_index: (N,) frame of each window; default ``arange(N)`` (then N == T).
        out: optional (N, C, oh, ow) tensor to write into.

    Returns:
        (N, C, oh, ow) in the frames' dtype and value range.
    """
    from kornia.geometry.transform import warp_affine

    if not frames.is_floating_point():
        raise TypeError("crop_windows needs float frames")
    src = frames
    if frame_index is not None:
        src, center = window_regions(frames, center, window, out_hw, frame_index)
    m = window_matrix(center.to(torch.float32), window.to(torch.float32), out_hw).to(src.dtype)
    crops = warp_affine(src, m, tuple(out_hw), mode="bilinear", padding_mode="zeros", align_corners=True)
    return crops if out is None else out.copy_(crops)


def window_regions(
    frames: torch.Tensor, center: torch.Tensor, window: torch.Tensor, out_hw: tuple[int, int], frame_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For several windows a frame: each window's readable pixels (:func:`window_pixel_bounds`
    of that window alone) copied into one zero-padded batch, and the centres moved into it.
    Warping that batch equals warping each window's whole frame (taps outside a region are
    outside the frame, zeros either way), without copying whole frames per window.

    Args:
        frames: (T, C, H, W); center, window: (N, 2); frame_index: (N,) frame of each window.

    Returns:
        ((N, C, h, w) regions, (N, 2) centres in them).
    """
    fh, fw = frames.shape[-2:]
    oh, ow = out_hw
    c, win = center.float(), window.float()
    # window_pixel_bounds' rule, for every window at once (one host read).
    step = win / torch.tensor([ow, oh], device=win.device, dtype=win.dtype)
    first = c - win * 0.5
    last = first + step * torch.tensor([ow - 1, oh - 1], device=win.device, dtype=win.dtype)
    lo = torch.nan_to_num(torch.minimum(first, last).floor(), nan=0.0, posinf=0.0, neginf=0.0) - 1
    hi = torch.nan_to_num(torch.maximum(first, last).floor(), nan=float(max(fw, fh)), posinf=float(max(fw, fh)), neginf=0.0) + 3
    lim = torch.tensor([fw, fh], device=lo.device, dtype=lo.dtype)
    lo, hi = torch.minimum(lo.clamp_min(0), lim), torch.minimum(hi.clamp_min(0), lim)
    bounds = []
    for x0, y0, x1, y1 in torch.cat([lo, hi], dim=1).long().tolist():
        bounds.append((x0, y0, x1, y1) if x0 < x1 and y0 < y1 else (0, 0, 1, 1))  # off the frame: zeros either way
    rh = max([b[3] - b[1] for b in bounds], default=1)
    rw = max([b[2] - b[0] for b in bounds], default=1)
    out = frames.new_zeros((len(bounds), frames.shape[1], rh, rw))
    for j, (i, (x0, y0, x1, y1)) in enumerate(zip(frame_index.tolist(), bounds)):
        out[j, :, : y1 - y0, : x1 - x0] = frames[i, :, y0:y1, x0:x1]
    shift = torch.tensor([[b[0], b[1]] for b in bounds], device=center.device, dtype=center.dtype).view(-1, 2)
    return out, center - shift


def heatmap_to_frame(
    coords: torch.Tensor, center: torch.Tensor, window: torch.Tensor, heatmap_hw: tuple[int, int]
) -> torch.Tensor:
    """Heatmap pixels -> frame pixels: x = x0 + x_hm * window_w / heatmap_w.

    Args:
        coords: (N, K, 2); center, window: (N, 2).

    Returns:
        (N, K, 2) frame pixels.
    """
    hh, hw = heatmap_hw
    scale = window / torch.tensor([hw, hh], device=window.device, dtype=window.dtype)
    x0 = center - window * 0.5
    return coords * scale[:, None, :] + x0[:, None, :]


def decode_pose(
    heatmaps: torch.Tensor, center: torch.Tensor, window: torch.Tensor, kernel: int = 11, dark: bool = True
) -> torch.Tensor:
    """Heatmaps -> keypoints in frame pixels.

    Args:
        heatmaps: (N, K, h, w); center, window: (N, 2).

    Returns:
        (N, K, 3) x, y, score (float32).
    """
    coords, scores = decode_heatmaps(heatmaps, kernel=kernel, dark=dark)
    xy = heatmap_to_frame(coords, center.float(), window.float(), heatmaps.shape[-2:])
    return torch.cat([xy, scores.unsqueeze(-1)], dim=-1)


def crop_source(
    frames: FrameBatch, center: torch.Tensor, window: torch.Tensor, pose_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float frames for the pose crop and the window centres in their coordinates: float32
    input as it is; other dtypes converted only where the windows can read."""
    if frames.view.dtype == torch.float32:
        return frames.float01(), center
    bounds = window_pixel_bounds(center, window, pose_hw, frames.hw)
    if bounds is None:  # every window is off the frame: the crops are zeros either way
        bounds = (0, 0, 1, 1)
    x0, y0 = bounds[:2]
    return frames.float01_region(*bounds), center - torch.tensor([x0, y0], device=center.device, dtype=center.dtype)


@dataclass
class PoseInput:
    """The pose model's input for N boxes: ``pixels`` (N, 3, 256, 192) float32 normalised,
    and each window's ``center`` and ``window`` size (N, 2) in frame pixels for decoding."""

    pixels: torch.Tensor
    center: torch.Tensor
    window: torch.Tensor


class PoseEstimator:
    """The wholebody pose stage: ViTPose-style ONNX model (133 keypoints), box -> window ->
    crop, ImageNet normalisation, heatmap decoding (argmax + DARK).

    Args:
        model: an ONNX file, or an :class:`~wanprep_torch.runtime.OrtModel` already open.
        device: where frames live.
        batch_size: crops per model run, or "auto" (1 on the CPU, 16 on CUDA).
        providers, intra_op_threads: ONNX Runtime settings.
        dark: DARK sub-pixel decoding (True, as the reference) or plain argmax.

    Example (the test kit's analytic pose model on its synthetic clip, whose keypoints are
    known; a real model is a path such as ``"vitpose_h_wholebody.onnx"``)::

        >>> import tempfile
        >>> from wanprep_torch.testkit import build_test_models, make_clip
        >>> models = build_test_models(tempfile.mkdtemp(), fp16=False)
        >>> clip = make_clip(2)
        >>> kps = PoseEstimator(models["pose"])(clip.frames, clip.boxes)   # boxes (T, >=4) x1, y1, x2, y2
        >>> kps.shape                        # x, y in frame pixels, score
        torch.Size([2, 133, 3])
        >>> err = (kps[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
        >>> bool(err.max() < 2)              # px from the ground truth
        True
    """

    def __init__(
        self,
        model: str | Path | OrtModel,
        device: str | torch.device = "cpu",
        *,
        batch_size: int | str = "auto",
        providers=None,
        intra_op_threads: int | None = None,
        dark: bool = True,
    ):
        self.device = torch.device(device)
        self.model = as_model(model, self.device, providers, intra_op_threads, role="pose")
        check_pose(self.model)
        self.batch_size = resolve_batch_size(batch_size, self.device)
        self.dark = dark
        ph, pw = self.model.input_hw
        self.input_hw = (ph or 256, pw or 192)
        # Normalisation as one multiply-add: (x - mean) / std = x * inv_std + bias.
        self._inv_std = 1.0 / torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._bias = -torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * self._inv_std
        self.workspace = Workspace()

    def preprocess(
        self, frames: FrameBatch, boxes: torch.Tensor, workspace: Workspace | None = None, frame_index: torch.Tensor | None = None
    ) -> PoseInput:
        """Crop and normalise one window per box.

        Args:
            frames: the frames; boxes: (N, >=4) x1, y1, x2, y2 in frame pixels, one per frame
                unless ``frame_index`` (N,) names each box's frame (several people a frame).
            workspace: write into its buffers (valid until the next call); new tensors when None.
        """
        n = len(frames) if frame_index is None else int(frame_index.shape[0])
        shape = (n, 3) + tuple(self.input_hw)
        center, window = box_to_center_window(boxes.to(self.device), self.input_hw)
        src, src_center = crop_source(frames, center, window, self.input_hw)
        ws = workspace
        idx = None if frame_index is None else frame_index.to(self.device)
        crops = crop_windows(
            src, src_center, window, self.input_hw, frame_index=idx, out=None if ws is None else ws.get("crops", shape, torch.float32, self.device)
        )
        out = None if ws is None else ws.get("pose_input", shape, torch.float32, self.device)
        pixels = torch.addcmul(self._bias, crops, self._inv_std) if out is None else torch.addcmul(self._bias, crops, self._inv_std, out=out)
        return PoseInput(pixels, center, window)

    def infer(self, pixels: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """(N, 133, h, w) heatmaps (in ``workspace`` when given)."""
        return self.model.run(pixels, batch_size=min(self.batch_size, pixels.shape[0]), workspace=workspace)

    def postprocess(self, heatmaps: torch.Tensor, inp: PoseInput) -> torch.Tensor:
        """(N, 133, 3) x, y in frame pixels, score."""
        return decode_pose(heatmaps, inp.center, inp.window, dark=self.dark)

    def estimate(self, frames: FrameBatch, boxes: torch.Tensor, timer=NULL_TIMER, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """Keypoints for a :class:`FrameBatch` and one box per frame, or with ``frame_index``
        (N,) any number of boxes per frame, all in one batch (the pipeline's entry point)."""
        with timer("pose_pre"):
            inp = self.preprocess(frames, boxes, self.workspace, frame_index)
        with timer("pose_model"):
            heatmaps = self.infer(inp.pixels, self.workspace)
        with timer("pose_post"):
            return self.postprocess(heatmaps, inp)

    def __call__(self, frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Wholebody keypoints of one person per frame.

        Args:
            frames: (T, H, W, 3) or (T, 3, H, W), float in [0, 1] or uint8 (or one (H, W, 3)
                frame), on this estimator's device.
            boxes: (T, >=4) x1, y1, x2, y2 in frame pixels (a detector's boxes, a mask's
                bounding box, ...).

        Returns:
            (T, 133, 3) x, y in frame pixels and score, COCO-wholebody order.
        """
        view = as_tchw(frames)
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if boxes.dim() != 2 or boxes.shape[0] != view.shape[0] or boxes.shape[1] < 4:
            raise ValueError(f"boxes must be (T, >=4) with T = {view.shape[0]} frames, got shape {tuple(boxes.shape)}")
        if view.device != self.device:
            raise ValueError(f"frames are on {view.device} but the estimator runs on {self.device}")
        parts = []
        for s in range(0, view.shape[0], self.batch_size):
            parts.append(self.estimate(FrameBatch(view[s : s + self.batch_size]), boxes[s : s + self.batch_size]).clone())
        return torch.cat(parts)
