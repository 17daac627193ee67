"""End-to-end behaviour of the Preprocessor on synthetic scenes with ground truth.

These run with the gate off (every frame through both models, the reference's behaviour);
tests/test_gate.py covers frame skipping.
"""

import json
import math
import time
import warnings
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wanprep_torch import ModelError, Preprocessor
from wanprep_torch import wan
from wanprep_torch.runtime import OrtModel


def make(models, det="det", pose="pose", **kw):
    kw.setdefault("progress", False)
    kw.setdefault("gate", "off")
    return Preprocessor(models[det], models[pose], **kw)


def body_error(res, clip):
    vis = clip.visible
    err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)
    return err[vis]


# -- accuracy against ground truth --------------------------------------------------------


def test_keypoints_match_ground_truth(run_default, clip):
    err = body_error(run_default, clip)
    assert err.mean() < 0.5, f"mean error {err.mean():.3f} px"
    assert err.max() < 2.5, f"max error {err.max():.3f} px"
    vis_scores = run_default.keypoints[..., 2][clip.visible]
    hid_scores = run_default.keypoints[..., 2][~clip.visible]
    assert vis_scores.min() > 0.5
    assert hid_scores.max() < 0.1


def test_boxes_cover_the_person(run_default, clip):
    b = run_default.bboxes
    assert (b[:, 4] > 0.5).all(), "the detector found the person on every frame"
    vis = clip.visible.unsqueeze(-1)
    lo = torch.where(vis, clip.keypoints, torch.full_like(clip.keypoints, 1e9)).amin(1)
    hi = torch.where(vis, clip.keypoints, torch.full_like(clip.keypoints, -1e9)).amax(1)
    assert (b[:, :2] <= lo).all() and (b[:, 2:4] >= hi).all()
    assert (b[:, :2] >= lo - 40).all() and (b[:, 2:4] <= hi + 40).all(), "and is not much larger"


def test_result_shapes_and_types(run_default, clip):
    r = run_default
    t = len(clip)
    assert r.keypoints.shape == (t, 133, 3) and r.keypoints.dtype == torch.float32
    assert r.bboxes.shape == (t, 5)
    assert r.face_images.shape == (t, 512, 512, 3) and r.face_images.dtype == torch.float32
    assert 0 <= float(r.face_images.min()) and float(r.face_images.max()) <= 1
    assert len(r.pose_metas) == t and len(r.face_bboxes) == t
    m = r.pose_metas[0]
    assert (m["width"], m["height"]) == (832, 480)
    assert m["keypoints_body"].shape == (20, 3)
    assert m["keypoints_left_hand"].shape == (21, 3) and m["keypoints_right_hand"].shape == (21, 3)
    assert m["keypoints_face"].shape == (69, 3)
    np.testing.assert_allclose(m["keypoints_left_hand"][:, 0], r.keypoints[0, 91:112, 0].numpy() / 832, rtol=1e-6)
    assert r.providers == {"detector": "CPUExecutionProvider", "pose": "CPUExecutionProvider"}
    json.dumps(r.to_json())  # serialisable


def test_timings_cover_each_stage_and_add_up(models, clip):
    pre = make(models)
    t0 = time.perf_counter()
    r = pre(clip.frames)
    wall = time.perf_counter() - t0
    tm = r.timings
    stages = ("detect_pre", "detect_model", "detect_post", "pose_pre", "pose_model", "pose_post", "wan", "faces")
    assert tm["frames"] == len(clip)
    for stage in stages:  # every stage did work on every frame (gate off): none reads zero
        assert tm[stage]["s"] > 0, stage
        assert tm[stage]["ms_per_frame"] == pytest.approx(1000 * tm[stage]["s"] / len(clip), rel=1e-3, abs=1e-3)
    parts = sum(v["s"] for k, v in tm.items() if isinstance(v, dict) and k not in ("total", "non_model", "wall"))
    assert tm["total"]["s"] == pytest.approx(parts, abs=1e-5)
    model = tm["detect_model"]["s"] + tm["pose_model"]["s"]
    assert tm["non_model"]["s"] == pytest.approx(tm["total"]["s"] - model, abs=1e-5)
    # The stages are timed inside the call: together no more than its wall time, and most of it.
    assert tm["total"]["s"] <= tm["wall"]["s"] <= wall
    assert tm["total"]["s"] >= 0.5 * wall, (tm["total"]["s"], wall)


