"""Command line: `wanprep demo` (also `python -m wanprep_torch demo`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "format_timings", "run_demo"]


def format_timings(timings: dict) -> str:
    """A fixed-width table of Result.timings."""
    rows = [(k, v) for k, v in timings.items() if isinstance(v, dict)]
    lines = [f"{'stage':<14}{'seconds':>10}{'ms/frame':>11}"]
    for name, v in rows:
        if name in ("total", "non_model"):
            continue
        lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    for name in ("non_model", "total"):
        if name in timings:
            v = timings[name]
            lines.append(f"{name:<14}{v['s']:>10.3f}{v['ms_per_frame']:>11.2f}")
    lines.append(f"frames: {timings.get('frames', '?')}")
    return "\n".join(lines)


def _save_png(img, path: Path) -> None:
    from PIL import Image

    arr = img
    if arr.dtype.is_floating_point:
        arr = (arr.clamp(0, 1) * 255 + 0.5).to(dtype=__import__("torch").uint8)
    Image.fromarray(arr.cpu().numpy()).save(path)


def run_demo(out_dir: Path, frames: int = 24, device: str = "cpu", models_dir: Path | None = None, progress: bool = True) -> dict:
    """Build the tiny test models and a synthetic clip, run the pipeline, write the outputs.

    Returns a summary dict (also written as summary.json).
    """
    import torch

    from . import Preprocessor
    from .testkit import build_test_models, default_cache_dir, make_clip

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = build_test_models(models_dir or default_cache_dir())
    hidden = range(frames // 3, frames // 3 + max(frames // 6, 1))  # the person turns away
    clip = make_clip(frames, motion="slow", face_hidden=hidden, seed=0)
    video = clip.frames.to(device)
    pre = Preprocessor(models["det"], models["pose"], device=device, progress=progress)
    res = pre(video)

    (out_dir / "poses.json").write_text(json.dumps(res.to_json(), indent=1))
    faces_dir = out_dir / "faces"
    faces_dir.mkdir(exist_ok=True)
    for i in range(len(res)):
        _save_png(res.face_images[i], faces_dir / f"face_{i:04d}.png")
    try:
        from .draw import draw_pose

        poses = draw_pose(res.pose_metas)
        pose_dir = out_dir / "pose"
        pose_dir.mkdir(exist_ok=True)
        for i in range(poses.shape[0]):
            _save_png(poses[i], pose_dir / f"pose_{i:04d}.png")
    except ImportError:
        pass

    gt = clip.keypoints.to(res.keypoints.device)
    vis = clip.visible.to(res.keypoints.device)
    err = (res.keypoints[..., :2] - gt).norm(dim=-1)[vis]
    summary = {
        "frames": len(res),
        "size": [res.width, res.height],
        "providers": res.providers,
        "mean_keypoint_error_px": round(float(err.mean()), 3),
        "face_held_frames": int(res.face_held.sum()),
        "key_frame_points": json.loads(res.key_frame_points),
        "out_dir": str(out_dir),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(format_timings(res.timings))
    print(f"providers: {res.providers}")
    print(f"mean keypoint error vs ground truth: {summary['mean_keypoint_error_px']:.3f} px over {int(vis.sum())} visible points")
    print(f"frames with the face held (person turned away): {summary['face_held_frames']}")
    print(f"outputs written to {out_dir}/ (poses.json, faces/*.png, pose/*.png, summary.json)")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wanprep", description="Pose and face preprocessing for Wan 2.2 Animate")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the pipeline on a synthetic clip with tiny built-in models")
    d.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    d.add_argument("--frames", type=int, default=24)
    d.add_argument("--device", default="cpu")
    d.add_argument("--models-dir", type=Path, default=None, help="where to build the tiny models (default: a cache folder)")
    d.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        run_demo(args.out, args.frames, args.device, args.models_dir, progress=not args.no_progress)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
