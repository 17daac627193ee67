"""ComfyUI nodes without ComfyUI: stub folder_paths / comfy.utils / comfy.model_management."""

import importlib.util
import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_fixtures import Interrupted, fake_comfy, images, loaded, no_comfy  # noqa: F401  (fixtures)

from wanprep_torch import PoseMeta
from wanprep_torch import comfy as nodes
from wanprep_torch.draw import draw_pose
from wanprep_torch.wan import pose_keypoint_frames

REPO = Path(__file__).resolve().parents[1]


def test_node_definitions(no_comfy):
    assert set(nodes.NODE_CLASS_MAPPINGS) == {
        "OnnxDetectionModelLoader", "PoseAndFaceDetection", "DrawViTPose", "PoseRetargetPromptHelper", "PoseDetectionOneToAllAnimation",
    }
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS == {
        "OnnxDetectionModelLoader": "ONNX Detection Model Loader",
        "PoseAndFaceDetection": "Pose and Face Detection",
        "DrawViTPose": "Draw ViT Pose",
        "PoseRetargetPromptHelper": "Pose Retarget Prompt Helper",
        "PoseDetectionOneToAllAnimation": "Pose Detection OneToAll Animation",
    }
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional"} and spec["required"]
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert isinstance(cls.CATEGORY, str) and cls.CATEGORY
        fn = getattr(cls, cls.FUNCTION)
        params = inspect.signature(fn).parameters
        for group, optional in (("required", False), ("optional", True)):
            for inp in spec.get(group, {}):
                assert inp in params, (name, inp)
                if optional:  # ComfyUI may leave optional inputs out of the call
                    assert params[inp].default is not inspect.Parameter.empty, (name, inp)

    loader = nodes.OnnxDetectionModelLoader
    req = loader.INPUT_TYPES()["required"]
    assert req["vitpose_model"][0] == [] and req["yolo_model"][0] == []  # no folder_paths, no env var
    assert req["onnx_device"][0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert loader.RETURN_TYPES == ("POSEMODEL",)

    det = nodes.PoseAndFaceDetection
    spec = det.INPUT_TYPES()
    assert spec["required"]["model"] == ("POSEMODEL",) and spec["required"]["images"] == ("IMAGE",)
    assert spec["required"]["width"][1]["default"] == 832 and spec["required"]["height"][1]["default"] == 480
    assert list(spec["required"]) == ["model", "images", "width", "height"]
    # The reference's order, then this project's extras last (saved workflows keep their values).
    assert list(spec["optional"]) == ["retarget_image", "face_padding", "gate", "smooth", "people", "person"]
    assert spec["optional"]["people"][1]["default"] == 1 and spec["optional"]["person"][1]["default"] == 0
    assert spec["optional"]["retarget_image"][0] == "IMAGE"
    assert spec["optional"]["face_padding"][1]["default"] == 0
    assert spec["optional"]["gate"][0] == ["off", "safe", "fast"] and spec["optional"]["gate"][1]["default"] == "safe"
    assert spec["optional"]["smooth"][0] == ["auto", "on", "off"] and spec["optional"]["smooth"][1]["default"] == "auto"
    assert list(inspect.signature(det.process).parameters)[1:] == [
        "model", "images", "width", "height", "retarget_image", "face_padding", "gate", "smooth", "people", "person"
    ]
    # face_bboxes: the reference's "BBOX," (test_comfy_workflow.py checks the links it keeps).
    assert det.RETURN_TYPES == ("POSEDATA", "IMAGE", "STRING", "BBOX", "BBOX,", "POSE_KEYPOINT")
    assert det.RETURN_NAMES == ("pose_data", "face_images", "key_frame_body_points", "bboxes", "face_bboxes", "pose_keypoint")

    helper = nodes.PoseRetargetPromptHelper
    assert helper.INPUT_TYPES() == {"required": {"pose_data": ("POSEDATA",)}}
    assert helper.RETURN_TYPES == ("STRING", "STRING") and helper.RETURN_NAMES == ("prompt", "retarget_prompt")

    draw = nodes.DrawViTPose
    req = draw.INPUT_TYPES()["required"]
    assert list(req) == ["pose_data", "width", "height", "retarget_padding", "body_stick_width", "hand_stick_width", "draw_head"]
    assert req["retarget_padding"][1]["default"] == 16 and req["draw_head"] == ("BOOLEAN", req["draw_head"][1])
    assert req["draw_head"][1]["default"] is True
    assert draw.RETURN_TYPES == ("IMAGE",) and draw.RETURN_NAMES == ("pose_images",)
    assert list(draw.INPUT_TYPES()["optional"]) == ["draw_people"] and draw.INPUT_TYPES()["optional"]["draw_people"][1]["default"] is False


def test_env_var_model_dir(no_comfy, monkeypatch, models):
    monkeypatch.setenv(nodes.MODELS_ENV, str(Path(models["det"]).parent))
    names = nodes.OnnxDetectionModelLoader.INPUT_TYPES()["required"]["yolo_model"][0]
    assert models["det"].name in names and models["pose"].name in names
    (model,) = nodes.OnnxDetectionModelLoader().loadmodel(models["pose"].name, models["det"].name, "CUDAExecutionProvider")
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FileNotFoundError):
        nodes.OnnxDetectionModelLoader().loadmodel("missing.onnx", models["det"].name, "CPUExecutionProvider")


