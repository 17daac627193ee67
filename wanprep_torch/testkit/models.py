"""Small analytic ONNX models with the real models' signatures, for tests and the demo.

* Detector (YOLOv10 end-to-end signature): ``images`` float [N,3,640,640] RGB in [0,1] ->
  ``output0`` [N,300,6] rows (x1, y1, x2, y2, score, class) in input pixels. It boxes the
  blobs drawn by :mod:`wanprep_torch.testkit.scene` (blue channel above a threshold); row 0 is the
  person (class 0, score 0.9, or an all-zero row on an empty frame), rows 1..299 are zeros.
* Detector, YOLOv8 signature: ``output0`` [N,84,16]: rows 0..3 = cx, cy, w, h and row 4 = person
  score at anchor 0; everything else 0.
* Pose (ViTPose-wholebody signature): ``input`` [N,3,256,192] ImageNet-normalised RGB ->
  ``heatmaps`` [N,133,64,48]. Channel k responds to pixels whose colour ratios (R/B, G/B) match
  keypoint k's code; heatmap pixel v is centred on crop pixel 4v (mmpose non-UDP).

All are a few dozen elementwise/reduce/MatMul ops with small constants (detector ~7 KB, pose
~250 KB of banded pooling matrices), opset 17. The pose gain is calibrated at build time so a
fully visible point peaks at ~0.9 for a default-scale person cropped the pipeline's way.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import scene

OPSET = 17
# Bump when a model's behaviour changes (cached files are rebuilt when the stamp differs; the
# stamp also hashes this file and scene.py, so edits rebuild too).
MODELS_VERSION = "3"
STAMP_NAME = "testkit_models.stamp.json"

DET_SIZE = 640
DET_ROWS = 300
DET_V8_ANCHORS = 16
DET_THRESHOLD = 0.15  # on the blue channel; blob of peak ~1 crosses it at ~1.95 sigma
DET_PAD = 3.0  # px (640 input) added round the mask so the box covers the blobs' visible extent
DET_SCORE = 0.9

POSE_H, POSE_W = 256, 192
HM_H, HM_W = 64, 48
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CODE_SPACING = 1.0 / 11.0
CODE_SIGMA = CODE_SPACING / 3.0  # neighbours' codes are 3 sigma away: exp(-4.5) ~ 1% cross-talk
RATIO_EPS = 1e-3  # small, so blob tails (B ~ 0.1) keep their colour ratio within 1% of the code
HM_BLUR_SIGMA = 1.5  # heatmap px; makes peaks Gaussian for sub-pixel (DARK-style) decoding
HM_BLUR_RADIUS = 4  # taps each side (2.7 sigma)
TARGET_PEAK = 0.9

MODEL_FILES = {
    "det": "det_yolov10_dyn.onnx",
    "det_b1": "det_yolov10_b1.onnx",
    "det_v8": "det_yolov8_dyn.onnx",
    "det_fp16": "det_yolov10_fp16.onnx",
    "det_fp16_keepio": "det_yolov10_fp16_keepio.onnx",
    "pose": "pose_dyn.onnx",
    "pose_b1": "pose_b1.onnx",
    "pose_fp16": "pose_fp16.onnx",
    "pose_fp16_keepio": "pose_fp16_keepio.onnx",
    "det_two": "det_two_person.onnx",
    "det_multi": "det_multi_person.onnx",
    "not_onnx": "not_a_model.onnx",
}
FP16_KEYS = ("det_fp16", "det_fp16_keepio", "pose_fp16", "pose_fp16_keepio")


def _const(name: str, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, inputs, outputs, inits, name: str) -> onnx.ModelProto:
    # Every node gets a unique name: the fp16 converter names its Cast nodes after them.
    for i, n in enumerate(nodes):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="wanprep_torch.testkit")
    m.ir_version = 8  # widely loadable (onnxruntime >= 1.14)
    onnx.checker.check_model(m)
    return m


def make_detector(batch: int | str = "batch", kind: str = "yolov10") -> onnx.ModelProto:
    """Blob-boxing detector. kind: "yolov10" ([N,300,6]) or "yolov8" ([N,84,16])."""
    n = helper.make_node
    S = DET_SIZE
    idx = np.arange(S, dtype=np.float32)
    inits = [
        _const("ch_start", [2], np.int64), _const("ch_end", [3], np.int64),
        _const("ch_axis", [1], np.int64),
        _const("thr", DET_THRESHOLD), _const("one", 1.0), _const("zero", 0.0),
        _const("idx", idx), _const("ridx", (S - 1) - idx), _const("last", float(S - 1)),
        _const("pad_lo", -DET_PAD), _const("pad_hi", 1.0 + DET_PAD),  # +1: last pixel's far edge
        _const("size", float(S)), _const("score", DET_SCORE),
    ]
    nodes = [
        n("Slice", ["images", "ch_start", "ch_end", "ch_axis"], ["blue"]),  # [N,1,S,S]
        # Threshold the profiles rather than the image: max commutes with a monotone threshold.
        n("ReduceMax", ["blue"], ["colmax"], axes=[1, 2], keepdims=0),  # [N,S] over rows
        n("ReduceMax", ["blue"], ["rowmax"], axes=[1, 3], keepdims=0),  # [N,S] over columns
    ]
    for prof, lo, hi in (("col", "x1", "x2"), ("row", "y1", "y2")):
        nodes += [
            # Where, not Cast: the fp16 converter leaves Cast(to=FLOAT) alone and breaks typing.
            n("Greater", [f"{prof}max", "thr"], [f"{prof}_on"]),
            n("Where", [f"{prof}_on", "one", "zero"], [f"{prof}_act"]),
            n("Mul", [f"{prof}_act", "idx"], [f"{prof}_i"]),
            n("ReduceMax", [f"{prof}_i"], [f"{hi}_last"], axes=[1], keepdims=1),  # [N,1]
            n("Mul", [f"{prof}_act", "ridx"], [f"{prof}_ri"]),
            n("ReduceMax", [f"{prof}_ri"], [f"{lo}_rfirst"], axes=[1], keepdims=1),
            n("Sub", ["last", f"{lo}_rfirst"], [f"{lo}_first"]),
            n("Add", [f"{lo}_first", "pad_lo"], [f"{lo}_p"]),
            n("Add", [f"{hi}_last", "pad_hi"], [f"{hi}_p"]),
        ]
    nodes += [n("ReduceMax", ["col_act"], ["any"], axes=[1], keepdims=1)]  # [N,1] 1 if found
    for c in ("x1", "y1", "x2", "y2"):
        # Clip into the image, and zero the box of an empty frame.
        nodes += [n("Clip", [f"{c}_p", "zero", "size"], [f"{c}_c"]),
                  n("Mul", [f"{c}_c", "any"], [c])]
    nodes += [n("Mul", ["any", "score"], ["sc"])]
    if kind == "yolov10":
        inits += [_const("pads", [0, 0, 0, 0, DET_ROWS - 1, 0], np.int64),
                  _const("ax1", [1], np.int64)]
        nodes += [
            n("Mul", ["any", "zero"], ["cls"]),
            n("Concat", ["x1", "y1", "x2", "y2", "sc", "cls"], ["row"], axis=1),  # [N,6]
            n("Unsqueeze", ["row", "ax1"], ["row3"]),  # [N,1,6]
            n("Pad", ["row3", "pads"], ["output0"]),  # [N,300,6]
        ]
        out_shape = [batch, DET_ROWS, 6]
    elif kind == "yolov8":
        inits += [_const("pads", [0, 0, 0, 0, 84 - 5, DET_V8_ANCHORS - 1], np.int64),
                  _const("ax2", [2], np.int64), _const("half", 0.5)]
        nodes += [
            n("Add", ["x1", "x2"], ["sx"]), n("Mul", ["sx", "half"], ["cx"]),
            n("Add", ["y1", "y2"], ["sy"]), n("Mul", ["sy", "half"], ["cy"]),
            n("Sub", ["x2", "x1"], ["w"]), n("Sub", ["y2", "y1"], ["h"]),
            n("Concat", ["cx", "cy", "w", "h", "sc"], ["col"], axis=1),  # [N,5]
            n("Unsqueeze", ["col", "ax2"], ["col3"]),  # [N,5,1]
            n("Pad", ["col3", "pads"], ["output0"]),  # [N,84,16]
        ]
        out_shape = [batch, 84, DET_V8_ANCHORS]
    else:
        raise ValueError(f"unknown detector kind {kind!r}")
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, S, S])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)
    return _model(nodes, [inp], [out], inits, f"testkit_det_{kind}")


def _box_row_consts() -> list:
    """The constants :func:`_box_row_nodes` reads (and the blue-channel slice's bounds)."""
    S = DET_SIZE
    idx = np.arange(S, dtype=np.float32)
    return [
        _const("ch_start", [2], np.int64), _const("ch_end", [3], np.int64), _const("ch_axis", [1], np.int64),
        _const("thr", DET_THRESHOLD), _const("one", 1.0), _const("zero", 0.0),
        _const("idx", idx), _const("ridx", (S - 1) - idx), _const("last", float(S - 1)),
        _const("pad_lo", -DET_PAD), _const("pad_hi", 1.0 + DET_PAD), _const("size", float(S)),
        _const("score", DET_SCORE), _const("ax1", [1], np.int64),
    ]


def _box_row_nodes(p: str) -> list:
    """One person's output row from their activity profiles: ``{p}col_act`` and ``{p}row_act``
    ([N, S], 1 where a blob of theirs reaches that input column / row) -> ``{p}row3`` [N, 1, 6],
    the box spanning the active columns and rows padded by DET_PAD and clipped to the input,
    score DET_SCORE, class 0; all zero when no column is active."""
    n = helper.make_node
    nodes = []
    for prof, lo, hi in (("col", "x1", "x2"), ("row", "y1", "y2")):
        q = p + prof
        nodes += [
            n("Mul", [q + "_act", "idx"], [q + "_i"]),
            n("ReduceMax", [q + "_i"], [p + hi + "_last"], axes=[1], keepdims=1),
            n("Mul", [q + "_act", "ridx"], [q + "_ri"]),
            n("ReduceMax", [q + "_ri"], [p + lo + "_rfirst"], axes=[1], keepdims=1),
            n("Sub", ["last", p + lo + "_rfirst"], [p + lo + "_first"]),
            n("Add", [p + lo + "_first", "pad_lo"], [p + lo + "_p"]),
            n("Add", [p + hi + "_last", "pad_hi"], [p + hi + "_p"]),
        ]
    nodes += [n("ReduceMax", [p + "col_act"], [p + "any"], axes=[1], keepdims=1)]
    for c in ("x1", "y1", "x2", "y2"):
        nodes += [n("Clip", [p + c + "_p", "zero", "size"], [p + c + "_c"]), n("Mul", [p + c + "_c", p + "any"], [p + c])]
    return nodes + [
        n("Mul", [p + "any", "score"], [p + "sc"]),
        n("Mul", [p + "any", "zero"], [p + "cls"]),
        n("Concat", [p + "x1", p + "y1", p + "x2", p + "y2", p + "sc", p + "cls"], [p + "row"], axis=1),
        n("Unsqueeze", [p + "row", "ax1"], [p + "row3"]),
    ]


def make_two_person_detector(batch: int | str = "batch") -> onnx.ModelProto:
    """YOLOv10-signature detector for two people: row 0 boxes the blobs in the left half of the
    input, row 1 those in the right half (each an all-zero row when its half is empty). For
    subject-tracking tests, with one person on each side."""
    n = helper.make_node
    S = DET_SIZE
    idx = np.arange(S, dtype=np.float32)
    inits = _box_row_consts() + [
        _const("left", (idx < S // 2).astype(np.float32).reshape(1, 1, 1, S)),
        _const("right", (idx >= S // 2).astype(np.float32).reshape(1, 1, 1, S)),
        _const("pads", [0, 0, 0, 0, DET_ROWS - 2, 0], np.int64),
    ]
    nodes = [n("Slice", ["images", "ch_start", "ch_end", "ch_axis"], ["blue"])]
    rows = []
    for side in ("left", "right"):
        p = side + "_"
        nodes += [
            n("Mul", ["blue", side], [p + "blue"]),
            n("ReduceMax", [p + "blue"], [p + "colmax"], axes=[1, 2], keepdims=0),
            n("ReduceMax", [p + "blue"], [p + "rowmax"], axes=[1, 3], keepdims=0),
        ]
        for prof in ("col", "row"):
            q = p + prof
            nodes += [n("Greater", [q + "max", "thr"], [q + "_on"]), n("Where", [q + "_on", "one", "zero"], [q + "_act"])]
        nodes += _box_row_nodes(p)
        rows.append(p + "row3")
    nodes += [n("Concat", rows, ["two"], axis=1), n("Pad", ["two", "pads"], ["output0"])]
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, S, S])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, DET_ROWS, 6])
    return _model(nodes, [inp], [out], inits, "testkit_det_two_person")


MULTI_ROWS = 4  # people the multi-person detector reports at most
MULTI_GAP = 9  # input px: blob columns closer than this belong to one person


def make_multi_person_detector(batch: int | str = "batch") -> onnx.ModelProto:
    """YOLOv10-signature detector for several people side by side: the columns where blobs are
    drawn, closed over gaps under ``MULTI_GAP`` input px, split into runs from left to right;
    row k boxes the blobs of run k (its columns, and the rows those columns reach), for up to
    ``MULTI_ROWS`` runs (all-zero rows beyond). People overlapping in x merge into one box, as
    a real detector's NMS can merge two people crossing."""
    n = helper.make_node
    S = DET_SIZE
    inits = _box_row_consts() + [
        _const("shape_n1s", [0, 1, S], np.int64), _const("shape_n11s", [0, 1, 1, S], np.int64),
        _const("shape_ns", [0, S], np.int64),
        _const("p_start", [0], np.int64), _const("p_end", [S - 1], np.int64),
        _const("pads", [0, 0, 0, 0, DET_ROWS - MULTI_ROWS, 0], np.int64),
    ]
    nodes = [
        n("Slice", ["images", "ch_start", "ch_end", "ch_axis"], ["blue"]),  # [N,1,S,S]
        n("ReduceMax", ["blue"], ["colmax"], axes=[1, 2], keepdims=0),  # [N,S]
        n("Greater", ["colmax", "thr"], ["col_on"]),
        n("Where", ["col_on", "one", "zero"], ["act"]),
        # Close small gaps between a person's own blob columns (a 1-D max-pool).
        n("Reshape", ["act", "shape_n1s"], ["act3"]),
        n("MaxPool", ["act3"], ["dil3"], kernel_shape=[MULTI_GAP], pads=[MULTI_GAP // 2, MULTI_GAP // 2], strides=[1]),
        n("Reshape", ["dil3", "shape_ns"], ["dil"]),
        # Run starts: on here, off in the column before; their running count numbers the runs.
        n("Slice", ["dil", "p_start", "p_end", "ax1"], ["dil_head"]),
        n("Mul", ["act", "zero"], ["zcol_full"]),
        n("Slice", ["zcol_full", "p_start", "ax1", "ax1"], ["zcol"]),  # [N,1] zeros
        n("Concat", ["zcol", "dil_head"], ["prev"], axis=1),
        n("Sub", ["one", "prev"], ["not_prev"]),
        n("Mul", ["dil", "not_prev"], ["starts"]),
        n("CumSum", ["starts", "ax1_scalar"], ["runs_all"]),
        n("Mul", ["runs_all", "dil"], ["run_id"]),
    ]
    inits.append(_const("ax1_scalar", 1, np.int64))
    rows = []
    for k in range(1, MULTI_ROWS + 1):
        p = f"r{k}_"
        inits.append(_const(p + "k", float(k)))
        nodes += [
            n("Equal", ["run_id", p + "k"], [p + "eq"]),
            n("Where", [p + "eq", "act", "zero"], [p + "col_act"]),  # [N,S] this person's columns
            n("Reshape", [p + "col_act", "shape_n11s"], [p + "cmask"]),
            n("Mul", ["blue", p + "cmask"], [p + "blue"]),
            n("ReduceMax", [p + "blue"], [p + "rowmax"], axes=[1, 3], keepdims=0),
            n("Greater", [p + "rowmax", "thr"], [p + "row_on"]),
            n("Where", [p + "row_on", "one", "zero"], [p + "row_act"]),
        ]
        nodes += _box_row_nodes(p)
        rows.append(p + "row3")
    nodes += [n("Concat", rows, ["many"], axis=1), n("Pad", ["many", "pads"], ["output0"])]
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, S, S])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, DET_ROWS, 6])
    return _model(nodes, [inp], [out], inits, "testkit_det_multi_person")


