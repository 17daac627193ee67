"""Helpers shared by the converters: path checks, loading/saving (external data), ORT runs."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx
from onnx import external_data_helper

# Save weights beside the model above this size: protobuf cannot serialise a message over 2 GB,
# and leaving headroom avoids failing on the graph/metadata on top of the weights.
EXTERNAL_DATA_THRESHOLD = int(1.5 * 1024**3)

Log = Callable[[str], None]


class ConversionError(Exception):
    """A conversion or its verification failed; nothing was written to the output path."""


class InputError(ConversionError):
    """The request itself is wrong (missing/non-ONNX/already-converted file, unsafe output path)."""


class ValidationFailed(ConversionError):
    """The converted model misses the accuracy thresholds (``report`` has the numbers); OUT
    was not written."""

    def __init__(self, msg: str, report):
        super().__init__(msg)
        self.report = report


def no_log(_msg: str) -> None:
    pass


def stdout_log(prefix: str) -> Log:
    def log(msg: str) -> None:
        print(f"[{prefix}] {msg}", flush=True)

    return log


# ----------------------------------------------------------------------------- paths


def check_paths(in_path, out_path, force: bool = False) -> tuple[Path, Path]:
    """Refuse anything that could clobber the input or an existing output."""
    src, dst = Path(in_path), Path(out_path)
    if not src.exists():
        raise InputError(f"{src}: file not found")
    if not src.is_file():
        raise InputError(f"{src}: not a regular file")
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise InputError(f"{dst}: output is the same file as the input; choose another output path")
    if dst.exists() and not force:
        raise InputError(f"{dst}: output already exists (pass --force / force=True to overwrite)")
    if dst.exists() and not dst.is_file():
        raise InputError(f"{dst}: output exists and is not a regular file")
    return src, dst


def data_file_name(out_path: Path) -> str:
    return out_path.name + ".data"


def check_data_file_not_input(out_path: Path, input_files: Iterable[Path]) -> None:
    """The output's external-data file must never be one the input reads from."""
    target = (out_path.parent / data_file_name(out_path)).resolve()
    for f in input_files:
        if f.resolve() == target:
            raise InputError(f"{out_path}: its external data file {target.name} would overwrite the input's weights")


# ----------------------------------------------------------------------------- loading


def _iter_tensors(model: onnx.ModelProto):
    # Public helpers only cover the top level; that is where exporters put external weights.
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors


def external_data_files(model: onnx.ModelProto, base_dir: Path) -> list[Path]:
    files: list[Path] = []
    for t in _iter_tensors(model):
        if external_data_helper.uses_external_data(t):
            loc = external_data_helper.ExternalDataInfo(t).location
            p = base_dir / loc
            if p not in files:
                files.append(p)
    return files


@dataclass
class Loaded:
    model: onnx.ModelProto
    path: Path
    data_files: list[Path] = field(default_factory=list)

    @property
    def uses_external_data(self) -> bool:
        return bool(self.data_files)


def load_skeleton(path) -> Loaded:
    """Read the graph without pulling in external weights (cheap, and under protobuf's 2 GB)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends: the bytes are not a ModelProto
        raise InputError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    # Arbitrary bytes can occasionally decode as an (almost) empty ModelProto.
    if not model.opset_import or len(model.graph.node) == 0 or len(model.graph.output) == 0:
        raise InputError(f"{path}: not an ONNX model (no graph nodes/outputs/opset)")
    files = external_data_files(model, path.parent)
    for f in files:
        if not f.is_file():
            raise InputError(f"{path}: external data file {f} is missing")
    return Loaded(model, path, files)


def load_weights(loaded: Loaded) -> Loaded:
    if loaded.data_files:
        external_data_helper.load_external_data_for_model(loaded.model, str(loaded.path.parent))
    return loaded


def load_model(path) -> Loaded:
    return load_weights(load_skeleton(path))


def weight_bytes(model: onnx.ModelProto) -> int:
    """Serialized size estimate without serialising (ByteSize would choke past 2 GB)."""
    total = 0
    for t in _iter_tensors(model):
        total += len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (len(t.int64_data) + len(t.double_data))
    return total


def save_model(model: onnx.ModelProto, path: Path, external: bool) -> None:
    path = Path(path)
    data = path.parent / data_file_name(path)
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


class Staging:
    """Write candidates into a private folder beside OUT; move into place only once verified."""

    def __init__(self, out_path: Path):
        self.out = Path(out_path)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        self.path = self.dir / self.out.name

    def commit(self) -> Path:
        data = self.dir / data_file_name(self.out)
        if data.exists():
            os.replace(data, self.out.parent / data.name)
        os.replace(self.path, self.out)
        return self.out

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- onnxruntime


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}

# Stand-in for symbolic non-batch dims when we must invent an input (YOLO exports use
# symbolic height/width; 640 is divisible by every stride they use).
DEFAULT_FREE_DIM = 640


def make_session(path, providers: Sequence[str] = ("CPUExecutionProvider",)):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Failed candidate runs are expected and reported by the caller; keep ORT's own log quiet.
    opts.log_severity_level = 4
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers))
    except Exception as e:
        raise ConversionError(f"{path}: onnxruntime cannot load the model: {e}") from None


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple  # ints, or str/None for symbolic dims
    dtype: type


def input_specs(sess) -> list[InputSpec]:
    specs = []
    for i in sess.get_inputs():
        if i.type not in _ORT_TYPES:
            raise ConversionError(f"input {i.name!r} has unsupported type {i.type}")
        specs.append(InputSpec(i.name, tuple(i.shape), _ORT_TYPES[i.type]))
    return specs


def graph_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """input_specs from the graph itself (no session): the inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).type
        except Exception:
            raise ConversionError(f"input {vi.name!r} has unsupported type {tt.elem_type}") from None
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                      for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, shape, dtype))
    return specs


def fixed_batch(spec: InputSpec) -> int | None:
    return spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) else None


def concrete_shape(spec: InputSpec, batch: int | None) -> tuple[int, ...]:
    dims = []
    for i, d in enumerate(spec.shape):
        if i == 0 and batch is not None:
            dims.append(batch)
        elif isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            dims.append(1 if i == 0 else DEFAULT_FREE_DIM)
    return tuple(dims)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def random_array(spec: InputSpec, batch: int | None, rng: np.random.Generator, imagenet: bool = False) -> np.ndarray:
    shape = concrete_shape(spec, batch)
    if np.issubdtype(spec.dtype, np.floating):
        # Image-like [0,1] values; pose models expect them ImageNet-normalised.
        x = rng.random(shape, dtype=np.float32)
        if imagenet and len(shape) == 4 and shape[1] == 3:
            x = (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
        return x.astype(spec.dtype)
    if spec.dtype is np.bool_:
        return np.zeros(shape, np.bool_)
    return rng.integers(0, 2, size=shape).astype(spec.dtype)


def random_feed(specs: Sequence[InputSpec], batch: int | None, rng, imagenet: bool = False) -> dict:
    return {s.name: random_array(s, batch, rng, imagenet) for s in specs}


def run(sess, feed: dict) -> list[np.ndarray]:
    specs = {s.name: s for s in input_specs(sess)}
    cast = {k: np.ascontiguousarray(v.astype(specs[k].dtype, copy=False)) for k, v in feed.items()}
    return sess.run(None, cast)


def print_err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def report_failure(e: ConversionError) -> int:
    """A converter command's failure: the one-line error on stderr, and its exit status (2 for
    bad input, 1 for a conversion that failed)."""
    print_err(str(e))
    return 2 if isinstance(e, InputError) else 1