def test_loader_lists_and_errors(fake_comfy, models):
    names = nodes.OnnxDetectionModelLoader.INPUT_TYPES()["required"]["vitpose_model"][0]
    assert models["pose"].name in names
    with pytest.raises(FileNotFoundError):
        nodes.OnnxDetectionModelLoader().loadmodel("missing.onnx", models["det"].name, "CPUExecutionProvider")
    from wanprep_torch import ModelError

    with pytest.raises(ModelError, match="not a person detector"):  # models swapped
        nodes.OnnxDetectionModelLoader().loadmodel(models["det"].name, models["pose"].name, "CPUExecutionProvider")


def test_detect_and_draw(fake_comfy, loaded, images):
    t = images.shape[0]
    pose_data, faces, key_points, bboxes, face_bboxes, pose_keypoint = nodes.PoseAndFaceDetection().process(loaded, images, 416, 240)

    assert faces.shape == (t, 512, 512, 3) and faces.dtype == torch.float32 and faces.device.type == "cpu"
    assert 0.0 <= float(faces.min()) and float(faces.max()) <= 1.0 and float(faces.max()) > 0
    # bboxes: the reference's one-element list with frame 0's box; every frame's in pose_data.
    assert len(bboxes) == 1 and isinstance(bboxes[0], tuple) and all(isinstance(v, int) for v in bboxes[0])
    per_frame = pose_data["wanprep"]["bboxes"]
    assert per_frame.shape == (t, 5) and bboxes[0] == tuple(int(v) for v in per_frame[0, :4].tolist())
    assert len(face_bboxes) == t
    for x1, y1, x2, y2 in face_bboxes:  # (x1, y1, x2, y2) within the frame
        assert 0 <= x1 < x2 <= 416 and 0 <= y1 < y2 <= 240
    assert isinstance(json.loads(key_points), list) and json.loads(key_points)
    # The reference's pose_data: PoseMeta objects, Wan dicts as the originals, no reference.
    assert set(pose_data) == {"retarget_image", "pose_metas", "refer_pose_meta", "pose_metas_original", "wanprep"}
    assert pose_data["retarget_image"] is None and pose_data["refer_pose_meta"] is None
    originals = pose_data["pose_metas_original"]
    assert len(originals) == t and originals[0]["width"] == 416 and originals[0]["keypoints_body"].shape == (20, 3)
    metas = pose_data["pose_metas"]
    assert len(metas) == t and all(isinstance(m, PoseMeta) for m in metas)
    assert (metas[0].width, metas[0].height) == (416, 240)
    np.testing.assert_allclose(metas[0].kps_body, originals[0]["keypoints_body"][:, :2] * (416, 240), rtol=1e-6)
    assert pose_data["wanprep"]["keypoints"].shape == (t, 133, 3)
    # pose_keypoint: POSE_KEYPOINT per frame of pose_data["pose_metas"] (test_comfy_pose_keypoint.py
    # decodes it as comfyui_controlnet_aux does).
    assert pose_keypoint == pose_keypoint_frames(metas) and len(pose_keypoint) == t
    assert pose_keypoint[0]["canvas_width"] == 416 and len(pose_keypoint[0]["people"][0]["pose_keypoints_2d"]) == 54

    bar = fake_comfy.bars[-1]
    assert bar.total == t and bar.updates and bar.updates[-1] == t
    assert all(0 <= u <= t for u in bar.updates)
    assert fake_comfy.checks >= 1

    # Same options reuse the cached Preprocessor; other options build another.
    nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240)
    assert len(loaded._cache) == 1
    nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240, face_padding=4, gate="off")
    assert len(loaded._cache) == 2

    (pose_images,) = nodes.DrawViTPose().process(pose_data, 416, 240, 16, -1, -1, True)
    assert pose_images.shape == (t, 240, 416, 3) and pose_images.dtype == torch.float32
    assert pose_images.device.type == "cpu" and float(pose_images.max()) > 0
    assert torch.equal(pose_images, draw_pose([m.to_wan() for m in metas], out_size=(240, 416)))
    assert fake_comfy.bars[-1].updates[-1] == t

    (small,) = nodes.DrawViTPose().process(pose_data, 100, 120, 16, 2, 0, False)
    assert small.shape == (t, 120, 100, 3)


