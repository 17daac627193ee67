"""The CUDA path: frames in torch CUDA memory, ONNX Runtime's CUDA provider bound to it.

Every test here is marked ``gpu`` and skipped unless torch sees a CUDA device and an ONNX
Runtime session really runs on CUDAExecutionProvider (``get_available_providers()`` lists CUDA
even where its libraries are missing, so only a created session counts). With
WANPREP_REQUIRE_GPU=1 (scripts/gpu_check.sh sets it) a missing CUDA provider fails instead of
skipping, so a GPU run cannot pass by skipping everything; so do the tests' own skip paths (a
profiler that cannot see the copies, a Preprocessor without a gate).

    python -m pytest -q -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import inspect
import json
import os
import warnings

import numpy as np
import pytest
import torch

from wanprep_torch import Preprocessor
from wanprep_torch.runtime import OrtModel

pytestmark = pytest.mark.gpu

REQUIRE_GPU = os.environ.get("WANPREP_REQUIRE_GPU") == "1"

KIB = 1024
# Hot-path host copies are boxes, keypoints and detector rows (7.2 KB a frame); a pose crop is
# 576 KiB, a heatmap stack 1.6 MB and an 832x480 frame 4.8 MB. Runs use batch 4, so the largest
# legitimate copy is 4 frames of detector rows (28.1 KiB).
MAX_HOST_COPY = 64 * KIB
MAX_HOST_BYTES_PER_FRAME = 32 * KIB
HOT_BATCH = 4
HEATMAP_BYTES = 133 * 64 * 48 * 4
HAS_GATE = "gate" in inspect.signature(Preprocessor).parameters
# ImageNet normalisation written out here, not taken from the library under test.
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])


def _unavailable(reason: str):
    if REQUIRE_GPU:
        pytest.fail(f"WANPREP_REQUIRE_GPU=1 but {reason}")
    pytest.skip(reason)


def ort_cuda_problem(model_path) -> str | None:
    """Why ONNX Runtime cannot run ``model_path`` on CUDA here, or None when it can."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime is not importable: {exc}"
    torch.cuda.init()  # load torch's CUDA libraries first: ORT's CUDA provider links to them
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - reported below if the session then falls back
            warnings.warn(f"onnxruntime.preload_dlls() failed: {exc}", RuntimeWarning)
    where = f"onnxruntime {ort.__version__} from {os.path.dirname(ort.__file__)}"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"{where} has no CUDAExecutionProvider (the CPU build; install onnxruntime-gpu)"
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(model_path), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return f"{where}: a CUDA session failed to start: {exc}"
    got = sess.get_providers()
    if got[0] != "CUDAExecutionProvider":
        return f"{where} lists CUDA but a session runs on {got} (CUDA/cuDNN libraries not found?)"
    return None


@pytest.fixture(scope="module", autouse=True)
def cuda_ort(request):
    """Skips the module (before building anything) unless ORT really runs on CUDA."""
    if not torch.cuda.is_available():
        _unavailable("torch sees no CUDA device")
    models = request.getfixturevalue("models")
    problem = ort_cuda_problem(models["det"])
    if problem:
        _unavailable(problem)


@pytest.fixture(scope="module")
def dev():
    return torch.device("cuda", torch.cuda.current_device())


def make(models, det="det", pose="pose", **kw):
    """A Preprocessor on test-kit keys (or paths), every frame through both models (gate "off")
    unless gate="default" asks for the Preprocessor's own default, so runs compare frame for frame."""
    kw.setdefault("progress", False)
    kw.setdefault("gate", "off")
    if kw["gate"] == "default" or not HAS_GATE:
        del kw["gate"]
    return Preprocessor(models.get(det, det), models.get(pose, pose), **kw)


@pytest.fixture(scope="module")
def cuda_frames(clip, dev):
    return clip.frames.to(dev)


@pytest.fixture(scope="module")
def cuda_run(models, dev, cuda_frames):
    """Gate off, batch "auto" (16 on CUDA: the 12 frames in one batch)."""
    return make(models, device=dev)(cuda_frames)


