"""Every node's inputs with bad values: the error names the node input at fault (the message
starts with it), is raised before any work, and is a ValueError / TypeError (or, for model
files, FileNotFoundError / ModelError)."""

import shutil

import numpy as np
import pytest
import torch
from comfy_fixtures import fake_comfy, images, loaded, no_comfy  # noqa: F401  (fixtures)

from wanprep_torch import ModelError
from wanprep_torch import comfy as nodes


def nan_at(frames: torch.Tensor, index: int) -> torch.Tensor:
    bad = frames.clone()
    bad[index, 5, 7, 1] = float("nan")
    return bad


def tiny(w=7, h=9, t=1):
    return torch.rand(t, h, w, 3)


def raises(exc_type, prefix, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert str(info.value).startswith(prefix + ":"), str(info.value)
    return str(info.value)


# -- Pose and Face Detection ----------------------------------------------------------------------


# The frames' values (NaN, a 0-255 range) are scanned as the pipeline reads each chunk: those
# errors come once the run has started; every other one before any work.
SCANNED = ("frame 1 contains NaN", "[0, 1]")


def detection_cases(frames):
    """(input name, exception, keyword overrides, words the message must hold)."""
    return [
        ("images", ValueError, {"images": frames[:0]}, "empty"),
        ("images", ValueError, {"images": tiny(7, 9, 2)}, "7x9 px"),
        ("images", ValueError, {"images": nan_at(frames, 1)}, "frame 1 contains NaN"),
        ("images", ValueError, {"images": frames * 255}, "[0, 1]"),
        ("images", ValueError, {"images": frames[0]}, "(T, H, W, 3)"),
        ("images", ValueError, {"images": frames.permute(0, 3, 1, 2)}, "(T, H, W, 3)"),
        ("images", TypeError, {"images": frames.numpy()}, "ComfyUI IMAGE"),
        ("images", TypeError, {"images": (frames * 255).long()}, "dtype"),
        ("retarget_image", ValueError, {"retarget_image": tiny(7, 9)}, "the image is 7x9 px"),
        ("retarget_image", ValueError, {"retarget_image": nan_at(frames[:1], 0)}, "NaN"),
        ("retarget_image", ValueError, {"retarget_image": frames[:0]}, "empty"),
        ("retarget_image", TypeError, {"retarget_image": "ref.png"}, "ComfyUI IMAGE"),
        ("width", ValueError, {"width": 10}, "64..2048"),
        ("height", ValueError, {"height": 4096}, "64..2048"),
        ("width", TypeError, {"width": "832"}, "whole number"),
        ("height", TypeError, {"height": 480.5}, "whole number"),
        ("face_padding", ValueError, {"face_padding": -1}, "0..512"),
        ("gate", ValueError, {"gate": "turbo"}, "'turbo'"),
        ("smooth", ValueError, {"smooth": "strong"}, "'strong'"),
        ("model", TypeError, {"model": {"vitpose": None, "yolo": None}}, "POSEMODEL"),
    ]


def test_detection_inputs(fake_comfy, loaded, images, monkeypatch):
    frames = images[:2]
    for name, exc, override, words in detection_cases(frames):
        kwargs = dict(model=loaded, images=frames, width=416, height=240, retarget_image=None, face_padding=0, gate="off")
        kwargs.update(override)
        bars = len(fake_comfy.bars)
        msg = raises(exc, name, nodes.PoseAndFaceDetection().process, **kwargs)
        assert words in msg and "chunk" not in msg, (name, msg)
        if not (name == "images" and words in SCANNED):
            assert len(fake_comfy.bars) == bars, "checked before any work"
    # The frames' values are scanned as the pipeline reads them: a NaN past the first chunk is
    # reported with its frame index in the batch.
    monkeypatch.setattr(loaded.preprocessor(loaded.options(gate="off")), "chunk_size", 2)
    msg = raises(ValueError, "images", nodes.PoseAndFaceDetection().process, loaded, nan_at(images[:5], 3), 416, 240, gate="off")
    assert msg == "images: frame 3 contains NaN values"
    # Whole-number floats (a value linked from a FLOAT output) and NumPy integers are fine.
    out = nodes.PoseAndFaceDetection().process(loaded, frames, np.int64(416), 240.0, face_padding=np.int32(0), gate="off")
    assert out[1].shape[0] == 2


def test_detection_reference_without_person_is_not_an_error(fake_comfy, loaded, images):
    # A reference image with nobody in it: its pose comes from the whole image (as the
    # reference pack), logged, not raised.
    out = nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240, retarget_image=torch.zeros(1, 200, 300, 3), gate="off")
    assert out[0]["refer_pose_meta"] is not None


