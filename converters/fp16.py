"""FP32 -> FP16 conversion (onnxconverter-common) with an onnxruntime accuracy check.

    python -m converters.fp16 IN.onnx OUT.onnx [--keep-io-types] [--block-op OP ...]
                              [--auto-block] [--tolerance T] [--samples N] [--inputs X.npy ...]
                              [--skip-validation] [--force]
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ._isolated import IsolatedRunError, run_isolated
from ._common import (
    EXTERNAL_DATA_THRESHOLD,
    ConversionError,
    InputError,
    Log,
    Staging,
    ValidationFailed,
    check_data_file_not_input,
    check_paths,
    data_file_name,
    fixed_batch,
    graph_input_specs,
    input_specs,
    load_skeleton,
    load_weights,
    make_session,
    no_log,
    print_err,
    report_failure,
    random_feed,
    run,
    save_model,
    stdout_log,
    weight_bytes,
)

# Ops whose FP16 arithmetic tends to overflow or lose precision (variance, exp, large sums);
# --auto-block keeps them in FP32 when the plain conversion fails validation.
AUTO_BLOCK_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "Pow", "Sqrt", "Exp")

FP16_INSTALL = "pip install 'wanprep_torch[fp16]' (or pip install onnxconverter-common)"
DEFAULT_ARGMAX_TOL = 0.99
DEFAULT_IOU_TOL = 0.9
DEFAULT_REL_TOL = 1e-2

PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


# ----------------------------------------------------------------------------- conversion


def default_block_list() -> list[str]:
    from onnxconverter_common import float16

    return list(float16.DEFAULT_OP_BLOCK_LIST)


def effective_block_list(op_block_list: Sequence[str] | None) -> list[str]:
    # onnxconverter-common *replaces* its defaults (Resize, TopK, NonMaxSuppression, ...) when a
    # list is passed, which silently breaks detectors; always keep them.
    ops = default_block_list()
    for op in op_block_list or ():
        if op not in ops:
            ops.append(op)
    return ops


def is_fp16_model(model: onnx.ModelProto) -> bool:
    g = model.graph
    return any(i.type.tensor_type.elem_type == TensorProto.FLOAT16 for i in g.input) or any(
        t.data_type == TensorProto.FLOAT16 for t in g.initializer
    )


def _name_nodes(graph: onnx.GraphProto, taken: set[str]) -> None:
    # The converter derives Cast/tensor names from node names; unnamed nodes would collide.
    for i, node in enumerate(graph.node):
        if not node.name or node.name in taken:
            base = node.name or f"{node.op_type}_{i}"
            name, k = base, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            node.name = name
        taken.add(node.name)
        for attr in node.attribute:
            if attr.HasField("g"):
                _name_nodes(attr.g, taken)
            for sub in attr.graphs:
                _name_nodes(sub, taken)


def _typed_model(in_path: Path, log: Log) -> tuple[onnx.ModelProto, bool]:
    """Load with inferred value_info types; returns (model, used_external_data)."""
    loaded = load_skeleton(in_path)
    if is_fp16_model(loaded.model):
        raise InputError(f"{in_path}: model is already FP16 (float16 inputs or initializers); nothing to convert")
    # Infer on the weight-less skeleton so models past protobuf's 2 GB limit still get the
    # value_info types the converter needs to place Casts around blocked ops.
    try:
        loaded.model = onnx.shape_inference.infer_shapes(loaded.model)
    except Exception as e:
        log(f"warning: shape inference failed ({e}); blocked ops may lack Casts")
    load_weights(loaded)
    _name_nodes(loaded.model.graph, set())
    return loaded.model, loaded.uses_external_data


def _clamp_summary(caught) -> list[str]:
    """One line per clamp target instead of one converter warning per tensor."""
    clamps: dict[str, list[float]] = {}
    for w in caught:
        m = re.search(r"number (\S+) will be truncated to (\S+)", str(w.message))
        if m:
            clamps.setdefault(m.group(2), []).append(float(m.group(1)))
    out = []
    for target, vals in clamps.items():
        worst = max(vals, key=abs) if abs(float(target)) >= 1 else min(vals, key=abs)
        out.append(f"note: {len(vals)} constant tensor(s) had values clamped to {target} (e.g. {worst:.4g})")
    return out


def _float16_backends():
    """The converters to try, in order: onnxconverter-common, then onnxruntime's own float16
    tool (a fork of it), which handles graphs the former leaves mistyped (seen: a YOLOv10m
    export's Resize, "Type (tensor(float)) of output arg ... Resize_output_cast0")."""
    from onnxconverter_common import float16 as occ

    backends = [("onnxconverter-common", occ.convert_float_to_float16, {"check_fp16_ready": False})]
    try:
        from onnxruntime.transformers import float16 as ortf

        backends.append(("onnxruntime.transformers", ortf.convert_float_to_float16, {}))
    except ImportError:
        pass
    return backends


def _fix_cast_targets(graph: onnx.GraphProto) -> int:
    """Make converted Casts produce the type the converted graph declares for them.

    onnxconverter-common (and onnxruntime's fork of it) retype every float value_info to
    float16 but leave a Cast(to=FLOAT)'s target alone. Torch exports have such Casts on float
    paths (MultiheadAttention's scale: Shape -> Slice -> Cast(to=FLOAT) -> Sqrt -> Div), so the
    result declares a float16 tensor that the Cast makes float32, and onnxruntime refuses it
    ("Type (tensor(float16)) of output arg (.../Cast_2_output_0) ... does not match expected
    type (tensor(float))"). A Cast whose output stays declared float (a blocked op's, the
    converters' own) is left alone. Returns the number of Casts retargeted (subgraphs included).
    """
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.output)}
    fixed = 0
    for node in graph.node:
        if node.op_type == "Cast":
            for attr in node.attribute:
                if (attr.name == "to" and attr.i == TensorProto.FLOAT
                        and declared.get(node.output[0]) == TensorProto.FLOAT16):
                    attr.i = TensorProto.FLOAT16
                    fixed += 1
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                fixed += _fix_cast_targets(sub)
    return fixed


