"""Time wanprep_torch.onetoall's drawing against the reference's way of drawing, same run.

    python scripts/bench_onetoall.py [--frames 24] [--width 832] [--height 480] [--threads 1]
                                     [--device cpu] [--repeats 3] [--golden PATH] [--runs N]

The reference ("Pose Detection OneToAll Animation") draws each frame on its own canvas whose
short side is 2160 px (3744 x 2160 for 832 x 480): limbs, a 0.6 dimming pass over the whole
canvas, joints, hands and face, then a bilinear resize to the output size. The baseline here
does the same per frame on a full numpy canvas (the primitives' pixels come from the same
scan conversion as the library, so only the way of drawing differs); the library draws all
frames at once and paints only the canvas rows and columns the resize reads. Both outputs
are compared, and the ratio printed.

``--runs N`` times the whole ``onetoall()`` (align_to="ref" onto a synthetic reference, as the
node after its models) N times and prints the median and spread of wall and CPU time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from wanprep_torch.onetoall import LIMB_SLOTS, onetoall, DwPoses, canvas_size, dwposes_from_keypoints, pose_shapes, render_dwposes
from wanprep_torch.raster import rasterize
from wanprep_torch.resample import linear_taps


def synthetic_keypoints(frames: int, width: int, height: int, seed: int = 0) -> torch.Tensor:
    """(T, 133, 3) wholebody keypoints of a swaying person (pixels), face and hands included."""
    rng = np.random.default_rng(seed)
    s = height / 480
    cx, top = width / 2, 0.15 * height
    body = {  # COCO rows: (dx, dy) from the nose, in 480-high pixels
        0: (0, 0), 1: (-6, -6), 2: (6, -6), 3: (-14, -2), 4: (14, -2), 5: (-30, 40), 6: (30, 40),
        7: (-60, 90), 8: (60, 90), 9: (-70, 130), 10: (70, 130), 11: (-20, 140), 12: (20, 140),
        13: (-22, 210), 14: (22, 210), 15: (-24, 280), 16: (24, 280), 17: (-30, 290), 18: (-20, 292),
        19: (-26, 282), 20: (30, 290), 21: (20, 292), 22: (26, 282),
    }  # fmt: skip
    out = np.zeros((frames, 133, 3), np.float32)
    for t in range(frames):
        sway = np.array([40 * math.sin(t / 15), 10 * math.sin(t / 7)])
        kp = out[t]
        for i, (dx, dy) in body.items():
            kp[i, :2] = (cx + dx * s, top + dy * s) + sway + rng.normal(0, 2, 2)
        a = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        kp[23:91, 0] = cx + sway[0] + 12 * s * np.cos(a)
        kp[23:91, 1] = top + sway[1] + 4 * s + 14 * s * np.sin(a)
        for h, wrist in enumerate((kp[9, :2], kp[10, :2])):
            ang = 1.2 + 0.5 * math.sin(t / 9) + h * 0.6
            for f in range(5):
                d = ang + (f - 2) * 0.35
                for j in range(4):
                    step = 7 * s * (j + 1) * np.array([math.cos(d), math.sin(d)])
                    kp[91 + 21 * h + 1 + 4 * f + j, :2] = wrist + step
            kp[91 + 21 * h, :2] = wrist
        kp[:, 2] = rng.uniform(0.5, 1.0, 133)
    return torch.from_numpy(out)


def reference_way(poses: DwPoses, height: int, width: int) -> np.ndarray:
    """Frame by frame on a full-size canvas: the reference's way (numpy painting and resize)."""
    ch, cw = canvas_size(height, width)
    y0, y1, wy = linear_taps(ch, height)
    x0, x1, wx = linear_taps(cw, width)
    frames = []
    for t in range(poses.body.shape[0]):
        one = DwPoses(*(v[t : t + 1] for v in poses))
        shapes, colors = pose_shapes(one, ch, cw, dim_limbs=False)
        pix = rasterize(shapes.segments, shapes.count, cw)
        order = shapes.order[pix.owner].numpy()
        py, px = pix.y.numpy(), pix.x.numpy()
        colors = colors[0].numpy()
        canvas = np.zeros((ch, cw, 3), np.uint8)
        first = np.argsort(order, kind="stable")  # paint in draw order: later primitives win
        limbs = first[order[first] < LIMB_SLOTS]
        rest = first[order[first] >= LIMB_SLOTS]
        canvas[py[limbs], px[limbs]] = colors[order[limbs]]
        canvas = (canvas * 0.6).astype(np.uint8)  # the reference dims the whole canvas
        canvas[py[rest], px[rest]] = colors[order[rest]]
        # Bilinear resize (11-bit fixed-point weights, rounded), rows then columns.
        top, bottom = canvas[y0].astype(np.int64), canvas[y1].astype(np.int64)
        rows = top * (2048 - wy)[:, None, None] + bottom * wy[:, None, None]
        img = rows[:, x0] * (2048 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
        frames.append(((img + (1 << 21)) >> 22).astype(np.uint8))
    return np.stack(frames).astype(np.float32) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the reference draws on one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--golden", default=None, help="onetoall.npz: tile its template poses (else synthetic)")
    ap.add_argument("--runs", type=int, default=0, help="also time onetoall() this many times (median, spread)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.golden:
        tpl = torch.from_numpy(np.load(args.golden)["template_kps"])
        kps = tpl[torch.arange(args.frames) % tpl.shape[0]]
        poses = dwposes_from_keypoints(kps, 832, 480)
    else:
        kps = synthetic_keypoints(args.frames, args.width, args.height)
        poses = dwposes_from_keypoints(kps, args.width, args.height)
    device = torch.device(args.device)
    on_device = DwPoses(*(v.to(device) for v in poses))

    def ours() -> torch.Tensor:
        out = render_dwposes(on_device, args.height, args.width, dtype=torch.float32)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def best(fn) -> tuple[float, object]:
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    ours()  # warm-up
    t_ours, a = best(ours)
    t_ref, b = best(lambda: reference_way(poses, args.height, args.width))
    diff = np.abs(a.cpu().numpy() - b)
    n = args.frames
    canvas = canvas_size(args.height, args.width)
    print(f"{n} frames {args.width}x{args.height}, canvas {canvas}, torch threads {args.threads}, device {device}")
    print(f"reference way (per frame, full canvas): {t_ref * 1000:8.1f} ms  ({t_ref * 1000 / n:6.1f} ms/frame)")
    print(f"wanprep_torch.onetoall (batched)      : {t_ours * 1000:8.1f} ms  ({t_ours * 1000 / n:6.1f} ms/frame)")
    over = (diff > 1.5 / 255).mean()
    print(f"speed-up: {t_ref / t_ours:.2f}x   outputs: max diff {diff.max() * 255:.0f}/255, {over:.2e} of values over 1/255")
    if args.runs:
        time_onetoall(kps.to(device), args.width, args.height, args.runs)


def time_onetoall(kps: torch.Tensor, width: int, height: int, runs: int) -> None:
    """onetoall() with align_to="ref" onto a synthetic reference image, ``runs`` times."""
    ref_kps = synthetic_keypoints(1, width, height, seed=1)[0].to(kps.device)
    image = torch.full((height, width, 3), 128, dtype=torch.uint8, device=kps.device)
    onetoall(kps, width, height, "ref", reference_keypoints=ref_kps, reference_image=image)  # warm-up
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        onetoall(kps, width, height, "ref", reference_keypoints=ref_kps, reference_image=image)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    spread = lambda v: f"median {statistics.median(v):.3f} [{min(v):.3f}-{max(v):.3f}] s"  # noqa: E731
    print(f"onetoall() x{runs} ({kps.shape[0]} frames, align_to='ref'): wall {spread(wall)}, cpu {spread(cpu)}")


if __name__ == "__main__":
    main()