# -- Draw ViT Pose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose_data():
    from wanprep_torch.testkit import make_clip
    from wanprep_torch.wan import pose_metas

    clip = make_clip(2, H=240, W=416, seed=2)
    kps = torch.cat([clip.keypoints.double(), torch.full((2, 133, 1), 0.9, dtype=torch.float64)], -1)
    metas, _ = pose_metas(kps, 416, 240)
    return {"retarget_image": None, "pose_metas": metas, "refer_pose_meta": None, "pose_metas_original": metas}


def test_draw_inputs(no_comfy, pose_data):
    draw = nodes.DrawViTPose().process
    args = dict(pose_data=pose_data, width=416, height=240, retarget_padding=16, body_stick_width=-1, hand_stick_width=-1, draw_head=True)
    broken = dict(pose_data["pose_metas"][1])
    broken["keypoints_left_hand"] = np.zeros((20, 3))
    cases = [
        ("pose_data", TypeError, {"pose_data": None}, "POSEDATA"),
        ("pose_data", ValueError, {"pose_data": {}}, "'pose_metas'"),
        ("pose_data", ValueError, {"pose_data": {"pose_metas": []}}, "non-empty"),
        ("pose_data", TypeError, {"pose_data": {"pose_metas": [object()]}}, "pose_metas[0]"),
        ("pose_data", ValueError, {"pose_data": {"pose_metas": [{"width": 416}]}}, "pose_metas[0]"),
        ("pose_data", ValueError, {"pose_data": {"pose_metas": [pose_data["pose_metas"][0], broken]}}, "pose_metas[1]: 'keypoints_left_hand'"),
        ("width", ValueError, {"width": 0}, "64..2048"),
        ("height", TypeError, {"height": None}, "whole number"),
        ("retarget_padding", ValueError, {"retarget_padding": -3}, "0..512"),
        ("body_stick_width", ValueError, {"body_stick_width": -2}, "-1..20"),
        ("hand_stick_width", TypeError, {"hand_stick_width": float("nan")}, "whole number"),
        ("draw_head", TypeError, {"draw_head": "maybe"}, "boolean"),
        ("draw_head", TypeError, {"draw_head": None}, "boolean"),
    ]
    for name, exc, override, words in cases:
        msg = raises(exc, name, draw, **dict(args, **override))
        assert words in msg, (name, msg)


def test_draw_head_accepts_the_references_string(no_comfy, pose_data):
    # The reference declares draw_head's default as the string 'True' and its saved workflows
    # hold that string; an older ComfyUI passes it through unconverted.
    draw = nodes.DrawViTPose().process
    with_head = draw(pose_data, 416, 240, 16, -1, -1, True)[0]
    without = draw(pose_data, 416, 240, 16, -1, -1, False)[0]
    assert not torch.equal(with_head, without)
    assert torch.equal(draw(pose_data, 416, 240, 16, -1, -1, "True")[0], with_head)
    assert torch.equal(draw(pose_data, 416, 240, 16, -1, -1, "false")[0], without)
    assert torch.equal(draw(pose_data, 416, 240, 16, -1, -1, np.bool_(False))[0], without)


# -- Pose Retarget Prompt Helper ------------------------------------------------------------------


def test_prompt_helper_inputs(no_comfy):
    helper = nodes.PoseRetargetPromptHelper().process
    raises(TypeError, "pose_data", helper, "pose.json")
    refer = {"width": 400, "height": 800, "keypoints_body": np.zeros((20, 3))}
    msg = raises(ValueError, "pose_data", helper, {"pose_metas_original": [{"width": 832}], "refer_pose_meta": refer})
    assert "keypoints_body" in msg