@pytest.fixture(scope="module")
def cpu_float_run(models, clip):
    """The CPU run, resizing float frames for the detector as the CUDA path does.

    On the CPU the pipeline resizes uint8 (faster there); that rounding can move a detector box
    edge by a pixel, which is a design choice, not a CUDA difference, so the exact comparison
    takes the float path on both devices.
    """
    pre = make(models)
    pre._resize_source = lambda fb: fb.float01()  # instance override, this run only
    return pre(clip.frames)


def _vis(clip, dev):
    return clip.visible.to(dev)


def assert_same_keypoints(res, ref, atol_px: float, what: str = "") -> None:
    """Positions where the reference is confident (score >= 0.3), scores everywhere: a point
    the model does not find sits on a near-flat heatmap whose argmax moves with rounding noise
    (a 1e-6 perturbation of the frames moves such points by pixels)."""
    a, b = res.keypoints.float().cpu(), ref.keypoints.float().cpu()
    conf = b[..., 2] >= 0.3
    assert conf.float().mean() > 0.5, "reference finds too few points to compare"
    xy = (a[..., :2] - b[..., :2]).abs().amax(-1)[conf]
    assert xy.max() <= atol_px, f"{what} keypoints differ by up to {xy.max():.4f} px (allowed {atol_px})"
    torch.testing.assert_close(a[..., 2], b[..., 2], atol=5e-3, rtol=0)  # TF32 matmuls: ~1e-3 relative


def _max_box_diff(a, b) -> int:
    assert len(a) == len(b)
    return max(max(abs(x - y) for x, y in zip(p, q)) for p, q in zip(a, b))


# -- (a) same answers as the CPU, on CUDA providers --------------------------------------------


def test_cuda_run_matches_cpu(cuda_run, cpu_float_run, run_default, clip, dev):
    res, ref = cuda_run, cpu_float_run
    assert res.providers == {"detector": "CUDAExecutionProvider", "pose": "CUDAExecutionProvider"}
    for name in ("keypoints", "bboxes", "face_images", "face_held", "other_persons"):
        assert getattr(res, name).device == dev, f"{name} left the GPU"
    torch.testing.assert_close(res.bboxes.cpu(), ref.bboxes, atol=0.05, rtol=0)
    assert_same_keypoints(res, ref, 0.05, "CUDA vs CPU")
    # Integer boxes/points truncate float coordinates: allow a 1 px flip at an integer edge.
    assert _max_box_diff(res.face_bboxes, ref.face_bboxes) <= 1
    assert res.face_held.cpu().tolist() == ref.face_held.tolist()
    a, b = json.loads(res.key_frame_points), json.loads(ref.key_frame_points)
    assert len(a) == len(b) and all(abs(p["x"] - q["x"]) <= 1 and abs(p["y"] - q["y"]) <= 1 for p, q in zip(a, b))
    # The default CPU run resizes uint8 for the detector: boxes within a pixel or two.
    assert (res.bboxes.cpu()[:, :4] - run_default.bboxes[:, :4]).abs().max() < 3.0
    json.dumps(res.to_json())


def test_models_match_cpu_on_same_inputs(models, clip, dev):
    """Model outputs alone, CUDA provider vs CPU provider, on identical inputs (real crops)."""
    from wanprep_torch.pose import box_to_center_window, crop_windows

    frames = clip.frames[:3].permute(0, 3, 1, 2)
    det_in = torch.nn.functional.interpolate(frames, size=(640, 640), mode="bilinear", align_corners=False)
    center, window = box_to_center_window(clip.boxes[:3], (256, 192))
    crops = crop_windows(frames, center, window, (256, 192))
    pose_in = (crops - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)
    for key, x in (("det", det_in.contiguous()), ("pose", pose_in.contiguous())):
        cpu = OrtModel(models[key], "cpu").run(x)
        gpu_model = OrtModel(models[key], dev)
        assert gpu_model.on_cuda and gpu_model.providers[0] == "CUDAExecutionProvider"
        out = gpu_model.run(x.to(dev))
        assert out.device == dev and out.dtype == cpu.dtype and out.shape == cpu.shape
        # ORT's CUDA MatMul may use TF32 (relative error ~3e-4), so compare by relative norm.
        rel = float((out.cpu() - cpu).norm() / cpu.norm().clamp_min(1e-12))
        assert rel < 2e-3, f"{key}: CUDA vs CPU relative error {rel:.2e}"


