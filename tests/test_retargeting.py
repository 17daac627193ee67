"""wanprep_torch.retarget and PoseMeta: the reference's golden cases, round trips, bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import golden_file, load_script
from wanprep_torch import PoseMeta, retarget
from wanprep_torch.posemeta import WanBatch
from wanprep_torch.retargeting import L_WRIST, R_WRIST, Extent, body_extent, plan_retarget, retarget_arrays
from wanprep_torch.wan import pose_metas

GOLDEN = golden_file("retarget.json")
TOL = 0.01  # px, the tolerance for body and hand points


def _golden_cases() -> list[dict]:
    if not GOLDEN.exists():
        return []
    return json.loads(GOLDEN.read_text())["cases"]


CASES = _golden_cases()
needs_golden = pytest.mark.skipif(not CASES, reason=f"golden file {GOLDEN} not found (set WANPREP_GOLDEN)")


def _points(rows) -> np.ndarray:
    """Golden point list ((N, 2), null = dropped) -> (N, 2) float with NaN for dropped points."""
    return np.array([[np.nan, np.nan] if p is None or p[0] is None else p for p in rows], dtype=np.float64)


def _same_points(a: np.ndarray, b: np.ndarray, tol: float = TOL) -> bool:
    """Same dropped points, the rest within ``tol``."""
    na, nb = np.isnan(a).any(-1), np.isnan(b).any(-1)
    return bool(np.array_equal(na, nb) and np.all(np.abs(a[~na] - b[~nb]) <= tol))


def _hand(meta_or_golden, side: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(meta_or_golden, PoseMeta):
        return getattr(meta_or_golden, f"kps_{side}hand"), getattr(meta_or_golden, f"kps_{side}hand_p")
    return _points(meta_or_golden[f"kps_{side}hand"]), np.asarray(meta_or_golden[f"kps_{side}hand_p"], dtype=np.float64)


def _same_hand(got: tuple, want: tuple) -> bool:
    return _same_points(got[0], want[0]) and np.allclose(got[1], want[1], atol=1e-6)


def _copy_meta(meta: dict) -> dict:
    return {k: (np.array(v, dtype=np.float64) if k.startswith("keypoints") else v) for k, v in meta.items()}


# ----------------------------------------------------------------------------- golden cases


@needs_golden
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_case(case):
    out = retarget(case["template"], case["reference"])
    assert len(out) == len(case["expected"]) == len(case["template"])
    for t, (got, want) in enumerate(zip(out, case["expected"])):
        assert (got.width, got.height) == (want["width"], want["height"]), f"frame {t}: canvas"
        assert _same_points(got.kps_body, _points(want["kps_body"])), f"frame {t}: body"
        want_p = np.asarray(want["kps_body_p"], dtype=np.float64)
        assert np.allclose(np.where(np.isnan(_points(want["kps_body"])).any(-1), 0, got.kps_body_p), want_p), f"frame {t}: body scores"
        # The reference labels the hands the other way round on some paths: compare them as a pair.
        g_r, g_l = _hand(got, "r"), _hand(got, "l")
        w_r, w_l = _hand(want, "r"), _hand(want, "l")
        assert (_same_hand(g_r, w_r) and _same_hand(g_l, w_l)) or (_same_hand(g_r, w_l) and _same_hand(g_l, w_r)), f"frame {t}: hands"
        # No face in the output, as in the reference.
        assert np.isnan(got.kps_face).all() and not got.kps_face_p.any()


@needs_golden
def test_golden_hands_labelled_by_wrist():
    """Each output hand's root (when seen) lands on the wrist it is named for (the reference's labels are swapped)."""
    seen_roots = 0
    for case in CASES:
        for got in retarget(case["template"], case["reference"]):
            for side, wrist in (("r", R_WRIST), ("l", L_WRIST)):
                xy, p = _hand(got, side)
                if p[0] > 0:
                    seen_roots += 1
                    assert np.all(np.abs(xy[0] - got.kps_body[wrist]) <= 1.0)  # integer truncation
    assert seen_roots > 50


@needs_golden
def test_golden_extents_cover_all_anchors():
    """The cases exercise both anchors (ground + hips, neck) and all three extents."""
    seen = set()
    for case in CASES:
        t0, ref = case["template"][0], case["reference"]
        seen.add(min(body_extent(np.asarray(t0["keypoints_body"])), body_extent(np.asarray(ref["keypoints_body"]))))
    assert seen == {Extent.FULL, Extent.THREE_QUARTER, Extent.HALF}


@needs_golden
def test_inputs_not_modified_and_pose_meta_inputs():
    case = CASES[1]
    before = json.dumps(case["template"])
    tpl = [_copy_meta(m) for m in case["template"]]
    ref = _copy_meta(case["reference"])
    a = retarget(tpl, ref)
    assert json.dumps(case["template"]) == before
    for m, orig in zip(tpl, case["template"]):
        assert np.array_equal(m["keypoints_body"], np.asarray(orig["keypoints_body"]))
    # PoseMeta objects are accepted too (via float32 Wan dicts: hands may move by a truncation step).
    b = retarget([PoseMeta.from_wan(m) for m in tpl], PoseMeta.from_wan(ref))
    for x, y in zip(a, b):
        assert np.allclose(x.kps_body, y.kps_body, atol=1e-3)
        assert np.allclose(x.kps_rhand, y.kps_rhand, atol=1.0, equal_nan=True)
        assert np.allclose(x.kps_lhand, y.kps_lhand, atol=1.0, equal_nan=True)


# ----------------------------------------------------------------------------- vectorised == per-frame loop


@needs_golden
@pytest.mark.parametrize("case_id", ["jitter-landscape-ref", "hands-unseen", "upper-body-template"])
def test_vectorised_matches_per_frame_loop(case_id):
    """The vectorised pass equals a plain per-frame loop, also on frames where the hands are exchanged."""
    bench = load_script("bench_retarget")
    tpl, ref = bench.make_template(40, GOLDEN, case=case_id, seed=3)
    for t in range(2, 40, 5):  # detector mix-ups: the right-hand root near the left wrist (the swap path)
        tpl[t]["keypoints_left_hand"], tpl[t]["keypoints_right_hand"] = tpl[t]["keypoints_right_hand"], tpl[t]["keypoints_left_hand"]
    frames = WanBatch.stack(tpl)
    plan = plan_retarget({"width": int(frames.width[0]), "height": int(frames.height[0]), "keypoints_body": frames.body[0]}, ref)
    fast = retarget_arrays(frames, plan)
    slow = bench.retarget_loop(tpl, ref)
    assert np.allclose(fast.body, slow.body, atol=1e-6)
    for k in ("rhand", "lhand"):
        assert np.allclose(getattr(fast, k), getattr(slow, k), atol=1e-6, equal_nan=True)
        assert np.array_equal(getattr(fast, k + "_p"), getattr(slow, k + "_p"))


# ----------------------------------------------------------------------------- PoseMeta


def _wan_meta(seed=0, w=832, h=480) -> dict:
    rng = np.random.default_rng(seed)
    meta = {"width": w, "height": h}
    for key, n in (("keypoints_body", 20), ("keypoints_left_hand", 21), ("keypoints_right_hand", 21), ("keypoints_face", 69)):
        a = rng.uniform(0, 1, (n, 3)).astype(np.float32)
        meta[key] = a
    return meta


def test_pose_meta_from_wan_pixels():
    meta = _wan_meta()
    p = PoseMeta.from_wan(meta)
    assert (p.width, p.height) == (832, 480)
    for key, stem, n in (("keypoints_body", "kps_body", 20), ("keypoints_left_hand", "kps_lhand", 21), ("keypoints_right_hand", "kps_rhand", 21), ("keypoints_face", "kps_face", 69)):
        xy, sc = getattr(p, stem), getattr(p, stem + "_p")
        assert xy.shape == (n, 2) and sc.shape == (n,)
        assert np.allclose(xy, meta[key][:, :2].astype(np.float64) * (832, 480))
        assert np.array_equal(sc, meta[key][:, 2].astype(np.float64))


def test_pose_meta_round_trips():
    meta = _wan_meta(1, 480, 832)
    back = PoseMeta.from_wan(meta).to_wan()
    assert (back["width"], back["height"]) == (480, 832)
    for key in ("keypoints_body", "keypoints_left_hand", "keypoints_right_hand", "keypoints_face"):
        assert back[key].dtype == np.float32 and back[key].shape == meta[key].shape
        assert np.allclose(back[key], meta[key], atol=1e-6)
    # pixels -> Wan -> pixels, unseen (NaN, score 0) points kept
    p = PoseMeta.from_wan(meta)
    p.kps_rhand[3:6] = np.nan
    p.kps_rhand_p[3:6] = 0
    q = PoseMeta.from_wan(p.to_wan())
    for stem in ("kps_body", "kps_lhand", "kps_rhand", "kps_face"):
        assert np.allclose(getattr(p, stem), getattr(q, stem), atol=1e-3, equal_nan=True)
        assert np.allclose(getattr(p, stem + "_p"), getattr(q, stem + "_p"), atol=1e-6)
    assert np.isnan(q.kps_rhand[3:6]).all() and not q.kps_rhand_p[3:6].any()


def test_pose_meta_from_detection_stage_metas():
    """The detection stage's own dicts (wan.pose_metas) convert and retarget."""
    rng = np.random.default_rng(2)
    kp = torch.zeros(3, 133, 3)
    kp[..., 0] = torch.from_numpy(rng.uniform(100, 700, (3, 133)))
    kp[..., 1] = torch.from_numpy(rng.uniform(50, 450, (3, 133)))
    kp[..., 2] = 0.9
    metas, _ = pose_metas(kp, 832, 480)
    p = PoseMeta.from_wan(metas[0])
    assert np.allclose(p.kps_rhand, kp[0, 112:133, :2].numpy(), atol=1e-3)
    out = retarget(metas, metas[0])
    assert len(out) == 3 and all(isinstance(m, PoseMeta) for m in out)
    # onto its own first frame: same proportions, so frame 0 only moves down onto the ground
    # line (ankle-toe midpoints) by one constant; the toes alone change (feet capped at half a calf)
    moved = out[0].kps_body[:18] - PoseMeta.from_wan(metas[0]).kps_body[:18]
    assert np.allclose(moved[:, 0], 0, atol=1e-3) and np.allclose(moved[:, 1], moved[0, 1], atol=1e-3)


