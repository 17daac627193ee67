"""Scoring several people's results against a :class:`~wanprep_torch.testkit.scene.PeopleClip`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

BODY_ROWS = 17
MATCH_PX = 10.0  # an identity "follows" a person on a frame when its body lies this close


@dataclass
class PersonScore:
    """How one ground-truth person was followed.

    ids: per frame the person is in view, the identity following them (None: missed);
    main_id: the identity on most of those frames; switched: frames followed by another id;
    missed: frames in view with no identity on them; body_error: mean body keypoint error
    (px, visible points) over the frames followed.
    """

    ids: list
    main_id: int | None
    switched: int
    missed: int
    body_error: float


def score_people(people: list, clip) -> list[PersonScore]:
    """For each person of ``clip`` (``keypoints`` (P, T, 133, 2), ``visible``, ``present``),
    which of ``people`` (Results with ``track_id``, ``present``, ``keypoints``) follows them
    on each frame they are in view: the present identity whose visible body points lie
    nearest (mean distance, at most ``MATCH_PX``)."""
    out = []
    for p in range(clip.present.shape[0]):
        ids, errs = [], []
        for t in torch.nonzero(clip.present[p]).flatten().tolist():
            vis = clip.visible[p, t, :BODY_ROWS]
            want = clip.keypoints[p, t, :BODY_ROWS]
            best = None
            for q in people:
                if not bool(q.present[t]):
                    continue
                got = q.keypoints[t, :BODY_ROWS, :2].float().cpu()
                e = float((got - want).norm(dim=-1)[vis].mean())
                if e <= MATCH_PX and (best is None or e < best[1]):
                    best = (q.track_id, e)
            ids.append(best[0] if best else None)
            if best:
                errs.append(best[1])
        counts = Counter(i for i in ids if i is not None)
        main = counts.most_common(1)[0][0] if counts else None
        out.append(
            PersonScore(
                ids=ids,
                main_id=main,
                switched=sum(1 for i in ids if i is not None and i != main),
                missed=sum(1 for i in ids if i is None),
                body_error=float(torch.tensor(errs).mean()) if errs else float("nan"),
            )
        )
    return out


__all__ = ["PersonScore", "score_people", "MATCH_PX"]
