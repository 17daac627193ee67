"""Subject tracking: boxes from the last keypoints, and staying with the same person; and the
identities of several people (:class:`PeopleTracker`).

Holds the only cross-frame state of detection (besides the ONNX sessions). Host tensors only:
boxes and keypoints are a handful of numbers a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .detect import DetectConfig, Selection, box_iou, count_others, largest_person, usable
from .gate import GateConfig
from .skeleton import BODY

__all__ = [
    "keypoint_box",
    "SubjectTracker",
    "PeopleConfig",
    "resolve_people",
    "PersonTrack",
    "keypoint_similarity",
    "association_cost",
    "assign",
    "pose_candidates",
    "Match",
    "PeopleTracker",
]


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


# -- several people ---------------------------------------------------------------------------
# Each identity is one PersonTrack (its own box, motion and keypoints); the association is a
# pure function of the tracks' predictions and a frame's detections, so the scheduler can use
# it in frame order (PeopleTracker) and on a checked frame between two keyframes alike.

# OKS-like keypoint similarity: a point counts as matching within about this fraction of the
# person's size (sqrt of the box area).
KEYPOINT_KAPPA = 0.1
MIN_KEYPOINT_SIMILARITY = 0.5  # or this keypoint similarity (partly hidden people, after a gap)


@dataclass(frozen=True)
class PeopleConfig:
    """Several-people tracking settings.

    max_people: identities followed at once (None: everyone detected).
    keep_frames: an identity not seen for up to this many frames keeps its id (occlusion,
        leaving the frame for a moment); after that, a person seen again gets a new id.
    min_iou: a detection overlapping an identity's predicted box at least this much may be
        that identity (else the keypoint similarity must reach ``MIN_KEYPOINT_SIMILARITY``).
    kp_score: keypoints at least this confident take part in the keypoint similarity.
    new_min_score: a new identity needs a mean body keypoint score of at least this.
    """

    max_people: int | None = 2
    keep_frames: int = 24
    min_iou: float = 0.3
    kp_score: float = 0.3
    new_min_score: float = 0.3

    @classmethod
    def from_option(cls, people, keep_frames: int = 24) -> "PeopleConfig | None":
        """``Preprocessor(people=..., people_keep=...)``: None for 1 (the single subject)."""
        limit = resolve_people(people)
        return None if limit == 1 else cls(max_people=limit, keep_frames=int(keep_frames))

    def __post_init__(self):
        if self.max_people is not None and self.max_people < 1:
            raise ValueError(f"max_people must be >= 1 or None, got {self.max_people}")
        if self.keep_frames < 0:
            raise ValueError(f"keep_frames must be >= 0, got {self.keep_frames}")


def resolve_people(people) -> int | None:
    """``Preprocessor(people=...)``: a positive int, or "all" (None: no limit)."""
    if isinstance(people, str):
        if people.strip().lower() == "all":
            return None
        raise ValueError(f"people must be a positive integer or 'all', got {people!r}")
    if isinstance(people, bool) or not isinstance(people, int) or people < 1:
        raise ValueError(f"people must be a positive integer or 'all', got {people!r}")
    return people


@dataclass
class PersonTrack:
    """One identity's state: its last box (4,) and keypoints (133, 3) at ``frame``, and its
    box's velocity (4,) in px per frame (a constant-velocity prediction)."""

    track_id: int
    box: torch.Tensor
    keypoints: torch.Tensor
    frame: int
    velocity: torch.Tensor = field(default_factory=lambda: torch.zeros(4))

    def predict(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(box (4,), keypoints (133, 3)) expected at ``frame``: moved by the velocity."""
        dt = float(frame - self.frame)
        box = self.box + self.velocity * dt
        shift = (self.velocity[:2] + self.velocity[2:]) * 0.5 * dt
        kps = self.keypoints.clone()
        kps[:, :2] += shift
        return box, kps

    def update(self, frame: int, box: torch.Tensor, keypoints: torch.Tensor) -> None:
        dt = frame - self.frame
        if dt > 0:
            # Half the new step, half the old velocity: one jittery box does not fling it.
            self.velocity = 0.5 * self.velocity + 0.5 * (box[:4] - self.box) / dt
        self.box, self.keypoints, self.frame = box[:4].clone(), keypoints.clone(), frame


def keypoint_similarity(a: torch.Tensor, b: torch.Tensor, boxes: torch.Tensor, min_score: float) -> torch.Tensor:
    """OKS-like similarity of every pose in ``a`` to every pose in ``b``: the mean over body
    points confident in both of exp(-d^2 / (2 (kappa * size)^2)), size = sqrt of the area of
    ``a``'s box; 0 where no body point is confident in both.

    Args:
        a: (M, 133, 3); b: (D, 133, 3); boxes: (M, 4) boxes of ``a``.

    Returns:
        (M, D) in [0, 1].
    """
    pa, pb = a[:, BODY], b[:, BODY]
    both = (pa[:, None, :, 2] >= min_score) & (pb[None, :, :, 2] >= min_score)  # (M, D, 17)
    d2 = (pa[:, None, :, :2] - pb[None, :, :, :2]).square().sum(-1)
    wh = (boxes[:, 2:4] - boxes[:, :2]).clamp(min=1.0)
    s2 = (wh[:, 0] * wh[:, 1] * KEYPOINT_KAPPA**2).view(-1, 1, 1)
    sim = torch.exp(-d2 / (2 * s2)) * both
    count = both.sum(-1)
    return torch.where(count > 0, sim.sum(-1) / count.clamp(min=1), torch.zeros_like(count, dtype=sim.dtype))


def association_cost(
    pred_boxes: torch.Tensor, pred_kps: torch.Tensor, det_boxes: torch.Tensor, det_kps: torch.Tensor, cfg: PeopleConfig
) -> torch.Tensor:
    """Cost of each identity (rows) taking each detection (columns): 1 - (IoU + keypoint
    similarity) / 2; inf where neither the IoU reaches ``min_iou`` nor the keypoint similarity
    ``MIN_KEYPOINT_SIMILARITY`` (a box far from the prediction is someone else).

    Args:
        pred_boxes: (M, 4), pred_kps: (M, 133, 3): the identities' predictions;
        det_boxes: (D, >=4), det_kps: (D, 133, 3): the detections and their poses.
    """
    if pred_boxes.shape[0] == 0 or det_boxes.shape[0] == 0:
        return torch.zeros(pred_boxes.shape[0], det_boxes.shape[0])
    iou = box_iou(pred_boxes[:, :4].float(), det_boxes[:, :4].float())
    sim = keypoint_similarity(pred_kps.float(), det_kps.float(), pred_boxes[:, :4].float(), cfg.kp_score)
    ok = (iou >= cfg.min_iou) | (sim >= MIN_KEYPOINT_SIMILARITY)
    return torch.where(ok, 1.0 - 0.5 * (iou + sim), torch.full_like(iou, float("inf")))


def assign(cost: torch.Tensor) -> list[tuple[int, int]]:
    """Greedy one-to-one assignment on a cost matrix (M, D): the cheapest finite pair first,
    ties by row then column (deterministic). For a handful of people greedy equals the optimum
    except when two identities compete for two boxes crosswise, which the gating makes rare.

    Returns:
        (row, column) pairs, sorted by row.
    """
    pairs = []
    if cost.numel():
        flat = cost.flatten().tolist()
        d = cost.shape[1]
        order = sorted((c, i // d, i % d) for i, c in enumerate(flat) if c != float("inf"))
        used_r, used_c = set(), set()
        for _c, r, col in order:
            if r not in used_r and col not in used_c:
                pairs.append((r, col))
                used_r.add(r)
                used_c.add(col)
    return sorted(pairs)


def pose_candidates(dets: torch.Tensor, expected: torch.Tensor, cap: int | None, cfg: DetectConfig, min_iou: float) -> torch.Tensor:
    """Which detections the pose model runs on: usable boxes (both sides >= ``min_box_side``),
    those overlapping an expected identity's box (IoU >= ``min_iou``) first, then the largest;
    at most ``cap`` (None: all).

    Args:
        dets: (D, 5) one frame's person boxes after NMS; expected: (M, >=4) predicted boxes.

    Returns:
        (K, 5) the chosen boxes.
    """
    wh = (dets[:, 2:4] - dets[:, :2]).clamp(min=0)
    keep = (wh >= cfg.min_box_side).all(dim=1)
    dets = dets[keep]
    if dets.shape[0] == 0:
        return dets
    area = (wh[keep, 0] * wh[keep, 1]).tolist()
    near = [0.0] * dets.shape[0]
    if expected.shape[0]:
        near = box_iou(dets[:, :4], expected[:, :4].float()).amax(dim=1).tolist()
    order = sorted(range(dets.shape[0]), key=lambda i: (near[i] < min_iou, -area[i], i))
    return dets[order[: cap if cap is not None else len(order)]]


@dataclass
class Match:
    """One frame's association: ``matched`` identity id -> detection index, and ``new``
    detection indices that start identities (only from :meth:`PeopleTracker.step`)."""

    matched: dict
    new: list


class PeopleTracker:
    """Identities across frames, fed in frame order: :meth:`predictions` for a frame, then
    :meth:`step` with that frame's detections and their poses. Identities are numbered from 1
    in the order they first appear; one not seen for more than ``keep_frames`` is dropped (a
    person seen after that gets a new id)."""

    def __init__(self, cfg: PeopleConfig):
        self.cfg = cfg
        self.tracks: list[PersonTrack] = []
        self.next_id = 1

    def predictions(self, frame: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """(ids, boxes (M, 4), keypoints (M, 133, 3)) the live identities are expected at."""
        self.tracks = [t for t in self.tracks if frame - t.frame <= self.cfg.keep_frames]
        if not self.tracks:
            return [], torch.zeros(0, 4), torch.zeros(0, 133, 3)
        preds = [t.predict(frame) for t in self.tracks]
        return [t.track_id for t in self.tracks], torch.stack([p[0] for p in preds]), torch.stack([p[1] for p in preds])

    def cost(self, frame: int, boxes: torch.Tensor, keypoints: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """(ids, cost (M, D)) of the live identities taking the detections: the cheaper of the
        constant-velocity prediction and the last place seen (someone who stopped, or turned,
        while out of view or between keyframes)."""
        ids, pb, pk = self.predictions(frame)
        moved = association_cost(pb, pk, boxes, keypoints, self.cfg)
        if not ids:
            return ids, moved
        still = association_cost(
            torch.stack([t.box for t in self.tracks]), torch.stack([t.keypoints for t in self.tracks]), boxes, keypoints, self.cfg
        )
        return ids, torch.minimum(moved, still)

    def step(self, frame: int, boxes: torch.Tensor, keypoints: torch.Tensor) -> Match:
        """Associate one frame's detections (D, 5) and poses (D, 133, 3) and update the
        identities; unmatched confident people start new ones while fewer than ``max_people``
        are in view."""
        ids, cost = self.cost(frame, boxes, keypoints)
        pairs = assign(cost)
        matched = {ids[r]: c for r, c in pairs}
        by_id = {t.track_id: t for t in self.tracks}
        for tid, c in matched.items():
            by_id[tid].update(frame, boxes[c], keypoints[c])
        new = []
        taken = set(matched.values())
        for c in range(boxes.shape[0]):
            full = self.cfg.max_people is not None and len(matched) >= self.cfg.max_people
            if c in taken or full or float(keypoints[c, BODY, 2].mean()) < self.cfg.new_min_score:
                continue
            self.tracks.append(PersonTrack(self.next_id, boxes[c, :4].clone(), keypoints[c].clone(), frame))
            new.append(c)
            matched[self.next_id] = c
            self.next_id += 1
        return Match(matched, new)

    def reset_motion(self) -> None:
        """A scene cut: positions jump, so no identity keeps its velocity."""
        for t in self.tracks:
            t.velocity = torch.zeros(4)
