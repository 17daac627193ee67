"""Per-stage timings of a run.

On the CPU a stage is timed with the host clock. On CUDA each stage records a pair of CUDA
events on the current stream instead of synchronising: the elapsed times are read once, when
a report is asked for, so timing adds no host waits to the hot path.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch

__all__ = ["StageTimer", "NullTimer", "NULL_TIMER", "MODEL_STAGES"]

MODEL_STAGES = ("detect_model", "pose_model")


class NullTimer:
    """A timer that measures nothing (timings off, or a stage used on its own)."""

    @contextmanager
    def __call__(self, stage: str):
        yield

    def report(self, frames: int) -> dict:
        return {}


NULL_TIMER = NullTimer()


class StageTimer:
    """Wall time per stage. Stages may nest: an inner stage's time is charged to it alone, not
    also to the outer one, so no time is counted twice.

    ``total`` in the report is the sum of the stages; ``wall`` the time since the timer was
    made (work outside every stage, such as reading the input, shows as their difference).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # host clock: per open stage, time spent in nested stages
        self._events: list = []  # CUDA: (stage, start, end, parent index)
        self._open: list[int] = []
        self._t0 = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str):
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            parent = self._open[-1] if self._open else -1
            self._events.append((stage, start, end, parent))
            self._open.append(len(self._events) - 1)
            try:
                yield
            finally:
                end.record()
                self._open.pop()
            return
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.seconds[stage] += elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed

    def _collect_events(self) -> None:
        """Fold finished CUDA event pairs into ``seconds`` (one synchronisation)."""
        if not self._events:
            return
        done = len(self._events) if not self._open else min(self._open)
        if done == 0:
            return
        self._events[done - 1][2].synchronize()
        elapsed = [ev[1].elapsed_time(ev[2]) / 1000.0 for ev in self._events[:done]]
        own = list(elapsed)
        for i, (_stage, _s, _e, parent) in enumerate(self._events[:done]):
            if parent >= 0:
                own[parent] -= elapsed[i]
        for (stage, *_), sec in zip(self._events[:done], own):
            self.seconds[stage] += sec
        # Events before the first open stage are finished and parent none of the later ones:
        # drop them and shift the remaining indices.
        self._events = [(st, s, e, p - done if p >= 0 else -1) for st, s, e, p in self._events[done:]]
        self._open = [i - done for i in self._open]

    def report(self, frames: int) -> dict:
        """{stage: {"s", "ms_per_frame"}, "total", "non_model", "wall", "frames"} so far."""
        if self.cuda:
            self._collect_events()
        per = lambda v: {"s": round(v, 6), "ms_per_frame": round(1000 * v / max(frames, 1), 4)}  # noqa: E731
        out = {k: per(v) for k, v in self.seconds.items()}
        total = sum(self.seconds.values())
        model = sum(self.seconds.get(k, 0.0) for k in MODEL_STAGES)
        out["total"] = per(total)
        out["non_model"] = per(total - model)
        out["wall"] = per(time.perf_counter() - self._t0)
        out["frames"] = frames
        return out