def _loads(path: Path, feeds=None, providers=PROVIDERS["cpu"]) -> tuple[str | None, list | None]:
    """(None, outputs) when onnxruntime can create a session from ``path`` and run it (on
    ``feeds``, or once on a random input), else (why not, None).

    Checked in a child process: onnxruntime can crash (segmentation fault) on a graph the
    float16 tools got wrong, and that must end the check, not the converter.
    """
    try:
        return None, run_isolated(path, feeds, providers)
    except ConversionError as e:
        return str(e), None


def _split_shared_initializers(graph: onnx.GraphProto, block: set[str], block_nodes: set[str] = frozenset()) -> int:
    """Give FP32-kept (blocked) consumers their own copy of a float initializer that other
    consumers also read.

    onnxconverter-common keeps an initializer float32 when any consumer is blocked, and then
    feeds that float32 tensor to the converted consumers too (torch's TorchScript exporter
    shares equal weights, e.g. a LayerNorm's ones with a BatchNorm's running_var through
    Identity nodes: "Type (tensor(float16)) of output arg (up.4.running_var) of node
    (Identity_126) does not match expected type (tensor(float))"). Returns the copies made.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        names = set(node.input)
        for attr in node.attribute:  # subgraphs read outer tensors by name
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= {i for n in sub.node for i in n.input}
        for name in names:
            consumers.setdefault(name, []).append(node)
    taken = {t.name for t in graph.initializer} | {i for n in graph.node for i in list(n.input) + list(n.output)}
    copies = []
    for init in graph.initializer:
        users = consumers.get(init.name, [])
        blocked = [n for n in users if n.op_type in block or n.name in block_nodes]
        if init.data_type != TensorProto.FLOAT or not blocked or len(blocked) == len(users):
            continue
        name, k = f"{init.name}_fp32", 1
        while name in taken:
            name, k = f"{init.name}_fp32_{k}", k + 1
        taken.add(name)
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = name
        copies.append(copy)
        for node in blocked:
            for i, inp in enumerate(node.input):
                if inp == init.name:
                    node.input[i] = name
    graph.initializer.extend(copies)
    return len(copies)


def _transposes_into_matmul(graph: onnx.GraphProto) -> list[str]:
    """Names of the Transpose nodes that keep the last axis and feed a MatMul's first input.

    onnxruntime 1.32's CPU provider crashes (SIGSEGV) creating a session on a float16
    Transpose(perm=[1,0,2]) -> MatMul chain (its MatMul/Transpose fusion), which every
    nn.MultiheadAttention TorchScript export has (batch_first inputs are transposed to
    sequence-first); kept in FP32, the Transpose breaks the chain.
    """
    producers = {o: n for n in graph.node for o in n.output}
    names = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not node.input:
            continue
        t = producers.get(node.input[0])
        if t is None or t.op_type != "Transpose" or t.name in names:
            continue
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), [])
        if perm and perm[-1] == len(perm) - 1 and perm != sorted(perm):
            names.append(t.name)
    return names


def _convert_into(in_path: Path, dst: Path, keep_io_types: bool, op_block_list, min_positive_val,
                  max_finite_val, external_data, log: Log, feeds=None,
                  providers=PROVIDERS["cpu"]) -> tuple[list[str], list | None]:
    """Convert IN and save at dst, checked to load and run in onnxruntime (in a child process).

    Tries each float16 backend. When no result loads, tries again with the Transposes that
    feed a MatMul kept in FP32 (see :func:`_transposes_into_matmul`), then with the
    numerically sensitive ops (AUTO_BLOCK_OPS) kept in FP32 as well. The check runs the
    result on ``feeds`` (the validation inputs; one random input when None) with ``providers``.
    Returns the user/auto ops that stay FP32 (converter defaults not listed) and the outputs.
    """
    user_ops = list(op_block_list or [])
    model, used_external = _typed_model(in_path, log)
    graph_ops = {n.op_type for n in model.graph.node}
    external = external_data
    if external is None:
        external = used_external or weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    fallback = [op for op in AUTO_BLOCK_OPS if op in graph_ops and op not in user_ops]
    transposes = _transposes_into_matmul(model.graph)
    plans = [(user_ops, [])]
    if transposes:
        plans.append((user_ops, transposes))
    if fallback:
        plans.append((user_ops + fallback, transposes))
    errors = []
    for attempt, (ops, nodes) in enumerate(plans):
        block = effective_block_list(ops)
        present = sorted(graph_ops & set(block))
        what = []
        if nodes:
            what.append(f"{len(nodes)} Transpose node(s) feeding a MatMul")
        if len(ops) > len(user_ops):
            what.append(", ".join(ops[len(user_ops):]))
        if attempt:
            log(f"no FP16 result loads in onnxruntime; retrying with {' and '.join(what)} kept in FP32")
        log(f"converting (keep_io_types={keep_io_types}; FP32-kept ops present: {', '.join(present) or 'none'})")
        for name, convert, extra in _float16_backends():
            src_model = model if model is not None else _typed_model(in_path, no_log)[0]
            model = None  # the converters modify their input: every later try loads afresh
            _split_shared_initializers(src_model.graph, set(block), set(nodes))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                converted = convert(
                    src_model,
                    min_positive_val=min_positive_val,
                    max_finite_val=max_finite_val,
                    keep_io_types=keep_io_types,
                    disable_shape_infer=True,  # already inferred above, size-safely
                    op_block_list=block,
                    node_block_list=nodes,
                    **extra,  # onnxconverter-common's own FP16 check rejects any Cast-to-fp16
                )
            retargeted = _fix_cast_targets(converted.graph)
            if retargeted:
                log(f"retargeted {retargeted} Cast(to=float32) node(s) on converted paths to float16")
            for line in _clamp_summary(caught):
                log(line)
            log(f"saving {dst.name} ({name})" + (f" with external data {data_file_name(dst)}" if external else ""))
            save_model(converted, dst, external)
            del converted, src_model
            err, outputs = _loads(dst, feeds, providers)
            if err is None:
                return ops, outputs
            log(f"the {name} result does not load in onnxruntime: {err.splitlines()[0][:300]}")
            errors.append(f"{name}{' with ' + ' and '.join(what) + ' in FP32' if attempt else ''}: {err}")
    raise ConversionError(f"{in_path}: no FP16 converter produced a loadable model ({'; '.join(errors)})")


def convert_fp16(in_path, out_path, keep_io_types: bool = False, op_block_list: Sequence[str] | None = None, *,
                 force: bool = False, min_positive_val: float = 1e-7, max_finite_val: float = 1e4,
                 external_data: bool | None = None, log: Log | None = None) -> Path:
    """Convert IN (FP32 ONNX) to FP16 at OUT, without validation. Returns OUT.

    op_block_list adds to onnxconverter-common's default block list. external_data=None saves
    weights externally when IN did or the result exceeds ~1.5 GB.
    """
    log = log or no_log
    src, dst = check_paths(in_path, out_path, force)
    check_data_file_not_input(dst, load_skeleton(src).data_files)
    with Staging(dst) as st:
        _convert_into(src, st.path, keep_io_types, op_block_list, min_positive_val, max_finite_val, external_data, log)[0]
        return st.commit()


# ----------------------------------------------------------------------------- validation


@dataclass
class Report:
    kind: str  # "pose" | "detector" | "generic" (from the first output's shape)
    runs: int
    max_abs_err: float
    mean_abs_err: float
    rel_err: float  # max_abs_err / max |fp32 output|
    nonfinite: bool  # FP16 produced inf/nan where FP32 did not
    metric: str
    value: float
    tolerance: float
    ok: bool
    argmax_exact: float | None = None
    argmax_within1: float | None = None
    box_iou: float | None = None  # mean best-match IoU of FP32's top-k boxes
    top1_box_iou: float | None = None  # worst image's top-1 box IoU
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"model kind: {self.kind}; {self.runs} run(s)",
            f"abs error: max {self.max_abs_err:.4g}, mean {self.mean_abs_err:.4g}; relative {self.rel_err:.4g}",
        ]
        if self.argmax_exact is not None:
            lines.append(f"heatmap argmax agreement: exact {self.argmax_exact:.4f}, within 1 px {self.argmax_within1:.4f}")
        if self.box_iou is not None:
            lines.append(f"top-box IoU: mean {self.box_iou:.4f}, worst top-1 {self.top1_box_iou:.4f}")
        if self.nonfinite:
            lines.append("FP16 output has inf/nan where FP32 is finite")
        lines += self.notes
        cmp = "<=" if self.metric == "relative error" else ">="
        lines.append(f"{'PASS' if self.ok else 'FAIL'}: {self.metric} {self.value:.4g} (needs {cmp} {self.tolerance:g})")
        return "\n".join(lines)


def output_kind(out: np.ndarray) -> str:
    """"pose", "detector" or "generic" from a model output (the runtime's one rule)."""
    from wanprep_torch.runtime import model_kind

    return model_kind(out.shape)


def argmax_agreement(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Fraction of (n, k) heatmaps with the same argmax, and with argmax within 1 pixel."""
    n, k, h, w = ref.shape
    a = ref.reshape(n * k, h * w).argmax(1)
    b = np.nan_to_num(test.astype(np.float32), nan=-np.inf).reshape(n * k, h * w).argmax(1)
    ay, ax = np.divmod(a, w)
    by, bx = np.divmod(b, w)
    near = np.maximum(np.abs(ay - by), np.abs(ax - bx)) <= 1
    return float(np.mean(a == b)), float(np.mean(near))


def boxes_and_scores(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xyxy boxes [N,M,4] and scores [N,M] from [N,M,6] (end-to-end) or [N,4+C,A] (YOLOv8 raw)."""
    out = out.astype(np.float32)
    if out.shape[2] == 6:
        return out[..., :4], out[..., 4]
    t = out.transpose(0, 2, 1)
    cx, cy, w, h = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    return boxes, t[..., 4:].max(-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.nan_to_num(inter / np.maximum(union, 1e-9))


def top_box_iou(ref: np.ndarray, test: np.ndarray, top_k: int = 10) -> tuple[float | None, float | None]:
    """For each image, match FP32's top-k boxes to FP16's top-2k (FP16 may reorder near-tied scores)."""
    rb, rs = boxes_and_scores(ref)
    tb, ts = boxes_and_scores(test)
    ious, top1 = [], []
    for i in range(rb.shape[0]):
        order = np.argsort(-rs[i], kind="stable")
        valid = [j for j in order if (rb[i, j, 2] > rb[i, j, 0] and rb[i, j, 3] > rb[i, j, 1])][:top_k]
        if not valid:
            continue  # padding-only image: nothing to compare
        cand = np.argsort(-np.nan_to_num(ts[i], nan=-np.inf), kind="stable")[: 2 * top_k]
        best = iou_matrix(rb[i, valid], tb[i, cand]).max(1)
        ious.extend(best.tolist())
        top1.append(float(best[0]))
    if not ious:
        return None, None
    return float(np.mean(ious)), float(np.min(top1))


@dataclass
class Reference:
    """FP32 inputs and outputs, computed once and reused across --auto-block attempts."""

    feeds: list[dict]
    outputs: list[list[np.ndarray]]
    n_random: int
    n_user: int


def _user_feeds(inputs, specs) -> list[dict]:
    """Normalise user inputs (arrays, .npy paths, {name: ...} dicts, or lists of them) to feeds."""
    if inputs is None:
        return []
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    by_name = {s.name: s for s in specs}
    feeds = []
    for item in items:
        if not isinstance(item, dict):
            if len(specs) != 1:
                raise InputError(f"model has {len(specs)} inputs; give user inputs as NAME=FILE.npy / dicts")
            item = {specs[0].name: item}
        feed = {}
        for name, val in item.items():
            if name not in by_name:
                raise InputError(f"unknown model input {name!r} (inputs: {', '.join(by_name)})")
            if isinstance(val, (str, Path)):
                try:
                    val = np.load(val)
                except Exception as e:
                    raise InputError(f"{val}: cannot read .npy input ({e})") from None
            arr = np.asarray(val)
            if arr.ndim == len(by_name[name].shape) - 1:
                arr = arr[None]  # a single sample without the batch axis
            feed[name] = arr
        feeds.extend(_split_to_batch(feed, specs))
    return feeds


def _split_to_batch(feed: dict, specs) -> list[dict]:
    """Fixed-batch models need user arrays cut into chunks of the model's batch size."""
    b = next((fixed_batch(s) for s in specs if fixed_batch(s)), None)
    n = next(iter(feed.values())).shape[0]
    if b is None or n == b:
        return [feed]
    if n % b:
        raise InputError(f"user input batch {n} is not a multiple of the model's fixed batch {b}")
    return [{k: v[i : i + b] for k, v in feed.items()} for i in range(0, n, b)]


def make_reference(fp32_path, inputs=None, samples: int = 4, seed: int = 0, providers=PROVIDERS["cpu"],
                   isolate: bool = True) -> Reference:
    """Inputs (``samples`` random batches + the user's) and the FP32 model's outputs on them.

    isolate runs the model in a child process, like the FP16 side: the converter must end
    with a message whatever onnxruntime does.
    """
    if isolate:
        model = load_skeleton(fp32_path).model  # a non-ONNX file: InputError
        graph = model.graph
        specs = graph_input_specs(model)
        out = graph.output[0].type.tensor_type
        pose_like = out.HasField("shape") and len(out.shape.dim) == 4
    else:
        sess = make_session(fp32_path, providers)
        specs = input_specs(sess)
        pose_like = len(sess.get_outputs()[0].shape) == 4
    rng = np.random.default_rng(seed)
    batch = next((fixed_batch(s) for s in specs if fixed_batch(s)), 1)
    feeds = [random_feed(specs, batch, rng, imagenet=pose_like) for _ in range(samples)]
    user = _user_feeds(inputs, specs)
    feeds += user
    if not feeds:
        raise InputError("validation needs at least one input (samples >= 1 or user inputs)")
    try:
        if isolate:
            outputs = run_isolated(fp32_path, feeds, providers)
        else:
            outputs = [run(sess, f) for f in feeds]
    except Exception as e:
        raise ConversionError(f"{fp32_path}: FP32 model failed to run: {e}") from None
    return Reference(feeds, outputs, samples, len(user))


def _judge(kind, rel_err, nonfinite, argmax, iou, argmax_tol, iou_tol, rel_tol, tolerance):
    if kind == "pose":
        metric, value, tol = "argmax agreement", argmax[0], argmax_tol
    elif kind == "detector" and iou[0] is not None:
        metric, value, tol = "top-box IoU", iou[0], iou_tol
    else:
        metric, value, tol = "relative error", rel_err, rel_tol
    if tolerance is not None:
        tol = tolerance
    passed = value <= tol if metric == "relative error" else value >= tol
    return metric, value, tol, bool(passed and not nonfinite)


def validate(fp32_path, fp16_path, inputs=None, *, samples: int = 4, seed: int = 0,
             argmax_tol: float = DEFAULT_ARGMAX_TOL, iou_tol: float = DEFAULT_IOU_TOL,
             rel_tol: float = DEFAULT_REL_TOL, tolerance: float | None = None, top_k: int = 10,
             providers: Sequence[str] = PROVIDERS["cpu"], reference: Reference | None = None,
             isolate: bool = True, fp16_outputs: list | None = None) -> Report:
    """Run both models on the same inputs (random + user) and compare their outputs.

    tolerance, when given, overrides the threshold of whichever metric the model kind uses.
    isolate runs the FP16 model in a child process, so an onnxruntime crash on it becomes a
    ConversionError (the FP32 reference runs in this process). fp16_outputs: the FP16 model's
    outputs on ``reference.feeds`` when already computed.
    """
    for p in (fp32_path, fp16_path):
        if not Path(p).is_file():
            raise InputError(f"{p}: file not found")
    ref = reference or make_reference(fp32_path, inputs, samples, seed, providers)
    if fp16_outputs is not None:
        outs = fp16_outputs
    elif isolate:
        try:
            outs = run_isolated(fp16_path, ref.feeds, providers)
        except IsolatedRunError as e:
            raise ConversionError(f"{fp16_path}: FP16 model failed to run: {e}") from None
    else:
        sess = make_session(fp16_path, providers)
        try:
            outs = [run(sess, f) for f in ref.feeds]
        except Exception as e:
            raise ConversionError(f"{fp16_path}: FP16 model failed to run: {e}") from None

    errs, maxabs, nonfinite = [], 0.0, False
    rel = 0.0
    for r_list, t_list in zip(ref.outputs, outs):
        for r, t in zip(r_list, t_list):
            if not np.issubdtype(r.dtype, np.floating):
                continue
            r32, t32 = r.astype(np.float32), t.astype(np.float32)
            nonfinite |= bool(np.any(~np.isfinite(t32) & np.isfinite(r32)))
            d = np.abs(r32 - t32)
            d = np.where(np.isnan(d), np.inf, d)
            errs.append(d.ravel())
            m = float(d.max()) if d.size else 0.0
            maxabs = max(maxabs, m)
            scale = float(np.abs(r32[np.isfinite(r32)]).max(initial=0.0))
            rel = max(rel, m / scale if scale > 0 else m)
    allerr = np.concatenate(errs) if errs else np.zeros(1)
    kind = output_kind(ref.outputs[0][0])

    def task_metrics(idx):
        r = np.concatenate([ref.outputs[i][0] for i in idx])
        t = np.concatenate([outs[i][0] for i in idx])
        argmax = argmax_agreement(r, t) if kind == "pose" else (None, None)
        iou = top_box_iou(r, t, top_k) if kind == "detector" else (None, None)
        return argmax, iou

    # Real inputs decide when given: on random noise a real pose model's heatmaps are flat and
    # a detector's top boxes arbitrary, so their argmax/IoU says little about FP16 accuracy.
    notes = []
    rand_idx, user_idx = list(range(ref.n_random)), list(range(ref.n_random, len(ref.feeds)))
    judged = user_idx or rand_idx
    argmax, iou = task_metrics(judged)
    if user_idx and rand_idx and kind in ("pose", "detector"):
        (ra, rw), (ri, _) = task_metrics(rand_idx)
        notes.append(f"judged on the {len(user_idx)} user input batch(es); random inputs: "
                     + (f"argmax exact {ra:.4f}, within 1 px {rw:.4f}" if kind == "pose" else
                        f"top-box IoU {ri:.4f}" if ri is not None else "no boxes"))
    if kind == "detector" and iou[0] is None:
        notes.append("no valid boxes in FP32 output; judged on relative error")
    metric, value, tol, ok = _judge(kind, rel, nonfinite, argmax, iou, argmax_tol, iou_tol, rel_tol, tolerance)
    if not ok and not user_idx and kind in ("pose", "detector"):
        notes.append("note: judged on random inputs only; real crops/frames (--inputs X.npy) are more telling")
    return Report(
        kind=kind, runs=len(ref.feeds), max_abs_err=maxabs, mean_abs_err=float(np.mean(allerr)), rel_err=rel,
        nonfinite=nonfinite, metric=metric, value=float(value), tolerance=tol, ok=ok,
        argmax_exact=argmax[0], argmax_within1=argmax[1], box_iou=iou[0], top1_box_iou=iou[1], notes=notes,
    )


# ----------------------------------------------------------------------------- convert + validate


@dataclass
class Result:
    path: Path
    report: Report | None
    op_block_list: list[str]  # the user/auto ops that were blocked (defaults not listed)
    attempts: list[tuple[list[str], Report]]


def convert_and_validate(in_path, out_path, keep_io_types: bool = False, op_block_list: Sequence[str] | None = None, *,
                         auto_block: bool = False, inputs=None, samples: int = 4, seed: int = 0,
                         tolerance: float | None = None, validate_output: bool = True, force: bool = False,
                         providers: Sequence[str] = PROVIDERS["cpu"], min_positive_val: float = 1e-7,
                         max_finite_val: float = 1e4, external_data: bool | None = None,
                         log: Log | None = None) -> Result:
    """Convert, validate, and (with auto_block) retry with sensitive ops kept in FP32.

    OUT is only written when validation passes; raises ValidationFailed otherwise.
    """
    log = log or no_log
    src, dst = check_paths(in_path, out_path, force)
    skeleton = load_skeleton(src)
    check_data_file_not_input(dst, skeleton.data_files)
    if is_fp16_model(skeleton.model):
        raise InputError(f"{src}: model is already FP16 (float16 inputs or initializers); nothing to convert")
    graph_ops = {n.op_type for n in skeleton.model.graph.node}
    del skeleton

    user_ops = list(op_block_list or [])
    plans = [user_ops]
    extra = [op for op in AUTO_BLOCK_OPS if op in graph_ops and op not in user_ops]
    if auto_block and extra:
        plans.append(user_ops + extra)

    attempts: list[tuple[list[str], Report]] = []
    ref = None
    if validate_output:
        log("running FP32 reference")
        ref = make_reference(src, inputs, samples, seed, providers)
    with Staging(dst) as st:
        for i, ops in enumerate(plans):
            if i:
                if set(ops) <= set(attempts[-1][0]):
                    break  # the load check already had to keep them in FP32
                log(f"auto-block: retrying with {', '.join(extra)} kept in FP32")
            # The load check (in a child process) runs the validation inputs: its outputs are
            # the FP16 side of the comparison.
            ops, outs = _convert_into(src, st.path, keep_io_types, ops, min_positive_val, max_finite_val,
                                      external_data, log, ref.feeds if ref else None, providers)
            if not validate_output:
                log("validation skipped")
                return Result(st.commit(), None, ops, attempts)
            log(f"validating on {ref.n_random} random + {ref.n_user} user input batch(es)")
            report = validate(src, st.path, tolerance=tolerance, providers=providers, reference=ref,
                              fp16_outputs=outs)
            attempts.append((ops, report))
            for line in report.summary().splitlines():
                log("  " + line)
            if report.ok:
                if i:
                    log(f"auto-block: passed with {', '.join(extra)} kept in FP32")
                return Result(st.commit(), report, ops, attempts)
    tips = [] if auto_block else ["try --auto-block or --block-op"]
    if auto_block and not extra:
        tips.append(f"--auto-block: none of {', '.join(AUTO_BLOCK_OPS)} occur in the graph")
    if report.kind in ("pose", "detector") and not (ref and ref.n_user):
        tips.append("validate on real inputs with --inputs X.npy")
    hint = f" ({'; '.join(tips)})" if tips else ""
    raise ValidationFailed(
        f"{src}: FP16 result fails validation: {report.metric} {report.value:.4g} vs tolerance {report.tolerance:g}"
        f"{hint}; {dst} not written",
        report,
    )


# ----------------------------------------------------------------------------- CLI


def _parse_inputs(values: Sequence[str]) -> list:
    named, plain = {}, []
    for v in values:
        name, sep, path = v.partition("=")
        if sep and not Path(v).exists():
            named[name] = path
        else:
            plain.append(v)
    return plain + ([named] if named else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converters.fp16",
        description="Convert an FP32 ONNX model to FP16 (onnxconverter-common) and check it against FP32 "
        "with onnxruntime. OUT is written only if validation passes.",
    )
    p.add_argument("input", help="FP32 .onnx (external .data/.bin weights are picked up)")
    p.add_argument("output", help="FP16 .onnx to write (weights saved externally as OUT.data when large)")
    p.add_argument("--keep-io-types", action="store_true", help="keep float32 graph inputs/outputs")
    p.add_argument("--block-op", action="append", default=[], metavar="OP",
                   help="op type to keep in FP32 (repeatable; added to onnxconverter-common's defaults)")
    p.add_argument("--auto-block", action="store_true",
                   help=f"if validation fails, retry with {', '.join(AUTO_BLOCK_OPS)} kept in FP32")
    p.add_argument("--tolerance", type=float, default=None,
                   help=f"threshold for the detected kind: pose argmax agreement (default {DEFAULT_ARGMAX_TOL}), "
                   f"detector box IoU (default {DEFAULT_IOU_TOL}), other: max relative error (default {DEFAULT_REL_TOL})")
    p.add_argument("--samples", type=int, default=4, help="random input batches (default 4)")
    p.add_argument("--inputs", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="extra real inputs for validation (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu",
                   help="onnxruntime provider for validation (CPU upcasts many FP16 ops; cuda is the real test)")
    p.add_argument("--skip-validation", action="store_true", help="convert only")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    return p


def _size(path: Path) -> int:
    data = path.parent / data_file_name(path)
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # before any work (the FP32 reference run takes minutes on big models)
        import onnxconverter_common  # noqa: F401
    except ImportError:
        print_err(f"FP16 conversion needs onnxconverter-common: {FP16_INSTALL}")
        return 2
    log = stdout_log("fp16")
    if args.skip_validation and args.auto_block:
        print_err("--auto-block needs validation; drop --skip-validation")
        return 2
    log(f"loading {args.input}")
    try:
        res = convert_and_validate(
            args.input, args.output, args.keep_io_types, args.block_op, auto_block=args.auto_block,
            inputs=_parse_inputs(args.inputs), samples=args.samples, seed=args.seed, tolerance=args.tolerance,
            validate_output=not args.skip_validation, force=args.force, providers=PROVIDERS[args.provider], log=log,
        )
    except ConversionError as e:
        return report_failure(e)
    src_size, dst_size = _human(_size(Path(args.input))), _human(_size(res.path))
    io = "float32" if args.keep_io_types else "float16"
    blocked = ", ".join(res.op_block_list) or "defaults only"
    summary = f"OK: wrote {res.path} ({src_size} -> {dst_size}; io {io}; extra FP32 ops: {blocked})"
    if res.report is not None:
        r = res.report
        summary += f"; {r.metric} {r.value:.4g}"
        if len(res.attempts) > 1:
            summary += " (passed after --auto-block)"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
