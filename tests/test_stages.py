"""The two stages used on their own, the streaming API, and the scheduler's record stream."""

import dataclasses

import pytest
import torch

from wanprep_torch import PersonDetector, PoseEstimator, Preprocessor, Result
from wanprep_torch.runtime import ModelError, model_kind
from wanprep_torch.testkit import make_clip


def make(models, **kw):
    kw.setdefault("progress", False)
    return Preprocessor(models["det"], models["pose"], **kw)


def test_detector_alone_gives_the_pipelines_boxes(models, clip, run_default):
    det = PersonDetector(models["det"])
    found = det(clip.frames)
    assert found.boxes.shape == (12, 5) and found.others.shape == (12,)
    assert torch.equal(found.boxes, run_default.bboxes.cpu())
    assert len(found.candidates) == 12 and all(c.shape[1] == 5 for c in found.candidates)
    # Layouts: channels-first and uint8 frames give boxes too (uint8 rounds the input).
    assert torch.equal(det(clip.frames.permute(0, 3, 1, 2)).boxes, found.boxes)
    u8 = det((clip.frames * 255).round().to(torch.uint8)).boxes
    assert (u8[:, :4] - found.boxes[:, :4]).abs().max() < 2.0


def test_estimator_alone_with_own_boxes(models, clip, run_default):
    pose = PoseEstimator(models["pose"])
    kps = pose(clip.frames, run_default.bboxes)
    assert kps.shape == (12, 133, 3)
    assert torch.equal(kps, run_default.keypoints)
    # Boxes from elsewhere (e.g. a mask's extent): the ground-truth person boxes.
    gt = pose(clip.frames[:3], clip.boxes[:3])
    err = (gt[..., :2] - clip.keypoints[:3]).norm(dim=-1)[clip.visible[:3]]
    assert err.mean() < 0.6


def test_stage_errors_name_the_problem(models, clip):
    pose = PoseEstimator(models["pose"])
    with pytest.raises(ValueError, match=r"boxes must be \(T, >=4\) with T = 2"):
        pose(clip.frames[:2], torch.zeros(3, 4))
    with pytest.raises(ModelError, match="not a person detector.*looks like a pose model"):
        PersonDetector(models["pose"])
    with pytest.raises(ModelError, match="not a wholebody pose model.*looks like a detector"):
        PoseEstimator(models["det"])
    with pytest.raises(ValueError, match="empty video"):
        PersonDetector(models["det"])(torch.zeros(0, 32, 32, 3))


def test_model_kind_is_one_rule():
    from converters.fp16 import output_kind
    import numpy as np

    assert model_kind((None, 133, 64, 48)) == "pose"
    assert model_kind((1, 300, 6)) == "detector"
    assert model_kind(("batch", 84, 8400)) == "detector"
    assert model_kind((1, 84, None)) == "detector"
    assert model_kind((1, 10)) == "generic"
    for shape in ((2, 133, 64, 48), (2, 300, 6), (1, 84, 8400), (2, 64)):
        assert output_kind(np.zeros(shape, np.float32)) == model_kind(shape)


@pytest.mark.parametrize("gate, smooth, frames", [("off", "auto", 12), ("safe", "off", 12), ("safe", "auto", 40)])
def test_stream_parts_concat_to_the_whole_run(models, gate, smooth, frames):
    """Parts come out before the end (the gate's lookahead, and with smoothing its 16 frames
    more, delay them), and joined they equal the whole run."""
    clip = make_clip(frames, motion="slow", face_hidden=range(5, 8), seed=1)
    pre = make(models, gate=gate, smooth=smooth, chunk_size=5)
    whole = pre(clip.frames)
    parts = list(pre.stream(clip.frames))
    assert len(parts) >= 2  # in chunks of 5: results come out before the end
    assert [p.start for p in parts] == [sum(len(q) for q in parts[:i]) for i in range(len(parts))]
    joined = Result.concat(parts)
    for f in dataclasses.fields(Result):
        a, b = getattr(joined, f.name), getattr(whole, f.name)
        if f.name == "timings":
            continue  # measured, not computed
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f.name
        elif f.name == "pose_metas":
            assert all(all((x[k] == y[k]).all() if hasattr(x[k], "all") else x[k] == y[k] for k in x) for x, y in zip(a, b))
        else:
            assert a == b, f.name
    assert set(parts[-1].timings) >= {"total", "wall", "frames"} and parts[-1].timings["frames"] == frames


def test_stream_of_a_chunk_iterable_yields_as_it_goes(models, clip):
    pre = make(models, gate="off", chunk_size=4)
    fed = []

    def chunks():
        for s in range(0, 12, 4):
            fed.append(s)
            yield clip.frames[s : s + 4]

    seen = []
    for part in pre.stream(chunks()):
        seen.append((len(fed), part.start, len(part)))
    assert seen[0] == (1, 0, 4)  # the first part came before the second chunk was read
    assert sum(n for *_, n in seen) == 12


def test_concat_rejects_gaps_and_nothing(models, clip):
    parts = list(make(models, gate="off", chunk_size=4).stream(clip.frames))
    with pytest.raises(ValueError, match="out of order"):
        Result.concat([parts[0], parts[2]])
    with pytest.raises(ValueError, match="at least one part"):
        Result.concat([])


def test_stream_keeps_finished_frames_then_raises(models, clip):
    bad = clip.frames.clone()
    bad[9, 5, 5, 0] = float("nan")
    got = []
    with pytest.raises(ValueError, match="frame 9 contains NaN"):
        for part in make(models, gate="off", chunk_size=3).stream(bad):
            got.append(part)
    assert sum(len(p) for p in got) == 9


def test_leading_faceless_frames_wait_at_most_face_wait(models, clip):
    # Noise frames: no face is ever seen. With face_wait=4 parts come out as the run goes
    # instead of all at the end, each faceless frame takes the fallback square.
    from wanprep_torch import wan

    noise = torch.rand(12, 96, 128, 3, generator=torch.Generator().manual_seed(0))
    pre = make(models, gate="off", chunk_size=3, face_wait=4, face_size=32)
    parts = list(pre.stream(noise))
    assert len(parts) >= 3
    res = Result.concat(parts)
    assert bool(res.face_held.all())
    assert res.face_bboxes == [wan.fallback_face_box(128, 96)] * 12
    with pytest.raises(ValueError, match="face_wait"):
        make(models, face_wait=-1)
