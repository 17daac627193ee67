"""How long `wanprep run` takes to stop after Ctrl-C, on the CPU with real-sized models.

    python scripts/measure_interrupt.py [--trials 5] [--gate off safe] [--det D.onnx] [--pose P.onnx]
                                        [--frames 96] [--models-dir DIR] [--spread 14]

By default the YOLOv10m stand-in (../shared/models or /work/shared/models) and a ViTPose-B
stand-in (built once by scripts/make_standins.py into --models-dir): random weights, the real
models' cost. For each trial: a subprocess runs `python -m wanprep_torch run` on a synthetic
832x480 clip; once it is processing (its staging folder exists) it waits a different delay
(so the signal lands at different points of a model batch), sends SIGINT, and measures the
time until the process has exited (the partial outputs written and committed). Prints each
trial's latency and exit status, then the median and range per gate preset; exits 1 when a
trial did not exit 130 or took longer than --limit (6 s, issue 21).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_detector() -> Path | None:
    for d in (REPO.parent / "shared" / "models", Path("/work/shared/models")):
        if (d / "yolov10m-standin.onnx").is_file():
            return d / "yolov10m-standin.onnx"
    return None


def vitpose_b(models_dir: Path) -> Path:
    """The ViTPose-B stand-in, built on first use."""
    import importlib.util

    path = models_dir / "vitpose-b-standin.onnx"
    if not path.is_file():
        models_dir.mkdir(parents=True, exist_ok=True)
        spec = importlib.util.spec_from_file_location("make_standins", REPO / "scripts" / "make_standins.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        print(f"building the ViTPose-B stand-in: {path}", flush=True)
        mod.build_vitpose_standin("b", path)
    return path


def make_clip_file(path: Path, frames: int) -> Path:
    import torch

    from wanprep_torch.testkit import make_clip
    from wanprep_torch.video import write_video

    clip = make_clip(frames, motion="slow", seed=0)  # 832x480
    write_video(path, [(clip.frames * 255).round().to(torch.uint8)], 25)
    return path


def trial(cmd: list[str], staging: Path, delay: float, env: dict) -> tuple[float, int, str]:
    """(seconds from SIGINT to exit, exit status, last stderr line)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    t_end = time.monotonic() + 600
    while not staging.exists():  # created once the models are loaded, right before the frames
        if p.poll() is not None or time.monotonic() > t_end:
            _, err = p.communicate()
            raise RuntimeError(f"the run ended before processing (exit {p.returncode}): {err[-500:]}")
        time.sleep(0.02)
    time.sleep(delay)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=600)
    latency = time.monotonic() - t0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return latency, p.returncode, lines[-1] if lines else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--gate", nargs="+", default=["off", "safe"])
    ap.add_argument("--det", type=Path, default=None)
    ap.add_argument("--pose", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "wanprep-standins")
    ap.add_argument("--limit", type=float, default=6.0)
    ap.add_argument("--spread", type=float, default=14.0, help="the signal comes 1 to 1 + SPREAD s into the processing")
    args = ap.parse_args(argv)
    det = args.det or default_detector()
    if det is None:
        ap.error("no --det given and no yolov10m-standin.onnx in ../shared/models")
    pose = args.pose or vitpose_b(args.models_dir)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip_file(tmp / "clip.mp4", args.frames)
        print(f"models: {det.name} + {pose.name}; clip {args.frames} frames 832x480; CPU, {os.cpu_count()} cores")
        for gate in args.gate:
            lat = []
            for t in range(args.trials):
                out = tmp / f"out-{gate}-{t}"
                cmd = [sys.executable, "-m", "wanprep_torch", "run", str(clip), "--det", str(det), "--pose", str(pose),
                       "--out", str(out), "--gate", gate, "--no-progress"]
                # Different points of a model batch, before and after the first frames are written.
                delay = 1.0 + args.spread * t / max(args.trials - 1, 1)
                s, rc, last = trial(cmd, out / ".wanprep-partial", delay, env)
                lat.append(s)
                ok &= rc == 130 and s <= args.limit
                print(f"gate {gate:<4} trial {t + 1}: SIGINT after {delay:.1f} s of processing -> exit {rc} in {s:.2f} s ({last[:100]})",
                      flush=True)
            print(f"gate {gate}: median {statistics.median(lat):.2f} s, range {min(lat):.2f}-{max(lat):.2f} s over {len(lat)} trials")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
