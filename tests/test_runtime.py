"""ONNX Runtime wrapper: IO binding, batch axis handling, signatures, error classification."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from wanprep_torch.runtime import ModelError, OrtModel, is_out_of_memory, physical_cores, resolve_batch_size


def _save(tmp_path, name, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, path)
    return path


def scale_model(tmp_path, batch="batch", out_dims=("batch", 3, 4, 5)):
    """y = 2x + 1 on [N, 3, 4, 5]; output dims as given (symbolic names allowed)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_dims))
    inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(1.0), "one")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])]
    return _save(tmp_path, f"scale_{batch}_{len(out_dims)}", nodes, [x], [y], inits)


def test_dynamic_batch_runs_in_given_batches(tmp_path):
    m = OrtModel(scale_model(tmp_path), role="test")
    assert m.fixed_batch is None
    x = torch.rand(7, 3, 4, 5)
    for b in (1, 3, 7, None):
        assert torch.allclose(m.run(x, batch_size=b), 2 * x + 1)


def test_fixed_batch_pads_the_last_chunk(tmp_path):
    m = OrtModel(scale_model(tmp_path, batch=2, out_dims=(2, 3, 4, 5)), role="test")
    assert m.fixed_batch == 2
    x = torch.rand(5, 3, 4, 5)
    y = m.run(x, batch_size=4)  # the model's own batch wins
    assert y.shape == (5, 3, 4, 5) and torch.allclose(y, 2 * x + 1)


