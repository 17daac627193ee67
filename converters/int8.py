"""FP32 -> INT8 (onnxruntime.quantization), validated on frames of the user's own video.

    python -m converters.int8 IN.onnx OUT.onnx --video CLIP.mp4 [--det DET.onnx]
                              [--mode auto|dynamic|static] [--keep-float CAT,...] [--frames N]
                              [--width W --height H] [--max-mean PX] [--max-p95 PX]
                              [--min-iou X] [--min-worst-iou X] [--force] [--overwrite]

Two recipes (``--mode``):

- dynamic: weights INT8 ahead of time, activations quantized per run (MatMul/Gemm only:
  onnxruntime's dynamic ConvInteger is several times slower than FP32 convolution on the
  CPU). The default for pose models (ViTPose is MatMuls).
- static: QDQ, per-channel INT8 weights, UINT8 activations calibrated (min/max) on real inputs
  made from the video's frames. The default for detectors (YOLO is convolutions).

``--keep-float`` names the groups of nodes left in float (see :data:`KEEP_FLOAT`): attention
(the softmax and the two activation x activation MatMuls around it), layernorm, head (the
output layer: every node between the last Conv/MatMul on each path and the output, those
included). The defaults per kind and mode are in :data:`DEFAULT_KEEP_FLOAT`; BENCHMARKS.md
has the measurement behind them. The model is checked on the video (``int8_check``) and OUT is
written only when it meets the thresholds, unless ``--force``.

Exit status: 0 written; 1 the conversion failed or the result misses the thresholds (OUT not
written, the shortfall named); 2 a bad request (missing/non-ONNX file, unreadable video, OUT
exists without --overwrite, a pose model without --det).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ._common import (
    EXTERNAL_DATA_THRESHOLD,
    ConversionError,
    InputError,
    Log,
    Staging,
    ValidationFailed,
    check_data_file_not_input,
    check_paths,
    load_skeleton,
    no_log,
    print_err,
    report_failure,
    stdout_log,
    weight_bytes,
)
from .int8_check import (
    DetectorReport,
    ModelInputs,
    PoseReport,
    Thresholds,
    frames_from,
    model_inputs,
    validate_detector,
    validate_pose,
)

__all__ = [
    "Int8Settings",
    "QuantInfo",
    "Int8Result",
    "ValidationFailed",
    "KEEP_FLOAT",
    "DEFAULT_KEEP_FLOAT",
    "quantize",
    "float_nodes",
    "split_frames",
    "open_stages",
    "convert_int8",
    "is_int8_model",
    "main",
]

HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# A heavy op whose weight has fewer elements is decoding arithmetic (YOLO's DFL: 16).
DECODE_WEIGHTS = 256
DYNAMIC_OPS = ("MatMul", "Gemm")
# Ops a quantized graph has and an FP32 one does not.
INT8_OPS = ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
            "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
LAYERNORM_OPS = ("LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Reciprocal")

KEEP_FLOAT = {
    "attention": "attention softmax and the activation x activation MatMuls around it",
    "layernorm": "layer norms (LayerNormalization, or its ReduceMean/Pow/Sqrt pieces)",
    "head": "the output layer: from the last Conv/MatMul of each path to the output",
}
DEFAULT_KEEP_FLOAT = {
    ("pose", "dynamic"): ("attention",),
    ("pose", "static"): ("attention", "layernorm", "head"),
    ("detector", "dynamic"): ("head",),
    ("detector", "static"): ("head",),
}
DEFAULT_MODE = {"pose": "dynamic", "detector": "static"}
# Bump when a recipe changes: cached INT8 models made by an older one are rebuilt.
RECIPE_VERSION = "2"


@dataclass(frozen=True)
class Int8Settings:
    """How to quantize: ``mode`` "auto" (per kind, :data:`DEFAULT_MODE`), "dynamic" or
    "static"; ``keep_float`` groups of :data:`KEEP_FLOAT` (None: the kind's and mode's
    default); ``per_channel`` weights (static)."""

    mode: str = "auto"
    keep_float: tuple[str, ...] | None = None
    per_channel: bool = True

    def resolve(self, kind: str) -> "Int8Settings":
        if kind not in DEFAULT_MODE:
            raise InputError(f"INT8 conversion is for the pose model and the detector; this model's output says {kind!r}")
        mode = DEFAULT_MODE[kind] if self.mode == "auto" else self.mode
        if mode not in ("dynamic", "static"):
            raise InputError(f"unknown INT8 mode {self.mode!r}; choose auto, dynamic or static")
        keep = DEFAULT_KEEP_FLOAT[(kind, mode)] if self.keep_float is None else tuple(self.keep_float)
        bad = [k for k in keep if k not in KEEP_FLOAT]
        if bad:
            raise InputError(f"unknown --keep-float group {bad[0]!r}; choose from {', '.join(KEEP_FLOAT)} (or none)")
        return Int8Settings(mode, tuple(sorted(set(keep))), self.per_channel)

    def key(self) -> str:
        """A stable text of the settings (with the recipe and onnxruntime versions) for cache keys."""
        import onnxruntime

        return json.dumps({**asdict(self), "recipe": RECIPE_VERSION, "ort": onnxruntime.__version__}, sort_keys=True)


@dataclass(frozen=True)
class QuantInfo:
    """What :func:`quantize` did: the settings used, the nodes kept in float by choice and the
    INT8 ops in the result (0: nothing in the graph is quantizable)."""

    settings: Int8Settings
    kept_float: int
    int8_ops: int


# ----------------------------------------------------------------------------- node groups


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Tensors that do not depend on the graph's inputs: initializers, Constants and what is
    computed from them alone (exporters feed MatMul a Transpose of a weight, not the weight)."""
    names = {t.name for t in graph.initializer}
    for n in graph.node:  # ONNX graphs are topologically sorted
        if n.op_type == "Constant" or (n.input and all(i in names or not i for i in n.input)):
            names.update(n.output)
    return names


