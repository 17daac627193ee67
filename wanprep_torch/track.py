"""Subject tracking: boxes from the last keypoints, and staying with the same person.

Holds the only cross-frame state of detection (besides the ONNX sessions). Host tensors only:
boxes and keypoints are a handful of numbers a frame.
"""

from __future__ import annotations

import torch

from .detect import DetectConfig, Selection, box_iou, count_others, largest_person, usable
from .gate import GateConfig

__all__ = ["keypoint_box", "SubjectTracker"]


def keypoint_box(kps: torch.Tensor, min_score: float, padding: float) -> torch.Tensor | None:
    """The extent of the confident keypoints, grown by ``padding`` of its size on each side.

    Args:
        kps: (133, 3) in frame pixels.

    Returns:
        (4,) x1, y1, x2, y2, or None with fewer than two confident points.
    """
    good = kps[:, 2] >= min_score
    if int(good.sum()) < 2:
        return None
    xy = kps[good, :2]
    lo, hi = xy.amin(dim=0), xy.amax(dim=0)
    pad = (hi - lo) * padding
    return torch.cat([lo - pad, hi + pad])


class SubjectTracker:
    """Which box the pose model crops on each processed frame.

    - ``tracked_box``: the box from the last keypoints, None when the detector must run (no
      keypoints yet, or the box leaves the frame); ``since_det`` counts processed frames since
      the last detection, for the caller's ``det_every`` rule.
    - ``choose``: among the detections, the box overlapping the subject's last box (when
      ``subject`` tracking is on); the largest-box rule at the start, after a cut, or after the
      subject has been missing for more than ``subject_grace`` processed frames (its last box is
      held meanwhile, and the detector runs on every processed frame until it is found).
    - ``observe``: after the pose model, the confident keypoints give the next tracked box.
    """

    def __init__(self, gate: GateConfig, det: DetectConfig, frame_hw: tuple[int, int]):
        self.gate = gate
        self.det = det
        self.frame_hw = frame_hw
        self.box: torch.Tensor | None = None  # (5,) last box used, with its detection score
        self.tracked: torch.Tensor | None = None  # (4,) box from the last keypoints
        self.since_det = 0
        self.lost = 0

    def reset(self) -> None:
        """A scene cut: choose the subject afresh."""
        self.box = self.tracked = None
        self.lost = 0

    def tracked_box(self) -> torch.Tensor | None:
        """(5,) the box from the last keypoints, clipped to the frame, with the score of the
        last detection; None means the detector must run (no keypoints yet, the subject is
        missing or was never found, or the box left the frame)."""
        if self.tracked is None or self.box is None or self.lost or float(self.box[4]) < 0:
            return None
        fh, fw = self.frame_hw
        x1, y1, x2, y2 = self.tracked.tolist()
        clipped = torch.tensor([max(x1, 0.0), max(y1, 0.0), min(x2, float(fw)), min(y2, float(fh))])
        if not usable(clipped, self.det):
            return None  # (almost) out of the frame, or degenerate: re-detect
        return torch.cat([clipped, self.box[4:5]])

    def choose(self, dets: torch.Tensor) -> Selection:
        """The subject's box among this frame's detections (M, 5) in frame pixels."""
        self.since_det = 0
        ref = self.tracked if self.tracked is not None else (self.box[:4] if self.box is not None else None)
        if self.gate.subject and ref is not None:
            if dets.shape[0]:
                iou = box_iou(dets[:, :4], ref[None])[:, 0]
                best = int(torch.argmax(iou))
                if float(iou[best]) >= self.gate.subject_min_iou and usable(dets[best], self.det):
                    self.lost = 0
                    return Selection(self._use(dets[best]), count_others(dets, dets[best], self.det))
            self.lost += 1
            if self.lost <= self.gate.subject_grace and self.box is not None:
                held = torch.cat([ref, self.box[4:5]])
                return Selection(self._use(held), count_others(dets, held, self.det))
        self.lost = 0
        chosen = largest_person(dets, self.frame_hw, self.det)
        return Selection(self._use(chosen.box), chosen.others)

    def _use(self, box: torch.Tensor) -> torch.Tensor:
        self.box = box.clone()
        return self.box

    def skip_detection(self) -> None:
        self.since_det += 1

    def observe(self, kps: torch.Tensor) -> None:
        """Keypoints of the latest processed frame (133, 3)."""
        self.tracked = keypoint_box(kps.detach().float().cpu(), self.gate.track_kp_score, self.gate.track_padding)
