"""Typed settings: one record per stage (RuntimeConfig, DetectConfig, FaceConfig, GateConfig),
the Preprocessor's keyword shorthands over them, and a Preprocessor composed of the caller's
own stage objects (Preprocessor.from_stages)."""

import inspect

import pytest
import torch

from wanprep_torch import Preprocessor
from wanprep_torch.config import override
from wanprep_torch.detect import DetectConfig, PersonDetector
from wanprep_torch.gate import resolve_gate
from wanprep_torch.pose import PoseEstimator
from wanprep_torch.runtime import RuntimeConfig
from wanprep_torch.wan import FaceConfig


def test_shorthands_default_to_the_records():
    """The records are the one home of the defaults: the Preprocessor's shorthands default to
    None (no restated values) and a bare Preprocessor carries the records' defaults."""
    sig = inspect.signature(Preprocessor.__init__)
    for name in ("device", "batch_size", "score_threshold", "iou_threshold", "face_padding", "face_size",
                 "face_dtype", "face_device", "face_wait"):  # fmt: skip
        assert sig.parameters[name].default is None, name
    assert inspect.signature(PersonDetector.__init__).parameters["score_threshold"].default is None


def test_records_and_shorthands_reach_the_stages(models):
    pre = Preprocessor(models["det"], models["pose"], progress=False, detect=DetectConfig(strict=False, score_threshold=0.2),
                       iou_threshold=0.6, face=FaceConfig(size=128), face_wait=7, runtime=RuntimeConfig(batch_size=2))  # fmt: skip
    cfg = pre.detector.config
    assert (cfg.strict, cfg.score_threshold, cfg.iou_threshold) == (False, 0.2, 0.6)  # shorthand overrides the record
    assert (pre.face.size, pre.face.wait) == (128, 7)
    assert pre.batch_size == 2
    bare = Preprocessor(models["det"], models["pose"], progress=False)
    assert bare.face == FaceConfig() and bare.detector.config == DetectConfig() and bare.batch_size == 1


def test_detect_config_changes_the_result(models, clip):
    """A DetectConfig field no keyword reached before: boxes smaller than min_box_side fall
    back to the whole frame."""
    frames = clip.frames[:2]
    tight = Preprocessor(models["det"], models["pose"], progress=False, gate="off")(frames)
    whole = Preprocessor(models["det"], models["pose"], progress=False, gate="off", detect=DetectConfig(min_box_side=5000))(frames)
    h, w = frames.shape[1:3]
    assert torch.equal(whole.bboxes[:, :4].round(), torch.tensor([[0.0, 0.0, w, h]]).expand(2, 4))
    assert (tight.bboxes[:, 2] - tight.bboxes[:, 0] < w / 2).all()


def test_face_config_shapes_the_crops(models, clip):
    res = Preprocessor(models["det"], models["pose"], progress=False, gate="off",
                       face=FaceConfig(size=96, dtype=torch.uint8, padding=4))(clip.frames[:3])  # fmt: skip
    assert res.face_images.shape == (3, 96, 96, 3) and res.face_images.dtype == torch.uint8
    plain = Preprocessor(models["det"], models["pose"], progress=False, gate="off", face_size=96)(clip.frames[:3])
    padded, unpadded = torch.tensor(res.face_bboxes, dtype=torch.float32), torch.tensor(plain.face_bboxes, dtype=torch.float32)
    wider = (padded[:, 2] - padded[:, 0]) - (unpadded[:, 2] - unpadded[:, 0])  # (x1, y1, x2, y2)
    assert torch.allclose(wider, torch.full((3,), 8.0), atol=1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dtype=torch.int32), "face_dtype"),
        (dict(size=0), "face_size"),
        (dict(padding=-1), "face_padding"),
        (dict(wait=-2), "face_wait"),
        (dict(size=True), "face_size"),
    ],
)
def test_face_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FaceConfig(**kwargs)


def test_detect_config_rejects_bad_values():
    with pytest.raises(ValueError, match="score_threshold"):
        DetectConfig(score_threshold=1.5)
    with pytest.raises(ValueError, match="min_box_side"):
        DetectConfig(min_box_side=-1)


def test_bad_settings_fail_before_the_models_open(tmp_path):
    """A bad chunk size or gate is reported even with model paths that do not exist."""
    with pytest.raises(ValueError, match="chunk_size"):
        Preprocessor(tmp_path / "no-det.onnx", tmp_path / "no-pose.onnx", chunk_size=0)
    with pytest.raises(ValueError, match="face_dtype"):
        Preprocessor(tmp_path / "no-det.onnx", tmp_path / "no-pose.onnx", face_dtype=torch.int8)


def test_override_skips_none():
    cfg = DetectConfig()
    assert override(cfg, score_threshold=None) is cfg
    assert override(cfg, score_threshold=0.25).score_threshold == 0.25


def test_from_stages_equals_the_file_built_preprocessor(models, clip):
    """Composing the caller's stage objects gives exactly what the files give."""
    frames = clip.frames[:6]
    built = Preprocessor(models["det"], models["pose"], progress=False)(frames)
    composed = Preprocessor.from_stages(PersonDetector(models["det"]), PoseEstimator(models["pose"]), progress=False)
    res = composed(frames)
    assert torch.equal(res.keypoints, built.keypoints)
    assert torch.equal(res.face_images, built.face_images)
    assert composed.gate == resolve_gate("safe")
    assert composed.batch_size == 1


def test_from_stages_checks_its_stages(models):
    det = PersonDetector(models["det"])
    with pytest.raises(TypeError, match="PersonDetector and a PoseEstimator"):
        Preprocessor.from_stages(det, det)
    with pytest.raises(ValueError, match="chunk_size"):
        Preprocessor.from_stages(det, PoseEstimator(models["pose"]), chunk_size=0)
