"""Peak memory of a clip where no face is ever seen (the bounded face wait).

    python scripts/measure_face_wait.py [--frames 600] [--chunk 30] [--face-wait N]

Feeds noise frames (832x480 float, so no person or face is found) as chunks through
``Preprocessor(...)(chunks)`` with the test kit's analytic models and prints the peak resident
memory above the start, the outputs' own size and the difference (the extra memory the run
needed beyond its outputs). Without the bound every frame waited for a face (the whole video
in memory); issue target: under 600 MB extra for 600 frames in 30-frame chunks.
"""

from __future__ import annotations

import argparse
import resource
import tempfile

import torch

from wanprep_torch import Preprocessor
from wanprep_torch.testkit import build_test_models


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--chunk", type=int, default=30)
    ap.add_argument("--face-wait", type=int, default=None, help="Preprocessor face_wait (default: its default)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    models = build_test_models(tempfile.mkdtemp(), fp16=False)
    opts = {} if args.face_wait is None else {"face_wait": args.face_wait}
    pre = Preprocessor(models["det"], models["pose"], progress=False, gate="off", chunk_size=args.chunk, **opts)
    g = torch.Generator().manual_seed(0)
    pre(torch.rand(2, 480, 832, 3, generator=g))  # warm-up: sessions and buffers
    start = rss_mb()

    def chunks():
        for s in range(0, args.frames, args.chunk):
            yield torch.rand(min(args.chunk, args.frames - s), 480, 832, 3, generator=g)

    res = pre(chunks())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_mb = (res.face_images.numel() * res.face_images.element_size()) / 2**20
    print(f"frames {len(res)}, held faces {int(res.face_held.sum())}, face_wait {pre.face_wait}")
    print(f"peak RSS above start: {peak - start:.0f} MB; outputs (face crops): {out_mb:.0f} MB; extra: {peak - start - out_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
