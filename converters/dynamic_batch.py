"""Make dim 0 (batch) of an ONNX model's inputs and outputs symbolic, verified with onnxruntime.

    python -m converters.dynamic_batch IN.onnx OUT.onnx [--force] [--test-batch 4] [--atol 1e-4]

OUT is written only if batch-N results equal N separate batch-1 runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ._common import (
    EXTERNAL_DATA_THRESHOLD,
    ConversionError,
    Log,
    Staging,
    check_data_file_not_input,
    check_paths,
    data_file_name,
    input_specs,
    load_model,
    load_skeleton,
    make_session,
    no_log,
    random_feed,
    report_failure,
    run,
    save_model,
    stdout_log,
    weight_bytes,
)

BATCH = "batch"
FALLBACK_HINT = "the runtime's fixed-batch path will handle this model"


# ----------------------------------------------------------------------------- graph analysis


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    # Old exporters (IR < 4) also list initializers as graph inputs; those are not real inputs.
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dim0(vi: onnx.ValueInfoProto):
    t = vi.type.tensor_type
    if not t.HasField("shape") or len(t.shape.dim) == 0:
        return None
    return t.shape.dim[0]


def old_batch_size(model: onnx.ModelProto, src: Path) -> int | None:
    """The fixed batch the inputs share, or None when dim 0 is already symbolic everywhere."""
    fixed = set()
    for vi in graph_inputs(model):
        d = _dim0(vi)
        if d is None:
            raise ConversionError(f"{src}: input {vi.name!r} has no batch axis (scalar or unknown rank)")
        if d.HasField("dim_value"):
            fixed.add(d.dim_value)
    if len(fixed) > 1:
        raise ConversionError(f"{src}: inputs disagree on the batch size ({sorted(fixed)})")
    return fixed.pop() if fixed else None


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {t.name: t for t in model.graph.initializer}
    arrays = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    for name, t in consts.items():
        if t.data_type == onnx.TensorProto.INT64 and len(t.dims) == 1:  # only shape-like tensors matter
            arrays[name] = numpy_helper.to_array(t)
    return arrays


@dataclass(frozen=True)
class ReshapeFix:
    node_index: int
    shape: tuple[int, ...]
    allowzero: bool


def batch_reshapes(model: onnx.ModelProto, old_batch: int | None) -> list[ReshapeFix]:
    """Reshapes of activations whose constant target shape starts with the fixed batch."""
    if old_batch is None:
        return []
    consts = _constants(model)
    const_names = set(consts) | {t.name for t in model.graph.initializer}
    fixes = []
    for i, n in enumerate(model.graph.node):
        if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] not in consts:
            continue
        if n.input[0] in const_names:
            continue  # reshaping a weight (e.g. a bias to [1,C,1,1]): not batch-dependent
        shape = tuple(int(v) for v in consts[n.input[1]])
        if shape and shape[0] == old_batch:
            allowzero = any(a.name == "allowzero" and a.i for a in n.attribute)
            fixes.append(ReshapeFix(i, shape, allowzero))
    return fixes


def _fixed_shape(fix: ReshapeFix, prefer: int) -> tuple[int, ...] | None:
    # 0 copies the input's dim 0 (the batch, if the data still has it first); -1 infers it.
    zero_ok = not fix.allowzero
    minus_ok = -1 not in fix.shape[1:]
    order = [0, -1] if prefer == 0 else [-1, 0]
    for v in order:
        if (v == 0 and zero_ok) or (v == -1 and minus_ok):
            return (v,) + fix.shape[1:]
    return None


# ----------------------------------------------------------------------------- graph edits


def _set_batch(vi: onnx.ValueInfoProto, old_batch: int | None) -> None:
    d = _dim0(vi)
    if d is None or d.HasField("dim_param"):
        return
    if not d.HasField("dim_value") or d.dim_value == old_batch:
        d.ClearField("dim_value")
        d.dim_param = BATCH


def apply_dynamic_batch(model: onnx.ModelProto, old_batch: int | None, fixes: Sequence[ReshapeFix],
                        prefer: int | None) -> list[str]:
    """Edit the model in place; prefer=None leaves reshapes alone. Returns descriptions of the reshape edits."""
    g = model.graph
    for vi in graph_inputs(model):
        _set_batch(vi, old_batch)
    for vi in g.output:
        _set_batch(vi, old_batch)
    # Intermediate shapes are only hints; ones pinned to the old batch would contradict the new one.
    keep = [vi for vi in g.value_info if not ((d := _dim0(vi)) is not None and d.HasField("dim_value") and d.dim_value == old_batch)]
    del g.value_info[:]
    g.value_info.extend(keep)

    edits = []
    if prefer is None:
        return edits
    for fix in fixes:
        new = _fixed_shape(fix, prefer)
        if new is None:
            continue
        node = g.node[fix.node_index]
        name = f"{node.input[1]}__dynbatch_{fix.node_index}"
        # A fresh initializer: the original shape tensor may be shared with other nodes.
        g.initializer.append(numpy_helper.from_array(np.array(new, np.int64), name))
        if model.ir_version < 4:
            g.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [len(new)]))
        node.input[1] = name
        edits.append(f"{node.name or node.op_type + str(fix.node_index)}: {list(fix.shape)} -> {list(new)}")
    return edits


# ----------------------------------------------------------------------------- verification


def _short_error(e: Exception) -> str:
    """ORT errors run to several hundred characters; keep the failing node and the shape clash."""
    text = str(e)
    node = re.search(r"running (\S+) node\. Name:'([^']*)'", text)
    shapes = re.search(r"(Input shape:\s*\{[^}]*\}.*?shape:\s*\{[^}]*\})", text)
    if node:
        return f"{node.group(1)} node '{node.group(2)}' fails" + (f" ({shapes.group(1)})" if shapes else "")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first if len(first) <= 200 else first[:200] + "..."


def verify_batch(path, test_batch: int = 4, atol: float = 1e-4, rtol: float = 1e-4, seed: int = 0) -> tuple[bool, str, float]:
    """Each item of one batch-N run must match its own batch-1 run. Returns (ok, reason, max_diff)."""
    try:
        sess = make_session(path)
        specs = input_specs(sess)
        names = [o.name for o in sess.get_outputs()]
        feed = random_feed(specs, test_batch, np.random.default_rng(seed))
        big = run(sess, feed)
    except Exception as e:
        return False, f"batch {test_batch} does not run: {_short_error(e)}", float("inf")
    worst = 0.0
    for name, o in zip(names, big):
        if o.ndim == 0 or o.shape[0] != test_batch:
            return False, f"output {name!r} has shape {list(o.shape)} at batch {test_batch} (dim 0 is not the batch)", float("inf")
    for i in range(test_batch):
        try:
            single = run(sess, {k: v[i : i + 1] for k, v in feed.items()})
        except Exception as e:
            return False, f"batch 1 does not run: {_short_error(e)}", float("inf")
        for name, a, b in zip(names, big, single):
            if b.shape != (1,) + a.shape[1:]:
                return False, f"output {name!r}: batch-1 shape {list(b.shape)} vs batch-{test_batch} {list(a.shape)}", float("inf")
            ref = b[0].astype(np.float64)
            diff = float(np.max(np.abs(a[i].astype(np.float64) - ref), initial=0.0))
            worst = max(worst, diff)
            tol = atol + rtol * float(np.max(np.abs(ref), initial=0.0))
            if not diff <= tol:  # also catches nan
                return False, f"output {name!r} item {i}: batch-{test_batch} differs from batch-1 by {diff:.3g} (> {tol:.3g})", diff
    return True, "", worst


# ----------------------------------------------------------------------------- driver


def make_dynamic_batch(in_path, out_path, *, force: bool = False, test_batch: int = 4, atol: float = 1e-4,
                       rtol: float = 1e-4, seed: int = 0, external_data: bool | None = None,
                       log: Log | None = None) -> Path:
    """Write OUT with a symbolic batch axis, or raise ConversionError (OUT untouched) if the graph pins it."""
    log = log or no_log
    src, dst = check_paths(in_path, out_path, force)
    skel = load_skeleton(src)
    check_data_file_not_input(dst, skel.data_files)
    old = old_batch_size(skel.model, src)
    fixes = batch_reshapes(skel.model, old)
    names = ", ".join(vi.name for vi in graph_inputs(skel.model))
    log(f"inputs {names}: " + (f"fixed batch {old}" if old is not None else "batch already symbolic"))
    if fixes:
        log(f"{len(fixes)} Reshape(s) with a constant shape starting with {old}")
    external = skel.uses_external_data if external_data is None else external_data
    del skel

    # Least invasive first: untouched reshapes, then 0 (copy batch), then -1 (infer batch).
    plans: list[tuple[str, int | None]] = [("io dims only", None)]
    if fixes:
        plans += [("reshape dim 0 -> 0", 0), ("reshape dim 0 -> -1", -1)]
    reasons = []
    with Staging(dst) as st:
        for label, prefer in plans:
            model = load_model(src).model  # fresh copy per attempt; edits are in place
            edits = apply_dynamic_batch(model, old, fixes, prefer)
            if prefer is not None and not edits:
                continue
            ext = external or weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
            save_model(model, st.path, ext)
            del model
            log(f"verifying [{label}]: batch {test_batch} vs {test_batch} x batch 1")
            ok, reason, diff = verify_batch(st.path, test_batch, atol, rtol, seed)
            if ok:
                for e in edits:
                    log(f"  reshape fixed: {e}")
                log(f"  max |batch-{test_batch} - batch-1| = {diff:.3g}")
                return st.commit()
            log(f"  failed: {reason}")
            reasons.append(f"[{label}] {reason}")
    if len({r.split("] ", 1)[1] for r in reasons}) == 1:
        reasons = [reasons[0].split("] ", 1)[1] + (f" (all {len(reasons)} attempts)" if len(reasons) > 1 else "")]
    raise ConversionError(
        f"{src}: cannot make the batch axis dynamic: " + "; ".join(reasons)
        + f". {dst} not written; {FALLBACK_HINT}" + (f" (run it at batch {old})." if old is not None else ".")
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converters.dynamic_batch",
        description="Make dim 0 of an ONNX model's inputs/outputs a symbolic 'batch' axis. Fixes constant "
        "Reshape shapes that hard-code the batch when that verifies; OUT is written only if batch-N results "
        "match N batch-1 runs.",
    )
    p.add_argument("input", help="fixed-batch .onnx")
    p.add_argument("output", help=".onnx to write (weights external as OUT.data if the input's were)")
    p.add_argument("--test-batch", type=int, default=4, help="batch size used for verification (default 4)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (plus 1e-4 x output scale)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = stdout_log("dynamic_batch")
    log(f"loading {args.input}")
    try:
        out = make_dynamic_batch(args.input, args.output, force=args.force, test_batch=args.test_batch,
                                 atol=args.atol, seed=args.seed, log=log)
    except ConversionError as e:
        return report_failure(e)
    data = out.parent / data_file_name(out)
    print(f"OK: wrote {out} with symbolic batch axis '{BATCH}'" + (f" (+ {data.name})" if data.exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
