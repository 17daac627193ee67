"""How well several people are followed on the test kit's crowd clip, per gate preset.

    python scripts/people_table.py [--frames 32] [--gates off safe fast]

The clip: make_crowd_clip (1280x480; person 0 walks, person 1 is hidden on frames 8-15,
person 2 enters at frame 16); the analytic multi-person detector and pose model;
Preprocessor(people=3). Per ground-truth person: the identity following them on most frames,
frames followed by another identity (switched), frames in view with no identity (missed), and
the mean body keypoint error (px) over the frames followed; plus identities made and pose /
detector runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from wanprep_torch import Preprocessor  # noqa: E402
from wanprep_torch.testkit import build_test_models, make_crowd_clip  # noqa: E402
from wanprep_torch.testkit.score import score_people  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--gates", nargs="+", default=["off", "safe", "fast"])
    args = ap.parse_args(argv)
    models = build_test_models(Path(tempfile.gettempdir()) / "wanprep_people_table_models", fp16=False)
    clip = make_crowd_clip(args.frames)
    print("| gate | identities | person | id | frames in view | switched | missed | body error px | pose runs | detector runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for gate in args.gates:
        res = Preprocessor(models["det_multi"], models["pose"], progress=False, people=3, gate=gate)(clip.frames)
        for p, s in enumerate(score_people(res.people, clip)):
            print(
                f"| {gate} | {len(res.people)} | {p} | {s.main_id} | {len(s.ids)} | {s.switched} | {s.missed} | "
                f"{s.body_error:.3f} | {int(res.pose_ran.sum())}/{len(res)} | {int(res.det_ran.sum())}/{len(res)} |"
            )


if __name__ == "__main__":
    main()
