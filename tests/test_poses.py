"""wanprep_torch.poses: the pose container's conversions against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_numpy as ref
from wanprep_torch import PoseMeta
from wanprep_torch.poses import Poses
from wanprep_torch.wan import openpose_frames

W, H = 640, 360


def _kps(t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = np.zeros((t, 133, 3))
    k[..., 0] = rng.uniform(0, W, (t, 133))
    k[..., 1] = rng.uniform(0, H, (t, 133))
    k[..., 2] = rng.uniform(0, 1, (t, 133))
    return k


def test_from_wholebody_matches_the_reference_metas_with_leading_lost_frames():
    k = _kps(5, seed=1)
    k[0, :23, 0] = -4.0  # frames 0 and 1: nobody (every body row negative)
    k[1, :23, 1] = -2.0
    k[3, :23, 0] = -1.0
    poses = Poses.from_wholebody(torch.from_numpy(k), W, H)
    assert poses.keypoints.dtype == torch.float64 and poses.keypoints.shape == (5, 131, 3)
    want, _ = ref.pose_metas_ref(k, W, H)
    for got, exp in zip(poses.to_wan(), want):
        for key in ("keypoints_body", "keypoints_left_hand", "keypoints_right_hand", "keypoints_face"):
            np.testing.assert_allclose(got[key], exp[key], rtol=0, atol=1e-12, err_msg=key)
    # the sequential rule: frame 1 takes frame 0's (lost) body, frame 3 takes frame 2's
    np.testing.assert_array_equal(poses.to_wan()[1]["keypoints_body"], poses.to_wan()[0]["keypoints_body"])
    np.testing.assert_array_equal(poses.to_wan()[3]["keypoints_body"], poses.to_wan()[2]["keypoints_body"])


def test_from_wholebody_carries_the_last_body_across_chunks():
    k = _kps(2, seed=2)
    k[0, :23, :2] = -1.0
    last = np.full((20, 3), 0.25)
    poses = Poses.from_wholebody(torch.from_numpy(k), W, H, last_body=torch.from_numpy(last))
    want, _ = ref.pose_metas_ref(k, W, H, last_body=last)
    np.testing.assert_allclose(poses.to_wan()[0]["keypoints_body"], last)
    np.testing.assert_allclose(poses.to_wan()[1]["keypoints_body"], want[1]["keypoints_body"], atol=1e-12)


def test_dwpose_split_rows():
    k = _kps(2, seed=3)
    d = Poses.from_wholebody(torch.from_numpy(k), W, H).to_dwpose()
    norm = k / np.array([W, H, 1.0])
    body = ref.wan_body_ref(norm)[:, :18]
    np.testing.assert_allclose(d.body.numpy(), body[..., :2], atol=1e-12)
    np.testing.assert_array_equal(d.body_present.numpy(), body[..., 2] > 0)
    # hands stacked right (COCO rows 112-132), then left (91-111); face = COCO rows 23-90
    np.testing.assert_allclose(d.hands[:, 0].numpy(), norm[:, 112:133, :2], atol=1e-12)
    np.testing.assert_allclose(d.hands[:, 1].numpy(), norm[:, 91:112, :2], atol=1e-12)
    np.testing.assert_allclose(d.hands_score[:, 1].numpy(), norm[:, 91:112, 2], atol=1e-12)
    np.testing.assert_allclose(d.face.numpy(), norm[:, 23:91, :2], atol=1e-12)


def test_from_metas_is_lenient_and_takes_pose_meta_objects():
    meta = {
        "width": W,
        "height": H,
        "keypoints_body": np.full((20, 3), 0.5, np.float32),
        "keypoints_left_hand": np.full((10, 3), 0.25, np.float32),  # short: the rest unseen
    }
    poses = Poses.from_metas([meta, PoseMeta.from_wan({**meta, "keypoints_left_hand": np.zeros((21, 3)), "keypoints_right_hand": np.zeros((21, 3))})])
    assert (poses.width, poses.height) == (W, H) and poses.keypoints.shape == (2, 131, 3)
    kp = poses.keypoints.numpy()
    np.testing.assert_array_equal(kp[0, 0:20], 0.5)
    np.testing.assert_array_equal(kp[0, 20:30], 0.25)
    np.testing.assert_array_equal(kp[0, 30:131], 0.0)  # missing points and parts: score 0
    np.testing.assert_allclose(kp[1, 0:20], 0.5)
    with pytest.raises(ValueError, match="empty"):
        Poses.from_metas([])


def test_pose_metas_and_openpose_in_pixels():
    k = _kps(1, seed=4)
    poses = Poses.from_wholebody(torch.from_numpy(k), W, H)
    pm = poses.to_pose_metas()[0]
    np.testing.assert_allclose(pm.kps_lhand, k[0, 91:112, :2], atol=1e-9)
    np.testing.assert_allclose(pm.kps_rhand_p, k[0, 112:133, 2], atol=1e-12)
    op = poses.to_openpose(min_score=0.0)[0]
    assert (op["canvas_width"], op["canvas_height"]) == (W, H)
    right = np.asarray(op["people"][0]["hand_right_keypoints_2d"]).reshape(21, 3)
    np.testing.assert_allclose(right, k[0, 112:133], atol=1e-6)
    assert op == openpose_frames([pm], min_score=0.0)[0]