def _pool_matrix(n_in: int, n_out: int, taps) -> np.ndarray:
    """(n_out, n_in) stride-2 filter matrix: output v = sum_t taps[t] * input[2v + t - len//2]
    (centred on input 2v, zero padding)."""
    m = np.zeros((n_out, n_in))
    half = len(taps) // 2
    for v in range(n_out):
        for t, w in enumerate(taps):
            u = 2 * v + t - half
            if 0 <= u < n_in:
                m[v, u] = w
    return m


def _blur_matrix(n: int) -> np.ndarray:
    """(n, n) 1D Gaussian blur with zero 'same' padding."""
    t = np.arange(-HM_BLUR_RADIUS, HM_BLUR_RADIUS + 1)
    g = np.exp(-t * t / (2 * HM_BLUR_SIGMA ** 2))
    g /= g.sum()
    m = np.zeros((n, n))
    for v in range(n):
        for d, w in zip(t, g):
            if 0 <= v + d < n:
                m[v, v + d] = w
    return m


# Two stride-2 tent stages [1,2,1]/4 compose to the tent [1,2,3,4,3,2,1]/16 centred on crop pixel
# 4v: its response is zero at multiples of the stride-4 sampling frequency, so the heatmap peaks
# alias less (less sub-pixel bias) than with a 5x5 box.
_STAGE1_TAPS = (0.25, 0.5, 0.25)
_STAGE2_TAPS = (0.25, 0.5, 0.25)


