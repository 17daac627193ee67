"""wanprep_torch.frames (validation, layout, chunking) and runtime.run_in_batches (OOM back-off)."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from wanprep_torch import frames as frames_mod
from wanprep_torch.frames import FrameBatch, as_tchw, iter_chunks, quantize_u8, to_float01
from wanprep_torch.runtime import is_out_of_memory, run_in_batches


# ---------------------------------------------------------------------------------------------
# as_tchw
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_layouts_and_dtypes(dtype):
    base = torch.rand(3, 20, 24, 3)
    x = (base * 255).to(torch.uint8) if dtype == torch.uint8 else base.to(dtype)
    thwc = as_tchw(x)
    assert thwc.shape == (3, 3, 20, 24) and thwc.dtype == dtype
    assert thwc.data_ptr() == x.data_ptr()  # a view, no copy
    assert torch.equal(thwc, x.permute(0, 3, 1, 2))
    tchw = x.permute(0, 3, 1, 2).contiguous()
    out = as_tchw(tchw)
    assert out.shape == (3, 3, 20, 24) and torch.equal(out, tchw)
    one = as_tchw(x[0])
    assert one.shape == (1, 3, 20, 24) and torch.equal(one[0], x[0].permute(2, 0, 1))


def test_to_float01():
    u8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    f = to_float01(u8)
    assert f.dtype == torch.float32
    np.testing.assert_allclose(f[0, :, 0, 0].numpy(), [0.0, 0.2, 1.0], atol=1e-7)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(to_float01(x), x.float())


# ---------------------------------------------------------------------------------------------
# quantize_u8: one-pass kernel and the fallback give the same rounding
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["kernel", "fallback", "kernel_fails"])
def quantize_path(request, monkeypatch):
    monkeypatch.setattr(frames_mod, "_QUANTIZE_UNSUPPORTED", set())
    if request.param == "fallback":
        monkeypatch.setattr(frames_mod, "_QUANTIZE_KERNEL", False)
    elif request.param == "kernel_fails":  # a torch build or device without quantized tensors

        def unsupported(*args, **kwargs):
            raise NotImplementedError("no quantized backend")

        monkeypatch.setattr(torch, "quantize_per_tensor", unsupported)
    yield request.param
    if request.param == "kernel_fails":
        assert frames_mod._QUANTIZE_UNSUPPORTED == {"cpu"}  # tried once, then plain ops


def test_quantize_u8_exact_on_8bit_values(quantize_path):
    k = torch.arange(256, dtype=torch.uint8)
    x = (k.float() / 255.0).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    q = quantize_u8(x)
    assert q.dtype == torch.uint8 and q.shape == x.shape
    assert q.is_contiguous(memory_format=torch.channels_last)  # the layout the uint8 resize wants
    assert torch.equal(q[0, 0].flatten(), k) and torch.equal(q[1, 2].flatten(), k)


def test_quantize_u8_rounds_to_nearest_and_clamps(quantize_path):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 32, 40, generator=g) * 1.4 - 0.2  # some values outside [0, 1]
    q = quantize_u8(x).int()
    exact = (x.double() * 255).clamp(0, 255)
    ref = torch.floor(exact + 0.5).int()
    tie = (exact - exact.floor() - 0.5).abs() < 1e-4  # float32 rounding may go either way here
    assert torch.equal(q[~tie], ref[~tie])
    assert (q - ref).abs().max() <= 1
    assert int(q.min()) == 0 and int(q.max()) == 255


def test_framebatch_uint8_matches_for_other_float_dtypes_and_layouts(quantize_path):
    k = torch.randint(0, 256, (2, 16, 20, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for dt in (torch.float32, torch.float16, torch.float64):
        for planar in (False, True):
            x = k.to(dt) / 255
            fb = FrameBatch(as_tchw(x.permute(0, 3, 1, 2).contiguous() if planar else x))
            u8 = fb.uint8()
            assert torch.equal(u8, k.permute(0, 3, 1, 2)), (dt, planar)
            # channels-last whatever the input's layout: torch's fast uint8 resize needs it
            assert u8.is_contiguous(memory_format=torch.channels_last), (dt, planar)


def test_quantize_u8_gives_no_deprecation_warning():
    # torch's quantized-tensor deprecation notice is torch's concern, not the user's; the
    # warning fires once per process, hence a fresh one with warnings as errors.
    code = (
        "import torch; from wanprep_torch.frames import quantize_u8; "
        "print(int(quantize_u8(torch.full((1, 3, 16, 16), 0.6)).max()))"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "153"


@pytest.mark.parametrize("bad", [np.zeros((2, 16, 16, 3), np.float32), [[0.0]], "frames", None])
def test_type_error_for_non_tensor(bad):
    with pytest.raises(TypeError):
        as_tchw(bad)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.int8, torch.complex64])
def test_type_error_for_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        as_tchw(torch.zeros(2, 16, 16, 3, dtype=dtype))


@pytest.mark.parametrize(
    "shape",
    [
        (0, 16, 16, 3),  # empty
        (0, 3, 16, 16),
        (16, 16),  # rank 2
        (1, 2, 16, 16, 3),  # rank 5
        (2, 16, 16, 4),  # RGBA
        (2, 16, 16, 1),  # grey
        (2, 4, 16, 16),
        (2, 1, 16, 16),
        (16, 16, 4),
        (2, 15, 16, 3),  # under 16 px
        (2, 3, 16, 8),
        (8, 8, 3),
    ],
)
def test_value_errors_for_bad_shapes(shape):
    with pytest.raises(ValueError):
        as_tchw(torch.zeros(shape))


def test_messages_are_clear():
    with pytest.raises(ValueError, match="empty"):
        as_tchw(torch.zeros(0, 16, 16, 3))
    with pytest.raises(ValueError, match="channels"):
        as_tchw(torch.zeros(2, 16, 16, 4))
    with pytest.raises(ValueError, match="16"):
        as_tchw(torch.zeros(2, 10, 16, 3))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_value_error_for_non_finite(value, dtype):
    x = torch.rand(2, 16, 17, 3).to(dtype)
    x[1, 5, 6, 2] = value
    with pytest.raises(ValueError, match="NaN|inf"):
        as_tchw(x)
    with pytest.raises(ValueError, match="NaN|inf"):
        list(iter_chunks(x, 1))
    with pytest.raises(ValueError, match="chunk 1.*(NaN|inf)"):
        list(iter_chunks([x[:1], x[1:]], 4))


# ---------------------------------------------------------------------------------------------
# iter_chunks
# ---------------------------------------------------------------------------------------------


def test_iter_chunks_tensor():
    x = torch.rand(10, 16, 18, 3)
    chunks = list(iter_chunks(x, 4))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    assert all(c.shape[1:] == (3, 16, 18) for c in chunks)
    assert torch.equal(torch.cat(chunks), x.permute(0, 3, 1, 2))


def test_iter_chunks_iterable_rechunks_in_order():
    parts = [torch.rand(3, 16, 20, 3), torch.rand(5, 3, 16, 20), torch.rand(16, 20, 3)]
    chunks = list(iter_chunks(iter(parts), 2))
    assert all(c.shape[0] <= 2 for c in chunks)
    want = torch.cat([parts[0].permute(0, 3, 1, 2), parts[1], parts[2].permute(2, 0, 1)[None]])
    assert torch.equal(torch.cat(chunks), want)


def test_iter_chunks_mismatched_size_names_chunk():
    parts = [torch.rand(2, 16, 20, 3), torch.rand(2, 16, 20, 3), torch.rand(2, 17, 20, 3)]
    with pytest.raises(ValueError, match="chunk 2"):
        list(iter_chunks(parts, 4))


def test_iter_chunks_bad_chunk_names_chunk():
    with pytest.raises(ValueError, match="chunk 1"):
        list(iter_chunks([torch.rand(2, 16, 20, 3), torch.rand(2, 16, 20, 4)], 4))
    with pytest.raises(TypeError, match="chunk 1"):
        list(iter_chunks([torch.rand(2, 16, 20, 3), torch.zeros(2, 16, 20, 3, dtype=torch.int32)], 4))


def test_iter_chunks_empty_iterable():
    with pytest.raises(ValueError, match="empty"):
        list(iter_chunks([], 4))
    with pytest.raises(ValueError, match="empty"):
        list(iter_chunks(iter(()), 4))


def test_iter_chunks_rejects_non_iterables():
    with pytest.raises(TypeError):
        list(iter_chunks(42, 4))
    with pytest.raises(TypeError):
        list(iter_chunks("video.mp4", 4))


# ---------------------------------------------------------------------------------------------
# run_in_batches
# ---------------------------------------------------------------------------------------------


def test_is_out_of_memory():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("bad value"))


def test_run_in_batches_no_oom():
    calls = []
    res, b = run_in_batches(10, 4, lambda s, e: calls.append((s, e)) or list(range(s, e)))
    assert calls == [(0, 4), (4, 8), (8, 10)]
    assert [x for r in res for x in r] == list(range(10)) and b == 4
    assert run_in_batches(0, 4, lambda s, e: 1 / 0) == ([], 4)


def test_run_in_batches_halves_on_oom_and_retries_same_range():
    calls = []

    def fn(s, e):
        calls.append((s, e))
        if e - s > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return list(range(s, e))

    seen = []
    with pytest.warns(RuntimeWarning):
        res, b = run_in_batches(13, 16, fn, on_oom=seen.append)
    assert [x for r in res for x in r] == list(range(13))  # complete, in order
    assert b == 2 and seen == [8, 4, 2]
    assert calls[:4] == [(0, 13), (0, 8), (0, 4), (0, 2)]  # the same start retried


def test_run_in_batches_oom_mid_run_keeps_finished_batches():
    state = {"n": 0}
    calls = []

    def fn(s, e):
        calls.append((s, e))
        state["n"] += 1
        if state["n"] == 3:  # a transient OOM on the third call
            raise MemoryError()
        return (s, e)

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res, b = run_in_batches(20, 8, fn)
    assert any(issubclass(x.category, RuntimeWarning) for x in w)
    assert calls[:4] == [(0, 8), (8, 16), (16, 20), (16, 20)]
    assert res[0] == (0, 8) and res[1] == (8, 16)
    covered = [i for s, e in res for i in range(s, e)]
    assert covered == list(range(20)) and b == 4


def test_run_in_batches_non_oom_propagates():
    def fn(s, e):
        raise ValueError("bad input")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on the way
        with pytest.raises(ValueError, match="bad input"):
            run_in_batches(10, 8, fn)


def test_run_in_batches_oom_at_batch_one_propagates():
    def fn(s, e):
        raise RuntimeError("CUDA out of memory")

    with pytest.warns(RuntimeWarning):
        with pytest.raises(RuntimeError, match="out of memory"):
            run_in_batches(5, 4, fn)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_in_batches(5, 1, fn)
