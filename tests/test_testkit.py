"""The test kit on its own: synthetic scenes + analytic ONNX models, checked with onnxruntime,
numpy and torch only (independent of the pipeline), so pipeline tests can trust them."""

from __future__ import annotations

import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from wanprep_torch.testkit import (
    KEYPOINT_CODES,
    SyntheticClip,
    build_test_models,
    default_cache_dir,
    make_clip,
    render_frame,
)
from wanprep_torch.testkit import scene
from wanprep_torch.testkit.models import FP16_KEYS, STAMP_NAME

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
FACE_AND_HEAD = np.r_[0:5, 23:91]


# --------------------------------------------------------------------------- helpers


def _session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def det_input(frames: torch.Tensor) -> np.ndarray:
    """(T,H,W,3) -> (T,3,640,640) the way the pipeline feeds the detector (no letterbox)."""
    x = frames.permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(640, 640), mode="bilinear", align_corners=False)
    return x.contiguous().numpy()


def bilinear_crop(frame: np.ndarray, x0: float, y0: float, s: float, oh=256, ow=192) -> np.ndarray:
    """Independent numpy bilinear sampler: crop (u, v) = frame(x0 + u*s, y0 + v*s), 0 outside."""
    H, W, _ = frame.shape
    X, Y = np.meshgrid(x0 + np.arange(ow) * s, y0 + np.arange(oh) * s)
    xf, yf = np.floor(X).astype(int), np.floor(Y).astype(int)
    ax, ay = (X - xf)[..., None], (Y - yf)[..., None]
    out = np.zeros((oh, ow, 3), np.float32)
    for dy, wy in ((0, 1 - ay), (1, ay)):
        for dx, wx in ((0, 1 - ax), (1, ax)):
            xi, yi = xf + dx, yf + dy
            ok = ((xi >= 0) & (xi < W) & (yi >= 0) & (yi < H))[..., None]
            out += ok * wy * wx * frame[np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)]
    return out


def crop_window(kps: np.ndarray, sigma: float):
    """Pipeline-style window: extent padded ~ like the detector, 1.25x, 3:4, centred."""
    lo, hi = kps.min(0) - 2.5 * sigma, kps.max(0) + 2.5 * sigma
    wh = 1.25 * max((hi[0] - lo[0]) * 256 / 192, hi[1] - lo[1])
    s = wh / 256
    c = (lo + hi) / 2
    return c[0] - 96 * s, c[1] - 128 * s, s


def pose_input(clip: SyntheticClip, idx) -> tuple[np.ndarray, list]:
    xs, wins = [], []
    for i in idx:
        kp = clip.keypoints[i].numpy()
        x0, y0, s = crop_window(kp, float(clip.sigma[i]))
        crop = bilinear_crop(clip.frames[i].numpy(), x0, y0, s)
        xs.append(((crop - MEAN) / STD).transpose(2, 0, 1))
        wins.append((x0, y0, s))
    return np.ascontiguousarray(np.stack(xs), dtype=np.float32), wins


def decode(hm: np.ndarray, win) -> tuple[np.ndarray, np.ndarray]:
    """Argmax + log-parabola refinement per axis (exact for a Gaussian peak) -> frame px."""
    K, h, w = hm.shape
    flat = hm.reshape(K, -1).argmax(1)
    vy, vx = flat // w, flat % w
    score = hm[np.arange(K), vy, vx]
    lg = np.log(np.maximum(hm, 1e-10))
    off = np.zeros((K, 2))
    for k in range(K):
        for a, (y, x) in enumerate(((0, 1), (1, 0))):  # a=0: x offset, a=1: y offset
            cy, cx = vy[k], vx[k]
            if 0 < (cx if a == 0 else cy) < (w if a == 0 else h) - 1:
                m = lg[k, cy - y, cx - x]
                p = lg[k, cy + y, cx + x]
                c = lg[k, cy, cx]
                den = m - 2 * c + p
                if den < 0:
                    off[k, a] = np.clip(0.5 * (m - p) / den, -0.5, 0.5)
    x0, y0, s = win
    xy = np.stack([x0 + 4 * (vx + off[:, 0]) * s, y0 + 4 * (vy + off[:, 1]) * s], 1)
    return xy, score


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_test_models(tmp_path_factory.mktemp("testkit_models"))


