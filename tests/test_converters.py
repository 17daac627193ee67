"""Tests for converters.fp16 and converters.dynamic_batch on small hand-built ONNX models."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

# The [test] extra installs both: a missing one is a broken environment, not a reason to skip.
import onnxconverter_common  # noqa: E402,F401
import onnxruntime as ort  # noqa: E402

from converters import ConversionError, InputError  # noqa: E402
from converters import dynamic_batch as dyn  # noqa: E402
from converters import fp16  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPSET = [h.make_opsetid("", 17)]
RNG_SEED = 1234


# ----------------------------------------------------------------------------- model builders


def _model(nodes, inputs, outputs, inits):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=OPSET)
    m.ir_version = 8  # loadable by any recent onnxruntime
    onnx.checker.check_model(m)
    return m


def pose_model(batch=1) -> onnx.ModelProto:
    """[B,3,256,192] -> [B,133,64,48]: conv/relu/LayerNorm/global-pool features plus a fixed
    Gaussian peak per keypoint, so heatmap argmaxes are well defined like a real ViTPose."""
    rng = np.random.default_rng(RNG_SEED)
    yy, xx = np.mgrid[0:64, 0:48]
    cy, cx = rng.integers(4, 60, 133), rng.integers(4, 44, 133)
    peaks = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 8.0)
    inits = [
        nh.from_array((rng.standard_normal((8, 3, 4, 4)) * 0.3).astype(np.float32), "w1"),
        nh.from_array((1 + 0.1 * rng.standard_normal(48)).astype(np.float32), "ln_s"),
        nh.from_array((0.1 * rng.standard_normal(48)).astype(np.float32), "ln_b"),
        nh.from_array((rng.standard_normal((133, 8, 1, 1)) * 0.3).astype(np.float32), "w2"),
        nh.from_array(np.array(0.05, np.float32), "k"),
        nh.from_array(peaks[None].astype(np.float32), "peaks"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], strides=[4, 4], name="conv1"),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("LayerNormalization", ["r1", "ln_s", "ln_b"], ["ln"], axis=-1, name="ln"),
        h.make_node("GlobalAveragePool", ["ln"], ["gap"], name="gap"),
        h.make_node("Sub", ["ln", "gap"], ["centered"], name="center"),
        h.make_node("Conv", ["centered", "w2"], ["c2"], name="conv2"),
        h.make_node("Mul", ["c2", "k"], ["noise"], name="scale"),
        h.make_node("Add", ["noise", "peaks"], ["heatmaps"], name="add_peaks"),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 256, 192])],
        [h.make_tensor_value_info("heatmaps", T.FLOAT, [batch, 133, 64, 48])],
        inits,
    )


def det_model(batch=1, reshape_batch=None) -> onnx.ModelProto:
    """[B,3,640,640] -> [B,300,6] (x1,y1,x2,y2,score,class), YOLO end-to-end style with TopK.

    reshape_batch is the first element of the constant Reshape shape (an exporter's fixed batch).
    """
    rng = np.random.default_rng(RNG_SEED + 1)
    rb = batch if reshape_batch is None else reshape_batch
    inits = [
        nh.from_array((rng.standard_normal((6, 3, 32, 32)) * 0.05).astype(np.float32), "w"),
        nh.from_array(np.array([rb, 6, 400], np.int64), "shape"),
        nh.from_array(np.array([2, 2, 1, 1], np.int64), "split"),
        nh.from_array(np.array(640, np.float32), "img"),
        nh.from_array(np.array(128, np.float32), "wmax"),
        nh.from_array(np.array(8, np.float32), "wmin"),
        nh.from_array(np.array(0.5, np.float32), "half"),
        nh.from_array(np.array(3, np.float32), "ncls"),
        nh.from_array(np.array([2], np.int64), "ax2"),
        nh.from_array(np.array([300], np.int64), "k"),
        nh.from_array(np.array([1, 1, 6], np.int64), "rep"),
    ]
    nodes = [
        h.make_node("Conv", ["images", "w"], ["f"], strides=[32, 32]),
        h.make_node("Reshape", ["f", "shape"], ["f2"]),
        h.make_node("Transpose", ["f2"], ["rows"], perm=[0, 2, 1]),
        h.make_node("Split", ["rows", "split"], ["xy_l", "wh_l", "s_l", "c_l"], axis=2),
        h.make_node("Sigmoid", ["xy_l"], ["xy_s"]),
        h.make_node("Mul", ["xy_s", "img"], ["xy"]),
        h.make_node("Sigmoid", ["wh_l"], ["wh_s"]),
        h.make_node("Mul", ["wh_s", "wmax"], ["wh_m"]),
        h.make_node("Add", ["wh_m", "wmin"], ["wh"]),
        h.make_node("Mul", ["wh", "half"], ["hw"]),
        h.make_node("Sub", ["xy", "hw"], ["p1"]),
        h.make_node("Add", ["xy", "hw"], ["p2"]),
        h.make_node("Sigmoid", ["s_l"], ["score"]),
        h.make_node("Sigmoid", ["c_l"], ["c_s"]),
        h.make_node("Mul", ["c_s", "ncls"], ["c_m"]),
        h.make_node("Floor", ["c_m"], ["cls"]),
        h.make_node("Concat", ["p1", "p2", "score", "cls"], ["dets"], axis=2),
        h.make_node("Squeeze", ["score", "ax2"], ["score2"]),
        h.make_node("TopK", ["score2", "k"], ["top_v", "top_i"], axis=1),
        h.make_node("Unsqueeze", ["top_i", "ax2"], ["top_i3"]),
        h.make_node("Tile", ["top_i3", "rep"], ["top_i6"]),
        h.make_node("GatherElements", ["dets", "top_i6"], ["output0"], axis=1),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("images", T.FLOAT, [batch, 3, 640, 640])],
        [h.make_tensor_value_info("output0", T.FLOAT, [batch, 300, 6])],
        inits,
    )


def big_scale_ln_model() -> onnx.ModelProto:
    """LayerNorm with a 1.5e4 scale: the converter clamps it to 1e4 unless LayerNorm is blocked."""
    inits = [
        nh.from_array(np.full(64, 1.5e4, np.float32), "s"),
        nh.from_array(np.zeros(64, np.float32), "b"),
    ]
    nodes = [h.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, name="ln")]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 64])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 64])], inits)


def transposed_reshape_model() -> onnx.ModelProto:
    """Batch is moved off axis 0 before a Reshape to [1,192]: no dim-0 rewrite can fix it."""
    inits = [nh.from_array(np.array([1, 192], np.int64), "shape")]
    nodes = [
        h.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3]),
        h.make_node("Reshape", ["t", "shape"], ["y"]),
    ]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 192])], inits)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    paths = {}

    def save(name, m, **kw):
        p = d / f"{name}.onnx"
        onnx.save_model(m, str(p), **kw)
        paths[name] = p

    save("pose", pose_model(1))
    save("pose_dyn", pose_model("N"))
    save("det_b1", det_model(1))
    save("det_dyn", det_model("N", reshape_batch=0))
    save("ln", big_scale_ln_model())
    save("unfixable", transposed_reshape_model())
    save("pose_ext", pose_model(1), save_as_external_data=True, location="pose_ext.weights.bin", size_threshold=0)
    return paths


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _input_type(p: Path) -> str:
    return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).get_inputs()[0].type


# ----------------------------------------------------------------------------- fp16: round trips


def test_fp16_pose_roundtrip(models, tmp_path):
    out = fp16.convert_fp16(models["pose"], tmp_path / "pose16.onnx")
    assert _input_type(out) == "tensor(float16)"
    rep = fp16.validate(models["pose"], out, samples=2)
    assert rep.kind == "pose" and rep.ok, rep.summary()
    assert rep.argmax_exact >= 0.99 and rep.argmax_within1 >= rep.argmax_exact
    # LayerNormalization is not blocked by default: its scale became float16.
    inits = {t.name: t.data_type for t in onnx.load(str(out)).graph.initializer}
    assert inits["ln_s"] == T.FLOAT16 and inits["w1"] == T.FLOAT16


def test_fp16_keep_io_types_and_block_op(models, tmp_path):
    out = fp16.convert_fp16(models["pose_dyn"], tmp_path / "p.onnx", keep_io_types=True,
                            op_block_list=["LayerNormalization"])
    assert _input_type(out) == "tensor(float)"
    m = onnx.load(str(out))
    inits = {t.name: t.data_type for t in m.graph.initializer}
    assert inits["ln_s"] == T.FLOAT and inits["w1"] == T.FLOAT16  # blocked op keeps FP32 weights
    assert [n.op_type for n in m.graph.node].count("Cast") >= 2
    rep = fp16.validate(models["pose_dyn"], out, samples=2)
    assert rep.ok, rep.summary()


def test_fp16_detector_roundtrip(models, tmp_path):
    out = fp16.convert_fp16(models["det_b1"], tmp_path / "det16.onnx")
    m = onnx.load(str(out))
    assert any(n.op_type == "TopK" for n in m.graph.node)
    rep = fp16.validate(models["det_b1"], out, samples=2)
    assert rep.kind == "detector" and rep.metric == "top-box IoU"
    assert rep.ok and rep.box_iou >= 0.9, rep.summary()


@pytest.mark.slow
def test_fp16_falls_back_to_the_next_converter_when_onnxruntime_rejects_the_result(models, tmp_path, monkeypatch):
    real = fp16._float16_backends()
    assert [name for name, _, _ in real] == ["onnxconverter-common", "onnxruntime.transformers"]

    def mistyped(model, **kw):  # a result that does not load, as onnxconverter-common gave for YOLOv10m
        out = real[0][1](model, **kw)
        out.graph.output[0].type.tensor_type.elem_type = T.INT64
        return out

    monkeypatch.setattr(fp16, "_float16_backends", lambda: [("broken", mistyped, real[0][2])] + real[1:])
    lines = []
    out = fp16.convert_fp16(models["pose"], tmp_path / "p16.onnx", log=lines.append)
    assert any("broken result does not load" in line for line in lines)
    assert fp16.validate(models["pose"], out, samples=1).ok
    monkeypatch.setattr(fp16, "_float16_backends", lambda: [("broken", mistyped, real[0][2])])
    with pytest.raises(ConversionError, match="no FP16 converter produced a loadable model"):
        fp16.convert_fp16(models["pose"], tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()


def test_fp16_block_list_keeps_converter_defaults():
    ops = fp16.effective_block_list(["Softmax"])
    assert "Softmax" in ops and "TopK" in ops and "Resize" in ops


@pytest.mark.slow
def test_fp16_user_npy_inputs(models, tmp_path):
    out = fp16.convert_fp16(models["pose"], tmp_path / "p.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, 256, 192)).astype(np.float32)  # batch 3 -> 3 runs of 1
    np.save(tmp_path / "x.npy", x)
    rep = fp16.validate(models["pose"], out, inputs=[tmp_path / "x.npy"], samples=1)
    assert rep.runs == 4 and rep.ok, rep.summary()
    np.save(tmp_path / "bad.npy", x[:, :2])
    with pytest.raises(ConversionError):
        fp16.validate(models["pose"], out, inputs=[tmp_path / "bad.npy"], samples=0)


@pytest.mark.slow
def test_fp16_auto_block(models, tmp_path, capsys):
    out = tmp_path / "ln16.onnx"
    with pytest.raises(fp16.ValidationFailed) as ei:
        fp16.convert_and_validate(models["ln"], out, samples=2)
    assert not ei.value.report.ok and "--auto-block" in str(ei.value)
    assert not out.exists()  # a failing conversion is never left behind

    assert fp16.main([str(models["ln"]), str(out), "--auto-block", "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "auto-block: retrying with LayerNormalization" in text and "passed after --auto-block" in text
    assert out.exists()


def test_fp16_tolerance_failure_exit_code(models, tmp_path, capsys):
    out = tmp_path / "ln16.onnx"
    assert fp16.main([str(models["ln"]), str(out), "--samples", "1"]) == 1
    assert "fails validation" in capsys.readouterr().err and not out.exists()


def test_fp16_external_data(models, tmp_path):
    src = models["pose_ext"]
    src_data = src.parent / "pose_ext.weights.bin"
    before = _sha(src_data)
    out = fp16.convert_and_validate(src, tmp_path / "ext16.onnx", samples=1).path
    assert (tmp_path / "ext16.onnx.data").is_file()  # input used external data, so the output does too
    assert out.stat().st_size < 100_000
    assert _sha(src_data) == before
    assert _input_type(out) == "tensor(float16)"


def test_fp16_missing_external_data(models, tmp_path):
    m = tmp_path / "orphan.onnx"
    m.write_bytes(models["pose_ext"].read_bytes())  # data file not copied
    with pytest.raises(InputError, match="pose_ext.weights.bin"):
        fp16.convert_fp16(m, tmp_path / "o.onnx")


def test_fp16_large_model_saves_external_data(models, tmp_path, monkeypatch):
    # Stand-in for a >1.5 GB model: the size threshold decides external data, not the input format.
    monkeypatch.setattr(fp16, "EXTERNAL_DATA_THRESHOLD", 0)
    out = fp16.convert_fp16(models["pose"], tmp_path / "big16.onnx")
    assert (tmp_path / "big16.onnx.data").is_file()
    assert fp16.validate(models["pose"], out, samples=1).ok


def test_metrics_pose_argmax():
    ref = np.zeros((1, 3, 8, 8), np.float32)
    test = ref.copy()
    for k, (ry, rx, ty, tx) in enumerate([(2, 2, 2, 2), (4, 4, 5, 5), (1, 1, 6, 6)]):
        ref[0, k, ry, rx] = 1
        test[0, k, ty, tx] = 1
    exact, near = fp16.argmax_agreement(ref, test)
    assert exact == pytest.approx(1 / 3) and near == pytest.approx(2 / 3)
    assert fp16.output_kind(ref) == "pose"


def test_metrics_detector_layouts():
    e2e = np.zeros((1, 300, 6), np.float32)
    e2e[0, 0] = [10, 10, 50, 50, 0.9, 0]
    e2e[0, 1] = [100, 100, 140, 140, 0.8, 1]
    shifted = e2e.copy()
    shifted[0, 0, :4] += [2, 0, 2, 0]  # IoU 38/42
    shifted[0, [0, 1]] = shifted[0, [1, 0]]  # order swap must not matter
    iou, top1 = fp16.top_box_iou(e2e, shifted)
    assert fp16.output_kind(e2e) == "detector"
    assert iou == pytest.approx((1 + 38 / 42) / 2) and top1 == pytest.approx(38 / 42)
    # YOLOv8 raw: [N, 4+C, A] with cx, cy, w, h rows.
    v8 = np.zeros((1, 84, 8400), np.float32)
    v8[0, :4, 7] = [30, 30, 40, 40]
    v8[0, 4 + 5, 7] = 0.95
    v8[0, 2:4, :7] = v8[0, 2:4, 8:] = 1  # low-score anchors with valid boxes
    assert fp16.output_kind(v8) == "detector"
    boxes, scores = fp16.boxes_and_scores(v8)
    assert scores[0].argmax() == 7 and list(boxes[0, 7]) == [10, 10, 50, 50]
    iou, top1 = fp16.top_box_iou(v8, v8)
    assert iou == pytest.approx(1) and top1 == pytest.approx(1)
    assert fp16.output_kind(np.zeros((2, 64), np.float32)) == "generic"


# ----------------------------------------------------------------------------- fp16: bad requests


def test_fp16_missing_file(tmp_path, capsys):
    assert fp16.main([str(tmp_path / "nope.onnx"), str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "nope.onnx" in err and "not found" in err


@pytest.mark.parametrize("content", [b"hello, I am not a model\n", b"", bytes(range(256)) * 4])
def test_fp16_not_onnx(tmp_path, capsys, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert fp16.main([str(bad), str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx" in err and "not an ONNX model" in err


def test_fp16_already_fp16(models, tmp_path, capsys):
    once = fp16.convert_fp16(models["pose"], tmp_path / "once.onnx")
    assert fp16.main([str(once), str(tmp_path / "twice.onnx")]) == 2
    assert "already FP16" in capsys.readouterr().err
    assert not (tmp_path / "twice.onnx").exists()


def test_fp16_refuses_same_path(models, tmp_path, capsys):
    src = tmp_path / "m.onnx"
    src.write_bytes(models["pose"].read_bytes())
    before = _sha(src)
    alias = tmp_path / "sub" / ".." / "m.onnx"
    assert fp16.main([str(src), str(alias), "--force"]) == 2
    assert "same file" in capsys.readouterr().err
    assert _sha(src) == before


def test_fp16_existing_output_needs_force(models, tmp_path, capsys):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    assert fp16.main([str(models["pose"]), str(out), "--skip-validation"]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert fp16.main([str(models["pose"]), str(out), "--skip-validation", "--force"]) == 0
    assert _input_type(out) == "tensor(float16)"


@pytest.mark.slow
def test_fp16_cli_subprocess(models, tmp_path):
    out = tmp_path / "det16.onnx"
    r = subprocess.run(
        [sys.executable, "-m", "converters.fp16", str(models["det_b1"]), str(out), "--keep-io-types",
         "--block-op", "Softmax", "--samples", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[fp16] converting" in r.stdout and "[fp16] validating" in r.stdout
    assert "top-box IoU" in r.stdout and r.stdout.strip().splitlines()[-1].startswith("OK: wrote")
    assert _input_type(out) == "tensor(float)"


# ----------------------------------------------------------------------------- dynamic batch


def _dim0(p: Path):
    m = onnx.load(str(p), load_external_data=False)
    return [vi.type.tensor_type.shape.dim[0].dim_param or vi.type.tensor_type.shape.dim[0].dim_value
            for vi in list(m.graph.input) + list(m.graph.output)]


def test_dynamic_batch_io_only(models, tmp_path):
    out = dyn.make_dynamic_batch(models["pose"], tmp_path / "pose_dyn.onnx")
    assert _dim0(out) == ["batch", "batch"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.zeros((3, 3, 256, 192), np.float32)})[0]
    assert y.shape == (3, 133, 64, 48)


def test_dynamic_batch_fixes_constant_reshape(models, tmp_path, capsys):
    out = dyn.make_dynamic_batch(models["det_b1"], tmp_path / "det_dyn.onnx", log=print)
    assert "reshape fixed" in capsys.readouterr().out
    m = onnx.load(str(out))
    reshape = next(n for n in m.graph.node if n.op_type == "Reshape")
    shape = next(nh.to_array(t) for t in m.graph.initializer if t.name == reshape.input[1])
    assert shape[0] in (0, -1) and list(shape[1:]) == [6, 400]
    ok, reason, _ = dyn.verify_batch(out, test_batch=2)
    assert ok, reason


def test_dynamic_batch_unfixable(models, tmp_path):
    out = tmp_path / "u.onnx"
    with pytest.raises(ConversionError, match="fixed-batch path") as ei:
        dyn.make_dynamic_batch(models["unfixable"], out)
    assert not isinstance(ei.value, InputError)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no staging leftovers either


def test_dynamic_batch_already_dynamic(models, tmp_path):
    out = dyn.make_dynamic_batch(models["det_dyn"], tmp_path / "d.onnx")
    assert _dim0(out) == ["N", "N"]


def test_dynamic_batch_external_data(models, tmp_path):
    out = dyn.make_dynamic_batch(models["pose_ext"], tmp_path / "e.onnx")
    assert (tmp_path / "e.onnx.data").is_file() and _dim0(out) == ["batch", "batch"]


def test_dynamic_batch_bad_requests(models, tmp_path, capsys):
    assert dyn.main([str(tmp_path / "missing.onnx"), str(tmp_path / "o.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    assert dyn.main([str(models["pose"]), str(models["pose"])]) == 2
    existing = tmp_path / "o.onnx"
    existing.write_bytes(b"x")
    assert dyn.main([str(models["pose"]), str(existing)]) == 2
    assert existing.read_bytes() == b"x"


@pytest.mark.slow
def test_dynamic_batch_cli_subprocess_failure(models, tmp_path):
    out = tmp_path / "u.onnx"
    r = subprocess.run([sys.executable, "-m", "converters.dynamic_batch", str(models["unfixable"]), str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[dynamic_batch] verifying" in r.stdout
    assert "cannot make the batch axis dynamic" in r.stderr and "fixed-batch path" in r.stderr
    assert not out.exists()


def test_dynamic_batch_cli_subprocess_success(models, tmp_path):
    out = tmp_path / "p.onnx"
    r = subprocess.run([sys.executable, "-m", "converters", "dynamic_batch", str(models["pose"]), str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("OK: wrote")


def test_converters_usage():
    r = subprocess.run([sys.executable, "-m", "converters"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "converters.fp16" in r.stdout and "converters.dynamic_batch" in r.stdout


# ----------------------------------------------------------------------------- shared test kit


@pytest.fixture(scope="module")
def kit_models(tmp_path_factory):
    # The project's own test kit: an import error here is a failure, not a skip.
    from wanprep_torch.testkit import build_test_models

    return {k: Path(v) for k, v in build_test_models(tmp_path_factory.mktemp("kit")).items()}


@pytest.fixture(scope="module")
def kit_inputs(kit_models):
    """Real-looking inputs from the kit's synthetic scenes: detector frames and pose crops."""
    from wanprep_torch.testkit import make_clip
    from wanprep_torch.testkit.models import normalize_crop, reference_person_box, sample_crop
    from wanprep_torch.testkit.scene import pose_crop_window

    clip = make_clip(3, H=640, W=640, motion="fast", seed=3)
    frames = clip.frames.numpy()
    crops = [
        normalize_crop(sample_crop(f, *pose_crop_window(reference_person_box(kp, float(sig)))))
        for f, kp, sig in zip(frames, clip.keypoints.numpy(), clip.sigma.numpy())
    ]
    return {"det": np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), "pose": np.stack(crops)}


