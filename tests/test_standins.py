"""Fast checks of scripts/make_standins.py on its hidden "tiny" config (width 64, depth 2)."""

import numpy as np
import onnx
import pytest
from conftest import load_script

import onnxruntime as ort  # noqa: E402


@pytest.fixture(scope="module")
def standins():
    return load_script("make_standins")


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _run(path, batches):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.random((b, 3, 256, 192), dtype=np.float32)
        (y,) = sess.run(["heatmaps"], {"input": x})
        assert y.shape == (b, 133, 64, 48)
        assert y.dtype == np.float32 and np.isfinite(y).all()


def test_tiny_signature_and_runs(standins, tmp_path):
    path = standins.build_vitpose_standin("tiny", tmp_path / "tiny.onnx")
    assert path == tmp_path / "tiny.onnx" and path.exists()
    assert not (tmp_path / "tiny.onnx.data").exists()  # small models stay in one file
    m = onnx.load(str(path))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["heatmaps"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(m.graph.input[0]) == ["batch", 3, 256, 192]
    assert _dims(m.graph.output[0]) == ["batch", 133, 64, 48]
    _run(path, (1, 3))


def test_tiny_fixed_batch(standins, tmp_path):
    path = standins.build_vitpose_standin("tiny", tmp_path / "tiny-b1.onnx", fixed_batch=True)
    m = onnx.load(str(path))
    assert _dims(m.graph.input[0]) == [1, 3, 256, 192]
    assert _dims(m.graph.output[0]) == [1, 133, 64, 48]
    _run(path, (1,))


def test_tiny_external_data(standins, tmp_path):
    path = standins.build_vitpose_standin("tiny", tmp_path / "ext.onnx", external_data=True)
    data = tmp_path / "ext.onnx.data"
    assert data.exists() and data.stat().st_size > path.stat().st_size
    # Weights live only in the .data file, referenced by that relative name.
    m = onnx.load(str(path), load_external_data=False)
    locations = {
        kv.value
        for t in m.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for kv in t.external_data
        if kv.key == "location"
    }
    assert locations == {"ext.onnx.data"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".standin-export-")] == []
    _run(path, (1, 3))


def test_cli_skips_existing(standins, tmp_path, capsys):
    assert standins.main(["--out", str(tmp_path), "--size", "tiny", "--fixed-batch"]) == 0
    first = capsys.readouterr().out
    assert first.count("built:") == 2
    assert standins.main(["--out", str(tmp_path), "--size", "tiny", "--fixed-batch"]) == 0
    second = capsys.readouterr().out
    assert "built:" not in second
    assert str(tmp_path / "vitpose-tiny-standin.onnx") in second
    assert str(tmp_path / "vitpose-tiny-standin-b1.onnx") in second