def test_frames_are_not_stretched(fake_comfy, loaded):
    # Square frames with the default 832x480 generation size: processed at 320x320, every
    # output in their pixels (the reference does not resize the frames either).
    from wanprep_torch.testkit import make_clip

    clip = make_clip(3, H=320, W=320, seed=4)
    pose_data, faces, _, bboxes, face_bboxes, pose_keypoint = nodes.PoseAndFaceDetection().process(loaded, clip.frames, 832, 480, gate="off")
    meta = pose_data["pose_metas_original"][0]
    assert (meta["width"], meta["height"]) == (320, 320) and pose_keypoint[0]["canvas_height"] == 320
    assert faces.shape == (3, 512, 512, 3)
    kps = pose_data["wanprep"]["keypoints"]
    err = (kps[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
    assert float(err.mean()) < 0.5 and float(kps[..., 2][clip.visible].min()) > 0.5
    for x1, y1, x2, y2 in face_bboxes:
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320
    (x1, y1, x2, y2), truth = bboxes[0], clip.boxes[0]
    assert x1 <= truth[0] and y1 <= truth[1] and x2 >= truth[2] - 1 and y2 >= truth[3] - 1 and x2 <= 321


def test_draw_chunks_match_whole(fake_comfy, loaded, images, monkeypatch):
    pose_data = nodes.PoseAndFaceDetection().process(loaded, images, 416, 240, gate="off")[0]
    metas = [m.to_wan() for m in pose_data["pose_metas"]]
    monkeypatch.setattr(nodes, "_DRAW_CHUNK", 4)  # 6 frames: two chunks
    (pad,) = nodes.DrawViTPose().process(pose_data, 300, 200, 16, -1, -1, True)
    assert torch.equal(pad, draw_pose(metas, out_size=(200, 300), mode="pad"))
    # With a retarget image the reference frames every pose by frame 0's bounds: later
    # chunks must use frame 0 too.
    retarget = dict(pose_data, retarget_image=torch.zeros(1, 8, 8, 3))
    (crop,) = nodes.DrawViTPose().process(retarget, 300, 200, 16, -1, -1, True)
    assert torch.equal(crop, draw_pose(metas, out_size=(200, 300), mode="crop", retarget_padding=16))


def test_draw_accepts_reference_pose_meta_objects(fake_comfy, loaded, images):
    pose_data = nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240, gate="off")[0]
    metas = pose_data["pose_metas_original"]
    pose_data = dict(pose_data, pose_metas=metas)

    def as_object(m):  # the reference's AAPoseMeta: pixel coordinates and separate scores
        wh = (m["width"], m["height"])
        o = types.SimpleNamespace(width=m["width"], height=m["height"])
        for attr, key in (("body", "keypoints_body"), ("lhand", "keypoints_left_hand"), ("rhand", "keypoints_right_hand"), ("face", "keypoints_face")):
            setattr(o, f"kps_{attr}", m[key][:, :2] * wh)
            setattr(o, f"kps_{attr}_p", m[key][:, 2])
        return o

    objs = dict(pose_data, pose_metas=[as_object(m) for m in metas])
    (a,) = nodes.DrawViTPose().process(pose_data, 416, 240, 16, -1, -1, True)
    (b,) = nodes.DrawViTPose().process(objs, 416, 240, 16, -1, -1, True)
    assert (a - b).abs().max() <= 1 / 255 + 1e-6  # float round trip of the coordinates
    with pytest.raises(TypeError):
        nodes.DrawViTPose().process({"pose_metas": [object()]}, 416, 240, 16, -1, -1, True)


def test_interrupt_propagates(fake_comfy, loaded, images):
    pose_data = nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240)[0]
    fake_comfy.interrupt = True
    with pytest.raises(Interrupted):
        nodes.PoseAndFaceDetection().process(loaded, images, 416, 240)
    with pytest.raises(Interrupted):
        nodes.DrawViTPose().process(pose_data, 416, 240, 16, -1, -1, True)
    # The cached Preprocessor still works after an interrupted run.
    fake_comfy.interrupt = False
    assert loaded.relay.target is None
    assert nodes.PoseAndFaceDetection().process(loaded, images[:2], 416, 240)[1].shape[0] == 2


