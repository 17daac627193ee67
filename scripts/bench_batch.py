#!/usr/bin/env python
"""Throughput of `wanprep batch`: frames/s per worker and in total for 1..N workers, and the two
costs outside the models that a large batch saturates on (decoding, writing the outputs).

    python scripts/bench_batch.py [--clips 4] [--frames 48] [--workers 1 2] [--det D --pose P]
                                  [--gate safe] [--device cpu] [--engine local|ray]

Clips: the test kit's synthetic person at 832x480, H.264 (PyAV), written into a temporary folder.
Models: the tiny analytic test models unless --det/--pose are given (e.g. the YOLOv10m and
ViTPose stand-ins: real model cost, meaningless keypoints). Prints one row per worker count and
the per-frame decode / write / output-size figures read back from each video's timings.txt.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when not installed


def write_clips(root: Path, n: int, T: int, H: int = 480, W: int = 832) -> list[Path]:
    import torch

    from wanprep_torch.testkit import make_clip
    from wanprep_torch.video import write_video

    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        frames = (make_clip(T, H=H, W=W, seed=i, motion="slow").frames * 255).round().to(torch.uint8).numpy()
        path = root / f"clip{i:03d}.mp4"
        write_video(path, [torch.from_numpy(frames)], 24)
        out.append(path)
    return out


def decode_fps(path: Path, repeats: int = 3) -> float:
    """Frames/s of PyAV decoding alone (to RGB arrays), one process, best of ``repeats``."""
    from wanprep_torch.video import VideoReader

    best = 0.0
    for _ in range(repeats):
        r = VideoReader(path)
        t0 = time.perf_counter()
        n = sum(c.shape[0] for c in r.chunks(64))
        best = max(best, n / (time.perf_counter() - t0))
        r.close()
    return best


def encode_fps(path: Path, tmp: Path) -> tuple[float, float, float]:
    """Frames/s of encoding alone (libx264 as `wanprep run` does): the clip's frames as an
    832x480 pose.mp4, their 512x512 crops as face.mp4, and pose drawing (CPU) alone."""
    import torch

    from wanprep_torch.draw import draw_pose
    from wanprep_torch.testkit import make_clip
    from wanprep_torch.video import VideoReader, write_video
    from wanprep_torch import wan

    r = VideoReader(path)
    frames = torch.cat(list(r.chunks(64)))
    r.close()
    n = frames.shape[0]
    t0 = time.perf_counter()
    write_video(tmp / "enc_pose.mp4", [frames], 24)
    t1 = time.perf_counter()
    write_video(tmp / "enc_face.mp4", [frames[:, :480, :480].repeat_interleave(2, 1)[:, :512].repeat_interleave(2, 2)[:, :, :512]], 24)
    t2 = time.perf_counter()
    clip = make_clip(n, seed=0)
    kp = torch.cat([clip.keypoints.float(), torch.ones(*clip.keypoints.shape[:2], 1)], -1)
    metas, _ = wan.pose_metas(kp, 832, 480)
    t3 = time.perf_counter()
    for s in range(0, n, 32):
        draw_pose(metas[s:s + 32])
    draw = n / (time.perf_counter() - t3)
    return n / (t1 - t0), n / (t2 - t1), draw


def timings_row(out: Path, name: str) -> dict:
    """decode / write / wall ms per frame from timings.txt, output bytes per frame."""
    d = out / name
    row = {}
    for line in (d / "timings.txt").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("decode", "write", "wall", "total"):
            row[parts[0]] = float(parts[2])
    frames = json.loads((d / "poses.json").read_text())["video"]["frames"]
    for f in ("pose.mp4", "face.mp4", "poses.json"):
        row[f] = (d / f).stat().st_size / frames
    return row


def main(argv=None) -> int:
    from wanprep_torch import batch
    from wanprep_torch.runner import RunOptions
    from wanprep_torch.testkit import build_test_models, default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--det", type=Path)
    ap.add_argument("--pose", type=Path)
    ap.add_argument("--gate", default="safe")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--engine", choices=("local", "ray"), default="local")
    args = ap.parse_args(argv)
    if not (args.det and args.pose):
        m = build_test_models(default_cache_dir(), fp16=False)
        args.det, args.pose = m["det"], m["pose"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        clips = write_clips(tmp / "clips", args.clips, args.frames)
        print(f"{args.clips} clips x {args.frames} frames at 832x480 written in {time.perf_counter() - t0:.1f} s")
        print(f"PyAV decode alone (1 process): {decode_fps(clips[0]):.0f} frames/s")
        ep, ef, dr = encode_fps(clips[0], tmp)
        print(f"H.264 encode alone (1 process): pose.mp4 832x480 {ep:.0f} frames/s, face.mp4 512x512 {ef:.0f} frames/s"
              + f"; pose drawing (CPU) {dr:.0f} frames/s")
        options = RunOptions(det=str(args.det), pose=str(args.pose), gate=args.gate, device=args.device)
        print(f"models: {args.det.name} + {args.pose.name}, gate {args.gate}, device {args.device}, engine {args.engine}")
        print(f"{'workers':>7} {'seconds':>8} {'total fps':>10} {'fps/worker':>11} {'video fps (median)':>19}")
        rows = []
        for w in args.workers:
            out = tmp / f"out{w}"
            recs = batch.plan([tmp / "clips"], out)
            t0 = time.perf_counter()
            job = batch.Job(out, options, progress=False, log=lambda m: None)
            if args.engine == "ray":
                recs = batch.run_ray(recs, job, workers=w)
            else:
                recs = batch.run_local(recs, job, workers=w)
            el = time.perf_counter() - t0
            assert all(r.status == "ok" for r in recs), [r.to_json() for r in recs]
            frames = sum(r.frames for r in recs)
            per_video = statistics.median(r.frames / r.seconds for r in recs)
            print(f"{w:>7} {el:>8.1f} {frames / el:>10.2f} {frames / el / w:>11.2f} {per_video:>19.2f}")
            rows.extend(timings_row(out, r.name) for r in recs)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"per frame (median over videos): decode {med['decode']:.1f} ms (overlapped with the models), "
              f"write {med['write']:.1f} ms (pose drawing + 2 H.264 encodes), pipeline total {med['total']:.1f} ms, "
              f"wall {med['wall']:.1f} ms")
        print(f"output bytes per frame: pose.mp4 {med['pose.mp4'] / 1e3:.1f} kB, face.mp4 {med['face.mp4'] / 1e3:.1f} kB, "
              f"poses.json {med['poses.json'] / 1e3:.1f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