def test_pose_meta_missing_face_is_unseen():
    meta = _wan_meta()
    del meta["keypoints_face"]
    p = PoseMeta.from_wan(meta)
    assert np.isnan(p.kps_face).all() and p.kps_face.shape == (69, 2) and not p.kps_face_p.any()
    u = PoseMeta.unseen(64, 32)
    assert np.isnan(u.kps_body).all() and not u.kps_body_p.any()


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    meta = _wan_meta()
    with pytest.raises(ValueError, match="empty"):
        retarget([], meta)
    with pytest.raises(ValueError, match="list"):
        retarget(meta, meta)  # a single dict, not a list
    bad = dict(meta, keypoints_body=np.zeros((18, 3)))
    with pytest.raises(ValueError, match=r"template_metas\[1\].*keypoints_body.*\(20, 3\)"):
        retarget([meta, bad], meta)
    with pytest.raises(ValueError, match="reference_meta.*keypoints_left_hand"):
        retarget([meta], {k: v for k, v in meta.items() if k != "keypoints_left_hand"})
    with pytest.raises(ValueError, match="width and height"):
        retarget([dict(meta, width=0)], meta)
    with pytest.raises(ValueError, match="reference_meta"):
        retarget([meta], [meta])
    with pytest.raises(ValueError, match="kps_body"):
        PoseMeta(10, 10, np.zeros((18, 2)), np.zeros(18), *([np.zeros((21, 2)), np.zeros(21)] * 2), np.zeros((69, 2)), np.zeros(69))
    with pytest.raises(ValueError, match=r"\(21, 3\)"):
        PoseMeta.from_wan(dict(meta, keypoints_right_hand=np.zeros((21, 2))))


def test_degenerate_poses_error():
    meta = _wan_meta()
    flat = {k: (np.array(v) if k.startswith("keypoints") else v) for k, v in meta.items()}
    flat["keypoints_body"][:, 2] = 0.9
    flat["keypoints_body"][[10, 13], 1] = flat["keypoints_body"][0, 1]  # ankles level with the nose
    tpl = dict(meta, keypoints_body=np.where(np.arange(3) == 2, 0.9, meta["keypoints_body"]))
    with pytest.raises(ValueError, match="zero height"):
        retarget([tpl], flat)
    collapsed = {k: (np.array(v) if k.startswith("keypoints") else v) for k, v in meta.items()}
    collapsed["keypoints_body"][:, :2] = 0.5  # no person: every point in one place
    with pytest.raises(ValueError, match="shoulders"):
        retarget([collapsed], meta)
