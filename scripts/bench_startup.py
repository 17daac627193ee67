"""Start-up time of the quick commands (`wanprep --help`, `--version`, `models list`, `run --help`):
this checkout against another one (``--baseline``, e.g. a checkout from before the lazy imports),
in alternating pairs on the same machine.

    python scripts/bench_startup.py [--baseline /path/to/other/checkout] [--pairs 10]

Each run is a fresh `python -m wanprep_torch ...` process with the checkout first on PYTHONPATH;
the report is the median wall time per command and checkout with its range, and the median of
the per-pair ratios baseline / this.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["--version"], ["models", "list"], ["run", "--help"])


def once(tree: Path, argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wanprep_torch", *argv], env=env, cwd=tree, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare with")
    ap.add_argument("--pairs", type=int, default=10)
    args = ap.parse_args(argv)
    for cmd in COMMANDS:
        mine, base, ratios = [], [], []
        once(HERE, cmd)  # warm the file cache
        if args.baseline:
            once(args.baseline, cmd)
        for i in range(args.pairs):
            order = (HERE, args.baseline) if i % 2 == 0 else (args.baseline, HERE)
            got = {}
            for tree in order:
                if tree is not None:
                    got[tree] = once(tree, cmd)
            mine.append(got[HERE])
            if args.baseline:
                base.append(got[args.baseline])
                ratios.append(got[args.baseline] / got[HERE])
        line = f"wanprep {' '.join(cmd):<14} this: median {statistics.median(mine):.3f} s ({min(mine):.3f}-{max(mine):.3f})"
        if args.baseline:
            line += (f"; baseline: {statistics.median(base):.3f} s ({min(base):.3f}-{max(base):.3f}); "
                     f"baseline / this per pair: median {statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
