"""Time wanprep_torch.retarget (vectorised over frames) against a straightforward per-frame loop.

    python scripts/bench_retarget.py [--frames 300] [--repeat 5] [--golden /work/shared/golden/retarget.json]

The template is a golden case's frames repeated (with a little jitter) up to --frames; the
reference's own code takes ~0.17 s for 300 frames on this machine (the figure in issue 12).
The loop version (:func:`retarget_loop`) is the same math written per frame and per point in
plain Python, as the reference does it; it doubles as a cross-check of the vectorised code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from wanprep_torch.posemeta import WanBatch
from wanprep_torch.retargeting import (
    FOOT_CALF,
    FOOT_PER_CALF,
    HAND_MIN_SCORE,
    L_WRIST,
    LIMBS,
    R_WRIST,
    RetargetedPoses,
    plan_retarget,
    retarget,
)

GOLDEN = Path("/work/shared/golden/retarget.json")


def retarget_loop(template_metas, reference_meta) -> RetargetedPoses:
    """The per-frame pass as a plain Python loop (frame by frame, point by point)."""
    frames = WanBatch.stack(template_metas)
    src = {"width": int(frames.width[0]), "height": int(frames.height[0]), "keypoints_body": frames.body[0]}
    plan = plan_retarget(src, reference_meta)
    dx, dy = float(plan.offset[0]), float(plan.offset[1])
    s, h = plan.scale, plan.hand_scale
    T = len(template_metas)
    out = {k: [] for k in ("body", "rhand", "lhand", "rhand_p", "lhand_p")}
    for t in range(T):
        w, hh = int(frames.width[t]), int(frames.height[t])
        old = [(float(x) * w, float(y) * hh) for x, y, _ in frames.body[t].tolist()]
        new_len, dirs = [], []
        for i, (p, c) in enumerate(LIMBS):
            vx, vy = old[c][0] - old[p][0], old[c][1] - old[p][1]
            L = math.hypot(vx, vy)
            new_len.append(L * float(plan.ratios[i]))
            dirs.append((vx / L, vy / L) if L > 0 else (0.0, 0.0))
        for foot, calf in FOOT_CALF:
            new_len[foot] = min(new_len[foot], new_len[calf] * FOOT_PER_CALF)
        pts = list(old)
        for i, (p, c) in enumerate(LIMBS):
            pts[c] = (pts[p][0] + new_len[i] * dirs[i][0], pts[p][1] + new_len[i] * dirs[i][1])
        body = [((x - dx) / s, (y - dy) / s) for x, y in pts]

        def hand(rows):
            x0, y0 = rows[0][0], rows[0][1]
            return [((x * h - x0 * (h - 1)), (y * h - y0 * (h - 1)), sc, sc >= HAND_MIN_SCORE) for x, y, sc in rows]

        right, left = hand(frames.rhand[t].tolist()), hand(frames.lhand[t].tolist())

        def shift(wrist, hnd):
            sx, sy = body[wrist][0] - old[wrist][0], body[wrist][1] - old[wrist][1]
            if hnd[0][3]:
                sx += old[wrist][0] - hnd[0][0] * w
                sy += old[wrist][1] - hnd[0][1] * hh
            return sx, sy

        to_r, to_l = shift(R_WRIST, right), shift(L_WRIST, left)
        rx, ry = (right[0][0] * w, right[0][1] * hh) if right[0][3] else (-w, -hh)
        swap = math.hypot(old[R_WRIST][0] - rx, old[R_WRIST][1] - ry) > math.hypot(old[L_WRIST][0] - rx, old[L_WRIST][1] - ry)
        at_r, at_l = (left, right) if swap else (right, left)

        def place(hnd, sh):
            pts = [(float(int(x * w + sh[0])), float(int(y * hh + sh[1]))) if ok else (math.nan, math.nan) for x, y, _, ok in hnd]
            return pts, [sc if ok else 0.0 for _, _, sc, ok in hnd]

        (rh, rp), (lh, lp) = place(at_r, to_r), place(at_l, to_l)
        out["body"].append(body)
        out["rhand"].append(rh)
        out["rhand_p"].append(rp)
        out["lhand"].append(lh)
        out["lhand_p"].append(lp)
    return RetargetedPoses(
        width=plan.width,
        height=plan.height,
        body=np.array(out["body"]),
        body_p=frames.body[..., 2].copy(),
        rhand=np.array(out["rhand"]),
        rhand_p=np.array(out["rhand_p"]),
        lhand=np.array(out["lhand"]),
        lhand_p=np.array(out["lhand_p"]),
    )


def make_template(frames: int, golden: Path = GOLDEN, case: str = "jitter-landscape-ref", seed: int = 0):
    """A golden case's template repeated up to ``frames`` frames, jittered by ~1 px; and its reference."""
    cases = {c["id"]: c for c in json.loads(golden.read_text())["cases"]}
    c = cases[case]
    rng = np.random.default_rng(seed)
    out = []
    for t in range(frames):
        m = c["template"][t % len(c["template"])]
        meta = {"width": m["width"], "height": m["height"]}
        for key in ("keypoints_body", "keypoints_left_hand", "keypoints_right_hand", "keypoints_face"):
            a = np.asarray(m[key], dtype=np.float32).copy()
            if t:
                a[:, :2] += rng.normal(0, 1.0, a[:, :2].shape).astype(np.float32) / np.float32(max(m["width"], m["height"]))
            meta[key] = a
        out.append(meta)
    ref = {k: (np.asarray(v, dtype=np.float32) if k.startswith("keypoints") else v) for k, v in c["reference"].items()}
    return out, ref


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--golden", type=Path, default=GOLDEN)
    args = ap.parse_args()
    tpl, ref = make_template(args.frames, args.golden)
    fast = retarget(tpl, ref)
    slow = retarget_loop(tpl, ref)
    body = np.stack([m.kps_body for m in fast])
    hands = np.stack([np.concatenate([m.kps_rhand, m.kps_lhand]) for m in fast])
    assert np.allclose(body, slow.body, atol=1e-6), "vectorised and loop bodies differ"
    assert np.allclose(hands, np.concatenate([slow.rhand, slow.lhand], 1), atol=1e-6, equal_nan=True), "hands differ"
    t_fast = best_of(lambda: retarget(tpl, ref), args.repeat)
    t_loop = best_of(lambda: retarget_loop(tpl, ref), args.repeat)
    print(f"frames {args.frames}")
    print(f"retarget (vectorised, incl. dict checks and PoseMeta objects): {t_fast:.4f} s")
    print(f"per-frame Python loop:                                         {t_loop:.4f} s")
    print("reference node pack (issue 12's figure):                       ~0.17 s")


if __name__ == "__main__":
    main()