# -- Pose Detection OneToAll Animation ------------------------------------------------------------


def test_onetoall_inputs(fake_comfy, loaded, images):
    node = nodes.PoseDetectionOneToAllAnimation().process
    frames = images[:1]
    args = dict(model=loaded, images=frames, width=416, height=240, align_to="ref", draw_face_points="full", draw_head="full", ref_image=None)
    cases = [
        ("images", ValueError, {"images": frames[:0]}, "empty"),
        ("images", ValueError, {"images": tiny(12, 30)}, "12x30 px"),
        ("images", ValueError, {"images": nan_at(frames, 0)}, "NaN"),
        ("ref_image", ValueError, {"ref_image": tiny(7, 9)}, "the image is 7x9 px"),
        ("ref_image", ValueError, {"ref_image": nan_at(frames, 0)}, "NaN"),
        ("ref_image", TypeError, {"ref_image": [frames]}, "ComfyUI IMAGE"),
        ("width", ValueError, {"width": 2}, "64..2048"),
        ("align_to", ValueError, {"align_to": "sideways"}, "'sideways'"),
        ("draw_face_points", ValueError, {"draw_face_points": "half"}, "'half'"),
        ("draw_head", ValueError, {"draw_head": True}, "True"),
        ("model", TypeError, {"model": None}, "POSEMODEL"),
        # A reference image with nobody in it: nothing to align to.
        ("ref_image", ValueError, {"ref_image": torch.zeros(1, 200, 300, 3)}, "no person"),
    ]
    for name, exc, override, words in cases:
        msg = raises(exc, name, node, **dict(args, **override))
        assert words in msg, (name, msg)


# -- ONNX Detection Model Loader -----------------------------------------------------------------


def test_loader_inputs(no_comfy, monkeypatch, tmp_path, models):
    folder = tmp_path / "detection"
    folder.mkdir()
    shutil.copy(models["det"], folder / "det.onnx")
    shutil.copy(models["pose"], folder / "pose.onnx")
    (folder / "broken.onnx").write_bytes(b"not an onnx file")
    monkeypatch.setenv(nodes.MODELS_ENV, str(folder))
    load = nodes.OnnxDetectionModelLoader().loadmodel
    raises(FileNotFoundError, "vitpose_model", load, "missing.onnx", "det.onnx", "CPUExecutionProvider")
    raises(FileNotFoundError, "yolo_model", load, "pose.onnx", "missing.onnx", "CPUExecutionProvider")
    raises(TypeError, "yolo_model", load, "pose.onnx", None, "CPUExecutionProvider")
    raises(ValueError, "onnx_device", load, "pose.onnx", "det.onnx", "TPU")
    raises(ValueError, "vitpose_model and yolo_model", load, "pose.onnx", "pose.onnx", "CPUExecutionProvider")
    # Swapped: the file in yolo_model is a pose model (checked first, as the detector).
    assert "not a person detector" in raises(ModelError, "yolo_model", load, "det.onnx", "pose.onnx", "CPUExecutionProvider")
    assert "not a valid ONNX" in raises(ModelError, "yolo_model", load, "pose.onnx", "broken.onnx", "CPUExecutionProvider")
    assert "not a valid ONNX" in raises(ModelError, "vitpose_model", load, "broken.onnx", "det.onnx", "CPUExecutionProvider")
    (model,) = load("pose.onnx", "det.onnx", "CPUExecutionProvider")
    assert model.det_path.name == "det.onnx" and model.pose_path.name == "pose.onnx"


def test_options_share_the_sessions(fake_comfy, loaded, images):
    # Another face_padding or gate builds another Preprocessor, not another pair of sessions.
    nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240, face_padding=3, gate="fast")
    nodes.PoseDetectionOneToAllAnimation().process(loaded, images[:1], 416, 240)
    pres = list(loaded._cache.values())
    assert len(pres) >= 3
    assert len({id(p.detector.model) for p in pres}) == 1 and len({id(p.estimator.model) for p in pres}) == 1