def _attention_nodes(graph: onnx.GraphProto) -> list[str]:
    consts = _constants(graph)
    out = [n.name for n in graph.node if n.op_type == "Softmax"]
    out += [n.name for n in graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and not any(i in consts for i in n.input)]
    return out


def _head_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes from each graph output back to (and including) the last heavy op on its path.

    A heavy op with a tiny constant weight is part of the decoding, not a layer: YOLO's DFL is
    a Conv with 16 fixed weights (0..15) after a softmax, and the walk goes on past it."""
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    seen, stack, out = set(), [o.name for o in graph.output], []
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        out.append(node.name)
        layer = node.op_type in HEAVY_OPS and any(sizes.get(i, 0) >= DECODE_WEIGHTS for i in node.input[1:2])
        if not layer:
            stack.extend(node.input)
    return out


def float_nodes(model: onnx.ModelProto, groups: Sequence[str]) -> list[str]:
    """Names of the nodes in the :data:`KEEP_FLOAT` ``groups`` of ``model`` (named nodes only:
    :func:`quantize` names every node first)."""
    g = model.graph
    names: list[str] = []
    if "attention" in groups:
        names += _attention_nodes(g)
    if "layernorm" in groups:
        names += [n.name for n in g.node if n.op_type in LAYERNORM_OPS]
    if "head" in groups:
        names += _head_nodes(g)
    return list(dict.fromkeys(names))


def _name_nodes(model: onnx.ModelProto) -> None:
    taken = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name, k = f"{n.op_type}_{i}", 1
            while name in taken:
                name, k = f"{n.op_type}_{i}_{k}", k + 1
            n.name = name
            taken.add(name)


def is_int8_model(model: onnx.ModelProto) -> bool:
    return any(n.op_type in INT8_OPS for n in model.graph.node)


# ----------------------------------------------------------------------------- quantization


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a (N, ...) array, one sample a run."""

    def __init__(self, name: str, data: np.ndarray, batch: int | None):
        step = batch or 1
        self._it = iter([{name: np.ascontiguousarray(data[i : i + step])}
                         for i in range(0, data.shape[0] - step + 1, step)])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # some onnxruntime versions call it
        pass


