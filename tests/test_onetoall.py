"""wanprep_torch.onetoall: the reference node's golden outputs, bad input, devices and dtypes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from wanprep_torch.onetoall import (
    OneToAllOutputs,
    canvas_size,
    dwposes_from_keypoints,
    onetoall,
    render_dwposes,
    warp_image_cv,
)

from conftest import golden_file  # noqa: E402

GOLDEN = golden_file("onetoall.npz")
OUTPUTS = ("pose_images", "ref_pose_image", "ref_image_out", "ref_mask")


def _load():
    if not GOLDEN.exists():
        return None, []
    z = np.load(GOLDEN)
    return z, json.loads(bytes(z["cases_json"]))


Z, CASES = _load()
needs_golden = pytest.mark.skipif(Z is None, reason=f"golden file {GOLDEN} not found (set WANPREP_GOLDEN)")


def _inputs(case: dict) -> dict:
    kw = dict(
        template_keypoints=torch.from_numpy(Z["template_kps"]),
        width=case["width"],
        height=case["height"],
        align_to=case["align_to"],
        draw_face_points=case["draw_face_points"],
        draw_head=case["draw_head"],
    )
    if case["reference"]:
        kw["reference_keypoints"] = torch.from_numpy(Z[case["id"] + "_ref_kps"])
        kw["reference_image"] = torch.from_numpy(Z[case["id"] + "_ref_image"])
    return kw


def _close_fraction(out: torch.Tensor, golden: np.ndarray) -> float:
    """Fraction of values within 2/255 of the golden (stored as round(255 * value))."""
    got = np.round(out.detach().cpu().double().numpy() * 255).astype(np.int64)
    return float((np.abs(got - golden.astype(np.int64)) <= 2).mean())


@needs_golden
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_case(case):
    out = onetoall(**_inputs(case))
    assert isinstance(out, OneToAllOutputs)
    for name, value in zip(OUTPUTS, out):
        golden = Z[f"{case['id']}_{name}"]
        assert tuple(value.shape) == golden.shape, name
        assert value.dtype == torch.float32 and float(value.min()) >= 0 and float(value.max()) <= 1, name
        frac = _close_fraction(value, golden)
        assert frac >= 0.995, f"{case['id']} {name}: {frac:.4%} of pixels within 2/255"


@needs_golden
def test_outputs_unpack_in_node_order():
    case = next(c for c in CASES if c["reference"] is None)
    out = onetoall(**_inputs(case))
    pose_images, ref_pose_image, ref_image, ref_mask = out
    assert pose_images is out.pose_images and ref_mask is out.ref_mask
    assert ref_pose_image.abs().sum() == 0 and ref_image.abs().sum() == 0 and ref_mask.abs().sum() == 0


# ----------------------------------------------------------------------------- synthetic poses


def _person(width: int = 832, height: int = 480, score: float = 0.95) -> torch.Tensor:
    """(133, 3) wholebody keypoints of a standing person roughly centred in the frame."""
    kp = np.zeros((133, 3), np.float32)
    cx, top, s = width / 2, height * 0.15, height / 480
    body = {  # COCO body rows
        0: (0, 0), 1: (-6, -6), 2: (6, -6), 3: (-14, -2), 4: (14, -2), 5: (-30, 40), 6: (30, 40),
        7: (-50, 90), 8: (50, 90), 9: (-55, 135), 10: (55, 135), 11: (-20, 140), 12: (20, 140),
        13: (-22, 210), 14: (22, 210), 15: (-24, 280), 16: (24, 280), 17: (-30, 290), 18: (-20, 292),
        19: (-26, 282), 20: (30, 290), 21: (20, 292), 22: (26, 282),
    }  # fmt: skip
    for i, (dx, dy) in body.items():
        kp[i] = (cx + dx * s, top + dy * s, score)
    for i in range(68):  # face ring around the nose
        a = 2 * np.pi * i / 68
        kp[23 + i] = (cx + 12 * s * np.cos(a), top + 4 * s + 14 * s * np.sin(a), score)
    for h, (wx, wy) in enumerate(((cx - 55 * s, top + 140 * s), (cx + 55 * s, top + 140 * s))):
        for j in range(21):
            kp[91 + 21 * h + j] = (wx + (j % 5) * 3 * s, wy + (j // 5 + 1) * 4 * s, score)
    return torch.from_numpy(kp)


def _video(t: int = 3) -> torch.Tensor:
    base = _person()
    shift = torch.tensor([[8.0, 0.0, 0.0]])
    return torch.stack([base + shift * i for i in range(t)])


def _reference(height: int = 480, width: int = 832) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return _person(width, height), image


def test_no_reference_draws_the_template_and_black_outputs():
    out = onetoall(_video(), 832, 480, "pose")
    assert out.pose_images.shape == (3, 480, 832, 3)
    assert out.pose_images.amax() > 0.5  # something drawn
    assert out.ref_pose_image.shape == (1, 480, 832, 3) and out.ref_image.shape == (1, 480, 832, 3)
    assert out.ref_mask.shape == (1, 480, 832)
    assert float(out.ref_pose_image.abs().sum() + out.ref_image.abs().sum() + out.ref_mask.abs().sum()) == 0


@pytest.mark.parametrize("ref_hw", [(480, 832), (600, 400)])
def test_reference_of_another_size_keeps_its_own_size(ref_hw):
    """As the reference: the reference image keeps its size; its pose image is drawn at the
    output size for "none", and at the reference's size (warped) for "pose"."""
    kps, image = _reference(*ref_hw)
    out = onetoall(_video(), 832, 480, "none", reference_keypoints=kps, reference_image=image)
    assert out.ref_pose_image.shape == (1, 480, 832, 3)
    assert out.ref_image.shape == (1, *ref_hw, 3) and out.ref_mask.shape == (1, *ref_hw)
    assert torch.equal(out.ref_image[0], image.float() / 255)
    out = onetoall(_video(), 832, 480, "pose", reference_keypoints=kps, reference_image=image)
    assert out.pose_images.shape == (3, 480, 832, 3)
    assert out.ref_pose_image.shape == (1, *ref_hw, 3) and out.ref_image.shape == (1, *ref_hw, 3)
    assert out.ref_mask.shape == (1, *ref_hw)
    assert set(out.ref_mask.unique().tolist()) <= {0.0, 1.0}


