"""ONNX Runtime sessions that read and write torch memory (IO binding by data pointer).

Owns providers, session options, the batch axis (dynamic or fixed), model signature checks
and out-of-memory back-off. Knows nothing of what the models mean beyond their signatures.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .interrupt import checkpoint

__all__ = [
    "ModelError",
    "check_model_file",
    "model_kind",
    "check_detector",
    "check_pose",
    "open_models",
    "as_model",
    "cuda_provider_options",
    "OrtModel",
    "TensorSpec",
    "physical_cores",
    "is_out_of_memory",
    "run_in_batches",
    "resolve_batch_size",
    "RuntimeConfig",
]


class ModelError(ValueError):
    """A model file that is missing, not ONNX, or of the wrong kind."""


_ORT_TYPES = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(double)": torch.float64,
}
_NP_TYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or None for a symbolic dim) and torch dtype of a model input/output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: torch.dtype

    @classmethod
    def from_ort(cls, arg) -> "TensorSpec":
        if arg.type not in _ORT_TYPES:
            raise ModelError(f"unsupported tensor type {arg.type} for '{arg.name}'")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or ()))
        return cls(arg.name, shape, _ORT_TYPES[arg.type])

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {str(self.dtype).replace('torch.', '')}"


def physical_cores() -> int:
    """Physical cores (ONNX Runtime's intra-op threads scale with those, not hyper-threads)."""
    try:
        import psutil  # optional

        n = psutil.cpu_count(logical=False)
        if n:
            return n
    except Exception:
        pass
    try:
        cores = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
        if cores:
            return min(len(cores), len(os.sched_getaffinity(0)))
    except Exception:
        pass
    return os.cpu_count() or 1


_OOM_MARKERS = ("out of memory", "failed to allocate", "cudaerrormemoryallocation", "cudnn_status_alloc_failed", "bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's and ONNX Runtime's out-of-memory errors."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return any(m in msg for m in _OOM_MARKERS)


def run_in_batches(
    total: int,
    batch: int,
    fn: Callable[[int, int], object],
    on_oom: Callable[[int], None] | None = None,
) -> tuple[list, int]:
    """Call ``fn(start, stop)`` over ``range(total)`` in batches; on out-of-memory halve the
    batch and retry the same frames (finished batches are kept), down to 1.

    Returns:
        (the results in order, the batch size that worked last).
    """
    results = []
    start = 0
    while start < total:
        stop = min(start + batch, total)
        try:
            results.append(fn(start, stop))
        except Exception as exc:  # noqa: BLE001 - only OOM is retried, the rest re-raised
            if batch <= 1 or not is_out_of_memory(exc):
                raise
            batch = max(batch // 2, 1)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(f"out of memory; retrying with batch size {batch}", RuntimeWarning, stacklevel=2)
            if on_oom is not None:
                on_oom(batch)
            continue
        start = stop
    return results, batch


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the models run (the one home of these defaults).

    device: "cpu", "cuda", "cuda:1" or a torch.device (CUDA frames use ONNX Runtime's CUDA
        provider; without it, the CPU provider with a warning).
    batch_size: frames per model run, or "auto" (1 on the CPU, 16 on CUDA).
    intra_op_threads: ONNX Runtime CPU threads (None: physical cores).
    providers: explicit ONNX Runtime providers for both sessions (None: by the device).
    """

    device: str | torch.device = "cpu"
    batch_size: int | str = "auto"
    intra_op_threads: int | None = None
    providers: Sequence | None = None

    def resolved_device(self) -> torch.device:
        """The torch device, "cuda" pinned to the current index; ValueError when torch sees
        no CUDA device."""
        device = torch.device(self.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device} requested but torch sees no CUDA device")
            if device.index is None:  # "cuda" means the current device; frames report an index
                device = torch.device("cuda", torch.cuda.current_device())
        return device


def resolve_batch_size(batch_size: int | str, device: torch.device) -> int:
    """'auto': 1 on the CPU (on 2-core CPUs batch 8 ran slower per frame than
    batch 1 for both models), 16 on a GPU (halved on out-of-memory)."""
    if batch_size == "auto":
        return 16 if device.type == "cuda" else 1
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
    return batch_size


_DLLS_PRELOADED = False


def _preload_cuda_libraries() -> None:
    """Let onnxruntime-gpu find the CUDA/cuDNN libraries that torch's wheels ship (ORT >= 1.21);
    without it the CUDA provider can fail to load and fall back to the CPU."""
    global _DLLS_PRELOADED
    if _DLLS_PRELOADED:
        return
    _DLLS_PRELOADED = True
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # best effort: the session's providers tell what really runs
            warnings.warn(f"onnxruntime.preload_dlls() failed: {exc}", RuntimeWarning, stacklevel=3)


def check_model_file(path: Path, role: str) -> None:
    """ModelError unless ``path`` is an existing file (named in the message with its role)."""
    if not path.exists():
        raise ModelError(f"{role} model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"{role} model path is a folder, not an ONNX file: {path}")


class OrtModel:
    """One ONNX model in one ONNX Runtime session, run on torch tensors by IO binding.

    Args:
        path: the .onnx file (external data next to it is found by ONNX Runtime).
        device: where the caller's tensors live; picks the CUDA provider for CUDA devices.
        providers: explicit ONNX Runtime providers (overrides the device's choice).
        intra_op_threads: CPU threads (default: physical cores).
        role: name used in messages ("detector", "pose").
        spin: let ONNX Runtime's threads spin-wait (off by default: measured end to end on
            2-core CPUs, the whole pipeline ran faster without, though the models alone run
            faster with it; BENCHMARKS.md).
        stop_spinning: with ``spin``, end the spin when each run returns (so torch work between
            runs keeps its cores); False is ONNX Runtime's default.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        providers: Sequence | None = None,
        intra_op_threads: int | None = None,
        role: str = "model",
        spin: bool = False,
        stop_spinning: bool = True,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        self.role = role
        self.device = torch.device(device)
        check_model_file(self.path, role)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(intra_op_threads or physical_cores())
        so.log_severity_level = 3
        # Spinning makes a model's own run faster, but spinning threads fight torch for the
        # cores around the runs; end to end the pipeline was faster without (BENCHMARKS.md).
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if stop_spinning:
            so.add_session_config_entry("session.force_spinning_stop", "1")
        # The CUDA provider runs on torch's current stream (creation time), so torch's writes to
        # the input are ordered before the run without a host wait.
        self._stream = None
        if providers is None and self.device.type == "cuda" and torch.cuda.is_available():
            self._stream = torch.cuda.current_stream(self.device)
        wanted = list(providers) if providers is not None else self._default_providers()
        if self.device.type == "cuda" and torch.cuda.is_available():
            _preload_cuda_libraries()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelError(f"cannot load {role} model {self.path}: not a valid ONNX model ({exc})") from None
        self.providers = self.session.get_providers()
        # get_available_providers() lists CUDA even where its libraries are missing; only the
        # created session tells what really runs.
        self.on_cuda = self.providers[0] == "CUDAExecutionProvider"
        if self.device.type == "cuda" and not self.on_cuda:
            warnings.warn(
                f"{role} model {self.path.name}: ONNX Runtime's CUDA provider is not available "
                f"(session providers: {self.providers}); running on the CPU provider, so frames "
                "are copied to the host for this model. Install onnxruntime-gpu for CUDA.",
                RuntimeWarning,
                stacklevel=3,
            )
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or not outs:
            raise ModelError(
                f"{role} model {self.path} has {len(ins)} inputs and {len(outs)} outputs; expected one image input"
            )
        self.input = TensorSpec.from_ort(ins[0])
        self.output = TensorSpec.from_ort(outs[0])
        if len(self.input.shape) != 4:
            raise ModelError(f"{role} model {self.path}: input {self.input.describe()} is not (B, 3, H, W)")
        self.fixed_batch = self.input.shape[0]  # None when the batch axis is dynamic
        self._mem_device = torch.device("cuda", self._cuda_index()) if self.on_cuda else torch.device("cpu")

    def _default_providers(self) -> list:
        if self.device.type == "cuda":
            handle = self._stream.cuda_stream if self._stream is not None else None
            return [("CUDAExecutionProvider", cuda_provider_options(self._cuda_index(), handle)), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _shares_torch_stream(self) -> bool:
        """ONNX Runtime runs on the stream torch is using now (no host wait needed)."""
        return self._stream is not None and torch.cuda.current_stream(self._mem_device) == self._stream

    def _cuda_index(self) -> int:
        if self.device.type != "cuda":
            return 0
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def __repr__(self) -> str:
        return f"OrtModel({self.path.name}, {self.input.describe()} -> {self.output.describe()}, {self.providers[0]})"

    @property
    def input_hw(self) -> tuple[int | None, int | None]:
        return self.input.shape[2], self.input.shape[3]

    def run(self, x: torch.Tensor, batch_size: int | None = None, workspace=None) -> torch.Tensor:
        """Run the model on ``x`` (N, 3, H, W); returns output 0 as (N, ...) on x's device.

        Splits into batches of the model's fixed batch, or ``batch_size`` (default: all of N)
        for a dynamic one; a fixed-batch model gets its last batch padded with zeros. With a
        :class:`~wanprep_torch.buffers.Workspace`, ONNX Runtime writes into a reused buffer
        (valid until this model's next run).
        """
        if x.dim() != 4:
            raise ValueError(f"{self.role} input must be (N, C, H, W), got {tuple(x.shape)}")
        n = x.shape[0]
        src = x.to(device=self._mem_device, dtype=self.input.dtype).contiguous()
        step = self.fixed_batch or min(batch_size or n, n)
        shape = self._output_shape(n)
        out = None
        if shape is not None:
            if workspace is not None:
                out = workspace.get(f"{self.role}_output", shape, self.output.dtype, self._mem_device)
            else:
                out = torch.empty(shape, dtype=self.output.dtype, device=self._mem_device)
        outs = []
        for start in range(0, n, step):
            checkpoint()  # a requested stop ends the run here, between model batches
            chunk = src[start : start + step]
            dst = out[start : start + step] if shape is not None else None
            if self.fixed_batch and chunk.shape[0] < self.fixed_batch:
                pad = chunk.new_zeros((self.fixed_batch - chunk.shape[0],) + tuple(chunk.shape[1:]))
                part = self._run_bound(torch.cat([chunk, pad]))[: chunk.shape[0]]
                if dst is not None:
                    dst.copy_(part)
                outs.append(part)
            else:
                outs.append(self._run_bound(chunk, dst))
        y = out if shape is not None else (outs[0] if len(outs) == 1 else torch.cat(outs))
        return y.to(x.device)

    def _output_shape(self, n: int) -> tuple[int, ...] | None:
        dims = self.output.shape
        if not dims or any(d is None for d in dims[1:]):
            return None
        return (n,) + tuple(dims[1:])

    def _run_bound(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """One session run with input and output bound to torch memory (``out`` when given)."""
        dev_type = "cuda" if self.on_cuda else "cpu"
        dev_id = self._mem_device.index or 0
        io = self.session.io_binding()
        if self.on_cuda and not self._shares_torch_stream():
            # ORT runs on another stream than torch's current one: torch must finish writing
            # the input first.
            torch.cuda.current_stream(self._mem_device).synchronize()
        io.bind_input(
            self.input.name, dev_type, dev_id, _NP_TYPES[self.input.dtype], tuple(x.shape), x.data_ptr()
        )
        shape = self._output_shape(x.shape[0])
        if shape is not None:
            if out is None:
                out = torch.empty(shape, dtype=self.output.dtype, device=self._mem_device)
            io.bind_output(self.output.name, dev_type, dev_id, _NP_TYPES[self.output.dtype], shape, out.data_ptr())
            self.session.run_with_iobinding(io)
            io.synchronize_outputs()
            return out
        # A symbolic non-batch output dim: let ORT allocate on the device, then copy on that
        # device into torch memory (no host round trip).
        io.bind_output(self.output.name, dev_type, dev_id)
        self.session.run_with_iobinding(io)
        io.synchronize_outputs()
        val = io.get_outputs()[0]
        out = _wrap_ortvalue(val, self.output.dtype, self._mem_device).clone()
        if self.on_cuda:
            # The clone must finish before ``val`` (which owns the memory) is released.
            torch.cuda.current_stream(self._mem_device).synchronize()
        return out


def as_model(model, device, providers=None, intra_op_threads=None, role: str = "model") -> "OrtModel":
    """``model`` itself when it is an :class:`OrtModel` already, else the ONNX file opened."""
    return model if isinstance(model, OrtModel) else OrtModel(model, device, providers, intra_op_threads, role=role)


def cuda_provider_options(device_id: int, stream_handle: int | None = None) -> dict:
    """CUDA provider options: the device, and torch's stream as ONNX Runtime's compute stream
    when ``stream_handle`` (a ``torch.cuda.Stream.cuda_stream``) is given."""
    opts = {"device_id": int(device_id)}
    if stream_handle is not None:
        opts["has_user_compute_stream"] = "1"
        opts["user_compute_stream"] = str(int(stream_handle))
    return opts


def model_kind(output_shape: Sequence[int | None]) -> str:
    """What a model's first output says it is (None or a non-positive dim: symbolic).

    - "pose": (B, K, h, w) heatmaps with a spatial extent;
    - "detector": (B, R, 6) YOLOv10 end-to-end rows, or (B, 4 + C, A) YOLOv8 grids (84 rows for
      COCO; otherwise the anchors outnumber the rows);
    - "generic": anything else.

    The one home of this rule: the runtime's checks and ``converters`` both use it.
    """
    o = tuple(d if isinstance(d, (int, np.integer)) and d > 0 else None for d in output_shape)
    if len(o) == 4 and not (o[2] == 1 and o[3] == 1):
        return "pose"
    if len(o) == 3 and (o[2] == 6 or (o[1] is not None and o[1] > 4 and (o[2] is None or o[1] == 84 or o[1] < o[2]))):
        return "detector"
    return "generic"


def check_detector(m: "OrtModel") -> None:
    """ModelError unless ``m`` has a person detector's signature (named in the message)."""
    expected = "input (B, 3, 640, 640) and output (B, 300, 6) [YOLOv10] or (B, 4+C, N) [YOLOv8]"
    kind = model_kind(m.output.shape)
    if m.input.shape[1] not in (3, None) or kind != "detector":
        hint = " It looks like a pose model." if kind == "pose" else ""
        raise ModelError(
            f"{m.path} is not a person detector: it has {m.input.describe()} -> {m.output.describe()};"
            f" expected {expected}.{hint}"
        )


def check_pose(m: "OrtModel") -> None:
    """ModelError unless ``m`` has a wholebody (133-keypoint) pose model's signature."""
    expected = "input (B, 3, 256, 192) and output heatmaps (B, 133, 64, 48)"
    kind = model_kind(m.output.shape)
    if m.input.shape[1] not in (3, None) or kind != "pose" or m.output.shape[1] not in (133, None):
        hint = " It looks like a detector." if kind == "detector" else ""
        raise ModelError(
            f"{m.path} is not a wholebody pose model: it has {m.input.describe()} -> {m.output.describe()};"
            f" expected {expected}.{hint}"
        )


def open_models(det_model, pose_model, device: torch.device, providers=None, intra_op_threads=None) -> tuple["OrtModel", "OrtModel"]:
    """The detector and pose sessions, checked for their kinds, with one warning (not one per
    model) when CUDA was asked for but ONNX Runtime's CUDA provider is missing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = as_model(det_model, device, providers, intra_op_threads, role="detector")
        pose = as_model(pose_model, device, providers, intra_op_threads, role="pose")
    fallback = [m.role for m in (det, pose) if device.type == "cuda" and not m.on_cuda]
    for w in caught:  # pass on anything else the sessions said
        if not (fallback and "CUDA provider is not available" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if fallback:
        warnings.warn(
            f"ONNX Runtime's CUDA provider is not available (session providers: {det.providers}); "
            f"the {' and '.join(fallback)} model{'s run' if len(fallback) > 1 else ' runs'} on the CPU provider "
            "and frames are copied to the host for it. Install onnxruntime-gpu for CUDA.",
            RuntimeWarning,
            stacklevel=3,
        )
    check_detector(det)
    check_pose(pose)
    return det, pose


def _wrap_ortvalue(val, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A torch view of an OrtValue's memory (valid while ``val`` lives)."""
    shape = tuple(val.shape())
    ptr = val.data_ptr()
    if device.type == "cuda":
        typestr = {torch.float32: "<f4", torch.float16: "<f2", torch.float64: "<f8"}[dtype]

        class _Iface:
            __cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "version": 2}

        return torch.as_tensor(_Iface(), device=device)
    ctype = {torch.float32: ctypes.c_float, torch.float16: ctypes.c_uint16, torch.float64: ctypes.c_double}[dtype]
    count = int(np.prod(shape)) if shape else 1
    arr = np.ctypeslib.as_array((ctype * count).from_address(ptr)).reshape(shape)
    t = torch.from_numpy(arr)
    return t.view(torch.float16) if dtype == torch.float16 else t