def make_pose(batch: int | str = "batch", scale: float = 1.0) -> onnx.ModelProto:
    """Colour-code matching pose model; `scale` multiplies the heatmaps (peak calibration).

    Heatmap v is centred on crop pixel 4v: the input is pre-pooled 2x (R, G, B are linear in a
    blob, so the colour ratios survive pooling), codes are matched at 128x96, then pooled 2x
    again and blurred (sigma 1.5 heatmap px). All pooling/blur is separable and linear, so it is
    done as left/right MatMuls with small banded matrices: on ORT CPU that is 2-3x faster than
    full-res matching + AveragePool (NCHWc reorders) + a depthwise Conv(group=133) blur.
    """
    n = helper.make_node
    K = scene.NUM_KEYPOINTS
    h2, w2 = POSE_H // 2, POSE_W // 2
    levels = (np.arange(12, dtype=np.float32) / 11.0).reshape(1, 12, 1, 1)
    p1_h = _pool_matrix(POSE_H, h2, _STAGE1_TAPS)  # (128, 256)
    p1_w = _pool_matrix(POSE_W, w2, _STAGE1_TAPS)  # (96, 192)
    p2_h = _blur_matrix(HM_H) @ _pool_matrix(h2, HM_H, _STAGE2_TAPS)  # (64, 128)
    p2_w = _blur_matrix(HM_W) @ _pool_matrix(w2, HM_W, _STAGE2_TAPS) * scale  # (48, 96) + gain
    inits = [
        _const("std", np.array(IMAGENET_STD).reshape(1, 3, 1, 1)),
        _const("mean", np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1)),
        _const("p1_h", p1_h), _const("p1_w_t", p1_w.T),
        _const("p2_h", p2_h), _const("p2_w_t", p2_w.T),
        _const("eps", RATIO_EPS),
        _const("levels", levels),
        _const("neg_c", -1.0 / (2.0 * CODE_SIGMA ** 2)),
        _const("ax1", [1], np.int64), _const("ax2", [2], np.int64),
        _const("shape144", [-1, 144, h2, w2], np.int64),
        _const("k_start", [0], np.int64), _const("k_end", [K], np.int64),
    ]
    nodes = [
        n("Mul", ["input", "std"], ["x_s"]),
        n("Add", ["x_s", "mean"], ["rgb"]),  # back to [0,1] RGB
        n("MatMul", ["rgb", "p1_w_t"], ["rgb_w"]),  # [N,3,256,96]
        n("MatMul", ["p1_h", "rgb_w"], ["rgb2"]),  # [N,3,128,96]
        n("Split", ["rgb2"], ["R", "G", "B_raw"], axis=1),
        # Relu: fp16 un-normalisation leaves ~1e-3 noise on black, keep the weight non-negative.
        n("Relu", ["B_raw"], ["B"]),
        n("Add", ["B", "eps"], ["den"]),
        n("Div", ["R", "den"], ["r"]),  # ~ r_k inside blob k
        n("Div", ["G", "den"], ["g"]),
    ]
    # Code k = 12*i + j has (r, g) = (i/11, j/11): match = B * e_r[i] * e_g[j]; the outer product
    # of two 12-channel maps gives all 144 codes in k order, 133 of which are used.
    for c in ("r", "g"):
        nodes += [
            n("Sub", [c, "levels"], [f"d{c}"]),  # [N,12,h2,w2]
            n("Mul", [f"d{c}", f"d{c}"], [f"d{c}2"]),
            n("Mul", [f"d{c}2", "neg_c"], [f"a{c}"]),
            n("Exp", [f"a{c}"], [f"e{c}"]),
        ]
    nodes += [
        n("Mul", ["er", "B"], ["erB"]),
        n("Unsqueeze", ["erB", "ax2"], ["erB5"]),  # [N,12,1,h2,w2]
        n("Unsqueeze", ["eg", "ax1"], ["eg5"]),  # [N,1,12,h2,w2]
        n("Mul", ["erB5", "eg5"], ["match5"]),  # [N,12,12,h2,w2]
        n("Reshape", ["match5", "shape144"], ["match"]),  # [N,144,h2,w2]
        n("MatMul", ["match", "p2_w_t"], ["match_w"]),  # [N,144,128,48]
        n("MatMul", ["p2_h", "match_w"], ["hm144"]),  # [N,144,64,48]
        n("Slice", ["hm144", "k_start", "k_end", "ax1"], ["heatmaps"]),  # 133 of 144 codes
    ]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, POSE_H, POSE_W])
    out = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, K, HM_H, HM_W])
    return _model(nodes, [inp], [out], inits, "testkit_pose")


