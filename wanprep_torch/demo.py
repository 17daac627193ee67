"""`wanprep demo`: the pipeline on a synthetic clip with the tiny built-in models (no downloads).

Writes poses.json, faces/*.png, pose/*.png and summary.json, prints the timing table and the
keypoint error against the clip's ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import RunError

__all__ = ["run_demo"]


def _save_png(img, path: Path) -> None:
    import torch
    from PIL import Image

    if img.dtype.is_floating_point:
        img = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    Image.fromarray(img.cpu().numpy()).save(path)


def run_demo(out_dir: Path, frames: int = 24, device: str = "cpu", models_dir: Path | None = None,
             progress: bool = True, log=print) -> dict:
    """Build the tiny test models and a synthetic clip of ``frames`` frames (>= 1), run the
    pipeline, write the outputs into ``out_dir``. Returns a summary dict (also summary.json).
    Bad options raise RunError (exit 2)."""
    from .options import check_device
    from .outputs import prepare_out
    from .runner import format_timings

    if not isinstance(frames, int) or frames < 1:
        raise RunError(f"--frames must be >= 1, got {frames}")
    check_device(device)
    out_dir = Path(out_dir)
    prepare_out(out_dir)
    from . import Preprocessor
    from .testkit import build_test_models, default_cache_dir, make_clip

    models = build_test_models(models_dir or default_cache_dir(), fp16=False)  # the demo needs no FP16 models
    hidden = range(frames // 3, frames // 3 + max(frames // 6, 1))  # the person turns away
    clip = make_clip(frames, motion="slow", face_hidden=hidden, seed=0)
    pre = Preprocessor(models["det"], models["pose"], device=device, progress=progress)
    res = pre(clip.frames.to(device))

    (out_dir / "poses.json").write_text(json.dumps(res.to_json(), indent=1))
    for sub, images in (("faces", res.face_images), ("pose", _pose_images(res))):
        if images is None:
            continue
        (out_dir / sub).mkdir(exist_ok=True)
        for i in range(images.shape[0]):
            _save_png(images[i], out_dir / sub / f"{sub.rstrip('s')}_{i:04d}.png")

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
    log(format_timings(res.timings))
    log(f"providers: {res.providers}")
    log(f"mean keypoint error vs ground truth: {summary['mean_keypoint_error_px']:.3f} px over {int(vis.sum())} visible points")
    log(f"frames with the face held (person turned away): {summary['face_held_frames']}")
    log(f"outputs written to {out_dir}/ (poses.json, faces/*.png, pose/*.png, summary.json)")
    return summary


def _pose_images(res):
    try:
        from .draw import draw_pose
    except ImportError:
        return None
    return draw_pose(res.pose_metas)