def test_testkit_pose_fp16(kit_models, kit_inputs, tmp_path, capsys):
    np.save(tmp_path / "crops.npy", kit_inputs["pose"])
    out = tmp_path / "pose16.onnx"
    rc = fp16.main([str(kit_models["pose"]), str(out), "--samples", "2", "--inputs", str(tmp_path / "crops.npy")])
    text = capsys.readouterr().out
    assert rc == 0, text
    rep = fp16.validate(kit_models["pose"], out, inputs=kit_inputs["pose"], samples=0)
    assert rep.kind == "pose" and rep.argmax_exact >= 0.99, rep.summary()


@pytest.mark.parametrize("key", ["det", "det_v8"])
def test_testkit_det_fp16(kit_models, kit_inputs, tmp_path, key):
    res = fp16.convert_and_validate(kit_models[key], tmp_path / "det16.onnx", inputs=kit_inputs["det"], samples=1)
    assert res.report.kind == "detector" and res.report.box_iou >= 0.9, res.report.summary()


def test_testkit_fp16_models_are_refused(kit_models, tmp_path):
    for key in ("pose_fp16", "pose_fp16_keepio", "det_fp16", "not_onnx"):
        assert key in kit_models, f"the test kit has no {key!r} model"
        with pytest.raises(InputError, match=kit_models[key].name):
            fp16.convert_fp16(kit_models[key], tmp_path / "x.onnx")