# -- (b) no frame-sized device-to-host copies on the hot path ------------------------------------


def _trace_dtoh(tmp_path, name, fn) -> list[int]:
    """Bytes of each device-to-host memcpy CUPTI saw while ``fn`` ran (the whole process, ONNX
    Runtime's copies included); -1 where the trace gives no byte count."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    path = tmp_path / f"{name}.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text()).get("traceEvents", [])
    sizes = []
    for e in events:
        if "memcpy" in str(e.get("cat", "")).lower() and "DtoH" in str(e.get("name", "")):
            b = (e.get("args") or {}).get("bytes")
            sizes.append(int(b) if b is not None else -1)
    return sizes


def _check_host_copies(sizes: list[int], frames: int, what: str) -> None:
    big = sorted(sizes, reverse=True)[:8]
    assert max(sizes, default=0) <= MAX_HOST_COPY, f"{what}: device-to-host copies too large (largest, bytes): {big}"
    per_frame = sum(sizes) / frames
    assert per_frame <= MAX_HOST_BYTES_PER_FRAME, f"{what}: {per_frame:.0f} bytes/frame to the host (largest: {big})"


@pytest.mark.parametrize("gate", ["off", "default"])
def test_no_frame_sized_host_copies_profiler(models, dev, cuda_frames, tmp_path, gate):
    pre = make(models, device=dev, batch_size=HOT_BATCH, gate=gate)
    pre(cuda_frames[:HOT_BATCH])  # warm-up: ORT's first runs allocate and pick kernels

    # Canaries of known sizes: one torch copy and one ONNX Runtime output copy (numpy in/out).
    canary = 750_001  # float32 elements: 3,000,004 bytes, a size nothing else has

    def canaries():
        torch.empty(canary, device=dev).cpu()
        pre.estimator.model.session.run(None, {pre.estimator.model.input.name: np.zeros((1, 3, 256, 192), np.float32)})

    seen = _trace_dtoh(tmp_path, "canary", canaries)
    if -1 in seen and not any(s > 0 for s in seen):
        _unavailable(f"the profiler trace has memcpy events but no byte counts ({len(seen)} events)")
    if canary * 4 not in seen:
        _unavailable(f"the profiler does not see CUDA memcpys here (DtoH sizes seen: {seen[:8]}); "
                    "test_no_frame_sized_host_copies_torch still checks torch's side")
    if not any(s >= HEATMAP_BYTES for s in seen if s != canary * 4):
        _unavailable(f"the profiler sees torch's copies but not ONNX Runtime's (DtoH sizes: {seen[:8]})")

    sizes = _trace_dtoh(tmp_path, "pipeline", lambda: pre(cuda_frames))
    assert all(s >= 0 for s in sizes)
    _check_host_copies(sizes, cuda_frames.shape[0], "CUPTI")


@pytest.mark.parametrize("gate", ["off", "default"])
def test_no_frame_sized_host_copies_torch(models, dev, cuda_frames, monkeypatch, gate):
    """Torch-level view: every CUDA tensor the package moves to the host, by size."""
    pre = make(models, device=dev, batch_size=HOT_BATCH, gate=gate)
    pre(cuda_frames[:HOT_BATCH])
    sizes: list[int] = []
    T = torch.Tensor
    orig = {n: getattr(T, n) for n in ("cpu", "to", "tolist", "item", "copy_")}

    def cpu(self, *a, **k):
        if self.is_cuda:
            sizes.append(self.nbytes)
        return orig["cpu"](self, *a, **k)

    def to(self, *a, **k):
        out = orig["to"](self, *a, **k)
        if self.is_cuda and isinstance(out, torch.Tensor) and out.device.type == "cpu":
            sizes.append(self.nbytes)
        return out

    def tolist(self):
        if self.is_cuda:
            sizes.append(self.nbytes)
        return orig["tolist"](self)

    def item(self):
        if self.is_cuda:
            sizes.append(self.nbytes)
        return orig["item"](self)

    def copy_(self, src, *a, **k):
        if self.device.type == "cpu" and isinstance(src, torch.Tensor) and src.is_cuda:
            sizes.append(src.nbytes)
        return orig["copy_"](self, src, *a, **k)

    for name, fn in (("cpu", cpu), ("to", to), ("tolist", tolist), ("item", item), ("copy_", copy_)):
        monkeypatch.setattr(T, name, fn)
    torch.ones(1000, device=dev).cpu()  # the recorder works: 4000 bytes
    assert sizes == [4000]
    sizes.clear()
    pre(cuda_frames)
    monkeypatch.undo()
    assert sizes, "no host copies recorded at all: the keypoint metas must reach the host somehow"
    _check_host_copies(sizes, cuda_frames.shape[0], "torch")


# -- (c) FP16 models: half inputs bound directly ----------------------------------------------


@pytest.mark.parametrize("suffix", ["fp16", "fp16_keepio"])
def test_fp16_models_on_cuda(models, clip, dev, cuda_frames, cuda_run, monkeypatch, suffix):
    # The [test] extra installs onnxconverter-common, so the kit always has its FP16 models.
    assert f"pose_{suffix}" in models, "no fp16 test models: is onnxconverter-common installed?"
    bound = []
    orig = OrtModel._run_bound

    def spy(self, x, *a, **k):  # whatever else the runtime passes (the output tensor) goes on
        bound.append((self.role, x.dtype, x.device, x.is_contiguous()))
        return orig(self, x, *a, **k)

    monkeypatch.setattr(OrtModel, "_run_bound", spy)
    pre = make(models, f"det_{suffix}", f"pose_{suffix}", device=dev)
    res = pre(cuda_frames)
    want = torch.float16 if suffix == "fp16" else torch.float32
    assert pre.detector.model.input.dtype == want and pre.estimator.model.input.dtype == want
    assert res.providers == {"detector": "CUDAExecutionProvider", "pose": "CUDAExecutionProvider"}
    assert {r for r, *_ in bound} == {"detector", "pose"}
    assert all(d == want and dv == dev and c for _, d, dv, c in bound), bound
    assert res.keypoints.dtype == torch.float32 and res.keypoints.device == dev
    seen = _vis(clip, dev) & (cuda_run.keypoints[..., 2] >= 0.3)
    err = (res.keypoints[..., :2] - cuda_run.keypoints[..., :2]).norm(dim=-1)[seen]
    assert err.max() < 1.0, f"{suffix} vs fp32 on CUDA: max {err.max():.3f} px"


# -- (d) out-of-memory back-off on a real CUDA OOM --------------------------------------------


def test_oom_backoff_on_cuda(models, dev, cuda_frames, cuda_run, monkeypatch):
    import wanprep_torch.pose as pose

    orig = pose.crop_windows
    calls = {"n": 0, "oom": 0}

    def crop_after_oom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            try:
                torch.empty(1 << 46, dtype=torch.uint8, device=dev)  # 64 TiB: a real allocator OOM
            except torch.cuda.OutOfMemoryError:
                calls["oom"] += 1
                raise
        return orig(*a, **k)

    monkeypatch.setattr(pose, "crop_windows", crop_after_oom)
    pre = make(models, device=dev, batch_size=8)
    with pytest.warns(RuntimeWarning, match="out of memory; retrying with batch size 4"):
        res = pre(cuda_frames)
    assert calls == {"n": 4, "oom": 1}  # 12 frames: 8 fails, then 4 + 4 + 4
    assert pre.batch_size == 4
    assert len(res) == cuda_frames.shape[0]
    assert_same_keypoints(res, cuda_run, 0.05)
    assert _max_box_diff(res.face_bboxes, cuda_run.face_bboxes) <= 1


def test_oom_backoff_gated_on_cuda(models, dev, cuda_frames, monkeypatch):
    import wanprep_torch.pose as pose

    if not HAS_GATE:
        _unavailable("this Preprocessor has no gate")

    orig = pose.crop_windows
    calls = {"n": 0}

    def crop_after_oom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            torch.empty(1 << 46, dtype=torch.uint8, device=dev)
        return orig(*a, **k)

    monkeypatch.setattr(pose, "crop_windows", crop_after_oom)
    pre = make(models, device=dev, batch_size=8, gate="default")
    with pytest.warns(RuntimeWarning, match="out of memory; retrying with batch size"):
        res = pre(cuda_frames)
    assert len(res) == cuda_frames.shape[0] and pre.batch_size < 8


# -- other CUDA-only code paths ------------------------------------------------------------------


def test_default_settings_on_cuda(models, clip, dev, cuda_frames):
    """The Preprocessor's defaults (frame gate included, where there is one) end to end on CUDA."""
    res = make(models, device=dev, gate="default")(cuda_frames)
    assert len(res) == len(clip)
    assert res.providers == {"detector": "CUDAExecutionProvider", "pose": "CUDAExecutionProvider"}
    for name in ("keypoints", "bboxes", "face_images", "face_held", "other_persons"):
        assert getattr(res, name).device == dev, f"{name} left the GPU"
    kp = res.keypoints.cpu()
    found = clip.visible & (kp[..., 2] >= 0.3)
    assert found.sum() >= 0.8 * clip.visible.sum()
    err = (kp[..., :2] - clip.keypoints).norm(dim=-1)[found]
    assert err.mean() < 1.0, f"error vs ground truth on found points: mean {err.mean():.3f} px"
    json.dumps(res.to_json())