def test_no_person_in_the_reference():
    kps, image = _reference()
    kps = torch.zeros_like(kps)  # what the pose model gives on an empty picture, at worst
    for mode in ("ref", "pose"):
        with pytest.raises(ValueError, match="no person in the reference"):
            onetoall(_video(), 832, 480, mode, reference_keypoints=kps, reference_image=image)
    out = onetoall(_video(), 832, 480, "none", reference_keypoints=kps, reference_image=image)
    assert float(out.ref_pose_image.abs().sum()) == 0  # nothing to draw, as the reference


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(template_keypoints=torch.zeros(3, 17, 3)), "template_keypoints"),
        (dict(template_keypoints=torch.zeros(0, 133, 3)), "template_keypoints"),
        (dict(width=0), "width"),
        (dict(align_to="left"), "align_to"),
        (dict(draw_head="half"), "draw_head"),
        (dict(draw_face_points=True), "draw_face_points"),
        (dict(reference_image=None), "go together"),
        (dict(reference_keypoints=torch.zeros(17, 3)), "reference_keypoints"),
        (dict(reference_image=torch.zeros(480, 832)), "reference_image"),
    ],
)
def test_bad_input(change, message):
    kps, image = _reference()
    kw = dict(template_keypoints=_video(), width=832, height=480, align_to="none")
    kw.update(reference_keypoints=kps, reference_image=image)
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        onetoall(**kw)