@pytest.fixture(scope="session")
def clip():
    return make_clip(8, motion="slow", face_hidden=(5,), seed=1)


@pytest.fixture(scope="session")
def det_sess(models):
    return _session(models["det"])


@pytest.fixture(scope="session")
def pose_sess(models):
    return _session(models["pose"])


@pytest.fixture(scope="session")
def pose_out(clip, pose_sess):
    x, wins = pose_input(clip, range(len(clip)))
    return x, wins, pose_sess.run(None, {"input": x})[0]


# --------------------------------------------------------------------------- scene


def test_template_is_separable_and_human_shaped():
    assert KEYPOINT_CODES.shape == (133, 2)
    assert len({tuple(c) for c in KEYPOINT_CODES.round(4)}) == 133
    # Every pair >= 6 blob sigmas apart at the rendered scale.
    assert scene.template_min_distance() >= 6 * scene.SIGMA_PER_HEIGHT
    t = scene.TEMPLATE
    assert t[:, 1].max() - t[:, 1].min() == pytest.approx(1.0, abs=1e-6)
    # Width fits the pose crop's 3:4 aspect, so the crop scale is set by the height.
    assert t[:, 0].max() - t[:, 0].min() < 0.75
    nose, face = t[0], t[23:91]
    assert (face.min(0) < nose).all() and (nose < face.max(0)).all()
    assert face[:, 1].max() < t[5:7, 1].min()  # face above the shoulders
    assert t[15:23, 1].min() > t[11:13, 1].max()  # ankles/feet below the hips
    assert t[5, 0] > 0 > t[6, 0]  # person faces the camera: its left at image right
    for hand, wrist in ((slice(91, 112), 9), (slice(112, 133), 10)):
        assert np.linalg.norm(t[hand] - t[wrist], axis=1).max() < 0.25  # (big) hands at the wrists


def test_render_encodes_codes_and_visibility():
    kp = scene.TEMPLATE * 360 + np.array([416.3, 240.7], np.float32)
    vis = np.ones(133, bool)
    vis[FACE_AND_HEAD] = False
    img = render_frame(kp, vis, 480, 832, 2.16).numpy()
    assert img.shape == (480, 832, 3) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1
    ij = np.round(kp).astype(int)
    px = img[ij[:, 1], ij[:, 0]]
    shown = vis.nonzero()[0]
    assert (px[shown, 2] > 0.85).all()  # blob peak within 0.5 px of a pixel centre
    ratio = px[shown, :2] / px[shown, 2:3]
    np.testing.assert_allclose(ratio, KEYPOINT_CODES[shown], atol=0.01)
    assert px[FACE_AND_HEAD].max() < 1e-3  # hidden points are not drawn
    assert img[:5].max() == 0 and img[:, :5].max() == 0  # black background


def test_render_is_fast():
    kp = scene.TEMPLATE * 360 + np.array([416.0, 240.0], np.float32)
    vis = np.ones(133, bool)
    render_frame(kp, vis, 480, 832, 2.16)
    t = time.perf_counter()
    for _ in range(5):
        render_frame(kp, vis, 480, 832, 2.16)
    ms = (time.perf_counter() - t) / 5 * 1e3
    print(f"render 832x480: {ms:.1f} ms/frame")
    assert ms < 100  # ~3 ms on one idle core; generous for a loaded CI box