def test_device_cuda_without_index(models, clip, cuda_run):
    """Preprocessor(device="cuda") (the documented form) on frames from ``.cuda()``."""
    pre = make(models, device="cuda")
    frames = clip.frames.cuda()
    try:
        res = pre(frames)
    except ValueError as exc:
        pytest.fail(f"device='cuda' refused frames on {frames.device}: {exc} "
                    "(torch.device('cuda') != torch.device('cuda:0'): the device check must normalise the index)")
    assert_same_keypoints(res, cuda_run, 0.05)


def test_fixed_batch_models_on_cuda(models, dev, cuda_frames, cuda_run, tmp_path):
    """A fixed batch of 2 (last batch zero-padded) and a fixed batch of 1 on CUDA."""
    import onnx

    from wanprep_torch.testkit.models import make_detector

    det2 = tmp_path / "det_b2.onnx"
    onnx.save_model(make_detector(2, "yolov10"), str(det2))
    pre = make(models, det2, "pose_b1", device=dev, batch_size=5)  # 5 frames = 2 + 2 + 1 padded
    assert pre.detector.model.fixed_batch == 2 and pre.estimator.model.fixed_batch == 1
    res = pre(cuda_frames)
    assert_same_keypoints(res, cuda_run, 0.05)
    torch.testing.assert_close(res.bboxes, cuda_run.bboxes, atol=1e-3, rtol=0)


def test_ort_allocated_outputs_on_cuda(models, dev, cuda_frames, cuda_run):
    """Outputs whose shape is not known ahead (symbolic non-batch dims, e.g. a YOLOv8 export
    with dynamic height/width): ORT allocates them on the GPU and torch wraps that memory.

    ORT fills declared-symbolic dims in from shape inference when it can, so the path is forced
    here rather than built from an edited model."""
    pre = make(models, device=dev)
    for m in (pre.detector.model, pre.estimator.model):
        m._output_shape = lambda n: None  # instance override: always the ORT-allocated branch
    res = pre(cuda_frames)
    assert res.keypoints.device == dev
    assert_same_keypoints(res, cuda_run, 0.05)
