#!/usr/bin/env python
"""Build ViTPose-wholebody-shaped stand-in ONNX models with random weights, for timing only.

The graphs have the real ViTPose-{B,L,H} cost and signature (input `input` float32
[batch,3,256,192], output `heatmaps` float32 [batch,133,64,48], opset 17) but their
outputs mean nothing: never use them to judge accuracy.

    python scripts/make_standins.py --out DIR [--size b l h] [--fixed-batch] [--bench]

Also importable by path (it is a plain module):

    spec = importlib.util.spec_from_file_location("make_standins", "scripts/make_standins.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    mod.build_vitpose_standin("b", "out/vitpose-b-standin.onnx")
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when not installed
from converters._common import data_file_name, save_model  # noqa: E402

INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
OPSET = 17
IN_H, IN_W = 256, 192
PATCH = 16
GRID_H, GRID_W = IN_H // PATCH, IN_W // PATCH  # 16 x 12 = 192 tokens
NUM_KEYPOINTS = 133  # COCO-WholeBody
HEAD_CHANNELS = 256

# size -> (width, depth, heads). "tiny" is for tests only and is not advertised in --help.
CONFIGS = {
    "tiny": (64, 2, 2),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
    "h": (1280, 32, 16),
}
PUBLIC_SIZES = ("b", "l", "h")

# Protobuf cannot serialise a message over 2 GiB; switch to external data well before that.
EXTERNAL_DATA_BYTES = int(1.5 * 1024**3)

DEFAULT_YOLO = Path("/work/shared/models/yolov10m-standin.onnx")


class Attention(nn.Module):
    # Written out with matmul/softmax (not nn.MultiheadAttention) so the exported graph is the
    # plain op sequence ViTPose's own export produces, with no fast-path kernels in the trace.
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token count and width are fixed; Python ints keep Shape/Gather ops out of the trace.
        n, c = GRID_H * GRID_W, self.heads * self.head_dim
        # -1 for the batch so the traced graph carries no batch-dependent constant.
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTPoseStandin(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.dim = dim
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)
        self.pos_embed = nn.Parameter(torch.zeros(1, GRID_H * GRID_W, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        layers: list[nn.Module] = []
        cin = dim
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(cin, HEAD_CHANNELS, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(HEAD_CHANNELS),
                nn.ReLU(inplace=True),
            ]
            cin = HEAD_CHANNELS
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(HEAD_CHANNELS, NUM_KEYPOINTS, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # [N, 192, C]
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        x = x.transpose(1, 2).reshape(-1, self.dim, GRID_H, GRID_W)
        return self.final(self.deconv(x))  # [N, 133, 64, 48]


def make_model(size: str, seed: int = 0) -> ViTPoseStandin:
    if size not in CONFIGS:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(CONFIGS)}")
    torch.manual_seed(seed)  # same weights for the dynamic and fixed-batch copies
    dim, depth, heads = CONFIGS[size]
    return ViTPoseStandin(dim, depth, heads).eval()


def _param_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _export(model: ViTPoseStandin, out_path: Path, fixed_batch: bool, external_data: bool | None) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = _param_bytes(model) > EXTERNAL_DATA_BYTES
    dummy = torch.zeros(1, 3, IN_H, IN_W)
    # Export into a scratch dir on the same filesystem: past 2 GiB the TorchScript exporter
    # writes one file per tensor beside the model, which we then repack into a single .data file.
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".standin-export-") as tmp:
        tmp_model = Path(tmp) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # dynamo=False is deliberate (needs no onnxscript); its deprecation notice is noise here.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp_model),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamic_axes=None if fixed_batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp_model), load_external_data=True)
    proto.doc_string = "ViTPose-wholebody stand-in with RANDOM weights: for timing only"
    # The exporter leaves ConvTranspose's spatial dims symbolic under a dynamic batch; pin them
    # so the declared output is [batch, 133, 64, 48] like the real model's.
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    for d, v in zip(out_dims[1:], (NUM_KEYPOINTS, IN_H // 4, IN_W // 4)):
        d.dim_value = v
    save_model(proto, out_path, bool(external_data))  # the converters' writer: one <name>.data file
    if external_data:
        # onnx creates the data file 0600; give it the same mode as the model file.
        out_path.with_name(data_file_name(out_path)).chmod(out_path.stat().st_mode & 0o777)
    del proto
    gc.collect()
    onnx.checker.check_model(str(out_path))  # path form so external data is handled
    return out_path


def build_vitpose_standin(
    size: str,
    out_path: str | Path,
    fixed_batch: bool = False,
    external_data: bool | None = None,
) -> Path:
    """Export a random-weight ViTPose-`size` stand-in to `out_path` and return the path.

    fixed_batch: batch axis fixed to 1 instead of the dynamic "batch" dim.
    external_data: None = automatic (weights over ~1.5 GB go to `<name>.data`); True/False forces it.
    """
    model = make_model(size)
    try:
        return _export(model, Path(out_path), fixed_batch, external_data)
    finally:
        del model
        gc.collect()


def file_bytes(path: Path) -> int:
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _session(path: Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify(path: Path, batches=(1, 2)) -> None:
    """Run the model with ORT CPU and check output shape and finiteness."""
    sess = _session(path)
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME, (inp.name, out.name)
    fixed = isinstance(inp.shape[0], int)
    rng = np.random.default_rng(0)
    for b in (1,) if fixed else batches:
        x = rng.random((b, 3, IN_H, IN_W), dtype=np.float32)
        (y,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
        assert y.shape == (b, NUM_KEYPOINTS, IN_H // 4, IN_W // 4), y.shape
        assert y.dtype == np.float32 and np.isfinite(y).all(), "non-finite output"


def time_per_frame(
    path: Path, input_name: str, shape: tuple[int, ...], runs: int = 3, threads: int = 2
) -> tuple[float, float]:
    """Model-only (median, best) ms per frame over `runs` runs after one warm-up run.

    The best run is reported too because on a shared CPU the median absorbs other load.
    """
    sess = _session(path, threads)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    sess.run(None, {input_name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {input_name: x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0 / shape[0], min(times) * 1000.0 / shape[0]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--size", nargs="+", default=["b"], choices=list(CONFIGS), metavar="{b,l,h}",
        help="model sizes to build (default: b)",
    )
    p.add_argument("--fixed-batch", action="store_true", help="also write a batch-1-fixed copy (*-b1.onnx)")
    p.add_argument("--no-verify", action="store_true", help="skip the ORT batch 1/2 check of new files")
    p.add_argument(
        "--bench", action="store_true",
        help="time model-only ms/frame (ORT CPU, ALL optimisations, 2 threads) at batch 1 and 8, "
        "plus the YOLO stand-in at batch 1",
    )
    p.add_argument("--bench-runs", type=int, default=3)
    p.add_argument("--yolo", type=Path, default=DEFAULT_YOLO, help="YOLO stand-in timed with --bench")
    args = p.parse_args(argv)

    built: list[Path] = []
    for size in dict.fromkeys(args.size):  # dedupe, keep order
        targets = [(args.out / f"vitpose-{size}-standin.onnx", False)]
        if args.fixed_batch:
            targets.append((args.out / f"vitpose-{size}-standin-b1.onnx", True))
        model = None
        for path, fixed in targets:
            if path.exists():
                print(f"exists: {path} ({_mb(file_bytes(path))})")
            else:
                if model is None:
                    model = make_model(size)
                t0 = time.perf_counter()
                _export(model, path, fixed, None)
                dt = time.perf_counter() - t0
                print(f"built:  {path} ({_mb(file_bytes(path))}) in {dt:.1f} s")
                if not args.no_verify:
                    t0 = time.perf_counter()
                    verify(path)
                    print(f"        verified with ORT (batch {'1' if fixed else '1, 2'}) in {time.perf_counter() - t0:.1f} s")
            built.append(path)
        del model
        gc.collect()

    if args.bench:
        for path in built:
            sess_in = _session(path).get_inputs()[0]
            fixed = isinstance(sess_in.shape[0], int)
            for b in (1,) if fixed else (1, 8):
                med, best = time_per_frame(path, INPUT_NAME, (b, 3, IN_H, IN_W), args.bench_runs)
                print(f"bench:  {path.name} batch {b}: {med:.1f} ms/frame median, {best:.1f} best")
        if args.yolo.exists():
            med, best = time_per_frame(args.yolo, "images", (1, 3, 640, 640), args.bench_runs)
            print(f"bench:  {args.yolo.name} batch 1: {med:.1f} ms/frame median, {best:.1f} best")
        else:
            print(f"bench:  {args.yolo} not found, skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