def test_key_frame_points_are_frame0_body_points(run_default, clip):
    pts = json.loads(run_default.key_frame_points)
    body = wan.wan_body(clip.keypoints[:1])[0]  # ground truth, Wan body rows
    expect = [body[r] for r in (0, 1, 2, 5, 8, 11, 10, 13)]  # nose, neck, shoulders, hips, knees
    assert len(pts) == len(expect)
    for p, e in zip(pts, expect):
        assert abs(p["x"] - float(e[0])) <= 1.5 and abs(p["y"] - float(e[1])) <= 1.5
    assert [k["frame"] for k in run_default.key_frames] == [0, 4, 7, 11]
    assert run_default.key_frames[0]["points"] == pts


# -- input layouts, dtypes and batching give the same answer ------------------------------


def test_layouts_and_dtypes_agree(models, clip, run_default):
    pre = make(models)
    x = clip.frames[:8]
    ref = run_default.keypoints[:8]
    tchw = pre(x.permute(0, 3, 1, 2).contiguous())
    assert torch.equal(tchw.keypoints, ref)
    u8 = pre((x * 255).round().to(torch.uint8))
    # 8-bit input: visible points move by quantisation noise only (hidden ones have no peak).
    vis = clip.visible[:8]
    assert (u8.keypoints[..., :2] - ref[..., :2]).norm(dim=-1)[vis].max() < 0.5
    one = pre(x[3])
    assert one.keypoints.shape == (1, 133, 3)
    assert torch.allclose(one.keypoints[0], ref[3], atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_frames_run_with_the_default_gate(models, clip, dtype):
    x = clip.frames[:8].to(dtype)
    pre = make(models, gate="safe")  # the default gate, which used to crash on these dtypes
    got = pre(x)
    want = pre(x.float())  # the same values in float32
    assert got.pose_ran.tolist() == want.pose_ran.tolist()  # same signatures, same decisions
    vis = clip.visible[:8]
    assert (got.keypoints[..., :2] - want.keypoints[..., :2]).norm(dim=-1)[vis].max() < 0.5
    assert got.face_images.dtype == torch.float32 and bool(torch.isfinite(got.face_images).all())


def test_uint8_pose_crop_reads_only_the_window_region(models, clip, monkeypatch):
    from wanprep_torch import pose

    x = (clip.frames[:8] * 255).round().to(torch.uint8)
    region = make(models)(x)
    sizes = []
    orig = pose.crop_source

    def whole_frame(fb, center, window, pose_hw):  # the conversion of every pixel, as before
        src, c = orig(fb, center, window, pose_hw)
        sizes.append(src.shape[-2] * src.shape[-1])
        return fb.float01(), center

    monkeypatch.setattr(pose, "crop_source", whole_frame)
    full = make(models)(x)
    assert sizes and max(sizes) < 0.8 * 832 * 480  # the region path converts less than the frame
    # Same taps; kornia's normalised coordinates round differently for the region and the whole
    # frame (~1e-5 px), which DARK may amplify on flat (hidden) maps (measured 0.014 px).
    diff = (region.keypoints[..., :2] - full.keypoints[..., :2]).norm(dim=-1)
    assert diff[clip.visible[:8]].max() < 1e-3 and diff.max() < 0.03
    assert torch.equal(region.bboxes, full.bboxes)


@pytest.mark.parametrize(
    "det,pose,batch",
    [("det", "pose", 1), ("det", "pose", 5), ("det_b1", "pose_b1", "auto"), ("det_b1", "pose_b1", 4), ("det_v8", "pose", 3)],
)
def test_batching_and_fixed_batch_models_agree(models, clip, run_default, det, pose, batch):
    res = make(models, det, pose, batch_size=batch)(clip.frames)
    assert torch.allclose(res.keypoints, run_default.keypoints, atol=1e-4)
    assert torch.allclose(res.bboxes, run_default.bboxes, atol=1e-4)


def _fixed_batch_copy(src, dst, batch: int):
    """``src`` (a dynamic-batch kit model) saved with its batch axis fixed to ``batch``."""
    import onnx

    m = onnx.load(str(src))
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = batch
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("gate", ["off", "safe"])
def test_fixed_batch_of_4_with_a_partial_last_batch(models, clip, run_default, tmp_path, gate):
    """Fixed batch 4 on 11 frames: every model run but the last is full, the last is padded
    (11 = 8 + 3 with the CPU's groups of 8; gated runs pad each scheduled batch). No frame is
    dropped and each equals the dynamic-batch result."""
    det4 = _fixed_batch_copy(models["det"], tmp_path / "det_b4.onnx", 4)
    pose4 = _fixed_batch_copy(models["pose"], tmp_path / "pose_b4.onnx", 4)
    pre = make({"det": det4, "pose": pose4}, batch_size=4, gate=gate)
    assert pre.detector.model.fixed_batch == 4 and pre.estimator.model.fixed_batch == 4
    x = clip.frames[:11]
    res = pre(x)
    want = run_default if gate == "off" else make(models, batch_size=4, gate=gate)(x)
    assert len(res) == 11 and res.keypoints.shape == (11, 133, 3)
    assert torch.allclose(res.keypoints, want.keypoints[:11], atol=1e-4)
    assert torch.allclose(res.bboxes, want.bboxes[:11], atol=1e-4)
    assert res.face_bboxes == want.face_bboxes[:11]
    assert res.pose_ran.tolist() == want.pose_ran[:11].tolist()


def test_chunked_iterable_equals_tensor(models, clip, run_default):
    pre = make(models, chunk_size=5)
    chunks = (clip.frames[i : i + 4] for i in range(0, len(clip), 4))
    res = pre(chunks)
    assert torch.equal(res.keypoints, run_default.keypoints)
    assert res.face_bboxes == run_default.face_bboxes
    assert torch.equal(res.face_images, run_default.face_images)
    assert [json.dumps({k: np.asarray(v).tolist() for k, v in m.items()}) for m in res.pose_metas] == [
        json.dumps({k: np.asarray(v).tolist() for k, v in m.items()}) for m in run_default.pose_metas
    ]


def test_streaming_releases_processed_chunks(models, clip):
    """Memory must not grow with T: the pipeline keeps no reference to finished chunks."""
    pre = make(models, chunk_size=4)
    refs = []

    def gen():
        for i in range(0, len(clip), 4):
            c = clip.frames[i : i + 4].clone()
            refs.append(weakref.ref(c))
            yield c
            del c

    res = pre(gen())
    assert len(res) == len(clip)
    assert all(r() is None for r in refs), "processed chunks are still referenced"


def test_face_crops_as_uint8_on_host(models, clip, run_default):
    res = make(models, face_dtype=torch.uint8, face_device="cpu")(clip.frames)
    assert res.face_images.dtype == torch.uint8 and res.face_images.device.type == "cpu"
    diff = (res.face_images.float() / 255 - run_default.face_images).abs().max()
    assert diff <= 1 / 255 + 1e-6


def test_face_crop_shows_the_face_box(run_default, clip):
    """The crop is the face box's pixels resized: compare with a direct resize of that box."""
    i = 0
    x1, y1, x2, y2 = run_default.face_bboxes[i]
    sub = clip.frames[i, y1:y2, x1:x2].permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(sub, size=(512, 512), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    assert (run_default.face_images[i] - ref).abs().max() < 2.5 / 255


# -- the face disappears --------------------------------------------------------------------


def test_face_hidden_frames_hold_the_last_box(run_default):
    held = run_default.face_held.tolist()
    assert held == [i in (5, 6, 7) for i in range(12)]
    assert all(run_default.face_bboxes[i] == run_default.face_bboxes[4] for i in (5, 6, 7))
    assert not torch.isnan(run_default.face_images).any()
    assert not any(math.isnan(v) for b in run_default.face_bboxes for v in b)


def test_leading_faceless_frames_take_the_first_good_box(models):
    from wanprep_torch.testkit import make_clip

    c = make_clip(9, motion="slow", face_hidden=range(0, 6), seed=2)
    res = make(models, chunk_size=2)(c.frames)  # the first face arrives three chunks later
    assert res.face_held.tolist() == [True] * 6 + [False] * 3
    assert all(res.face_bboxes[i] == res.face_bboxes[6] for i in range(6))
    x1, y1, x2, y2 = res.face_bboxes[6]
    sub = c.frames[0, y1:y2, x1:x2].permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(sub, size=(512, 512), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    assert (res.face_images[0] - ref).abs().max() < 2.5 / 255


def test_never_visible_face_uses_the_fallback_square(models):
    from wanprep_torch.testkit import make_clip

    c = make_clip(4, motion="hold", face_hidden=range(4), seed=3)
    res = make(models, face_padding=0)(c.frames)
    fb = wan.fallback_face_box(832, 480)
    assert res.face_bboxes == [fb] * 4 and res.face_held.all()
    side = int(0.3 * 480)
    assert fb == ((832 - side) // 2, 48, (832 - side) // 2 + side, 48 + side)


def test_face_padding_grows_boxes(models, clip, run_default):
    res = make(models, face_padding=10)(clip.frames[:3])
    for a, b in zip(res.face_bboxes, run_default.face_bboxes[:3]):
        assert a == (max(b[0] - 10, 0), max(b[1] - 10, 0), min(b[2] + 10, 832), min(b[3] + 10, 480))


def test_empty_frame_falls_back_to_full_frame(models):
    frames = torch.zeros(2, 64, 96, 3)
    res = make(models)(frames)
    assert res.bboxes.tolist() == [[0.0, 0.0, 96.0, 64.0, -1.0]] * 2
    assert res.face_held.all()
    assert not torch.isnan(res.keypoints).any()


def test_smallest_frames_give_finite_outputs(models, clip):
    # The person shrunk to 16x16 px: heatmap peaks so faint that DARK's blur underflows (found
    # by a randomised run: NaN keypoints).
    x = F.interpolate(clip.frames[:4].permute(0, 3, 1, 2), size=(16, 16), mode="bilinear", align_corners=False)
    res = make(models)(x.clamp(0, 1))
    assert bool(torch.isfinite(res.keypoints).all())
    assert all(0 <= x1 < x2 <= 16 and 0 <= y1 < y2 <= 16 for x1, y1, x2, y2 in res.face_bboxes)
    assert bool(torch.isfinite(res.face_images).all())


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames,exc,words",
    [
        (torch.zeros(0, 64, 64, 3), ValueError, "empty"),
        (torch.zeros(64, 64), ValueError, "2-D"),
        (torch.zeros(1, 2, 64, 64, 3), ValueError, "5-D"),
        (torch.zeros(2, 64, 64, 4), ValueError, r"3 \(RGB\) channels"),
        (torch.zeros(2, 64, 64, 3, dtype=torch.int32), TypeError, "dtype"),
        (torch.zeros(2, 8, 64, 3), ValueError, "16"),
        (np.zeros((2, 64, 64, 3), np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_named(models, frames, exc, words):
    with pytest.raises(exc, match=words):
        make(models)(frames)


def test_nan_frame_is_named_and_earlier_work_kept(models, clip):
    x = clip.frames[:6].clone()
    x[5, 10, 10, 0] = float("nan")
    with pytest.raises(ValueError, match="frame 5 contains NaN") as info:
        make(models, chunk_size=2)(x)
    part = info.value.partial_result
    assert len(part) == 4  # the two chunks before the bad one
    x[5, 10, 10, 0] = float("inf")
    with pytest.raises(ValueError, match="frame 5 contains inf"):
        make(models)(x)


def test_bad_chunk_in_stream_keeps_finished_frames(models, clip):
    chunks = [clip.frames[:3], clip.frames[3:6], torch.zeros(2, 40, 40, 3)]
    with pytest.raises(ValueError, match="chunk 2") as info:
        make(models)(iter(chunks))
    assert len(info.value.partial_result) == 6


def test_model_file_errors(models, tmp_path):
    with pytest.raises(ModelError, match="not found.*missing.onnx"):
        make({"det": tmp_path / "missing.onnx", "pose": models["pose"]})
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        make(models, det="not_onnx")
    with pytest.raises(ModelError, match="not a person detector.*looks like a pose model"):
        make(models, det="pose")
    with pytest.raises(ModelError, match="not a wholebody pose model.*looks like a detector"):
        make(models, pose="det")


def test_bad_options(models):
    with pytest.raises(ValueError, match="batch_size"):
        make(models, batch_size=0)
    with pytest.raises(ValueError, match="face_dtype"):
        make(models, face_dtype=torch.int32)


# -- runtime behaviour ----------------------------------------------------------------------


def test_cpu_fallback_warns_once_and_runs(models, clip):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m = OrtModel(models["pose"], device="cuda:0", role="pose")
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "CUDA provider is not available" in msgs[0]
    assert m.providers == ["CPUExecutionProvider"] and not m.on_cuda
    out = m.run(torch.zeros(2, 3, 256, 192))
    assert out.shape == (2, 133, 64, 48)


def test_cpu_fallback_is_one_warning_for_both_models(models):
    from wanprep_torch.pipeline import open_models

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        det, pose = open_models(models["det"], models["pose"], torch.device("cuda", 0))
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "the detector and pose models run on the CPU provider" in msgs[0]
    assert det.providers == pose.providers == ["CPUExecutionProvider"]


def test_io_binding_writes_into_torch_memory(models):
    """Outputs are torch tensors ORT wrote into (not arrays copied out of ORT)."""
    m = OrtModel(models["pose"], role="pose")
    x = torch.zeros(3, 3, 256, 192)
    y = m.run(x, batch_size=2)
    assert isinstance(y, torch.Tensor) and y.shape == (3, 133, 64, 48)
    # A float64 input is converted to the model's dtype before binding.
    y2 = m.run(x.double(), batch_size=3)
    assert torch.equal(y, y2)


def test_out_of_memory_halves_batch_and_keeps_results(models, clip, run_default):
    pre = make(models, batch_size=8)
    real_run = pre.estimator.model.run
    seen = []

    def flaky(x, **kw):
        seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise RuntimeError("CUDA error: out of memory (simulated)")
        return real_run(x, **kw)

    pre.estimator.model.run = flaky
    with pytest.warns(RuntimeWarning, match="out of memory"):
        res = pre(clip.frames)
    assert torch.allclose(res.keypoints, run_default.keypoints, atol=1e-4)
    assert pre.batch_size == 2 and seen[:3] == [8, 4, 2]


def test_progress_callback_sees_every_frame(models, clip):
    calls = []
    pre = make(models, progress_callback=lambda stage, done, total: calls.append((stage, done, total)))
    pre(clip.frames[:5])
    assert calls and calls[-1] == ("frames", 5, 5)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


def test_fp16_models_match_fp32(models, clip, run_default):
    res = make(models, "det_fp16", "pose_fp16")(clip.frames)
    err = (res.keypoints[..., :2] - run_default.keypoints[..., :2]).norm(dim=-1)[clip.visible]
    assert err.max() < 1.0, f"fp16 vs fp32 max {err.max():.3f} px"


def test_model_inputs_reproduce_the_pipeline(models, clip, run_default):
    from wanprep_torch.detect import detect_boxes
    from wanprep_torch.pose import box_to_center_window, decode_pose

    pre = make(models)
    boxes = run_default.bboxes[:3]
    det_in, pose_in = pre.model_inputs(clip.frames[:3], boxes)
    again, _ = detect_boxes(pre.detector.model.run(det_in), (480, 832), pre.detector.input_hw)
    assert torch.allclose(again, boxes, atol=1e-4)
    center, window = box_to_center_window(boxes)
    kps = decode_pose(pre.estimator.model.run(pose_in), center, window)
    assert torch.allclose(kps, run_default.keypoints[:3], atol=1e-4)