def test_dtypes_and_numpy_inputs_agree():
    kps, image = _reference()
    a = onetoall(_video(), 832, 480, "pose", reference_keypoints=kps, reference_image=image)
    as_float = (image.float() / 255)[None]  # a ComfyUI IMAGE
    b = onetoall(_video().double().numpy(), 832, 480, "pose", reference_keypoints=kps.numpy(), reference_image=as_float)
    for x, y in zip(a, b):
        assert (x - y).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    kps, image = _reference()
    a = onetoall(_video(), 832, 480, "pose", reference_keypoints=kps, reference_image=image)
    b = onetoall(_video().cuda(), 832, 480, "pose", reference_keypoints=kps.cuda(), reference_image=image.cuda())
    for x, y in zip(a, b):
        assert y.device.type == "cuda"
        assert _close_fraction(y, np.round(x.numpy() * 255)) >= 0.999


# ----------------------------------------------------------------------------- pieces


def test_canvas_size_short_side_2160():
    assert canvas_size(480, 832) == (2160, 3744)
    assert canvas_size(832, 480) == (3744, 2160)
    assert canvas_size(2160, 4000) == (2160, 4000)


def test_render_sizes_and_empty_pose():
    poses = dwposes_from_keypoints(_video(2), 832, 480)
    img = render_dwposes(poses, 240, 416)
    assert img.shape == (2, 240, 416, 3) and img.dtype == torch.uint8 and int(img.max()) > 0
    empty = dwposes_from_keypoints(torch.zeros(2, 133, 3), 832, 480)
    assert int(render_dwposes(empty, 240, 416).max()) == 0


def test_weak_and_none_head_blacken_the_head_joints():
    poses = dwposes_from_keypoints(_video(1), 832, 480)
    nose = poses.body[0, 0] * torch.tensor([832.0, 480.0])
    x, y = int(nose[0]), int(nose[1])
    full = render_dwposes(poses, 480, 832, draw_face=False)
    assert int(full[0, y, x].max()) > 100  # the red nose joint
    for head in ("weak", "none"):
        img = render_dwposes(poses, 480, 832, draw_face=False, head=head)
        assert int(img[0, y, x].max()) <= 2, head


def test_warp_image_cv_identity_and_shift():
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (20, 30, 3), generator=g, dtype=torch.uint8)
    ident = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    assert torch.equal(warp_image_cv(img, ident), img)
    shifted = warp_image_cv(img, np.array([[1, 0, 2], [0, 1, 3]], np.float32))
    assert torch.equal(shifted[3:, 2:], img[:-3, :-2]) and int(shifted[:3].max()) == 0
    shift = np.array([[1, 0, 2], [0, 1, 3]], np.float32)
    mask = warp_image_cv(torch.zeros(20, 30, dtype=torch.uint8), shift, nearest=True, border=255)
    assert int(mask[:3].min()) == 255 and int(mask[:, :2].min()) == 255 and int(mask[3:, 2:].max()) == 0


def test_sampled_drawing_equals_full_canvas_drawing():
    """Painting only the rows and columns the resize reads gives what the reference's way
    (a full 2160-canvas per frame, then the resize) gives; also keeps the bench honest."""
    from conftest import load_script

    bench = load_script("bench_onetoall")
    poses = dwposes_from_keypoints(bench.synthetic_keypoints(2, 832, 480), 832, 480)
    full = bench.reference_way(poses, 480, 832)
    ours = render_dwposes(poses, 480, 832, dtype=torch.float32).numpy()
    assert np.array_equal(ours, full)


@pytest.mark.parametrize("head, blue", [("full", 138), ("weak", 53), ("none", 0)])
def test_head_strength_colours_the_neck_to_nose_limb(head, blue):
    """The neck -> nose limb (OpenPose colour (0, 0, 255)) at its midpoint, away from every
    other primitive: "full" scales the colour by the two scores' product (0.95 * 0.95: 230),
    "weak" by 0.35 (the reference's factor: int(255 * 0.35) = 89), "none" by 0; the whole
    limb layer is then dimmed to 60 % (int(230 * 0.6) = 138, int(89 * 0.6) = 53)."""
    out = onetoall(_video(1), 832, 480, "none", draw_face_points="none", draw_head=head)
    # _person(): nose at (416, 72), neck (the shoulders' midpoint) at (416, 112).
    got = [round(float(v) * 255) for v in out.pose_images[0, 92, 416]]
    assert got == [0, 0, blue]
