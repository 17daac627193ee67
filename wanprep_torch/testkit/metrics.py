"""Measures of keypoint tracks against the test kit's ground truth: accuracy and steadiness.

Used by the tests and ``scripts/noise_table.py``. All take torch tensors in frame pixels.
"""

from __future__ import annotations

import torch

from ..skeleton import BODY

__all__ = ["body_error", "frame_errors", "body_accel", "box_accel"]


def frame_errors(keypoints: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor, min_score: float = 0.3) -> torch.Tensor:
    """Per frame, the mean distance (px) of the confident, visible body points from the truth.

    Args:
        keypoints: (T, 133, 3) x, y, score; truth: (T, 133, 2); visible: (T, 133) bool.

    Returns:
        (T,) float32, NaN on a frame with no such point.
    """
    d = (keypoints[:, BODY, :2].float() - truth[:, BODY].float()).norm(dim=-1)
    ok = visible[:, BODY] & (keypoints[:, BODY, 2] >= min_score)
    n = ok.sum(dim=1)
    s = torch.where(ok, d, torch.zeros_like(d)).sum(dim=1)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, float("nan")))


def body_error(keypoints: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor, min_score: float = 0.3) -> float:
    """Mean distance (px) over all confident, visible body points of all frames."""
    d = (keypoints[:, BODY, :2].float() - truth[:, BODY].float()).norm(dim=-1)
    ok = visible[:, BODY] & (keypoints[:, BODY, 2] >= min_score)
    return float(d[ok].mean()) if bool(ok.any()) else float("nan")


def body_accel(keypoints: torch.Tensor, min_score: float = 0.3, cuts: list[int] = ()) -> float:
    """Mean norm of the second time-difference of the body points (px/frame^2): how much the
    track shakes. A point counts at frame t when confident at t-1, t and t+1; triples spanning a
    scene cut (``cuts``: first frames of new scenes) are left out.

    Args:
        keypoints: (T, 133, 3).
    """
    b = keypoints[:, BODY].float()
    if b.shape[0] < 3:
        return float("nan")
    acc = (b[2:, :, :2] - 2 * b[1:-1, :, :2] + b[:-2, :, :2]).norm(dim=-1)  # (T-2, 17)
    ok = (b[2:, :, 2] >= min_score) & (b[1:-1, :, 2] >= min_score) & (b[:-2, :, 2] >= min_score)
    for c in cuts:  # triples (c-2, c-1, c) and (c-1, c, c+1) cross the cut
        for mid in (c - 1, c):
            if 1 <= mid <= b.shape[0] - 2:
                ok[mid - 1] = False
    return float(acc[ok].mean()) if bool(ok.any()) else float("nan")


def box_accel(boxes, cuts: list[int] = ()) -> float:
    """Mean norm of the second time-difference of box centres (px/frame^2).

    Args:
        boxes: (T, >=4) x1, y1, x2, y2 (tensor or list of tuples).
    """
    b = torch.as_tensor(boxes, dtype=torch.float64)[:, :4]
    if b.shape[0] < 3:
        return float("nan")
    c = (b[:, :2] + b[:, 2:]) / 2
    acc = (c[2:] - 2 * c[1:-1] + c[:-2]).norm(dim=-1)
    ok = torch.ones(acc.shape[0], dtype=torch.bool)
    for cut in cuts:
        for mid in (cut - 1, cut):
            if 1 <= mid <= b.shape[0] - 2:
                ok[mid - 1] = False
    return float(acc[ok].mean())
