"""Preprocessor with a reference image: its pose measured the reference node's way, retargeting."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wanprep_torch import PoseMeta, Preprocessor, Result, retarget
from wanprep_torch.reference import area_size, letterbox
from wanprep_torch.testkit import make_clip

H, W = 240, 416  # the video (its area sets the reference image's size by default)


def stretched_reference():
    """A reference image whose person has other proportions than the video's: rendered at
    180x300 and stretched to 270x300 (1.5x wider shoulders, arms and hips for the same height).
    Returns the image and its ground-truth keypoints (133, 2) in its pixels."""
    ref = make_clip(1, H=300, W=180, motion="hold", person_height=230, seed=5)
    img = F.interpolate(ref.frames.permute(0, 3, 1, 2), size=(300, 270), mode="bilinear", align_corners=False)
    kps = ref.keypoints[0].clone()
    kps[:, 0] = (kps[:, 0] + 0.5) * 1.5 - 0.5  # pixel centres under align_corners=False
    return img.permute(0, 2, 3, 1)[0].contiguous(), kps


@pytest.fixture(scope="module")
def pre(models):
    return Preprocessor(models["det"], models["pose"], progress=False, gate="off", chunk_size=4)


@pytest.fixture(scope="module")
def video():
    return make_clip(10, H=H, W=W, motion="slow", seed=3)


@pytest.fixture(scope="module")
def with_ref(pre, video):
    image, kps = stretched_reference()
    return pre(video.frames, reference_image=image), image, kps


def test_area_size_is_the_references_resize_by_area():
    # w = sqrt(area * W / H), h = sqrt(area * H / W), floored to multiples of 16.
    assert area_size((300, 270), 416 * 240) == (320, 288)  # 333.1 x 299.8
    assert area_size((1080, 1920), 832 * 480) == (464, 832)
    assert area_size((480, 832), 832 * 480) == (480, 832)
    assert area_size((10, 1000), 64 * 64) == (16, 640)  # never under one multiple
    h, w = area_size((700, 500), 832 * 480)
    assert h % 16 == 0 and w % 16 == 0 and h * w <= 832 * 480
    with pytest.raises(ValueError):
        area_size((0, 10), 100)


def test_letterbox_keeps_aspect_with_black_bars():
    img = torch.ones(1, 100, 50, 3)
    out = letterbox(img, (64, 64))  # taller than the canvas: bars left and right
    assert out.shape == (1, 64, 64, 3)
    cols = out[0].sum(dim=(0, 2)) > 0
    assert int(cols.sum()) == 32 and cols[16:48].all()  # int(64 / 100 * 50) = 32, centred
    wide = letterbox(torch.ones(1, 50, 100, 3), (64, 64))
    assert int((wide[0].sum(dim=(1, 2)) > 0).sum()) == 32


def test_reference_pose_is_measured_on_the_resized_image(with_ref):
    res, image, kps = with_ref
    meta = res.reference_meta
    h, w = area_size(tuple(image.shape[:2]), W * H)
    assert (meta["width"], meta["height"]) == (w, h) and res.reference_image.shape == (h, w, 3)
    assert res.reference_box[4] > 0.5  # the detector found the person
    # Ground truth in the resized image: the letterbox scale and offset.
    scale = min(h / image.shape[0], w / image.shape[1])
    nw, nh = int(image.shape[1] * scale), int(image.shape[0] * scale)
    truth = (kps.numpy() + 0.5) * (nw / image.shape[1], nh / image.shape[0]) - 0.5 + ((w - nw) // 2, (h - nh) // 2)
    # Normalised by the image the keypoints were measured on.
    face = meta["keypoints_face"][1:, :2] * (w, h)
    err = np.linalg.norm(face - truth[23:91], axis=1)
    assert err.mean() < 1.5, err.mean()


def test_retargeted_poses_take_the_references_proportions(with_ref, video):
    res, _, _ = with_ref
    assert len(res.retargeted) == len(video) and all(isinstance(m, PoseMeta) for m in res.retargeted)
    ref = PoseMeta.from_wan(res.reference_meta)
    out0 = res.retargeted[0]
    assert (out0.width, out0.height) == (ref.width, ref.height)
    src = PoseMeta.from_wan(res.pose_metas[0])

    def shoulders_per_torso(m):  # limb lengths: shoulder (neck-shoulder) over flank (neck-hip)
        b = m.kps_body
        return np.linalg.norm(b[2] - b[1]) / np.linalg.norm(b[8] - b[1])

    # The video's person has the template's proportions, the reference 1.5x wider shoulders.
    assert shoulders_per_torso(ref) > 1.2 * shoulders_per_torso(src)
    assert shoulders_per_torso(out0) == pytest.approx(shoulders_per_torso(ref), rel=0.03)
    # The library call on the same inputs gives the same poses.
    again = retarget(res.pose_metas, res.reference_meta)
    for a, b in zip(again, res.retargeted):
        for attr in ("kps_body", "kps_body_p", "kps_lhand", "kps_rhand", "kps_face_p"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    assert np.isnan(out0.kps_face).all()  # retargeting drops the face
    assert res.to_openpose(retargeted=True)[0]["canvas_width"] == out0.width


def test_stream_parts_carry_the_reference(pre, video, with_ref):
    res, image, _ = with_ref
    parts = list(pre.stream(video.frames, reference_image=image))
    assert len(parts) > 1
    for p in parts:
        assert p.reference_meta is parts[0].reference_meta and len(p.retargeted) == len(p)
    joined = Result.concat(parts)
    assert joined.reference_meta is parts[0].reference_meta and joined.reference_image is not None
    assert len(joined.retargeted) == len(video)
    for a, b in zip(joined.retargeted, res.retargeted):
        np.testing.assert_array_equal(a.kps_body, b.kps_body)
        np.testing.assert_array_equal(a.kps_rhand, b.kps_rhand)


def test_reference_size_sets_the_area_and_input_forms(pre, video):
    image, _ = stretched_reference()
    u8 = (image * 255).round().to(torch.uint8)
    res = pre(video.frames[:2], reference_image=u8[None], reference_size=(832, 480))
    h, w = area_size(tuple(image.shape[:2]), 832 * 480)
    assert (res.reference_meta["width"], res.reference_meta["height"]) == (w, h)
    chw = pre(video.frames[:2], reference_image=image.permute(2, 0, 1)[None])
    assert chw.reference_meta["width"] == area_size(tuple(image.shape[:2]), W * H)[1]
    # Without a reference nothing is added.
    plain = pre(video.frames[:2])
    assert plain.reference_meta is None and plain.retargeted is None
    with pytest.raises(ValueError, match="reference_image"):
        plain.to_openpose(retargeted=True)
    with pytest.raises(ValueError):
        pre(video.frames[:2], reference_image=torch.zeros(4, 4, 3))  # under 16 px


def test_key_frame_points_never_empty(pre):
    # A blank video: no person, no point scored >= 0.3; the prompt is the full-frame box's centre.
    res = pre(torch.zeros(5, H, W, 3))
    assert json.loads(res.key_frame_points) == [{"x": W // 2, "y": H // 2}]
    assert all(k["points"] == [{"x": W // 2, "y": H // 2}] for k in res.key_frames)


def test_to_openpose_of_detected_poses(with_ref, video):
    res, _, _ = with_ref
    frames = res.to_openpose()
    assert len(frames) == len(video) and frames[0]["canvas_width"] == W and frames[0]["canvas_height"] == H
    body = np.array(frames[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    np.testing.assert_allclose(body[:, :2], res.pose_metas[0]["keypoints_body"][:18, :2] * (W, H), rtol=1e-5)
    json.dumps(frames)


def test_reference_without_a_person_warns(pre, video, caplog):
    with caplog.at_level("WARNING", logger="wanprep_torch"):
        res = pre(video.frames[:2], reference_image=torch.zeros(100, 100, 3))
    assert "no person found in the reference image" in caplog.text
    assert float(res.reference_box[4]) == -1 and len(res.retargeted) == 2
