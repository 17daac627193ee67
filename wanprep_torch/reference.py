"""The reference image of pose retargeting: resized to the generation's area, its pose measured.

The reference node ("Pose and Face Detection" with a ``retarget_image``) resizes the image to
the generation's area (``width * height``, sides multiples of 16, the aspect ratio kept by
black letterbox bars), runs the detector and the pose model on it, and retargets the video's
poses onto that pose. This module does the same with this project's stages; the retargeting
math itself is :mod:`wanprep_torch.retargeting`.

Deliberate differences from the reference:
  * keypoints are normalised by the size of the image they were measured on (the resized one);
    the reference divides by the original image's size, which skews the pose whenever the
    image is not already at the generation's area;
  * the detector's boxes are in the resized image's pixels (the reference scales them to the
    video frames' size).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from . import wan
from .frames import as_tchw, to_float01
from .posemeta import PoseMeta, WanBatch
from .retargeting import RetargetPlan, plan_retarget, retarget_arrays

__all__ = ["REFERENCE_DIVISOR", "area_size", "letterbox", "ReferencePose", "estimate_reference", "RetargetStream"]

log = logging.getLogger("wanprep_torch")

REFERENCE_DIVISOR = 16  # the reference's resize_by_area(..., divisor=16)


def area_size(src_hw: tuple[int, int], area: int, divisor: int = REFERENCE_DIVISOR) -> tuple[int, int]:
    """(h, w) of about ``area`` pixels with the aspect ratio of ``src_hw``, each side rounded down
    to a multiple of ``divisor`` (at least one ``divisor``).

    What the reference's ``resize_by_area`` computes (its exact search always fails on a wrong
    call and falls back to this): w = sqrt(area * W / H), h = sqrt(area * H / W), floored.
    """
    sh, sw = int(src_hw[0]), int(src_hw[1])
    if sh <= 0 or sw <= 0 or area <= 0:
        raise ValueError(f"area_size: sizes must be positive, got image {sw}x{sh} and area {area}")
    aspect = sw / sh
    h = math.sqrt(area / aspect)
    w = area / h
    return max(int(h // divisor) * divisor, divisor), max(int(w // divisor) * divisor, divisor)


def letterbox(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize keeping the aspect ratio into an (h, w) canvas, centred, black bars (the
    reference's ``padding_resize``: same branch and integer truncation).

    Bilinear, antialiased when shrinking (the reference uses OpenCV's INTER_AREA there).

    Args:
        image: (1, H, W, 3) float in [0, 1].

    Returns:
        (1, h, w, 3) float in [0, 1], on the image's device.
    """
    from .video import resize_frames

    h, w = int(hw[0]), int(hw[1])
    sh, sw = int(image.shape[1]), int(image.shape[2])
    if sh / sw > h / w:
        nh, nw = h, max(int(h / sh * sw), 1)
    else:
        nh, nw = max(int(w / sw * sh), 1), w
    out = torch.zeros((1, h, w, 3), dtype=image.dtype, device=image.device)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[:, top : top + nh, left : left + nw] = resize_frames(image, (nh, nw))
    return out


@dataclass
class ReferencePose:
    """The reference image as the pose was measured on it.

    Attributes:
        image: (h, w, 3) float in [0, 1], the image resized to the generation's area.
        box: (5,) x1, y1, x2, y2, score of the person in ``image`` (score -1: full image).
        keypoints: (133, 3) x, y in ``image`` pixels, score.
        meta: its Wan meta dict (normalised by ``image``'s width and height).
    """

    image: torch.Tensor
    box: torch.Tensor
    keypoints: torch.Tensor
    meta: dict


def estimate_reference(detector, estimator, image: torch.Tensor, size: tuple[int, int]) -> ReferencePose:
    """Detect the person in a reference image and estimate its pose, the reference's way.

    Args:
        detector: a :class:`~wanprep_torch.detect.PersonDetector`.
        estimator: a :class:`~wanprep_torch.pose.PoseEstimator` on the same device.
        image: one image, (H, W, 3), (1, H, W, 3) or (1, 3, H, W), float in [0, 1] or uint8, on
            any device (the first image of a batch is used, as the reference does).
        size: (width, height) of the generation; the image is resized to about that area.
    """
    view = as_tchw(image)[:1]  # (1, 3, H, W)
    w, h = int(size[0]), int(size[1])
    target = area_size(tuple(view.shape[-2:]), w * h)
    img = to_float01(view.to(detector.device)).permute(0, 2, 3, 1)  # (1, H, W, 3)
    img = letterbox(img, target).contiguous()
    found = detector(img)
    if float(found.boxes[0, 4]) < 0:  # the reference goes on the same way; say why the result may be junk
        log.warning("wanprep: no person found in the reference image; its pose is estimated on the whole image")
    kps = estimator(img, found.boxes[:, :4])
    metas, _ = wan.pose_metas(kps, target[1], target[0])
    return ReferencePose(image=img[0], box=found.boxes[0], keypoints=kps[0], meta=metas[0])


class RetargetStream:
    """Retargets a video's poses part by part onto one reference pose: the plan comes from the
    first frame seen (the video's frame 0), as :func:`wanprep_torch.retarget` does for a whole
    list, so the parts joined equal ``retarget(all_metas, reference_meta)``."""

    def __init__(self, reference_meta: dict):
        self.reference_meta = reference_meta
        self.plan: RetargetPlan | None = None

    def add(self, metas: list) -> list[PoseMeta]:
        """The retargeted poses of the next consecutive frames (Wan meta dicts)."""
        if not metas:
            return []
        batch = WanBatch.stack(metas, "retarget: template_metas")
        if self.plan is None:
            source = {"width": int(batch.width[0]), "height": int(batch.height[0]), "keypoints_body": batch.body[0]}
            self.plan = plan_retarget(source, self.reference_meta)
        return retarget_arrays(batch, self.plan).to_pose_metas()

