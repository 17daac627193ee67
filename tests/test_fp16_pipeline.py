"""FP16 models made by converters.fp16, checked on the synthetic scene and run through the pipeline.

The test kit's FP32 pose and detector models are converted with float16 graph inputs
(keep_io_types=False) and with float32 ones (True), validated with converters.fp16.validate on
real crops and frames of the synthetic scene, then run by the Preprocessor on the CPU provider;
likewise a pose model stored with external data.
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import onnx
import pytest
import torch

import onnxconverter_common  # noqa: E402,F401  (the [test] extra installs it: missing = broken, not skipped)

from converters import fp16  # noqa: E402
from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.detect import resize_for_detector  # noqa: E402
from wanprep_torch.pose import box_to_center_window, crop_windows  # noqa: E402
from wanprep_torch.runtime import OrtModel  # noqa: E402
from wanprep_torch.testkit import make_clip  # noqa: E402
from wanprep_torch.testkit.models import normalize_crop, reference_person_box, sample_crop  # noqa: E402
from wanprep_torch.testkit.scene import pose_crop_window  # noqa: E402

MAX_PX = 1.0  # FP16 keypoints vs FP32, visible points
MIN_ARGMAX = 0.99


def make(det, pose, **kw):
    """A Preprocessor running every frame through both models (gate off where there is a gate),
    so FP16 and FP32 runs compare frame for frame."""
    kw.setdefault("progress", False)
    if "gate" in inspect.signature(Preprocessor).parameters:
        kw.setdefault("gate", "off")
    return Preprocessor(det, pose, **kw)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def scene():
    """Detector frames and pose crops of a clip with every point drawn (as test_converters does)."""
    clip = make_clip(4, motion="fast", seed=3)
    det = resize_for_detector(clip.frames.permute(0, 3, 1, 2), (640, 640))
    crops = [
        normalize_crop(sample_crop(f, *pose_crop_window(reference_person_box(kp, float(sig)))))
        for f, kp, sig in zip(clip.frames.numpy(), clip.keypoints.numpy(), clip.sigma.numpy())
    ]
    return {"det": det.numpy(), "pose": np.stack(crops)}


@pytest.fixture(scope="module", params=[False, True], ids=["io16", "io32"])
def converted(request, models, tmp_path_factory):
    keep_io = request.param
    d = tmp_path_factory.mktemp("keepio" if keep_io else "io16")
    return {
        "keep_io": keep_io,
        "pose": fp16.convert_fp16(models["pose"], d / "pose16.onnx", keep_io_types=keep_io),
        "det": fp16.convert_fp16(models["det"], d / "det16.onnx", keep_io_types=keep_io),
    }


def _pipeline_crops(res, frames) -> torch.Tensor:
    """The pose inputs the pipeline builds from its own boxes."""
    center, window = box_to_center_window(res.bboxes, (256, 192))
    crops = crop_windows(frames.permute(0, 3, 1, 2), center, window, (256, 192))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet, written out: not the library's constants
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (crops - mean) / std


def _keypoint_error(res, ref, clip) -> torch.Tensor:
    """FP16 vs FP32 distance on the points drawn in the scene that FP32 finds (score >= 0.3,
    the Wan visibility threshold): where FP32 finds nothing, its position is noise."""
    seen = clip.visible & (ref.keypoints[..., 2] >= 0.3)
    assert seen.sum() >= 0.9 * clip.visible.sum(), "FP32 reference misses many drawn points"
    return (res.keypoints[..., :2] - ref.keypoints[..., :2]).norm(dim=-1)[seen]


@pytest.mark.slow
def test_validate_on_scene(models, converted, scene):
    rep = fp16.validate(models["pose"], converted["pose"], inputs=scene["pose"], samples=0)
    assert rep.kind == "pose" and rep.runs >= 1, rep.summary()  # dynamic batch: all crops in one run
    assert rep.ok and rep.argmax_exact >= MIN_ARGMAX and not rep.nonfinite, rep.summary()
    rep = fp16.validate(models["det"], converted["det"], inputs=scene["det"], samples=0)
    assert rep.kind == "detector" and rep.ok, rep.summary()
    assert rep.box_iou >= 0.9 and rep.top1_box_iou >= 0.9, rep.summary()


def test_pipeline_on_converted_models(models, converted, clip, run_default):
    pre = make(converted["det"], converted["pose"])
    want = torch.float32 if converted["keep_io"] else torch.float16
    assert pre.detector.model.input.dtype == want and pre.estimator.model.input.dtype == want
    assert pre.estimator.model.output.dtype == want
    res = pre(clip.frames)
    err = _keypoint_error(res, run_default, clip)
    assert err.max() < MAX_PX, f"FP16 vs FP32: max {err.max():.3f} px, mean {err.mean():.3f} px"
    assert res.keypoints.dtype == torch.float32
    assert (res.bboxes - run_default.bboxes).abs().max() < 2.0
    # Heatmap argmax of both models on the pipeline's own crops (frames with every point drawn).
    full = clip.visible.all(dim=1)
    x = _pipeline_crops(run_default, clip.frames)[full]
    ref = OrtModel(models["pose"]).run(x).numpy()
    out = OrtModel(converted["pose"]).run(x).float().numpy()
    exact, near = fp16.argmax_agreement(ref, out)
    assert exact >= MIN_ARGMAX and near >= exact, (exact, near)


def _save_external(models, d, size_threshold: int):
    d.mkdir()
    src = d / "pose.onnx"
    onnx.save_model(onnx.load(str(models["pose"])), str(src), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="pose.onnx.data", size_threshold=size_threshold)
    data = d / "pose.onnx.data"
    assert data.stat().st_size > 0 and src.stat().st_size < models["pose"].stat().st_size
    return src, data


def test_external_data_fp32_pose_model(models, clip, run_default, tmp_path, monkeypatch):
    # onnx's default 1 KB threshold, as exporters write: shape constants stay inline.
    src, _ = _save_external(models, tmp_path / "fp32", 1024)
    monkeypatch.chdir(tmp_path)  # ORT finds the weights beside the model, not in the cwd
    res = make(models["det"], src)(clip.frames)
    torch.testing.assert_close(res.keypoints, run_default.keypoints, atol=1e-4, rtol=0)


def test_external_data_pose_model_to_fp16(models, clip, run_default, scene, tmp_path, monkeypatch):
    # Every tensor external, shape constants too: ONNX Runtime 1.32 cannot load such a file
    # (shape inference will not read external data), but the converter can, and its output
    # keeps small tensors inline.
    src, data = _save_external(models, tmp_path / "fp32", 0)
    before = _sha(data)
    monkeypatch.chdir(tmp_path)
    out = fp16.convert_fp16(src, tmp_path / "fp16" / "pose16.onnx")
    assert (tmp_path / "fp16" / "pose16.onnx.data").is_file()  # external in, external out
    assert _sha(data) == before
    # ORT cannot load src itself, so the reference is the same weights stored inline.
    rep = fp16.validate(models["pose"], out, inputs=scene["pose"], samples=0)
    assert rep.ok and rep.argmax_exact >= MIN_ARGMAX, rep.summary()

    pre = make(models["det"], out)
    assert pre.estimator.model.input.dtype == torch.float16
    res = pre(clip.frames)
    err = _keypoint_error(res, run_default, clip)
    assert err.max() < MAX_PX, f"external-data FP16 vs FP32: max {err.max():.3f} px"
