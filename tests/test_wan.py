"""wanprep_torch.wan: Wan body layout, pose metas, face boxes, face crops, key frames."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_numpy as ref  # noqa: E402

from wanprep_torch.wan import (  # noqa: E402
    crop_resize,
    face_boxes,
    fallback_face_box,
    key_frame_indices,
    key_frame_points,
    openpose_frames,
    pose_metas,
    resolve_face_boxes,
    wan_body,
)

W, H = 640, 480


def _kps(t, seed=0, score_lo=0.0, score_hi=1.0):
    rng = np.random.default_rng(seed)
    k = np.zeros((t, 133, 3), np.float32)
    k[..., 0] = rng.uniform(0, W, (t, 133))
    k[..., 1] = rng.uniform(0, H, (t, 133))
    k[..., 2] = rng.uniform(score_lo, score_hi, (t, 133))
    return k


def _face_kps(t, seed=1, score=0.9):
    """Keypoints whose 68 face points form a plausible face in the frame."""
    rng = np.random.default_rng(seed)
    k = _kps(t, seed)
    for i in range(t):
        cx, cy = rng.uniform(80, W - 80), rng.uniform(80, H - 80)
        fw, fh = rng.uniform(10, 120), rng.uniform(10, 140)
        k[i, 23:91, 0] = cx + rng.uniform(-fw / 2, fw / 2, 68)
        k[i, 23:91, 1] = cy + rng.uniform(-fh / 2, fh / 2, 68)
        k[i, 23:91, 2] = score
    return k


def test_wan_body_rows():
    k = _kps(5)
    got = wan_body(torch.from_numpy(k))
    assert got.shape == (5, 20, 3)
    np.testing.assert_allclose(got.numpy(), ref.wan_body_ref(k), rtol=1e-6, atol=1e-4)
    # neck = shoulders' midpoint, foot rows from the toes
    np.testing.assert_allclose(got[:, 1].numpy(), (k[:, 5] + k[:, 6]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got[:, 18].numpy(), (k[:, 17] + k[:, 18]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got[:, 19].numpy(), (k[:, 20] + k[:, 21]) / 2, rtol=1e-6)


def _assert_metas_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["width"] == w["width"] and g["height"] == w["height"]
        for key, rows in (("keypoints_body", 20), ("keypoints_left_hand", 21), ("keypoints_right_hand", 21), ("keypoints_face", 69)):
            assert g[key].shape == (rows, 3), key
            np.testing.assert_allclose(g[key], w[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_pose_metas_normalised_rows():
    k = _kps(4, seed=2)
    got, last = pose_metas(torch.from_numpy(k), W, H)
    want, want_last = ref.pose_metas_ref(k, W, H)
    _assert_metas_equal(got, want)
    np.testing.assert_allclose(last, want_last, atol=1e-6)
    np.testing.assert_allclose(got[0]["keypoints_face"][1:, 0], k[0, 23:91, 0] / W, rtol=1e-6)
    np.testing.assert_allclose(got[0]["keypoints_left_hand"][:, 1], k[0, 91:112, 1] / H, rtol=1e-6)
    np.testing.assert_allclose(got[0]["keypoints_right_hand"][:, 2], k[0, 112:133, 2], rtol=1e-6)


def test_pose_metas_reuses_previous_body_across_calls():
    k = _kps(6, seed=3)
    k[1, :22, 0] = -5.0  # every body row negative x -> reuse frame 0's body
    k[2, :22, 1] = -1.0  # every body row negative y -> reuse (still frame 0's)
    k[4, :22:2, 0] = -3.0  # every source row has x<0 or y<0, but the Wan rows are means of
    k[4, 1:22:2, 1] = -3.0  # pairs, so only some of them are negative: the reference decides
    got, last = pose_metas(torch.from_numpy(k), W, H)
    want, want_last = ref.pose_metas_ref(k, W, H)
    _assert_metas_equal(got, want)
    np.testing.assert_allclose(got[1]["keypoints_body"], got[0]["keypoints_body"])
    np.testing.assert_allclose(got[2]["keypoints_body"], got[0]["keypoints_body"])
    # hands and face are not replaced
    np.testing.assert_allclose(got[1]["keypoints_face"][:, 0], k[1, 22:91, 0] / W, rtol=1e-6)

    # state across chunks: a chunk starting with an all-negative body reuses the last chunk's
    k2 = _kps(2, seed=4)
    k2[0, :22, :2] = -1.0
    got2, _ = pose_metas(torch.from_numpy(k2), W, H, last_body=last)
    want2, _ = ref.pose_metas_ref(k2, W, H, last_body=want_last)
    _assert_metas_equal(got2, want2)
    np.testing.assert_allclose(got2[0]["keypoints_body"], got[-1]["keypoints_body"])
    # ... and with no previous body the first frame keeps its own (negative) rows
    got3, _ = pose_metas(torch.from_numpy(k2), W, H)
    assert (got3[0]["keypoints_body"][:, :2] < 0).all()


def test_pose_metas_mixed_negative_rows_not_replaced():
    k = _kps(2, seed=5)
    k[1, :22, 0] = -1.0
    k[1, 0, 0] = 10.0  # nose row (A=B=0) has x >= 0 and y >= 0 -> not all rows negative
    got, _ = pose_metas(torch.from_numpy(k), W, H)
    want, _ = ref.pose_metas_ref(k, W, H)
    _assert_metas_equal(got, want)
    assert got[1]["keypoints_body"][0, 0] == pytest.approx(10.0 / W)


def test_face_boxes_vs_reference():
    k = _face_kps(40, seed=6)
    k[3, 23:91, 2] = 0.1  # not visible
    k[4, 23:91, 2] = 0.3  # exactly at the threshold: visible
    k[5, 23:91, 0] += -200  # partly left of the frame -> clipped at 0
    k[6, 23:91, 1] -= 170  # above the frame
    k[7, 23:91, 0] = k[7, 23:91, 0] + 700  # right of the frame: empty after clipping
    boxes, valid = face_boxes(torch.from_numpy(k), W, H)
    assert boxes.dtype == torch.int64 and valid.dtype == torch.bool
    for i in range(k.shape[0]):
        wb, wv = ref.face_box_ref(k[i], W, H)
        assert bool(valid[i]) == wv, i
        if wv:
            assert tuple(boxes[i].tolist()) == wb, i
    assert not bool(valid[3]) and bool(valid[4]) and not bool(valid[7])


def test_face_boxes_degenerate_never_nan():
    k = _face_kps(5, seed=7)
    k[0, 23:91, :2] = [100.0, 200.0]  # all points equal
    k[1, 23:91, 0] = 50.0  # zero width
    k[2, 23:91, 1] = 60.0  # zero height
    k[3, 23:91, 0] = np.nan  # NaN input
    k[4, 23:91, 1] = np.inf
    boxes, valid = face_boxes(torch.from_numpy(k), W, H)
    assert not valid.any()
    assert boxes.dtype == torch.int64
    assert (boxes == 0).all()  # invalid rows hold zeros
    res, held, last = resolve_face_boxes(boxes, valid, W, H)
    assert all(b == fallback_face_box(W, H) for b in res) and all(held) and last is None


def test_face_box_expansion_example():
    # points spanning x 100..200, y 100..150 (w=100, h=50): area' = 6500,
    # w' = sqrt(6500*2) = 114.0175, h' = sqrt(6500/2) = 57.0088
    k = np.zeros((1, 133, 3), np.float32)
    k[0, 23:91, 2] = 1.0
    k[0, 23:91, 0] = np.linspace(100, 200, 68)
    k[0, 23:91, 1] = np.linspace(100, 150, 68)
    boxes, valid = face_boxes(torch.from_numpy(k), W, H)
    dw = (np.sqrt(6500 * 2) - 100) / 2
    dh = (np.sqrt(6500 / 2) - 50) / 4
    assert bool(valid[0])
    assert boxes[0].tolist() == [int(100 - dw), int(100 - 3 * dh), int(200 + dw), int(150 + dh)]


def test_fallback_face_box():
    for w, h in ((640, 480), (480, 640), (1920, 1080), (17, 16), (101, 333)):
        x1, y1, x2, y2 = fallback_face_box(w, h)
        side = int(0.3 * min(h, w))
        assert y1 == int(0.1 * h)
        assert x2 - x1 == side and y2 - y1 == side
        assert abs((x1 + x2) - w) <= 1  # centred
        assert (x1, y1, x2, y2) == ref.fallback_face_box_ref(w, h)


def test_resolve_face_boxes_hold_and_padding():
    boxes = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [10, 20, 60, 90], [0, 0, 0, 0], [300, 200, 630, 470], [0, 0, 0, 0]])
    valid = torch.tensor([False, False, True, False, True, False])
    out, held, last = resolve_face_boxes(boxes, valid, W, H)
    assert out == ref.resolve_face_boxes_ref(boxes.tolist(), valid.tolist(), W, H)
    assert out[0] == out[1] == (10, 20, 60, 90)  # leading frames take the first good box
    assert out[3] == (10, 20, 60, 90) and out[5] == (300, 200, 630, 470)
    assert held == [True, True, False, True, False, True]
    assert last == (300, 200, 630, 470)
    out_p, _, _ = resolve_face_boxes(boxes, valid, W, H, padding=15)
    assert out_p == ref.resolve_face_boxes_ref(boxes.tolist(), valid.tolist(), W, H, padding=15)
    assert out_p[4] == (285, 185, 640, 480)  # clipped at the frame
    assert out_p[0] == (0, 5, 75, 105)
    # state from an earlier chunk wins over the first good box for leading frames
    out_s, _, _ = resolve_face_boxes(boxes, valid, W, H, last_good=(1, 2, 3, 4))
    assert out_s[0] == (1, 2, 3, 4) and out_s[3] == (10, 20, 60, 90)
    # nothing good at all: fallback square
    out_f, held_f, last_f = resolve_face_boxes(boxes[:2], valid[:2], W, H, padding=5)
    fx1, fy1, fx2, fy2 = fallback_face_box(W, H)
    assert out_f == [(fx1 - 5, fy1 - 5, fx2 + 5, fy2 + 5)] * 2 and last_f is None


@pytest.mark.parametrize("size", [64, 37])
def test_crop_resize_vs_opencv_style_reference(size):
    rng = np.random.default_rng(8)
    fr = rng.random((5, 3, 48, 80), dtype=np.float32)
    boxes = [(3, 5, 40, 30), (0, 0, 80, 48), (70, 40, 80, 48), (10, 10, 11, 12), (20, 1, 120 // 2, 47)]
    got = crop_resize(torch.from_numpy(fr), boxes, size)
    assert got.shape == (5, size, size, 3) and got.dtype == torch.float32
    want = ref.crop_resize_ref(fr, boxes, size)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)


def test_crop_resize_upscale_uses_only_box_pixels():
    fr = np.zeros((1, 3, 32, 32), np.float32)
    fr[0, :, 10:20, 10:20] = 1.0  # the box holds only ones; everything around it is zero
    got = crop_resize(torch.from_numpy(fr), [(10, 10, 20, 20)], 64)
    np.testing.assert_allclose(got.numpy(), 1.0, atol=1e-6)


def test_resize_reference_sanity():
    # 2x downscale with half-pixel centres averages pixel pairs
    img = np.arange(16, dtype=np.float64).reshape(4, 4, 1)
    out = ref.resize_linear_ref(img, 2, 2)[..., 0]
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]])


def test_key_frame_points():
    k = _kps(1, seed=9)[0]
    k[:, 2] = 0.9
    k[0, 2] = 0.1  # nose hidden
    k[5, 2] = 0.2  # left shoulder low: neck = mean(0.9, 0.2) = 0.55 stays, row 5 (0.2) dropped
    pts = key_frame_points(torch.from_numpy(k))
    assert pts == ref.key_frame_points_ref(k)
    body = ref.wan_body_ref(k[None])[0]
    assert {"x": int(body[1, 0]), "y": int(body[1, 1])} in pts
    assert len(pts) == 6
    assert all(isinstance(p["x"], int) and isinstance(p["y"], int) for p in pts)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 7, 10, 81, 100, 1000])
def test_key_frame_indices(t):
    idx = key_frame_indices(t)
    ref.key_frame_indices_props(idx, t)


def test_key_frame_points_fall_back_to_box_centre():
    k = _kps(1, seed=9)[0]
    k[:, 2] = 0.1  # nothing passes the 0.3 filter
    assert key_frame_points(torch.from_numpy(k)) == []
    box = torch.tensor([10.0, 20.0, 31.0, 41.0, 0.9])
    assert key_frame_points(torch.from_numpy(k), box=box) == [{"x": 20, "y": 30}]
    k[:, 2] = 0.9  # the filter still decides when points pass: the box is not added
    assert key_frame_points(torch.from_numpy(k), box=box) == ref.key_frame_points_ref(k)


def test_openpose_frames_layout():
    k = _kps(2, seed=4, score_lo=0.5, score_hi=1.0)
    k[1, 0, 2] = 0.1  # nose under min_score: unseen
    k[1, 100, :2] = np.nan  # a left-hand point not finite: unseen
    metas, _ = pose_metas(torch.from_numpy(k), W, H)
    out = openpose_frames(metas)
    assert len(out) == 2
    for t, frame in enumerate(out):
        assert frame["canvas_width"] == W and frame["canvas_height"] == H
        (person,) = frame["people"]
        assert set(person) == {"pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"}
        body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
        face = np.array(person["face_keypoints_2d"]).reshape(68, 3)
        lhand = np.array(person["hand_left_keypoints_2d"]).reshape(21, 3)
        rhand = np.array(person["hand_right_keypoints_2d"]).reshape(21, 3)
        wan_rows = ref.wan_body_ref(k[t : t + 1])[0]
        seen = body[:, 2] > 0
        np.testing.assert_allclose(body[seen], wan_rows[:18][seen], rtol=1e-5, atol=1e-3)  # pixels
        np.testing.assert_allclose(face, k[t, 23:91], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(rhand, k[t, 112:133], rtol=1e-5, atol=1e-3)
        if t == 1:
            assert body[0].tolist() == [0.0, 0.0, 0.0]
            assert lhand[9].tolist() == [0.0, 0.0, 0.0]
            np.testing.assert_allclose(np.delete(lhand, 9, 0), np.delete(k[t, 91:112], 9, 0), rtol=1e-5, atol=1e-3)
        else:
            assert seen.all()
    # PoseMeta objects (pixels) give the same; a min_score of 0 keeps the low-scored nose.
    from wanprep_torch.posemeta import PoseMeta

    assert openpose_frames([PoseMeta.from_wan(m) for m in metas]) == out
    assert openpose_frames(metas, min_score=0.0)[1]["people"][0]["pose_keypoints_2d"][2] == pytest.approx(0.1)
    assert openpose_frames([]) == []