def quantize(src, dst, kind: str, settings: Int8Settings = Int8Settings(), calibration: np.ndarray | None = None,
             log: Log = no_log) -> QuantInfo:
    """Quantize the FP32 model ``src`` into ``dst`` (no validation).

    ``calibration``: (N, ...) real inputs for the static recipe (ignored by the dynamic one).
    """
    src, dst = Path(src), Path(dst)
    s = settings.resolve(kind)
    quiet = _QuietAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        return _quantize(src, dst, kind, s, calibration, log)
    finally:
        logging.getLogger().removeFilter(quiet)


class _QuietAdvice(logging.Filter):
    """onnxruntime logs advice to pre-process on every dynamic run; the static recipe does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(src: Path, dst: Path, kind: str, s: Int8Settings, calibration, log: Log) -> QuantInfo:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    loaded = load_skeleton(src)
    external = loaded.uses_external_data or weight_bytes(loaded.model) > EXTERNAL_DATA_THRESHOLD
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=dst.parent) as tmp:
        work = Path(tmp) / "named.onnx"
        model = onnx.load(str(src))
        _name_nodes(model)
        if s.mode == "static":
            onnx.save_model(model, str(work), save_as_external_data=external, all_tensors_to_one_file=True,
                            location="named.onnx.data")
            del model
            pre = Path(tmp) / "pre.onnx"
            # Shape inference and graph fusions first (onnxruntime's advice); symbolic shape
            # inference gives up on YOLO's dynamic head, ONNX's own is enough here.
            quant_pre_process(str(work), str(pre), skip_symbolic_shape=True, save_as_external_data=external,
                              all_tensors_to_one_file=True, external_data_location="pre.onnx.data")
            model = onnx.load(str(pre))
            _name_nodes(model)
            keep = float_nodes(model, s.keep_float)
            onnx.save_model(model, str(work), save_as_external_data=external, all_tensors_to_one_file=True,
                            location="named.onnx.data")
            if calibration is None or len(calibration) == 0:
                raise ConversionError(f"{src}: the static recipe needs calibration inputs (frames of a video)")
            inp = model.graph.input[0]
            dim0 = inp.type.tensor_type.shape.dim[0]
            batch = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else None
            del model
            log(f"static QDQ quantization (per-channel {s.per_channel}), calibrated on {len(calibration)} input(s); "
                f"{len(keep)} node(s) kept in float ({', '.join(s.keep_float) or 'none'})")
            quantize_static(str(work), str(dst), _Reader(inp.name, calibration, batch), quant_format=QuantFormat.QDQ,
                            per_channel=s.per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                            calibrate_method=CalibrationMethod.MinMax, use_external_data_format=external,
                            extra_options={"CalibTensorRangeSymmetric": False})
        else:
            keep = float_nodes(model, s.keep_float)
            onnx.save_model(model, str(work), save_as_external_data=external, all_tensors_to_one_file=True,
                            location="named.onnx.data")
            del model
            log(f"dynamic quantization of {', '.join(DYNAMIC_OPS)}; {len(keep)} node(s) kept in float "
                f"({', '.join(s.keep_float) or 'none'})")
            quantize_dynamic(str(work), str(dst), op_types_to_quantize=list(DYNAMIC_OPS), per_channel=False,
                             weight_type=QuantType.QInt8, nodes_to_exclude=keep, use_external_data_format=external)
    n_int8 = sum(n.op_type in INT8_OPS for n in onnx.load(str(dst), load_external_data=False).graph.node)
    return QuantInfo(s, len(keep), n_int8)


# ----------------------------------------------------------------------------- frames and stages


def split_frames(n: int) -> tuple[list[int], list[int]]:
    """(calibration, validation) frame indices of n frames: every third frame validates, the
    others calibrate (both all frames when n < 2), so the check does not grade its own
    calibration set."""
    if n < 2:
        return list(range(n)), list(range(n))
    val = [i for i in range(n) if i % 3 == 2] or [n - 1]
    return [i for i in range(n) if i not in val], val


def open_stages(det_path, pose_path=None):
    """The FP32 stages on the CPU (batch 1): (PersonDetector, PoseEstimator or None).
    InputError when a file is not the model it should be."""
    from wanprep_torch.detect import PersonDetector
    from wanprep_torch.pose import PoseEstimator
    from wanprep_torch.runtime import ModelError

    try:
        det = PersonDetector(det_path, "cpu", batch_size=1)
        pose = PoseEstimator(pose_path, "cpu", batch_size=1) if pose_path is not None else None
    except ModelError as e:
        raise InputError(str(e)) from None
    return det, pose


def model_kind_of(path) -> str:
    from wanprep_torch.runtime import model_kind

    model = load_skeleton(path).model
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return model_kind([d.dim_value if d.HasField("dim_value") else None for d in dims])


# ----------------------------------------------------------------------------- convert + validate


@dataclass
class Int8Result:
    """A conversion: where it went (None: not written), what was done, the validation report,
    and ``forced``: written although it misses the thresholds."""

    path: Path | None
    kind: str
    info: QuantInfo
    report: PoseReport | DetectorReport
    forced: bool = False
    notes: list[str] = field(default_factory=list)


def quantize_checked(src, dst, kind: str, inputs: ModelInputs, detector, estimator,
                     settings: Int8Settings = Int8Settings(), thresholds: Thresholds = Thresholds(),
                     log: Log = no_log) -> tuple[QuantInfo, PoseReport | DetectorReport]:
    """Quantize ``src`` into ``dst`` (calibrated on ``inputs``' calibration frames) and validate
    it on the validation frames against the FP32 stages. Writes ``dst`` whatever the verdict."""
    calib_idx, val_idx = split_frames(len(inputs))
    data = inputs.pose if kind == "pose" else inputs.det
    info = quantize(src, dst, kind, settings, data[calib_idx], log)
    val = inputs.take(val_idx)
    if kind == "pose":
        report = validate_pose(estimator, dst, val, thresholds)
    else:
        report = validate_detector(detector, dst, val, thresholds)
    return info, report


def convert_int8(in_path, out_path, frames, *, det_path=None, settings: Int8Settings = Int8Settings(),
                 thresholds: Thresholds = Thresholds(), count: int = 24, size: tuple[int, int] | None = None,
                 force: bool = False, overwrite: bool = False, log: Log | None = None) -> Int8Result:
    """Quantize IN to INT8 at OUT, calibrated and validated on the first ``count`` frames of
    ``frames`` (a video path, or a (T, H, W, 3) / (T, 3, H, W) tensor; ``size``: resize a
    video's frames to (H, W) as the run will).

    A pose model needs ``det_path``, the FP32 detector that finds the person to crop. OUT is
    written when validation passes, or with ``force`` (the result says ``forced``); otherwise
    ValidationFailed names every threshold missed and by how much.
    """
    log = log or no_log
    src, dst = check_paths(in_path, out_path, overwrite)
    skeleton = load_skeleton(src)
    check_data_file_not_input(dst, skeleton.data_files)
    if is_int8_model(skeleton.model):
        raise InputError(f"{src}: model is already quantized (it has INT8 ops); nothing to convert")
    del skeleton
    kind = model_kind_of(src)
    settings.resolve(kind)  # a bad mode or group fails before any work
    if kind == "pose" and det_path is None:
        raise InputError(f"{src} is a pose model: give the FP32 detector (--det DET.onnx) that finds the person to crop")
    shots = frames_from(frames, count, size)
    detector, estimator = open_stages(src if kind == "detector" else det_path, src if kind == "pose" else None)
    log(f"{kind} model; making real inputs from {shots.shape[0]} frame(s) with the FP32 stages")
    inputs = model_inputs(shots, detector, estimator)
    with Staging(dst) as st:
        info, report = quantize_checked(src, st.path, kind, inputs, detector, estimator, settings, thresholds, log)
        if info.int8_ops == 0:
            raise ConversionError(f"{src}: nothing in the graph is quantizable with the {info.settings.mode} recipe "
                                  f"(no {', '.join(DYNAMIC_OPS if info.settings.mode == 'dynamic' else HEAVY_OPS)} "
                                  f"outside the float groups); {dst} not written")
        for line in report.summary().splitlines():
            log(line)
        if not report.ok and not force:
            raise ValidationFailed(
                f"{src}: INT8 {kind} model fails validation on the video: {'; '.join(report.failures)}; "
                f"{dst} not written (--force writes it anyway)", report)
        path = st.commit()
    return Int8Result(path, kind, info, report, forced=not report.ok)


# ----------------------------------------------------------------------------- CLI


def _keep_float_arg(v: str) -> tuple[str, ...]:
    if v.strip().lower() in ("none", ""):
        return ()
    return tuple(x.strip() for x in v.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    t = Thresholds()
    p = argparse.ArgumentParser(
        prog="python -m converters.int8",
        description="Quantize an FP32 pose model or detector to INT8 (onnxruntime.quantization) for the CPU "
        "provider, calibrated and validated on the first frames of your video. OUT is written only if the "
        "INT8 model stays within the thresholds of FP32 (or with --force).",
        epilog="exit status: 0 written, 1 conversion failed or thresholds missed (OUT not written), 2 bad request",
    )
    p.add_argument("input", help="FP32 .onnx (pose model or person detector; kind read from its output)")
    p.add_argument("output", help="INT8 .onnx to write")
    p.add_argument("--video", required=True, help="your video: its first frames calibrate and validate")
    p.add_argument("--det", default=None, metavar="DET.onnx",
                   help="FP32 person detector, to crop the person for a pose model (required for one)")
    p.add_argument("--mode", choices=("auto", "dynamic", "static"), default="auto",
                   help="auto (default): dynamic for pose models, static (QDQ, calibrated) for detectors")
    p.add_argument("--keep-float", type=_keep_float_arg, default=None, metavar="GROUPS",
                   help=f"comma-separated groups kept in float ({', '.join(KEEP_FLOAT)}), or none; "
                   "default per kind and mode (README)")
    p.add_argument("--per-tensor", action="store_true", help="static: per-tensor weight scales (default per-channel)")
    p.add_argument("--frames", type=int, default=24, metavar="N",
                   help="first N frames read: two in three calibrate, every third validates (default 24)")
    p.add_argument("--width", type=int, default=None, help="resize frames to this width, as `wanprep run --width`")
    p.add_argument("--height", type=int, default=None, help="resize frames to this height")
    p.add_argument("--max-mean", type=float, default=t.pose_mean, metavar="PX",
                   help=f"pose: largest mean keypoint distance per group, crop px (default {t.pose_mean:g})")
    p.add_argument("--max-p95", type=float, default=t.pose_p95, metavar="PX",
                   help=f"pose: largest p95 keypoint distance per group, crop px (default {t.pose_p95:g})")
    p.add_argument("--min-iou", type=float, default=t.det_mean_iou,
                   help=f"detector: smallest mean IoU of the chosen box (default {t.det_mean_iou:g})")
    p.add_argument("--min-worst-iou", type=float, default=t.det_worst_iou,
                   help=f"detector: smallest IoU on any frame (default {t.det_worst_iou:g})")
    p.add_argument("--force", action="store_true", help="write OUT even when it misses the thresholds (reported)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return p


def _size_arg(reader_hw, width, height):
    from wanprep_torch.video import even_size, target_size

    return even_size(target_size(reader_hw, width, height))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = stdout_log("int8")
    if args.frames < 1:
        print_err(f"--frames must be >= 1, got {args.frames}")
        return 2
    settings = Int8Settings(args.mode, args.keep_float, not args.per_tensor)
    thresholds = Thresholds(args.max_mean, args.max_p95, args.min_iou, args.min_worst_iou)
    try:
        size = None
        if args.width or args.height:
            from wanprep_torch.video import VideoError, VideoReader

            try:
                r = VideoReader(args.video)
                size = _size_arg((r.height, r.width), args.width, args.height)
                r.close()
            except VideoError as e:
                raise InputError(str(e)) from None
        res = convert_int8(args.input, args.output, args.video, det_path=args.det, settings=settings,
                           thresholds=thresholds, count=args.frames, size=size, force=args.force,
                           overwrite=args.overwrite, log=log)
    except ConversionError as e:
        return report_failure(e)
    s = res.info.settings
    msg = (f"OK: wrote {res.path} ({res.kind}, {s.mode}; kept in float: {', '.join(s.keep_float) or 'nothing'}; "
           f"{res.info.int8_ops} INT8 ops)")
    if res.forced:
        msg = (f"WARNING: wrote {res.path} although it misses the thresholds (--force): "
               f"{'; '.join(res.report.failures)}")
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
