"""StageTimer: nested stages charged once; on CUDA, events instead of host waits."""

import time

import pytest
import torch

from wanprep_torch.runtime import cuda_provider_options
from wanprep_torch.timing import NULL_TIMER, StageTimer


def test_nested_stages_are_charged_once_and_wall_is_reported():
    timer = StageTimer(torch.device("cpu"))
    t0 = time.perf_counter()
    with timer("wan"):
        time.sleep(0.02)
        with timer("faces"):
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    rep = timer.report(1)
    assert rep["faces"]["s"] >= 0.05 and 0.02 <= rep["wan"]["s"] < 0.05  # outer excludes inner
    assert rep["total"]["s"] <= wall + 1e-6 <= rep["wall"]["s"] + 1e-3
    assert rep["frames"] == 1


class _FakeEvent:
    """A CUDA event stand-in: records the host clock; ``elapsed_time`` in ms like torch's."""

    synced = 0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        _FakeEvent.synced += 1

    def elapsed_time(self, end):
        return (end.t - self.t) * 1000.0


def test_cuda_timer_uses_events_and_no_synchronize(monkeypatch):
    def no_sync(*a, **k):
        raise AssertionError("torch.cuda.synchronize called in the timed path")

    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", no_sync)
    _FakeEvent.synced = 0
    timer = StageTimer(torch.device("cuda", 0))
    for _ in range(3):
        with timer("pose_model"):
            time.sleep(0.01)
            with timer("pose_post"):
                time.sleep(0.02)
    assert _FakeEvent.synced == 0  # nothing waits until a report is asked for
    with timer("wan"):
        rep = timer.report(3)  # a report from inside an open stage folds only finished ones
        time.sleep(0.01)
    assert _FakeEvent.synced == 1
    assert rep["pose_post"]["s"] >= 0.06 and 0.03 <= rep["pose_model"]["s"] < 0.06
    assert "wan" not in rep
    first = rep["pose_post"]["s"]
    rep = timer.report(3)
    assert rep["wan"]["s"] >= 0.01 and rep["pose_post"]["s"] == first  # folded once, not counted twice


def test_null_timer_measures_nothing():
    with NULL_TIMER("x"):
        pass
    assert NULL_TIMER.report(3) == {}


def test_cuda_provider_runs_on_torchs_stream():
    assert cuda_provider_options(1) == {"device_id": 1}
    opts = cuda_provider_options(0, 0x7F00)
    assert opts == {"device_id": 0, "has_user_compute_stream": "1", "user_compute_stream": str(0x7F00)}


def test_timings_off(models, clip):
    from wanprep_torch import Preprocessor

    res = Preprocessor(models["det"], models["pose"], progress=False, gate="off", timings=False)(clip.frames[:2])
    assert res.timings == {} and len(res) == 2