def data_dependent_model(tmp_path):
    """y = reshape(2x + 1, [N, k]) with k = 60 computed from the data, so no shape inference
    can know the output's second dim."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "k"])
    inits = [
        numpy_helper.from_array(np.float32(2.0), "two"),
        numpy_helper.from_array(np.float32(1.0), "one"),
        numpy_helper.from_array(np.float32(0.0), "zero"),
        numpy_helper.from_array(np.int64(60), "sixty"),
        numpy_helper.from_array(np.array([0], np.int64), "ax0"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
    ]
    n = helper.make_node
    nodes = [
        n("Mul", ["x", "two"], ["t"]),
        n("Add", ["t", "one"], ["v"]),
        n("Mul", ["x", "zero"], ["z"]),
        n("ReduceMax", ["z"], ["zmax"], keepdims=0),
        n("Cast", ["zmax"], ["zi"], to=TensorProto.INT64),
        n("Add", ["zi", "sixty"], ["k"]),
        n("Unsqueeze", ["k", "ax0"], ["k1"]),
        n("Shape", ["x"], ["xs"]),
        n("Slice", ["xs", "s0", "s1"], ["nb"]),
        n("Concat", ["nb", "k1"], ["shape"], axis=0),
        n("Reshape", ["v", "shape"], ["y"]),
    ]
    return _save(tmp_path, "data_dependent", nodes, [x], [y], inits)


def test_symbolic_output_dims_are_wrapped_not_copied_to_numpy(tmp_path):
    m = OrtModel(data_dependent_model(tmp_path), role="test")
    assert m._output_shape(3) is None  # takes the ORT-allocated path
    x = torch.rand(3, 3, 4, 5)
    y = m.run(x)
    assert isinstance(y, torch.Tensor) and y.shape == (3, 60)
    assert torch.allclose(y, (2 * x + 1).reshape(3, 60))
    y2 = m.run(x + 1)  # the wrapped ORT buffer was copied: earlier results stay valid
    assert torch.allclose(y, (2 * x + 1).reshape(3, 60)) and torch.allclose(y2, (2 * x + 3).reshape(3, 60))


def test_input_dtype_follows_the_model(tmp_path, models):
    m = OrtModel(models["pose_fp16"], role="pose")
    assert m.input.dtype == torch.float16 and m.output.dtype == torch.float16
    y = m.run(torch.zeros(1, 3, 256, 192))  # float32 in: converted to half once
    assert y.dtype == torch.float16 and y.shape == (1, 133, 64, 48)


def test_model_errors_name_the_file(tmp_path):
    two_in = _save(
        tmp_path,
        "two_inputs",
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 4, 4]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    with pytest.raises(ModelError, match="two_inputs.onnx has 2 inputs"):
        OrtModel(two_in, role="detector")
    with pytest.raises(ModelError, match="folder"):
        OrtModel(tmp_path, role="pose")
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelError, match="junk.onnx.*not a valid ONNX model"):
        OrtModel(bad, role="pose")


def test_out_of_memory_classification():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_batch_size_resolution():
    assert resolve_batch_size("auto", torch.device("cpu")) == 1
    assert resolve_batch_size("auto", torch.device("cuda", 0)) == 16
    assert resolve_batch_size(4, torch.device("cpu")) == 4
    for bad in (0, -2, 1.5, True, "big"):
        with pytest.raises(ValueError):
            resolve_batch_size(bad, torch.device("cpu"))
    assert physical_cores() >= 1


# -- IO binding: the hot path binds torch memory (it must not fall back to session.run) ---------


@pytest.fixture
def ort_calls(monkeypatch):
    """Counts ONNX Runtime's ``run`` and ``run_with_iobinding`` calls and records the memory
    bound to each input and output (data pointer, or None where ORT allocates)."""
    import onnxruntime as ort

    rec = {"run": 0, "run_with_iobinding": 0, "inputs": [], "outputs": []}
    run, bound = ort.InferenceSession.run, ort.InferenceSession.run_with_iobinding
    bind_in, bind_out = ort.IOBinding.bind_input, ort.IOBinding.bind_output

    def counting_run(self, *a, **k):
        rec["run"] += 1
        return run(self, *a, **k)

    def counting_bound(self, *a, **k):
        rec["run_with_iobinding"] += 1
        return bound(self, *a, **k)

    def spy_in(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        rec["inputs"].append((tuple(shape), buffer_ptr))
        return bind_in(self, name, device_type, device_id, element_type, shape, buffer_ptr)

    def spy_out(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        rec["outputs"].append((None if shape is None else tuple(shape), buffer_ptr))
        return bind_out(self, name, device_type, device_id, element_type, shape, buffer_ptr)

    monkeypatch.setattr(ort.InferenceSession, "run", counting_run)
    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", counting_bound)
    monkeypatch.setattr(ort.IOBinding, "bind_input", spy_in)
    monkeypatch.setattr(ort.IOBinding, "bind_output", spy_out)
    return rec


def test_runs_are_bound_to_torch_memory_not_copied(tmp_path, ort_calls):
    """Each batch is one run_with_iobinding whose input is the caller's tensor memory and whose
    output is a slice of the returned tensor: nothing goes through session.run or NumPy."""
    m = OrtModel(scale_model(tmp_path), role="test")
    x = torch.rand(5, 3, 4, 5)
    y = m.run(x, batch_size=2)  # batches of 2, 2, 1
    assert torch.allclose(y, 2 * x + 1)
    assert ort_calls["run"] == 0 and ort_calls["run_with_iobinding"] == 3
    row_in, row_out = x[0].nbytes, y[0].nbytes
    assert ort_calls["inputs"] == [((2, 3, 4, 5), x.data_ptr()), ((2, 3, 4, 5), x.data_ptr() + 2 * row_in),
                                   ((1, 3, 4, 5), x.data_ptr() + 4 * row_in)]
    assert ort_calls["outputs"] == [((2, 3, 4, 5), y.data_ptr()), ((2, 3, 4, 5), y.data_ptr() + 2 * row_out),
                                    ((1, 3, 4, 5), y.data_ptr() + 4 * row_out)]


def test_workspace_output_is_the_preallocated_buffer(tmp_path, ort_calls):
    """With a workspace, ORT writes into the same preallocated tensor run after run."""
    from wanprep_torch.buffers import Workspace

    m = OrtModel(scale_model(tmp_path), role="test")
    ws = Workspace()
    x = torch.rand(4, 3, 4, 5)
    y1 = m.run(x, workspace=ws)
    ptr = y1.data_ptr()
    assert torch.allclose(y1, 2 * x + 1)
    y2 = m.run(x + 1, workspace=ws)
    assert y2.data_ptr() == ptr and torch.allclose(y2, 2 * x + 3)  # same memory, new values
    assert [p for _, p in ort_calls["outputs"]] == [ptr, ptr]
    assert ort_calls["run"] == 0 and ort_calls["run_with_iobinding"] == 2


def test_symbolic_output_dims_are_ort_allocated_then_wrapped(tmp_path, ort_calls):
    """Outputs of unknown shape: bound without a pointer (ORT allocates), still no session.run."""
    m = OrtModel(data_dependent_model(tmp_path), role="test")
    x = torch.rand(3, 3, 4, 5)
    y = m.run(x)
    assert torch.allclose(y, (2 * x + 1).reshape(3, 60))
    assert ort_calls["run"] == 0 and ort_calls["run_with_iobinding"] == 1
    assert ort_calls["outputs"] == [(None, None)] and ort_calls["inputs"] == [((3, 3, 4, 5), x.data_ptr())]


def test_pipeline_runs_every_model_call_by_io_binding(models, clip, ort_calls):
    """The whole pipeline (gate off, batch 1 on the CPU): one bound run per frame per model,
    every output bound to preallocated torch memory, and no session.run at all."""
    from wanprep_torch import Preprocessor

    pre = Preprocessor(models["det"], models["pose"], progress=False, gate="off")
    ort_calls.update(run=0, run_with_iobinding=0, inputs=[], outputs=[])  # sessions are built: count runs only
    res = pre(clip.frames[:3])
    assert len(res) == 3
    assert ort_calls["run"] == 0
    assert ort_calls["run_with_iobinding"] == 2 * 3
    assert len(ort_calls["outputs"]) == 6 and all(p is not None and p > 0 for _, p in ort_calls["outputs"])
    shapes = sorted({s for s, _ in ort_calls["outputs"]})
    assert shapes == [(1, 133, 64, 48), (1, 300, 6)]