def test_interrupt_mid_run(fake_comfy, loaded, images):
    # Interrupt raised from the Preprocessor's progress callback, after some frames finished.
    bars_before = len(fake_comfy.bars)
    calls = {"n": 0}
    orig = sys.modules["comfy.model_management"].throw_exception_if_processing_interrupted

    def later():
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupted("stop")
        orig()

    sys.modules["comfy.model_management"].throw_exception_if_processing_interrupted = later
    with pytest.raises(Interrupted):
        nodes.PoseAndFaceDetection().process(loaded, images, 416, 240, gate="off")
    assert calls["n"] == 3 and len(fake_comfy.bars) == bars_before + 1


def test_custom_nodes_shim():
    spec = importlib.util.spec_from_file_location("wanprep_custom_nodes_shim", REPO / "comfyui" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.NODE_CLASS_MAPPINGS is nodes.NODE_CLASS_MAPPINGS
    assert mod.NODE_DISPLAY_NAME_MAPPINGS is nodes.NODE_DISPLAY_NAME_MAPPINGS


def stretched_reference():
    """(1, 300, 270, 3) IMAGE: a person with 1.5x the video person's width for its height."""
    from wanprep_torch.testkit import make_clip

    ref = make_clip(1, H=300, W=180, motion="hold", person_height=230, seed=5)
    img = torch.nn.functional.interpolate(ref.frames.permute(0, 3, 1, 2), size=(300, 270), mode="bilinear", align_corners=False)
    return img.permute(0, 2, 3, 1).contiguous()


def test_retarget_image(fake_comfy, loaded, images):
    # As a saved workflow calls it: keyword arguments, retarget_image connected.
    ref_image = stretched_reference()
    out = nodes.PoseAndFaceDetection().process(model=loaded, images=images, width=416, height=240, retarget_image=ref_image, face_padding=0, gate="off")
    pose_data, faces, key_points, bboxes, face_bboxes, pose_keypoint = out
    t = images.shape[0]
    refer = pose_data["refer_pose_meta"]
    # The reference image resized to the generation's area (416 x 240), sides multiples of 16.
    assert (refer["width"], refer["height"]) == (288, 320) and refer["keypoints_body"].shape == (20, 3)
    assert isinstance(pose_data["retarget_image"], np.ndarray) and pose_data["retarget_image"].shape == (320, 288, 3)
    originals = pose_data["pose_metas_original"]
    assert len(originals) == t and originals[0]["width"] == 416  # the detected poses, frame pixels
    metas = pose_data["pose_metas"]
    assert len(metas) == t and all(isinstance(m, PoseMeta) and (m.width, m.height) == (288, 320) for m in metas)
    from wanprep_torch import retarget

    expect = retarget(originals, refer)
    for a, b in zip(metas, expect):
        np.testing.assert_array_equal(a.kps_body, b.kps_body)
    # Retargeted: the reference's proportions (shoulder over neck-to-hip limb).
    def shoulders(b):
        return np.linalg.norm(b[2] - b[1]) / np.linalg.norm(b[8] - b[1])

    video = PoseMeta.from_wan(originals[0]).kps_body
    assert shoulders(metas[0].kps_body) > 1.2 * shoulders(video)
    assert shoulders(metas[0].kps_body) == pytest.approx(shoulders(PoseMeta.from_wan(refer).kps_body), rel=0.03)
    # Face crops, boxes and SAM2 points stay the video's.
    assert faces.shape == (t, 512, 512, 3) and len(face_bboxes) == t and bboxes[0][2] <= 417
    assert pose_keypoint == pose_keypoint_frames(metas) and pose_keypoint[0]["canvas_width"] == 288
    person = pose_keypoint[0]["people"][0]
    assert all(v == 0 for v in person["face_keypoints_2d"][: 68 * 3])  # retargeting drops the face
    # ... but the 69th and 70th face points are the (retargeted) body's right and left eye.
    assert person["face_keypoints_2d"][68 * 3 :] == person["pose_keypoints_2d"][14 * 3 : 16 * 3]

    # Draw ViT Pose: each pose on its own (reference) canvas, framed by frame 0's bounds + padding.
    (pose_images,) = nodes.DrawViTPose().process(pose_data, 416, 240, 16, -1, -1, True)
    wan_metas = [m.to_wan() for m in metas]
    assert torch.equal(pose_images, draw_pose(wan_metas, out_size=(240, 416), mode="crop", retarget_padding=16))
    assert float(pose_images.max()) > 0

    # Prompt helper: arms and legs visible, landscape template, portrait reference.
    prompt, retarget_prompt = nodes.PoseRetargetPromptHelper().process(pose_data)
    assert prompt == "Change the person to a standard T-pose (facing forward with arms extended). The person is standing. Feet and Hands are visible in the image."
    assert retarget_prompt == "Change the person to a standard pose with the face oriented forward and arms extending straight down by the sides. The person is standing. Feet and Hands are visible in the image."


def test_retarget_prompt_helper_rules():
    forward = "Change the person to face forward."
    t_legs = "Change the person to a standard T-pose (facing forward with arms extended). The person is standing. Feet and Hands are visible in the image."
    down_legs = "Change the person to a standard pose with the face oriented forward and arms extending straight down by the sides. The person is standing. Feet and Hands are visible in the image."
    t_arms = "Change the person to a standard T-pose (facing forward with arms extended). Hands are visible in the image."
    down_arms = "Change the person to a standard pose with the face oriented forward and arms extending straight down by the sides. Hands are visible in the image."

    def meta(w, h, arm=None, leg=None):
        body = np.zeros((20, 3), np.float32)
        body[:, :2] = 0.5
        if arm is not None:
            body[arm] = (0.4, 0.5, 0.9)
        if leg is not None:
            body[leg] = (0.5, 0.8, 0.9)
        return {"width": w, "height": h, "keypoints_body": body}

    helper = nodes.PoseRetargetPromptHelper()
    ref_land, ref_port = meta(800, 400), meta(400, 800)
    assert helper.process({"pose_metas_original": [meta(832, 480, arm=3)], "refer_pose_meta": None}) == (forward, forward)
    assert helper.process({"pose_metas_original": [meta(832, 480)], "refer_pose_meta": ref_land}) == (forward, forward)
    assert helper.process({"pose_metas_original": [meta(832, 480, arm=7)], "refer_pose_meta": ref_port}) == (t_arms, down_arms)
    assert helper.process({"pose_metas_original": [meta(480, 832, leg=13)], "refer_pose_meta": ref_land}) == (down_legs, t_legs)
    # Scanned in order, stopping once both are seen: the template's orientation is the last scanned.
    seq = [meta(480, 832, arm=4), meta(832, 480, leg=10), meta(480, 832)]
    assert helper.process({"pose_metas_original": seq, "refer_pose_meta": ref_port}) == (t_legs, down_legs)
    seq = [meta(480, 832, arm=4), meta(480, 832)]  # never both: the scan runs to the end
    assert helper.process({"pose_metas_original": seq, "refer_pose_meta": ref_land}) == (down_arms, t_arms)
    # Visible: x <= 1, y <= 1 and score >= 0.75; other rows do not count.
    off = meta(832, 480, arm=6)
    off["keypoints_body"][6, 0] = 1.2
    low = meta(832, 480, leg=9)
    low["keypoints_body"][9, 2] = 0.7
    wrist_only = meta(832, 480, arm=5)  # row 5 is a shoulder
    for m in (off, low, wrist_only):
        assert helper.process({"pose_metas_original": [m], "refer_pose_meta": ref_land}) == (forward, forward)
    # A PoseMeta reference (the width / height attributes) works too.
    assert helper.process({"pose_metas_original": [meta(832, 480, arm=3)], "refer_pose_meta": PoseMeta.from_wan(dict(ref_port, keypoints_left_hand=np.zeros((21, 3)), keypoints_right_hand=np.zeros((21, 3))))}) == (t_arms, down_arms)


def test_key_frame_body_points_never_empty(fake_comfy, loaded):
    # Nobody in view: no point scores >= 0.3; the prompt is the centre of frame 0's (full-frame) box.
    blank = torch.zeros(2, 240, 416, 3)
    _, _, key_points, bboxes, _, _ = nodes.PoseAndFaceDetection().process(loaded, blank, 416, 240, gate="off")
    assert bboxes == [(0, 0, 416, 240)]
    assert json.loads(key_points) == [{"x": 208, "y": 120}]


# -- Pose Detection OneToAll Animation ---------------------------------------------------------


def test_onetoall_node_signature(no_comfy):
    node = nodes.PoseDetectionOneToAllAnimation
    spec = node.INPUT_TYPES()
    assert list(spec["required"]) == ["model", "images", "width", "height", "align_to", "draw_face_points", "draw_head"]
    assert list(spec["optional"]) == ["ref_image"] and spec["optional"]["ref_image"][0] == "IMAGE"
    w, h = spec["required"]["width"][1], spec["required"]["height"][1]
    assert (w["default"], h["default"], w["step"], h["step"]) == (832, 480, 2, 2)
    assert spec["required"]["align_to"][0] == ["ref", "pose", "none"] and spec["required"]["align_to"][1]["default"] == "ref"
    for opt in ("draw_face_points", "draw_head"):
        assert spec["required"][opt][0] == ["full", "weak", "none"] and spec["required"][opt][1]["default"] == "full"
    assert node.RETURN_TYPES == ("IMAGE", "IMAGE", "IMAGE", "MASK")
    assert node.RETURN_NAMES == ("pose_images", "ref_pose_image", "ref_image", "ref_mask")


def _onetoall_direct(loaded, images, ref, **kw):
    """The same through the library: the stages' keypoints, then onetoall()."""
    from wanprep_torch import PersonDetector, PoseEstimator
    from wanprep_torch.onetoall import onetoall

    det, pose = PersonDetector(loaded.det_path), PoseEstimator(loaded.pose_path)
    kps = pose(images, det(images).boxes)
    rk = pose(ref, det(ref).boxes)[0] if ref is not None else None
    return onetoall(kps, 416, 240, kw["align_to"], "full", "full", reference_keypoints=rk,
                    reference_image=None if ref is None else ref[0], frame_size=tuple(images.shape[1:3]))


@pytest.mark.parametrize("align_to", ["ref", "pose", "none"])
def test_onetoall_node_end_to_end(fake_comfy, loaded, images, align_to):
    from wanprep_torch.testkit import make_clip

    # A reference character with other proportions (shorter) than the video's person.
    ref = make_clip(1, H=240, W=416, seed=9, person_height=150).frames
    got = nodes.PoseDetectionOneToAllAnimation().process(loaded, images[:3], 416, 240, align_to, "full", "full", ref_image=ref)
    pose_images, ref_pose, ref_out, mask = got
    assert pose_images.shape == (3, 240, 416, 3) and pose_images.dtype == torch.float32
    assert ref_out.shape[0] == 1 and mask.dim() == 3 and ref_pose.shape[0] == 1
    assert float(pose_images.amax()) > 0.5, "poses are drawn"
    want = _onetoall_direct(loaded, images[:3], ref, align_to=align_to)
    for g, w in zip(got, want):
        assert torch.equal(g, w.cpu().float())
    if align_to == "none":
        assert torch.equal(ref_out[0], ref[0])  # passed through


def test_onetoall_node_without_reference(fake_comfy, loaded, images):
    pose_images, ref_pose, ref_out, mask = nodes.PoseDetectionOneToAllAnimation().process(loaded, images[:2], 416, 240)
    assert pose_images.shape == (2, 240, 416, 3) and float(pose_images.amax()) > 0.5
    assert ref_pose.shape == (1, 240, 416, 3) and float(ref_pose.abs().max()) == 0.0
    assert ref_out.shape == (1, 240, 416, 3) and float(ref_out.abs().max()) == 0.0
    assert mask.shape == (1, 240, 416) and float(mask.abs().max()) == 0.0


def test_onetoall_node_bad_inputs(fake_comfy, loaded, images):
    node = nodes.PoseDetectionOneToAllAnimation()
    with pytest.raises(ValueError, match="ComfyUI IMAGE"):
        node.process(loaded, images[0], 416, 240)
    with pytest.raises(ValueError, match="align_to"):
        node.process(loaded, images[:1], 416, 240, "sideways")
    # A reference image with nobody in it: nothing to align to.
    with pytest.raises(ValueError, match="no person"):
        node.process(loaded, images[:1], 416, 240, "ref", ref_image=torch.zeros(1, 200, 300, 3))
