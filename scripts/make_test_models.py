#!/usr/bin/env python
"""Build the analytic test models (detector + pose, fp32/fp16/batch-1 variants) into OUT_DIR.

Usage: python scripts/make_test_models.py [OUT_DIR]   (default: the test-model cache folder)
Thin CLI over wanprep_torch.testkit.build_test_models; existing files are reused when their
version stamp matches.
"""

from __future__ import annotations

import argparse
import sys

from wanprep_torch.testkit import build_test_models, default_cache_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default=None,
                    help=f"output folder (default: {default_cache_dir()})")
    args = ap.parse_args(argv)
    paths = build_test_models(args.out_dir)
    width = max(len(k) for k in paths)
    for key, path in paths.items():
        print(f"{key:<{width}}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