@pytest.mark.parametrize("key", ["pose_b1", "det_b1"])
def test_testkit_dynamic_batch(kit_models, tmp_path, key):
    out = dyn.make_dynamic_batch(kit_models[key], tmp_path / f"{key}_dyn.onnx")
    ok, reason, _ = dyn.verify_batch(out, test_batch=2)
    assert ok, reason


# ----------------------------------------------------------------------------- fp16: ordinary torch exports


@pytest.fixture(scope="module", params=[pytest.param("torchscript", marks=pytest.mark.slow), pytest.param("dynamo", marks=pytest.mark.slow)])
def torch_vit(request, tmp_path_factory) -> Path:
    """The test kit's small nn.TransformerEncoderLayer ViT (pose signature), exported with
    torch.onnx.export(opset_version=17) by the TorchScript (dynamo=False) or dynamo exporter."""
    from wanprep_torch.testkit.models import export_torch_vit_pose

    dynamo = request.param == "dynamo"
    if dynamo:
        pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (the [test] extra)")
    return export_torch_vit_pose(tmp_path_factory.mktemp("vit") / f"vit_{request.param}.onnx", dynamo=dynamo)


def test_torch_vit_export_signature(torch_vit):
    m = onnx.load(str(torch_vit))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    ops = {n.op_type for n in m.graph.node}
    assert {"Softmax", "LayerNormalization", "MatMul"} <= ops  # attention made of plain ops
    sess = ort.InferenceSession(str(torch_vit), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": np.zeros((2, 3, 256, 192), np.float32)})[0]
    assert y.shape == (2, 133, 64, 48)


def test_fp16_torch_vit_converts_and_validates(torch_vit, tmp_path, capsys):
    out = tmp_path / "vit16.onnx"
    rc = fp16.main([str(torch_vit), str(out), "--samples", "2"])
    text = capsys.readouterr()
    assert rc == 0, text.out + text.err
    assert text.out.strip().splitlines()[-1].startswith("OK: wrote")
    assert _input_type(out) == "tensor(float16)"
    rep = fp16.validate(torch_vit, out, samples=2)
    assert rep.kind == "pose" and rep.ok and rep.rel_err < 1e-2, rep.summary()


def test_fp16_torch_vit_with_blocked_layernorm(torch_vit, tmp_path):
    # The TorchScript exporter shares equal weights (LayerNorm and BatchNorm ones) through
    # Identity nodes: a blocked LayerNorm must not leave its shared weight float32 for the rest.
    lines = []
    res = fp16.convert_and_validate(torch_vit, tmp_path / "vit16.onnx", op_block_list=["LayerNormalization"],
                                    keep_io_types=True, samples=1, log=lines.append)
    assert not any("Type Error" in line for line in lines), lines  # no mistyped result
    assert res.report.ok and res.op_block_list[0] == "LayerNormalization", res.report.summary()
    assert _input_type(res.path) == "tensor(float)"
    inits = {t.name: t.data_type for t in onnx.load(str(res.path)).graph.initializer}
    ln = [n for n in onnx.load(str(res.path)).graph.node if n.op_type == "LayerNormalization"]
    assert ln and all(inits.get(n.input[1], T.FLOAT) == T.FLOAT for n in ln)  # FP32 scales


def test_fp16_cast_targets_follow_the_converted_types():
    # Shape -> Cast(to=FLOAT) -> Sqrt -> Div: MultiheadAttention's scale in a TorchScript export.
    nodes = [
        h.make_node("Shape", ["x"], ["s"], name="shape", start=-1),
        h.make_node("Cast", ["s"], ["sf"], name="cast", to=T.FLOAT),
        h.make_node("Sqrt", ["sf"], ["r"], name="sqrt"),
        h.make_node("Div", ["x", "r"], ["y"], name="div"),
    ]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 16])],
               [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 16])], [])
    from onnxconverter_common import float16 as occ

    converted = occ.convert_float_to_float16(onnx.shape_inference.infer_shapes(m), check_fp16_ready=False)
    with pytest.raises(Exception, match="does not match expected type"):
        ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    assert fp16._fix_cast_targets(converted.graph) == 1
    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.full((1, 4, 16), 8, np.float16)})[0]
    assert y.dtype == np.float16 and np.allclose(y, 2)


