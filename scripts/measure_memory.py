"""Peak memory of `wanprep run` against the video's length: it must not grow with it.

    python scripts/measure_memory.py [--frames 80 400] [--size 832x480] [--gate safe] [--keep DIR]

Writes synthetic 832x480 H.264 clips with PyAV (the test kit's person, moving back and forth,
so every frame has a person and a face), builds the test kit's analytic models, runs
`python -m wanprep_torch run` on each clip in a subprocess and reads that child's peak RSS
(os.wait4). Prints each run's peak and the difference between the longest and the shortest;
exits 1 when the difference exceeds --limit-mb (150, as issue 11 asks).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_video(path: Path, frames: int, size: tuple[int, int], fps: int = 25) -> Path:
    """A clip of ``frames`` frames: 40 rendered frames of slow motion played forward and back."""
    import av
    import torch

    from wanprep_torch.testkit import make_clip
    from wanprep_torch.video import resize_frames

    w, h = size
    base = (make_clip(40, motion="slow", seed=0).frames * 255).round().to(torch.uint8)
    base = resize_frames(base, (h, w)).numpy()
    order = list(range(len(base))) + list(range(len(base) - 2, 0, -1))  # ping-pong: no cuts
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(base[order[i % len(order)]], format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def peak_rss_mb(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(peak RSS in MB of the child, wall seconds, exit status)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        print(err, file=sys.stderr)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, p.returncode  # ru_maxrss is in KB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[80, 400], help="clip lengths (default: 80 400)")
    ap.add_argument("--size", default="832x480", help="WxH (default: 832x480)")
    ap.add_argument("--gate", default="safe", help="gate preset for the runs (default: safe)")
    ap.add_argument("--chunk", type=int, default=64, help="--chunk of the runs (default: 64)")
    ap.add_argument("--limit-mb", type=float, default=150.0, help="allowed growth, longest vs shortest (default: 150)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    from wanprep_torch.testkit import build_test_models

    work = args.keep or Path(tempfile.mkdtemp(prefix="wanprep-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    models = build_test_models(work / "models", fp16=False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    peaks = {}
    for n in sorted(args.frames):
        video = make_video(work / f"clip{n}.mp4", n, (w, h))
        out = work / f"out{n}"
        cmd = [sys.executable, "-m", "wanprep_torch", "run", str(video), "--det", str(models["det"]), "--pose",
               str(models["pose"]), "--out", str(out), "--gate", args.gate, "--chunk", str(args.chunk), "--no-progress"]
        mb, wall, rc = peak_rss_mb(cmd, env)
        if rc != 0:
            print(f"run on {n} frames failed with exit status {rc}", file=sys.stderr)
            return 2
        peaks[n] = mb
        print(f"{n:5d} frames {w}x{h}: peak RSS {mb:8.1f} MB   ({wall:.1f} s, {n / wall:.1f} frames/s)")
    lo, hi = min(peaks), max(peaks)
    diff = peaks[hi] - peaks[lo]
    print(f"difference {hi} vs {lo} frames: {diff:+.1f} MB (limit {args.limit_mb:.0f} MB)")
    return 0 if diff <= args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
