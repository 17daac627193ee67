"""wanprep_torch.pose: box -> window, bilinear crop, heatmap -> frame, against NumPy references."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_numpy as ref  # noqa: E402

from wanprep_torch.frames import FrameBatch  # noqa: E402
from wanprep_torch.pose import (  # noqa: E402
    box_to_center_window,
    crop_windows,
    decode_pose,
    heatmap_to_frame,
    window_pixel_bounds,
)


def test_box_to_center_window():
    rng = np.random.default_rng(0)
    x1 = rng.uniform(-50, 500, 64)
    y1 = rng.uniform(-50, 500, 64)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 400, 64), y1 + rng.uniform(1, 400, 64), rng.random(64)], axis=1)
    c, w = box_to_center_window(torch.from_numpy(boxes).float())
    rc, rw = ref.box_to_center_window_ref(boxes.astype(np.float32))
    np.testing.assert_allclose(c.numpy(), rc, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(w.numpy(), rw, rtol=1e-6, atol=1e-4)
    # aspect is always 192:256
    np.testing.assert_allclose(w.numpy()[:, 0] / w.numpy()[:, 1], 0.75, rtol=1e-6)


def test_box_to_center_window_examples():
    boxes = torch.tensor([[0.0, 0.0, 192.0, 100.0], [10.0, 20.0, 40.0, 420.0]])
    c, w = box_to_center_window(boxes)
    # wide box: size = 192 * 256/192 = 256 -> window (240, 320); tall box: size 400 -> (375, 500)
    np.testing.assert_allclose(c.numpy(), [[96, 50], [25, 220]])
    np.testing.assert_allclose(w.numpy(), [[240, 320], [375, 500]])


def test_vectorised_sampler_matches_scalar():
    rng = np.random.default_rng(1)
    img = rng.random((3, 9, 7))
    xs = rng.uniform(-2, 9, 11)
    ys = rng.uniform(-2, 11, 5)
    grid = ref.bilinear_sample_zero_grid(img, xs, ys)
    for v, y in enumerate(ys):
        for u, x in enumerate(xs):
            np.testing.assert_allclose(grid[:, v, u], ref.bilinear_sample_zero(img, x, y), atol=1e-12)
    # integer positions return the pixel itself; half a pixel past the edge blends with 0
    np.testing.assert_allclose(ref.bilinear_sample_zero(img, 3, 4), img[:, 4, 3])
    np.testing.assert_allclose(ref.bilinear_sample_zero(img, 6.5, 4), 0.5 * img[:, 4, 6])


# kornia's warp_affine maps crop pixels to the frame through normalised float32 coordinates:
# a sample position is off by ~1e-5 px, so values on random (steep) frames move by up to ~2e-5.
CROP_ATOL = 5e-5


def _frames(t, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((t, 3, h, w), dtype=np.float32)


@pytest.mark.parametrize(
    "center, window",
    [
        ([[40.3, 30.7]], [[30.0, 40.0]]),  # inside
        ([[5.2, 50.9]], [[45.0, 60.0]]),  # partly outside (left)
        ([[70.0, 3.0]], [[90.0, 120.0]]),  # partly outside (right and top), larger than the frame
        ([[-200.0, -300.0]], [[30.0, 40.0]]),  # fully outside
        ([[39.5, 31.5]], [[96.0, 128.0]]),  # crop pixels 2 frame px apart -> exact pixel hits
    ],
    ids=["inside", "left", "right-top", "outside", "grid-aligned"],
)
def test_crop_windows_vs_reference(center, window):
    fr = _frames(1, 60, 80)
    c = torch.tensor(center)
    w = torch.tensor(window)
    got = crop_windows(torch.from_numpy(fr), c, w)
    assert got.shape == (1, 3, 256, 192) and got.dtype == torch.float32
    want = ref.crop_windows_ref(fr, center, window)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=CROP_ATOL)
    if center[0][0] < -100:
        assert float(got.abs().max()) == 0.0


def test_crop_windows_frame_index_and_small_output():
    fr = _frames(3, 48, 40, seed=2)
    center = np.array([[20.0, 24.0], [10.5, 40.25], [35.0, 5.0], [20.0, 24.0]])
    window = np.array([[30.0, 40.0], [18.0, 24.0], [60.0, 80.0], [12.0, 16.0]])
    idx = torch.tensor([2, 0, 0, 1])
    got = crop_windows(torch.from_numpy(fr), torch.from_numpy(center).float(), torch.from_numpy(window).float(), out_hw=(64, 48), frame_index=idx)
    want = ref.crop_windows_ref(fr, center, window, out_hw=(64, 48), frame_index=idx.numpy())
    assert got.shape == (4, 3, 64, 48)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=CROP_ATOL)


def test_crop_windows_channels_last_and_float64():
    fr = _frames(2, 40, 56, seed=3)
    center = np.array([[28.0, 20.0], [3.0, 37.0]])
    window = np.array([[42.0, 56.0], [30.0, 40.0]])
    cl = torch.from_numpy(fr).contiguous(memory_format=torch.channels_last)
    got = crop_windows(cl, torch.from_numpy(center).float(), torch.from_numpy(window).float())
    want = ref.crop_windows_ref(fr, center, window)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=CROP_ATOL)
    got64 = crop_windows(torch.from_numpy(fr.astype(np.float64)), torch.from_numpy(center), torch.from_numpy(window))
    assert got64.dtype == torch.float64
    np.testing.assert_allclose(got64.numpy(), want, rtol=0, atol=1e-5)  # float64: exact enough


def test_crop_windows_rejects_integer_frames():
    with pytest.raises(TypeError):
        crop_windows(torch.zeros(1, 3, 20, 20, dtype=torch.uint8), torch.tensor([[10.0, 10.0]]), torch.tensor([[6.0, 8.0]]))


def test_heatmap_to_frame_and_decode_pose():
    rng = np.random.default_rng(4)
    n, k = 3, 5
    coords = rng.uniform(-1, 60, (n, k, 2)).astype(np.float32)
    center = rng.uniform(0, 500, (n, 2)).astype(np.float32)
    window = rng.uniform(20, 400, (n, 2)).astype(np.float32)
    got = heatmap_to_frame(torch.from_numpy(coords), torch.from_numpy(center), torch.from_numpy(window), (64, 48))
    want = ref.heatmap_to_frame_ref(coords, center, window, (64, 48))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-3)

    yy, xx = np.mgrid[0:64, 0:48].astype(np.float64)
    hm = np.zeros((n, k, 64, 48), np.float32)
    for i in range(n):
        for j in range(k):
            cx, cy = rng.uniform(4, 44), rng.uniform(4, 60)
            hm[i, j] = rng.uniform(0.2, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
    hm[0, 0] = -0.1  # missing keypoint: heatmap -1 mapped through the same affine
    out = decode_pose(torch.from_numpy(hm), torch.from_numpy(center), torch.from_numpy(window))
    assert out.shape == (n, k, 3) and out.dtype == torch.float32
    rc, rs = ref.decode_heatmaps_ref(hm)
    want_xy = ref.heatmap_to_frame_ref(rc, center, window, (64, 48))
    np.testing.assert_allclose(out[..., :2].numpy(), want_xy, rtol=1e-6, atol=1e-2)  # 1e-3 heatmap px x window/48 scale
    np.testing.assert_array_equal(out[..., 2].numpy(), rs)
    np.testing.assert_allclose(out[0, 0, :2].numpy(), ref.heatmap_to_frame_ref(np.full((1, 1, 2), -1.0), center[:1], window[:1])[0, 0], atol=1e-3)


def test_crop_then_decode_round_trip():
    """A point in the frame, cropped into the window and found at heatmap px (x - x0) * 48 / ww,
    maps back to itself."""
    center = torch.tensor([[123.4, 210.7]])
    window = torch.tensor([[150.0, 200.0]])
    pt = np.array([101.3, 180.2])
    x0 = center.numpy()[0] - window.numpy()[0] / 2
    hm_xy = (pt - x0) * np.array([48, 64]) / window.numpy()[0]
    back = heatmap_to_frame(torch.from_numpy(hm_xy[None, None]).float(), center, window, (64, 48))
    np.testing.assert_allclose(back.numpy()[0, 0], pt, atol=1e-4)


def test_crop_equals_kornia_warp_affine():
    """crop_windows is kornia's warp_affine with the window's matrix (dst = (src - x0) / s),
    built here independently of pose.window_matrix."""
    import kornia  # the [test] extra installs it
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(3, 3, 120, 160, generator=g)
    boxes = torch.tensor([[20.0, 10.0, 90.0, 110.0], [-15.0, 30.0, 60.0, 140.0], [100.3, 5.7, 150.1, 60.2]])
    center, window = box_to_center_window(boxes)
    ours = crop_windows(frames, center, window)
    s = window[:, 1] / 256
    x0 = center - window / 2
    m = torch.zeros(3, 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1 / s
    m[:, :, 2] = -x0 / s[:, None]
    ref = kornia.geometry.transform.warp_affine(frames, m, (256, 192), mode="bilinear", padding_mode="zeros", align_corners=True)
    assert torch.allclose(ours, ref, atol=1e-4)


def _windows(boxes):
    return box_to_center_window(torch.tensor(boxes, dtype=torch.float32))


@pytest.mark.parametrize(
    "boxes",
    [
        [[300.0, 60.0, 480.0, 440.0], [310.5, 70.25, 470.0, 430.0]],  # inside, sub-pixel edges
        [[-40.0, 100.0, 60.0, 300.0], [780.0, -20.0, 900.0, 200.0]],  # over the left / right, top edges
        [[5.0, 5.0, 40.0, 60.0], [700.0, 400.0, 830.0, 479.0]],  # small, in opposite corners
        [[5.0, 5.0, 40.0, 60.0], [12.0, 9.0, 47.0, 70.0]],  # small, near each other
        [[0.0, 0.0, 832.0, 480.0], [0.0, 0.0, 832.0, 480.0]],  # the full-frame fallback box
    ],
)
def test_crop_of_window_region_equals_crop_of_frame(boxes):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, 480, 832, 3), generator=g, dtype=torch.uint8)
    fb = FrameBatch(u8.permute(0, 3, 1, 2))
    center, window = _windows(boxes)
    full = crop_windows(fb.float01(), center, window)
    x0, y0, x1, y1 = window_pixel_bounds(center, window, (256, 192), (480, 832))
    assert 0 <= x0 < x1 <= 832 and 0 <= y0 < y1 <= 480
    region = FrameBatch(u8.permute(0, 3, 1, 2)).float01_region(x0, y0, x1, y1)  # fresh: no cached float01
    assert region.shape == (2, 3, y1 - y0, x1 - x0)
    assert torch.equal(region, fb.float01()[..., y0:y1, x0:x1])
    shifted = crop_windows(region, center - torch.tensor([float(x0), float(y0)]), window)
    # Same taps and weights; the grid's normalisation rounds differently (values in 1/255 steps).
    assert (shifted - full).abs().max() < 2e-4
    if max(b[2] for b in boxes) < 100:  # small windows: most of the frame is never converted
        assert (x1 - x0) * (y1 - y0) < 0.1 * 832 * 480


def test_window_pixel_bounds_off_frame_and_float_views():
    center, window = _windows([[2000.0, 2000.0, 2100.0, 2100.0]])
    assert window_pixel_bounds(center, window, (256, 192), (480, 832)) is None
    center, window = _windows([[10.0, 10.0, 50.0, 90.0], [float("nan"), 0.0, 20.0, 40.0]])
    assert window_pixel_bounds(center, window, (256, 192), (480, 832)) == (0, 0, 832, 480)  # no crash
    x = torch.rand(1, 480, 832, 3)
    fb = FrameBatch(x.permute(0, 3, 1, 2))
    view = fb.float01_region(10, 20, 110, 220)
    assert view.data_ptr() == x[0, 20, 10].data_ptr()  # float32 input: a view, no copy
    half = FrameBatch(x.half().permute(0, 3, 1, 2)).float01_region(10, 20, 110, 220)
    assert half.dtype == torch.float32 and torch.equal(half, x.half().float().permute(0, 3, 1, 2)[..., 20:220, 10:110])