@pytest.mark.parametrize("motion", scene.MOTIONS)
def test_motion_patterns(motion):
    T, H, W = 24, 480, 832
    c = make_clip(T, H, W, motion=motion, face_hidden=(2, 3), seed=3)
    assert c.frames.shape == (T, H, W, 3) and c.frames.dtype == torch.float32
    assert c.keypoints.shape == (T, 133, 2) and c.visible.shape == (T, 133)
    assert c.sigma.shape == (T,)
    margin = 3 * c.sigma[:, None]
    if motion == "enter":
        # Starts beyond the left edge, ends beyond the right; points outside are not visible.
        assert (c.boxes[0, 2] < 0) and (c.boxes[-1, 0] > W)
        inside = (c.keypoints[..., 0] >= 0) & (c.keypoints[..., 0] < W)
        assert torch.equal(c.visible[[0, 1, 4]], inside[[0, 1, 4]])
        assert c.visible[T // 2].all() or c.visible[T // 2, 5:].all()
    else:
        # Whole person (with its blobs) inside the frame.
        assert (c.boxes[:, :2] > margin).all() and (c.boxes[:, 2] < W - margin[:, 0]).all()
        assert (c.boxes[:, 3] < H - margin[:, 0]).all()
        assert not c.visible[2, FACE_AND_HEAD].any() and c.visible[2, 5:23].all()
        assert c.visible[[0, 1, 4]].all()
    step = (c.keypoints[1:] - c.keypoints[:-1]).norm(dim=-1).max(dim=1).values  # (T-1,)
    h = c.height
    if motion == "hold":
        assert step.max() == 0
    elif motion == "slow":
        assert 0 < step.min() and step.max() < 1.5
        assert (h.max() / h.min() - 1) > 0.001
    elif motion == "holdslow":
        assert (step == 0).sum() >= 4 and (step > 0).sum() >= 4 and step.max() < 1.5
    elif motion == "fast":
        centre_step = (c.boxes[1:] - c.boxes[:-1])[:, [0, 2]].mean(1).abs()
        # 15-25 px/frame, except frames that bounce off the frame edge.
        assert centre_step.max() <= 25.5 and (centre_step >= 15).float().mean() > 0.7
    elif motion == "pan":
        centre_step = (c.boxes[1:] - c.boxes[:-1])[:, [0, 2]].mean(1).abs()
        assert torch.allclose(centre_step, torch.full_like(centre_step, 1.5), atol=1e-3)
    elif motion == "accel":
        centre_step = (c.boxes[1:] - c.boxes[:-1])[:, [0, 2]].mean(1).abs()
        assert centre_step[0] < 0.3 and centre_step[-1] > 5.0  # from rest to several px/frame
    elif motion == "enter":
        assert step.min() > 10  # a steady walk across the frame
    elif motion == "cut":
        assert step[T // 2 - 1] > 50
        assert step[: T // 2 - 1].max() == 0 and step[T // 2:].max() == 0
        assert h[-1] / h[0] < 0.8
    assert (h - 0.75 * H).abs().max() < 0.3 * H


def test_person_height_and_frame_size():
    c = make_clip(2, H=720, W=1280, motion="hold", person_height=200)
    ext = c.boxes[0]
    assert float(ext[3] - ext[1]) == pytest.approx(200, abs=0.01)
    assert float(c.sigma[0]) == pytest.approx(1.2, abs=1e-4)


# --------------------------------------------------------------------------- detector


def _gt_box_640(clip: SyntheticClip, i: int) -> np.ndarray:
    H, W = clip.frames.shape[1:3]
    kp = clip.keypoints[i].numpy()[clip.visible[i].numpy()]  # drawn points only
    # pixel-index coords -> 640 input pixel-index coords (align_corners=False), then edges.
    sx, sy = 640 / W, 640 / H
    lo = (kp.min(0) + 0.5) * [sx, sy] - 0.5
    hi = (kp.max(0) + 0.5) * [sx, sy] - 0.5
    return np.r_[lo, hi]


def test_detector_boxes_the_person(clip, det_sess):
    x = det_input(clip.frames)
    t = time.perf_counter()
    out = det_sess.run(None, {"images": x})[0]
    ms = (time.perf_counter() - t) / len(clip) * 1e3
    print(f"detector: {ms:.1f} ms/frame (batch {len(clip)})")
    assert out.shape == (len(clip), 300, 6) and out.dtype == np.float32
    assert (out[:, 1:] == 0).all()
    for i in range(len(clip)):
        x1, y1, x2, y2, score, cls = out[i, 0]
        gt = _gt_box_640(clip, i)
        assert score == pytest.approx(0.9, abs=1e-6) and cls == 0
        # Covers every keypoint, and hugs the extent (blob radius + pad, a few px).
        assert x1 < gt[0] and y1 < gt[1] and x2 > gt[2] and y2 > gt[3]
        assert np.abs(np.r_[x1, y1, x2, y2] - gt).max() < 12, (out[i, 0], gt)


def test_detector_empty_frame(models, det_sess):
    x = np.zeros((2, 3, 640, 640), np.float32)
    out = det_sess.run(None, {"images": x})[0]
    assert (out == 0).all()
    v8 = _session(models["det_v8"]).run(None, {"images": x})[0]
    assert (v8 == 0).all()


def test_detector_variants_agree(clip, models, det_sess):
    x = det_input(clip.frames[:3])
    ref = det_sess.run(None, {"images": x})[0]
    v8 = _session(models["det_v8"]).run(None, {"images": x})[0]
    assert v8.shape == (3, 84, 16)
    b = ref[:, 0, :4]
    np.testing.assert_allclose(v8[:, 0, 0], (b[:, 0] + b[:, 2]) / 2, atol=1e-4)
    np.testing.assert_allclose(v8[:, 1, 0], (b[:, 1] + b[:, 3]) / 2, atol=1e-4)
    np.testing.assert_allclose(v8[:, 2, 0], b[:, 2] - b[:, 0], atol=1e-4)
    np.testing.assert_allclose(v8[:, 3, 0], b[:, 3] - b[:, 1], atol=1e-4)
    np.testing.assert_allclose(v8[:, 4, 0], ref[:, 0, 4], atol=1e-6)
    v8[:, :5, 0] = 0
    assert (v8 == 0).all()
    b1 = _session(models["det_b1"])
    assert b1.get_inputs()[0].shape == [1, 3, 640, 640]
    np.testing.assert_array_equal(b1.run(None, {"images": x[:1]})[0], ref[:1])
    assert "det_fp16" in models, "no fp16 kit models: the [test] extra installs onnxconverter-common"
    s16 = _session(models["det_fp16"])
    assert s16.get_inputs()[0].type == "tensor(float16)"
    out16 = s16.run(None, {"images": x.astype(np.float16)})[0]
    assert out16.dtype == np.float16 and out16.shape == ref.shape
    np.testing.assert_allclose(out16.astype(np.float32), ref, atol=1.0)  # coords within 1 px
    keep = _session(models["det_fp16_keepio"]).run(None, {"images": x})[0]
    assert keep.dtype == np.float32
    np.testing.assert_allclose(keep, ref, atol=1.0)


# --------------------------------------------------------------------------- pose


def test_pose_signature(models):
    s = _session(models["pose"])
    i, o = s.get_inputs()[0], s.get_outputs()[0]
    assert (i.name, i.shape, i.type) == ("input", ["batch", 3, 256, 192], "tensor(float)")
    assert (o.name, o.shape) == ("heatmaps", ["batch", 133, 64, 48])
    assert _session(models["pose_b1"]).get_inputs()[0].shape == [1, 3, 256, 192]
    for k in ("det", "det_v8"):
        i = _session(models[k]).get_inputs()[0]
        assert (i.name, i.shape) == ("images", ["batch", 3, 640, 640])
    assert max(p.stat().st_size for p in models.values()) < 512_000  # no big weights


def test_pose_finds_keypoints(clip, pose_out):
    x, wins, hm = pose_out
    assert hm.shape == (len(clip), 133, 64, 48) and hm.dtype == np.float32
    errs, vis_scores, hidden_scores = [], [], []
    for i in range(len(clip)):
        xy, score = decode(hm[i], wins[i])
        vis = clip.visible[i].numpy()
        err = np.linalg.norm(xy - clip.keypoints[i].numpy(), axis=1)
        errs.append(err[vis])
        vis_scores.append(score[vis])
        hidden_scores.append(score[~vis])
    errs, vis_scores = np.concatenate(errs), np.concatenate(vis_scores)
    hidden_scores = np.concatenate(hidden_scores)
    print(f"pose decode error px: mean {errs.mean():.3f} p95 {np.percentile(errs, 95):.3f} "
          f"max {errs.max():.3f}; visible score mean {vis_scores.mean():.3f} "
          f"[{vis_scores.min():.3f}, {vis_scores.max():.3f}]; hidden max {hidden_scores.max():.4f}")
    assert errs.mean() < 1.5 and errs.max() < 4
    assert 0.8 < vis_scores.mean() < 1.0 and vis_scores.min() > 0.7
    assert len(hidden_scores) == 73 and hidden_scores.max() < 0.05


@pytest.mark.parametrize("height", [120, 700])
def test_pose_scale_invariant(height, pose_sess):
    # Blob sigma follows the person's height, so scores and relative accuracy hold at any scale.
    H = int(height / 0.7)
    c = make_clip(1, H=H, W=int(H * 1.5), motion="hold", person_height=height, seed=4)
    x, wins = pose_input(c, [0])
    xy, score = decode(pose_sess.run(None, {"input": x})[0][0], wins[0])
    err = np.linalg.norm(xy - c.keypoints[0].numpy(), axis=1)
    print(f"height {height}: score mean {score.mean():.3f}, error mean {err.mean():.3f} px")
    assert 0.8 < score.mean() < 1.0
    assert err.mean() / height < 1.5 / 360


def test_pose_variants_agree(models, pose_out):
    x, _, ref = pose_out
    b1 = _session(models["pose_b1"]).run(None, {"input": x[:1]})[0]
    np.testing.assert_allclose(b1, ref[:1], atol=1e-5)
    # Batch composition does not matter.
    two = _session(models["pose"]).run(None, {"input": x[[3, 0]]})[0]
    np.testing.assert_allclose(two, ref[[3, 0]], atol=1e-5)
    assert "pose_fp16" in models, "no fp16 kit models: the [test] extra installs onnxconverter-common"
    s16 = _session(models["pose_fp16"])
    assert s16.get_inputs()[0].type == "tensor(float16)"
    assert s16.get_outputs()[0].type == "tensor(float16)"
    out16 = s16.run(None, {"input": x[:2].astype(np.float16)})[0]
    assert out16.dtype == np.float16
    np.testing.assert_allclose(out16.astype(np.float32), ref[:2], atol=0.02)
    keep = _session(models["pose_fp16_keepio"]).run(None, {"input": x[:2]})[0]
    assert keep.dtype == np.float32
    np.testing.assert_allclose(keep, ref[:2], atol=0.02)


def test_pose_speed(models, pose_out):
    x = pose_out[0]
    s = _session(models["pose"])
    s.run(None, {"input": x[:1]})
    res = {}
    for n in (1, 8):
        xb = np.ascontiguousarray(np.resize(x, (n,) + x.shape[1:]))
        best = float("inf")
        for _ in range(3):  # best of 3: one run on a shared machine says little
            t = time.perf_counter()
            out = s.run(None, {"input": xb})[0]
            best = min(best, time.perf_counter() - t)
        assert out.shape == (n, 133, 64, 48)
        res[n] = best / n * 1e3
    print(f"pose: {res[1]:.1f} ms/frame at batch 1, {res[8]:.1f} ms/frame at batch 8")
    # The analytic pose model must stay cheap: the suite runs it on hundreds of frames, and a
    # ViTPose-B stand-in takes ~300 ms a frame here. Measured 3-40 ms a frame on the 2-core CPU
    # (40 with other work running); 150 ms leaves room for a busy machine.
    assert res[1] < 150 and res[8] < 150, res


# --------------------------------------------------------------------------- files + cache


def test_not_onnx_and_cache(models, tmp_path_factory):
    bad = models["not_onnx"]
    assert bad.suffix == ".onnx"
    with pytest.raises(Exception):
        onnx.load(str(bad))
    with pytest.raises(Exception):
        _session(bad)
    for k, p in models.items():
        if k != "not_onnx":
            onnx.checker.check_model(onnx.load(str(p)))
    # Second call reuses the files (stamp matches) instead of rebuilding.
    mt = {k: p.stat().st_mtime_ns for k, p in models.items()}
    again = build_test_models(next(iter(models.values())).parent)
    assert again == models
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == mt
    assert (bad.parent / STAMP_NAME).is_file()


def test_keys_and_missing_fp16_converter(models, tmp_path, monkeypatch):
    required = {"det", "det_b1", "det_v8", "det_fp16", "pose", "pose_b1", "pose_fp16",
                "pose_fp16_keepio", "not_onnx"}
    assert required <= set(models)
    # Without onnxconverter-common the fp16 variants are skipped with a warning, not an error.
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.warns(UserWarning, match="onnxconverter-common"):
        paths = build_test_models(tmp_path)
    assert set(paths) == set(models) - set(FP16_KEYS)
    assert all(p.is_file() for p in paths.values())


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WANPREP_TEST_MODELS", str(tmp_path / "m"))
    assert default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("WANPREP_TEST_MODELS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "wanprep_torch" / "test_models"
