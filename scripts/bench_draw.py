"""Time the "Draw ViT Pose" node (wanprep_torch.comfy.DrawViTPose) on a synthetic clip, and
against the reference node in the same process when its checkout is given.

    python scripts/bench_draw.py [--frames 120] [--width 832] [--height 480] [--pairs 7]
                                 [--crop] [--threads 2] [--device cpu] [--reference DIR]

Without ``--reference`` it prints this project's node time (median and spread of the runs).
With ``--reference DIR`` (a checkout of the ComfyUI-WanAnimatePreprocess pack, importable with
its own requirements: opencv-python-headless, matplotlib, tqdm; none of them is a dependency of
this project) it loads the reference's nodes with stand-in ComfyUI modules and times both
nodes in alternating pairs on the same poses (the reference's ``pose_metas`` are its own
AAPoseMeta objects, as its detection node makes them), then prints each pair, the median
ratio with its spread, wall and CPU time, and how far the two outputs differ.
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from wanprep_torch import PoseMeta
from wanprep_torch.comfy import DrawViTPose

# Standing person on an 832 x 480 canvas (pixel coordinates), OpenPose-18 + toes.
_BODY = [
    (416, 80), (416, 140), (356, 140), (300, 170), (250, 200), (476, 140), (532, 170),
    (582, 200), (386, 270), (376, 350), (366, 430), (446, 270), (456, 350), (466, 430),
    (400, 66), (432, 66), (380, 80), (452, 80), (500, 440), (332, 440),
]  # fmt: skip


def _hand(wx: float, wy: float, direction: float) -> np.ndarray:
    pts = [(wx, wy)]
    for f in range(5):
        ang = direction + (f - 2) * 0.45
        pts += [(wx + 16 * j * math.cos(ang), wy + 16 * j * math.sin(ang)) for j in range(1, 5)]
    return np.array(pts)


def synthetic_metas(frames: int, width: int, height: int, seed: int = 0) -> list[dict]:
    """T Wan meta dicts of a swaying person with hands (scores 0.4-1.0)."""
    rng = np.random.default_rng(seed)
    scale = np.array([width / 832, height / 480])
    metas = []
    for t in range(frames):
        sway = np.array([40 * math.sin(t / 15), 10 * math.sin(t / 7)])
        body = (np.array(_BODY, float) + sway + rng.normal(0, 3, (20, 2))) * scale
        lh = (_hand(582, 200, 0.3 + 0.5 * math.sin(t / 9)) + sway) * scale
        rh = (_hand(250, 200, math.pi - 0.3) + sway) * scale

        def norm(px: np.ndarray, score: np.ndarray) -> np.ndarray:
            return np.concatenate([px / [width, height], score[:, None]], 1).astype(np.float32)

        metas.append(
            {
                "width": width,
                "height": height,
                "keypoints_body": norm(body, rng.uniform(0.4, 1.0, 20)),
                "keypoints_left_hand": norm(lh, rng.uniform(0.4, 1.0, 21)),
                "keypoints_right_hand": norm(rh, rng.uniform(0.4, 1.0, 21)),
                "keypoints_face": norm(body[[0]].repeat(69, 0), np.full(69, 0.9)),
            }
        )
    return metas


def load_reference(path: Path):
    """The reference pack's ``nodes`` and ``pose2d_utils`` modules, with stand-in ComfyUI
    modules (folder_paths, comfy.model_management, comfy.utils)."""

    class _Bar:
        def __init__(self, total):
            pass

        def update_absolute(self, value, *a):
            pass

        def update(self, value):
            pass

    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(path)
    fp.add_model_folder_path = lambda *a, **k: None
    fp.get_filename_list = lambda *a: []
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = mm.unet_offload_device = lambda: torch.device("cpu")
    cu = types.ModuleType("comfy.utils")
    cu.ProgressBar = _Bar
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils = mm, cu
    sys.modules.update({"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm, "comfy.utils": cu})
    path = path.resolve()
    sys.path.insert(0, str(path.parent))
    nodes = importlib.import_module(f"{path.name}.nodes")
    return nodes, importlib.import_module(f"{path.name}.pose_utils.pose2d_utils")


def _timed(fn) -> tuple[float, float, torch.Tensor]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--pairs", type=int, default=7, help="timed runs (alternating pairs with --reference)")
    ap.add_argument("--crop", action="store_true", help="retargeted poses: the crop-to-bounds framing")
    ap.add_argument("--threads", type=int, default=2, help="torch's intra-op threads for the process")
    ap.add_argument("--reference", type=Path, default=None, help="checkout of ComfyUI-WanAnimatePreprocess")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    metas = synthetic_metas(args.frames, args.width, args.height)
    retarget = np.zeros((args.height, args.width, 3), np.uint8) if args.crop else None
    ours_data = {"pose_metas": [PoseMeta.from_wan(m) for m in metas], "retarget_image": retarget}
    size = (args.width, args.height)

    def ours() -> torch.Tensor:
        return DrawViTPose().process(ours_data, *size, 16, -1, -1, True)[0]

    runs = [("wanprep_torch", ours)]
    if args.reference is not None:
        nodes, pose2d = load_reference(args.reference)
        ref_data = {"pose_metas": [pose2d.AAPoseMeta.from_humanapi_meta(m) for m in metas], "retarget_image": retarget}

        def reference() -> torch.Tensor:
            return nodes.DrawViTPose().process(ref_data, *size, -1, -1, True, 16)[0]

        runs.append(("reference", reference))
    outs = [fn() for _, fn in runs]  # warm-up (and the outputs compared below)
    wall = {name: [] for name, _ in runs}
    cpu = {name: [] for name, _ in runs}
    for i in range(args.pairs):
        line = []
        for name, fn in runs if i % 2 == 0 else runs[::-1]:
            w, c, _ = _timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
            line.append(f"{name} {w:.3f} s (cpu {c:.3f})")
        print(f"run {i}: " + ", ".join(line))
    mode = "crop" if args.crop else "pad"
    print(f"{args.frames} frames {args.width}x{args.height} ({mode}), torch threads {args.threads}")
    for name in wall:
        print(f"  {name:>14}: wall {_spread(wall[name])} s, cpu {_spread(cpu[name])} s")
    if args.reference is not None:
        ratio = [r / o for r, o in zip(wall["reference"], wall["wanprep_torch"])]
        ratio_cpu = [r / o for r, o in zip(cpu["reference"], cpu["wanprep_torch"])]
        print(f"  reference / wanprep_torch per pair: wall {_spread(ratio)}, cpu {_spread(ratio_cpu)}")
        diff = (outs[0] - outs[1]).abs()
        print(f"  outputs: max diff {float(diff.max()) * 255:.0f}/255, {float((diff > 1e-6).float().mean()):.2e} of values differ")


if __name__ == "__main__":
    main()