def to_fp16(model: onnx.ModelProto, keep_io_types: bool = False) -> onnx.ModelProto:
    """FP16 copy made the way real models are converted (onnxconverter-common)."""
    from onnxconverter_common.float16 import convert_float_to_float16  # optional dependency

    return convert_float_to_float16(model, keep_io_types=keep_io_types)


# --------------------------------------------------------------------------- torch ViT


def make_torch_vit_pose(seed: int = 0, dim: int = 32, depth: int = 2, heads: int = 4):
    """A small ViTPose-like torch model built from ``nn.TransformerEncoderLayer`` (so
    ``nn.MultiheadAttention``), with the real pose signature: (B,3,256,192) -> (B,133,64,48).

    16x16 patch embedding (16x12 tokens), pre-norm encoder layers, two stride-2 deconvolution
    + BatchNorm + ReLU stages and a 1x1 head, like ViTPose's classic decoder. Weights are
    random (seeded); a fixed Gaussian peak per keypoint is added to the head's output so the
    heatmap argmaxes are well defined, as a trained model's are. For checking that ordinary
    torch exports go through the tools (see :func:`export_torch_vit_pose`); ~100 K parameters.
    """
    import torch
    from torch import nn

    K = scene.NUM_KEYPOINTS
    gh, gw = POSE_H // 16, POSE_W // 16

    class TinyViTPose(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, dim, 16, 16)
            self.pos = nn.Parameter(torch.randn(1, gh * gw, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(dim, dim, 4, 2, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(),
                nn.ConvTranspose2d(dim, dim, 4, 2, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(),
            )
            self.head = nn.Conv2d(dim, K, 1)
            rng = np.random.default_rng(seed)
            yy, xx = np.mgrid[0:HM_H, 0:HM_W]
            cy, cx = rng.integers(4, HM_H - 4, K), rng.integers(4, HM_W - 4, K)
            peaks = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 8.0)
            self.register_buffer("peaks", torch.from_numpy(peaks[None].astype(np.float32)))

        def forward(self, x):
            f = self.embed(x)
            b, c, h, w = f.shape
            t = self.norm(self.encoder(f.flatten(2).transpose(1, 2) + self.pos))
            f = t.transpose(1, 2).reshape(b, c, h, w)
            return 0.1 * self.head(self.decoder(f)) + self.peaks

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyViTPose()
        # Stats a trained model would have, so the BatchNorms are not identities.
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def export_torch_vit_pose(path, dynamo: bool = False, batch: int | str = "batch", seed: int = 0) -> Path:
    """Export :func:`make_torch_vit_pose` with ``torch.onnx.export(..., opset_version=17)``, as a
    user would: the TorchScript exporter (``dynamo=False``) or the dynamo one (``dynamo=True``,
    needs onnxscript). ``batch`` is a dim name (dynamic batch) or an int. One file, no
    external data. Returns ``path``.
    """
    import torch

    path = Path(path)
    model = make_torch_vit_pose(seed)
    # Batch 2 as the example: torch.export specialises a dimension whose example size is 1.
    x = torch.zeros(2 if isinstance(batch, str) else int(batch), 3, POSE_H, POSE_W)
    kw = dict(opset_version=OPSET, input_names=["input"], output_names=["heatmaps"], dynamo=dynamo)
    if dynamo:
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise ImportError("torch.onnx.export(dynamo=True) needs onnxscript: pip install onnxscript") from None
        kw["external_data"] = False
        if isinstance(batch, str):
            kw["dynamic_shapes"] = {"x": {0: torch.export.Dim(batch, min=1, max=1024)}}
    elif isinstance(batch, str):
        kw["dynamic_axes"] = {"input": {0: batch}, "heatmaps": {0: batch}}
    # Not under torch.no_grad(): there nn.TransformerEncoderLayer takes its fused fast path
    # (aten::_transformer_encoder_layer_fwd), which the TorchScript exporter cannot export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter notices (deprecations, fast-path fallbacks)
        torch.onnx.export(model, (x,), str(path), **kw)
    return path


# --------------------------------------------------------------------------- calibration


def sample_crop(frame: np.ndarray, x0: float, y0: float, s: float,
                out_h: int = POSE_H, out_w: int = POSE_W) -> np.ndarray:
    """Bilinear crop (out_h, out_w, C) sampling frame (H, W, C) at (x0 + u*s, y0 + v*s) in
    pixel-index coords; zeros outside the frame."""
    H, W = frame.shape[:2]
    xs = x0 + np.arange(out_w) * s
    ys = y0 + np.arange(out_h) * s
    x_lo, y_lo = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = (xs - x_lo).astype(np.float32), (ys - y_lo).astype(np.float32)
    padded = np.zeros((H + 2, W + 2) + frame.shape[2:], dtype=np.float32)
    padded[1:-1, 1:-1] = frame
    # Indices into the 1-px zero border: anything outside reads 0.
    xi0, xi1 = np.clip(x_lo + 1, 0, W + 1), np.clip(x_lo + 2, 0, W + 1)
    yi0, yi1 = np.clip(y_lo + 1, 0, H + 1), np.clip(y_lo + 2, 0, H + 1)
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = padded[yi0][:, xi0] * (1 - fx) + padded[yi0][:, xi1] * fx
    bot = padded[yi1][:, xi0] * (1 - fx) + padded[yi1][:, xi1] * fx
    return top * (1 - fy) + bot * fy


def normalize_crop(crop_rgb01: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB [0,1] -> (3, H, W) ImageNet-normalised float32."""
    x = (crop_rgb01 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def reference_person_box(keypoints: np.ndarray, sigma: float) -> np.ndarray:
    """Box the pipeline is expected to use: keypoint extent padded by ~the detector's margin."""
    kp = np.asarray(keypoints, dtype=np.float64)
    pad = 2.5 * float(sigma)
    return np.array([*(kp.min(0) - pad), *(kp.max(0) + pad)])


def _calibrate_pose_scale() -> float:
    """Heatmap gain so that visible points at the default scene scale peak at TARGET_PEAK."""
    import onnxruntime as ort

    clip = scene.make_clip(1, motion="hold")
    frame = clip.frames[0].numpy()
    kp = clip.keypoints[0].numpy()
    box = reference_person_box(kp, float(clip.sigma[0]))
    x0, y0, s = scene.pose_crop_window(box)
    x = normalize_crop(sample_crop(frame, x0, y0, s))[None]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(make_pose(1, 1.0).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    hm = sess.run(None, {"input": x})[0][0]
    peak = float(np.median(hm.reshape(hm.shape[0], -1).max(1)))
    return float(f"{TARGET_PEAK / peak:.4g}")


# --------------------------------------------------------------------------- build + cache


def default_cache_dir() -> Path:
    """Test-model cache: $WANPREP_TEST_MODELS if set, else <user cache>/wanprep_torch/test_models
    ($XDG_CACHE_HOME or ~/.cache)."""
    env = os.environ.get("WANPREP_TEST_MODELS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wanprep_torch" / "test_models"


def _stamp() -> dict:
    h = hashlib.sha256()
    for f in (Path(__file__), Path(scene.__file__)):
        h.update(f.read_bytes())
    try:
        import onnxconverter_common  # noqa: F401

        fp16 = True
    except ImportError:
        fp16 = False
    return {"version": MODELS_VERSION, "source": h.hexdigest()[:16], "fp16": fp16}


def _save(model_or_bytes, path: Path) -> None:
    # Write-then-rename so concurrent builders (pytest-xdist workers) never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = model_or_bytes
    if not isinstance(data, bytes):
        data = data.SerializeToString()
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_test_models(out_dir: str | os.PathLike | None = None, fp16: bool = True) -> dict[str, Path]:
    """Build (or reuse) the test models in out_dir (default: :func:`default_cache_dir`).

    Returns {key: path} with keys: "det" (YOLOv10 signature, dynamic batch), "det_b1" (batch 1),
    "det_v8" (YOLOv8 signature, dynamic batch), "pose" (dynamic batch), "pose_b1" (batch 1),
    "det_two" (two people: one box per half), "det_multi" (up to four
    people side by side, :func:`make_multi_person_detector`), "det_fp16" / "pose_fp16" (float16 inputs and outputs, dynamic batch),
    "det_fp16_keepio" / "pose_fp16_keepio" (float16 inside, float32 inputs/outputs) and
    "not_onnx" (a text file with an .onnx suffix). The fp16 keys are missing (with a warning)
    when onnxconverter-common is not installed, or not asked for (``fp16=False``, no warning).

    Files are reused when the stamp file matches this code's version; otherwise rebuilt.
    """
    out = Path(out_dir) if out_dir is not None else default_cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = _stamp()
    paths = {k: out / v for k, v in MODEL_FILES.items()}
    if fp16 and not stamp["fp16"]:
        warnings.warn("onnxconverter-common is not installed: fp16 test models "
                      f"({', '.join(FP16_KEYS)}) are not built", stacklevel=2)
    want16 = fp16 and stamp["fp16"]
    if not want16:
        for k in FP16_KEYS:
            paths.pop(k)
    stamp_path = out / STAMP_NAME
    try:
        cached = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        cached = None
    if (isinstance(cached, dict) and all(cached.get(k) == stamp[k] for k in ("version", "source"))
            and (cached.get("fp16") or not want16) and all(p.is_file() for p in paths.values())):
        return paths

    scale = _calibrate_pose_scale()
    det, pose = make_detector("batch", "yolov10"), make_pose("batch", scale)
    built = {
        "det": det,
        "det_b1": make_detector(1, "yolov10"),
        "det_v8": make_detector("batch", "yolov8"),
        "pose": pose,
        "pose_b1": make_pose(1, scale),
        "det_two": make_two_person_detector("batch"),
        "det_multi": make_multi_person_detector("batch"),
    }
    if want16:
        built["det_fp16"] = to_fp16(det)
        built["det_fp16_keepio"] = to_fp16(det, keep_io_types=True)
        built["pose_fp16"] = to_fp16(pose)
        built["pose_fp16_keepio"] = to_fp16(pose, keep_io_types=True)
    for k, m in built.items():
        _save(m, paths[k])
    _save(b"this is not an ONNX model\n", paths["not_onnx"])
    # Written last: a stamp only exists next to a complete set. pose_scale is informational.
    _save(json.dumps({**stamp, "fp16": want16, "pose_scale": scale}, sort_keys=True).encode(), stamp_path)
    return paths


__all__ = [
    "build_test_models",
    "default_cache_dir",
    "make_detector",
    "make_two_person_detector",
    "make_multi_person_detector",
    "make_pose",
    "make_torch_vit_pose",
    "export_torch_vit_pose",
    "to_fp16",
    "sample_crop",
    "normalize_crop",
    "reference_person_box",
    "MODEL_FILES",
]
