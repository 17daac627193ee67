"""ComfyUI nodes without ComfyUI: stub folder_paths / comfy.utils / comfy.model_management."""

import importlib.util
import inspect
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from wanprep_torch import comfy as nodes
from wanprep_torch.draw import draw_pose

REPO = Path(__file__).resolve().parents[1]


class Interrupted(Exception):
    pass


@pytest.fixture
def no_comfy(monkeypatch):
    """As outside ComfyUI: none of its modules importable."""
    for name in ("folder_paths", "comfy", "comfy.utils", "comfy.model_management"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes import fail
    monkeypatch.delenv(nodes.MODELS_ENV, raising=False)


@pytest.fixture
def fake_comfy(monkeypatch, models):
    models_dir = Path(models["det"]).parent
    fp = types.ModuleType("folder_paths")

    def get_filename_list(kind):
        assert kind == "detection"
        return sorted(p.name for p in models_dir.glob("*.onnx"))

    def get_full_path_or_raise(kind, name):
        p = models_dir / name
        if kind != "detection" or not p.is_file():
            raise FileNotFoundError(f"Model in folder '{kind}' with filename '{name}' not found.")
        return str(p)

    fp.get_filename_list = get_filename_list
    fp.get_full_path_or_raise = get_full_path_or_raise

    state = types.SimpleNamespace(bars=[], interrupt=False, checks=0)

    class ProgressBar:
        def __init__(self, total):
            self.total = total
            self.updates = []
            state.bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.updates.append(value)

    def throw_exception_if_processing_interrupted():
        state.checks += 1
        if state.interrupt:
            raise Interrupted("Processing interrupted")

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    comfy.utils, comfy.model_management = utils, mm
    for name, mod in (("folder_paths", fp), ("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, mod)
    return state


@pytest.fixture
def loaded(fake_comfy, models):
    (model,) = nodes.OnnxDetectionModelLoader().loadmodel(models["pose"].name, models["det"].name, "CPUExecutionProvider")
    return model


@pytest.fixture(scope="module")
def images():
    from wanprep_torch.testkit import make_clip

    return make_clip(6, H=240, W=416, seed=3).frames  # ComfyUI IMAGE: (T, H, W, 3) float in [0, 1]


def test_node_definitions(no_comfy):
    assert set(nodes.NODE_CLASS_MAPPINGS) == {"OnnxDetectionModelLoader", "PoseAndFaceDetection", "DrawViTPose"}
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS == {
        "OnnxDetectionModelLoader": "ONNX Detection Model Loader",
        "PoseAndFaceDetection": "Pose and Face Detection",
        "DrawViTPose": "Draw ViT Pose",
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
    assert spec["optional"]["face_padding"][1]["default"] == 0
    assert spec["optional"]["gate"][0] == ["off", "safe", "fast"] and spec["optional"]["gate"][1]["default"] == "safe"
    assert det.RETURN_TYPES == ("POSEDATA", "IMAGE", "STRING", "BBOX", "BBOX")
    assert det.RETURN_NAMES == ("pose_data", "face_images", "key_frame_body_points", "bboxes", "face_bboxes")

    draw = nodes.DrawViTPose
    req = draw.INPUT_TYPES()["required"]
    assert list(req) == ["pose_data", "width", "height", "retarget_padding", "body_stick_width", "hand_stick_width", "draw_head"]
    assert req["retarget_padding"][1]["default"] == 16 and req["draw_head"] == ("BOOLEAN", req["draw_head"][1])
    assert req["draw_head"][1]["default"] is True
    assert draw.RETURN_TYPES == ("IMAGE",) and draw.RETURN_NAMES == ("pose_images",)


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
    pose_data, faces, key_points, bboxes, face_bboxes = nodes.PoseAndFaceDetection().process(loaded, images, 416, 240)

    assert faces.shape == (t, 512, 512, 3) and faces.dtype == torch.float32 and faces.device.type == "cpu"
    assert 0.0 <= float(faces.min()) and float(faces.max()) <= 1.0 and float(faces.max()) > 0
    assert len(bboxes) == t and all(isinstance(b, tuple) and len(b) == 4 and all(isinstance(v, int) for v in b) for b in bboxes)
    assert len(face_bboxes) == t
    for x1, y1, x2, y2 in face_bboxes:  # (x1, y1, x2, y2) within the frame
        assert 0 <= x1 < x2 <= 416 and 0 <= y1 < y2 <= 240
    assert isinstance(json.loads(key_points), list)
    metas = pose_data["pose_metas"]
    assert len(metas) == t and metas[0]["width"] == 416 and metas[0]["keypoints_body"].shape == (20, 3)
    assert pose_data["wanprep"]["keypoints"].shape == (t, 133, 3)

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
    assert torch.equal(pose_images, draw_pose(metas, out_size=(240, 416)))
    assert fake_comfy.bars[-1].updates[-1] == t

    (small,) = nodes.DrawViTPose().process(pose_data, 100, 120, 16, 2, 0, False)
    assert small.shape == (t, 120, 100, 3)


def test_detect_resizes_to_target(fake_comfy, loaded, images):
    """Frames resized to half size first: outputs are in the target's pixels and on the person
    (the ground truth of the images fixture's clip, scaled by 1/2)."""
    from wanprep_torch.testkit import make_clip

    clip = make_clip(6, H=240, W=416, seed=3)  # the images fixture's clip, with its ground truth
    assert torch.equal(clip.frames, images)
    pose_data, faces, _, bboxes, face_bboxes = nodes.PoseAndFaceDetection().process(loaded, images[:3], 208, 120, gate="off")
    metas = pose_data["pose_metas"]
    assert metas[0]["width"] == 208 and metas[0]["height"] == 120
    assert faces.shape == (3, 512, 512, 3)
    gt = clip.keypoints[:3] * 0.5
    vis = clip.visible[:3]
    kps = pose_data["wanprep"]["keypoints"]
    err = (kps[..., :2] - gt).norm(dim=-1)[vis]
    # Measured 0.37 mean / 1.03 max px (0.11 / 0.69 at full size: the person is half as big).
    assert err.mean() < 0.6 and err.max() < 1.6, f"keypoints vs ground truth: {err.mean():.3f} / {err.max():.3f} px"
    for i, m in enumerate(metas):  # metas normalised by the target size, not the input's
        hand = torch.as_tensor(m["keypoints_left_hand"][:, :2]) * torch.tensor([208.0, 120.0])
        torch.testing.assert_close(hand.float(), kps[i, 91:112, :2], atol=1e-3, rtol=0)
    gt_box = clip.boxes[:3] * 0.5
    for (x1, y1, x2, y2), g in zip(bboxes, gt_box.tolist()):
        # Person boxes cover the scaled ground truth (ints: truncated) with at most 4 px to spare.
        assert g[0] - 4 <= x1 <= g[0] and g[1] - 4 <= y1 <= g[1], ((x1, y1), g)
        assert g[2] - 1 <= x2 <= g[2] + 4 and g[3] - 1 <= y2 <= g[3] + 4, ((x2, y2), g)
    for i, (x1, y1, x2, y2) in enumerate(face_bboxes):
        assert 0 <= x1 < x2 <= 208 and 0 <= y1 < y2 <= 120
        face = gt[i, 23:91][vis[i, 23:91]]  # the 68 face points drawn
        lo, hi = face.amin(0), face.amax(0)
        assert x1 <= lo[0] + 1 and y1 <= lo[1] + 1 and x2 >= hi[0] - 1 and y2 >= hi[1] - 1, "the face box holds the face"
        side = float((hi - lo).max())
        assert max(x2 - x1, y2 - y1) <= 1.5 * side + 2, "and is not much larger (scale 1.3)"


def test_draw_chunks_match_whole(fake_comfy, loaded, images, monkeypatch):
    pose_data = nodes.PoseAndFaceDetection().process(loaded, images, 416, 240, gate="off")[0]
    metas = pose_data["pose_metas"]
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
    metas = pose_data["pose_metas"]

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


def test_gate_options():
    assert nodes._gate_options("fast") == {"gate": "fast"}
    with pytest.raises(ValueError):
        nodes._gate_options("turbo")


def test_custom_nodes_shim():
    spec = importlib.util.spec_from_file_location("wanprep_custom_nodes_shim", REPO / "comfyui" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.NODE_CLASS_MAPPINGS is nodes.NODE_CLASS_MAPPINGS
    assert mod.NODE_DISPLAY_NAME_MAPPINGS is nodes.NODE_DISPLAY_NAME_MAPPINGS