def test_isolated_run_reports_a_crash(models, tmp_path, monkeypatch):
    from converters import _isolated

    outs = _isolated.run_isolated(models["pose"], [{"x": np.zeros((1, 3, 256, 192), np.float32)}])
    assert outs[0][0].shape == (1, 133, 64, 48)
    with pytest.raises(_isolated.IsolatedRunError, match="cannot load") as ei:
        _isolated.run_isolated(models["unfixable"].with_name("missing.onnx"))
    assert not ei.value.crashed
    # A child that dies by a signal, as onnxruntime did (SIGSEGV) on a mistyped float16 graph.
    monkeypatch.setattr(_isolated, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(_isolated.IsolatedRunError, match=r"crashed \(SIGSEGV, exit 139\)") as ei:
        _isolated.run_isolated(models["pose"])
    assert ei.value.crashed


def test_fp16_exits_with_a_message_when_onnxruntime_crashes(models, tmp_path, monkeypatch):
    from converters import _isolated

    monkeypatch.setattr(_isolated, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    out = tmp_path / "p16.onnx"
    lines = []
    with pytest.raises(ConversionError, match=r"no FP16 converter produced a loadable model.*crashed \(SIGSEGV"):
        fp16.convert_fp16(models["pose"], out, log=lines.append)
    assert any("retrying with LayerNormalization kept in FP32" in line for line in lines), lines
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
