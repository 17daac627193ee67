"""wanprep_torch.codec (argmax + DARK) against the literal NumPy mmpose reference."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_numpy as ref  # noqa: E402

from wanprep_torch.codec import _first_max, argmax_heatmaps, decode_heatmaps, gaussian_kernel1d  # noqa: E402

H, W = 64, 48
COORD_ATOL = 1e-3


def _check(hm: np.ndarray, coord_atol: float = COORD_ATOL):
    coords, scores = decode_heatmaps(torch.from_numpy(hm))
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    assert coords.shape == hm.shape[:2] + (2,) and scores.shape == hm.shape[:2]
    rc, rs = ref.decode_heatmaps_ref(hm.astype(np.float32))
    np.testing.assert_array_equal(scores.numpy(), rs)
    np.testing.assert_allclose(coords.numpy().astype(np.float64), rc, rtol=0, atol=coord_atol)
    return coords.numpy(), rc


def _gaussian_map(rng, h, w, centers, sigmas, amps):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    m = np.zeros((h, w))
    for (cx, cy), s, a in zip(centers, sigmas, amps):
        m += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    return m


def test_kernel_is_opencv_default():
    np.testing.assert_allclose(gaussian_kernel1d(11, dtype=torch.float64).numpy(), ref.cv_gaussian_kernel(11), atol=1e-12)
    # sigma for ksize 11 is exactly 2.0
    g = ref.cv_gaussian_kernel(11)
    np.testing.assert_allclose(g[6] / g[5], np.exp(-1 / 8.0), rtol=1e-12)


def test_argmax_first_occurrence_and_missing_marker():
    hm = np.zeros((1, 3, 8, 6), np.float32)
    hm[0, 0, 2, 3] = 1.0
    hm[0, 0, 5, 1] = 1.0  # tie: the first (row-major) one wins
    hm[0, 1] = -0.5  # no positive value -> -1
    hm[0, 2, 7, 5] = 0.25
    coords, scores = argmax_heatmaps(torch.from_numpy(hm))
    np.testing.assert_array_equal(coords.numpy(), [[[3, 2], [-1, -1], [5, 7]]])
    np.testing.assert_array_equal(scores.numpy(), [[1.0, -0.5, 0.25]])


@pytest.mark.parametrize("length", [3072, 3000, 64, 640])
def test_blocked_first_max_equals_argmax(length):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(300, length, generator=g)
    ties = (x * 2).round()  # many equal maxima: the first one must win
    nan = x.clone()
    nan[::7, length // 3] = float("nan")  # argmax treats NaN as the maximum
    nan[::14, length - 1] = float("nan")
    for t in (x, ties, nan, torch.zeros(5, length), torch.full((2, length), -1.0)):
        idx, val = _first_max(t)
        assert torch.equal(idx, t.argmax(dim=1))
        assert torch.equal(val, t.gather(1, idx.unsqueeze(1)).squeeze(1)) or torch.isnan(val).any()
        assert torch.equal(torch.isnan(val), torch.isnan(t).any(dim=1))


def test_random_uniform_maps():
    rng = np.random.default_rng(0)
    hm = rng.random((3, 17, H, W), dtype=np.float32)
    _check(hm)


def test_random_gaussian_sums_including_borders():
    rng = np.random.default_rng(1)
    n, k = 4, 24
    hm = np.zeros((n, k, H, W), np.float32)
    for i in range(n):
        for j in range(k):
            m = int(rng.integers(1, 4))
            if j % 4 == 0:
                # peak in the border band where no refinement happens (x or y within 2 px)
                cx = rng.choice([rng.uniform(-0.5, 1.4), rng.uniform(W - 2.4, W - 0.5)])
                cy = rng.uniform(0, H - 1)
                centers = [(cx, cy)] if j % 8 == 0 else [(cy * W / H, rng.choice([rng.uniform(-0.4, 1.4), rng.uniform(H - 2.4, H - 0.6)]))]
                amps = [1.0]
                sig = [rng.uniform(1, 3)]
            elif j % 4 == 1:
                # near (but inside) the border: the blur's zero padding matters
                centers = [(rng.uniform(2, 5), rng.uniform(H - 5, H - 2.1))]
                amps = [rng.uniform(0.3, 1.0)]
                sig = [rng.uniform(1, 3)]
            else:
                centers = [(rng.uniform(-1, W), rng.uniform(-1, H)) for _ in range(m)]
                amps = list(rng.uniform(0.2, 1.0, m))
                sig = list(rng.uniform(1, 3, m))
            hm[i, j] = _gaussian_map(rng, H, W, centers, sig, amps)
    got, want = _check(hm)
    # The border-band maps really were left unrefined (integer coordinates).
    border = got[:, ::4]
    np.testing.assert_array_equal(border, np.round(border))


def test_all_negative_constant_and_zero_maps():
    hm = np.zeros((1, 5, H, W), np.float32)
    hm[0, 0] = -np.random.default_rng(2).random((H, W)).astype(np.float32) - 0.01
    hm[0, 1] = 0.0
    hm[0, 2] = 0.7  # constant positive: argmax (0, 0), border -> unrefined
    hm[0, 3] = -0.3  # constant negative
    hm[0, 4] = np.float32(1e-30)  # tiny positive constant
    got, _ = _check(hm)
    np.testing.assert_array_equal(got[0, [0, 1, 3]], -1.0)
    np.testing.assert_array_equal(got[0, 2], [0.0, 0.0])
    assert np.isfinite(got).all()


def test_denormal_peak_keeps_the_integer_peak():
    # The blur of a denormal peak underflows to 0, so the reference's rescale is infinite and its
    # Taylor step NaN: the keypoint stays at the integer peak instead of becoming NaN.
    hm = np.zeros((1, 2, H, W), np.float32)
    hm[0, 0, 30, 20] = np.float32(4e-45)
    hm[0, 1, 30, 20] = np.float32(4e-45)
    hm[0, 1, 30, 21] = np.float32(3e-45)
    hm[0, 1] -= np.float32(1e-3) * (hm[0, 1] == 0)  # negative background, as in the failing case
    coords, scores = decode_heatmaps(torch.from_numpy(hm))
    assert bool(torch.isfinite(coords).all())
    np.testing.assert_array_equal(coords[0].numpy(), [[20.0, 30.0], [20.0, 30.0]])
    assert float(scores[0, 0]) == float(np.float32(4e-45))


def test_plateaus():
    rng = np.random.default_rng(3)
    hm = np.zeros((2, 6, H, W), np.float32)
    for i in range(2):
        for j in range(6):
            base = _gaussian_map(rng, H, W, [(rng.uniform(5, W - 5), rng.uniform(5, H - 5))], [2.5], [1.0])
            top = np.float32(rng.uniform(0.6, 0.95))
            m = np.minimum(base, top).astype(np.float32)  # flat top: many tied maxima
            if j == 5:
                m[10:14, 20:25] = 0.5  # rectangular plateau, nothing else
                m[m != 0.5] = 0.1
            hm[i, j] = m
    _check(hm)


def test_float16_input():
    rng = np.random.default_rng(4)
    hm = np.zeros((2, 8, H, W), np.float32)
    for i in range(2):
        for j in range(8):
            hm[i, j] = _gaussian_map(rng, H, W, [(rng.uniform(3, W - 3), rng.uniform(3, H - 3))], [rng.uniform(1, 3)], [0.9])
    hm16 = hm.astype(np.float16)
    coords, scores = decode_heatmaps(torch.from_numpy(hm16))
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    rc, rs = ref.decode_heatmaps_ref(hm16.astype(np.float32))
    np.testing.assert_array_equal(scores.numpy(), rs)
    np.testing.assert_allclose(coords.numpy(), rc, rtol=0, atol=COORD_ATOL)


def test_mixed_sign_weak_peaks():
    """ViTPose-like maps: slightly negative background, a weak positive peak. The spec's rescale
    by origin_max / max(blurred) changes which log values hit the 1e-10 floor, so it is not a
    pure additive constant here."""
    rng = np.random.default_rng(5)
    n, k = 2, 12
    hm = np.zeros((n, k, H, W), np.float32)
    for i in range(n):
        for j in range(k):
            bg = -rng.uniform(0.005, 0.03) + 0.003 * rng.standard_normal((H, W))
            peak = _gaussian_map(rng, H, W, [(rng.uniform(6, W - 6), rng.uniform(6, H - 6))], [rng.uniform(1, 2)], [rng.uniform(0.02, 0.2)])
            hm[i, j] = bg + peak
    _check(hm)


@pytest.mark.parametrize(
    "bg, peaks",
    [
        # blurred max < 0 although the raw max > 0: the rescale factor is negative
        (-0.02, [(0.05, 1.0, 20.3, 30.6)]),
        # factor > 0, but some Taylor taps of the blurred map are <= 0 (hit the 1e-10 floor)
        (-0.1, [(2.0, 0.6, 20.3, 30.4), (0.5, 4.0, 10.0, 10.0)]),
    ],
    ids=["negative-rescale", "partial-log-floor"],
)
def test_mixed_sign_deterministic(bg, peaks):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    m = np.full((H, W), bg)
    for a, s, cx, cy in peaks:
        m += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    _check(m.astype(np.float32)[None, None])


def test_dark_recovers_subpixel_centre():
    rng = np.random.default_rng(6)
    k = 40
    centres = np.stack([rng.uniform(10, W - 10, k), rng.uniform(10, H - 10, k)], axis=1)
    hm = np.stack([_gaussian_map(rng, H, W, [c], [2.0], [1.0]) for c in centres]).astype(np.float32)[None]
    coords, _ = decode_heatmaps(torch.from_numpy(hm))
    plain, _ = decode_heatmaps(torch.from_numpy(hm), dark=False)
    err_dark = np.abs(coords[0].numpy() - centres)
    err_plain = np.abs(plain[0].numpy() - centres)
    assert err_dark.max() < 0.05
    assert err_plain.max() <= 0.5 + 1e-6 and err_plain.max() > 0.3
    np.testing.assert_array_equal(plain[0].numpy(), np.round(plain[0].numpy()))


def test_rejects_bad_rank():
    with pytest.raises(ValueError):
        decode_heatmaps(torch.zeros(3, H, W))


def test_full_map_blur_equals_kornias_gaussian():
    """The DARK full-map blur (banded matrix products, zero border) is kornia's gaussian_blur2d
    with OpenCV's sigma for the size: an independent implementation of the same filter."""
    from kornia.filters import gaussian_blur2d

    from wanprep_torch.codec import _band, _opencv_sigma, gaussian_kernel1d

    g = torch.Generator().manual_seed(5)
    maps = torch.randn(7, 64, 48, generator=g)
    k = 11
    kern = gaussian_kernel1d(k)
    ours = _band(kern, 64, 64, -(k // 2)) @ maps @ _band(kern, 48, 48, -(k // 2)).T
    sigma = _opencv_sigma(k)
    ref = gaussian_blur2d(maps.unsqueeze(1), (k, k), (sigma, sigma), border_type="constant")[:, 0]
    assert torch.allclose(ours, ref, atol=1e-6)
