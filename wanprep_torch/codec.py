"""Heatmap decoding: argmax, then DARK (distribution-aware) sub-pixel refinement.

Pure tensor functions; the math only, no model plumbing. The algorithm is the one the
reference uses (mmpose's "unbiased" post-processing): blur each heatmap with an 11x11
Gaussian (zero border), rescale it to keep its maximum, take the log, and move the argmax by
one Newton step of the second-order Taylor expansion at the peak.

Only each peak's 15x15 neighbourhood is needed for that step (9 blurred values within 2 px
of the peak, each needing an 11x11 window), so the blur is evaluated on those patches only,
not on all K maps. The max-rescale multiplies the blurred map by a constant, which the log
turns into an additive constant that every finite difference cancels, so it is skipped.
"""

from __future__ import annotations

import torch

__all__ = ["gaussian_kernel1d", "argmax_heatmaps", "dark_refine", "decode_heatmaps"]


def gaussian_kernel1d(kernel: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """OpenCV's default Gaussian for an odd ``kernel`` size (sigma from the size), sums to 1.

    Returns:
        (kernel,) tensor.
    """
    sigma = _opencv_sigma(kernel)
    x = torch.arange(kernel, device=device, dtype=dtype) - (kernel - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _opencv_sigma(kernel: int) -> float:
    """cv2.getGaussianKernel's sigma for a size with sigma <= 0."""
    if kernel % 2 != 1 or kernel < 3:
        raise ValueError(f"blur kernel must be an odd size >= 3, got {kernel}")
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def _band(g: torch.Tensor, n_out: int, n_in: int, offset: int) -> torch.Tensor:
    """(n_out, n_in) matrix applying the 1-D kernel ``g``: output i = sum_t g[t] * input[i + offset + t]
    (inputs outside 0..n_in-1 count as zero)."""
    i = torch.arange(n_out, device=g.device).unsqueeze(1)
    j = torch.arange(n_in, device=g.device).unsqueeze(0)
    t = j - i - offset
    inside = (t >= 0) & (t < g.numel())
    return torch.where(inside, g[t.clamp(0, g.numel() - 1)], torch.zeros((), dtype=g.dtype, device=g.device))


def _first_max(flat: torch.Tensor, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first maximum of each row and the maximum: (M, L) -> (M,), (M,).

    Same result as ``argmax`` (first occurrence; NaN counts as the maximum). On the CPU torch's
    argmax over 3072-long rows is a scalar loop; a vectorised max per block of 64, an argmax
    over the 48 block maxima and one over the winning block are several times cheaper
    (BENCHMARKS.md).
    """
    m, length = flat.shape
    if length % block or length <= block:
        idx = flat.argmax(dim=1)
        return idx, flat.gather(1, idx.unsqueeze(1)).squeeze(1)
    blocks = flat.view(m, length // block, block)
    maxima = blocks.amax(dim=2)  # (M, L / block)
    b = maxima.argmax(dim=1)  # the first block holding the maximum
    inner = blocks.gather(1, b.view(m, 1, 1).expand(m, 1, block)).squeeze(1).argmax(dim=1)
    return b * block + inner, maxima.gather(1, b.unsqueeze(1)).squeeze(1)


def argmax_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer peak of each map.

    Args:
        heatmaps: (N, K, h, w).

    Returns:
        coords (N, K, 2) float x, y in heatmap pixels (-1 where the map's max is <= 0, as the
        reference marks a missing peak), scores (N, K) = each map's maximum.
    """
    n, k, h, w = heatmaps.shape
    idx, scores = _first_max(heatmaps.reshape(n * k, h * w))
    idx, scores = idx.view(n, k), scores.view(n, k)
    coords = torch.stack([idx % w, idx // w], dim=-1).to(heatmaps.dtype if heatmaps.is_floating_point() else torch.float32)
    coords = torch.where((scores > 0).unsqueeze(-1), coords, torch.full_like(coords, -1.0))
    return coords, scores


def _taylor_dtype(device: torch.device) -> torch.dtype:
    # The Newton step divides by a Hessian determinant that can be small; float64 keeps it
    # stable where the device has it (MPS does not).
    return torch.float32 if device.type == "mps" else torch.float64


def dark_refine(heatmaps: torch.Tensor, coords: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """DARK refinement of integer peaks.

    Args:
        heatmaps: (N, K, h, w) raw heatmaps.
        coords: (N, K, 2) integer-valued peaks from :func:`argmax_heatmaps` (-1 = no peak).
        kernel: odd Gaussian size of the modulation blur.

    Returns:
        (N, K, 2) refined coords in heatmap pixels (unchanged where the peak lies within 2 px of
        the border, has no peak, or the Hessian is singular — the reference's rules — and where
        the step is not finite).
    """
    n, k, h, w = heatmaps.shape
    r = (kernel - 1) // 2
    pr = r + 2  # patch radius: blurred values are needed up to 2 px from the peak
    ps = 2 * pr + 1
    dt = _taylor_dtype(heatmaps.device)

    px = coords[..., 0].long()
    py = coords[..., 1].long()
    # Reference condition: 1 < px < w - 2 and 1 < py < h - 2 (also rejects the -1 marker).
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)

    # Each peak's patch, zeros outside the map (the reference blurs a zero-bordered copy).
    # Gathered from the raw maps so only N*K*15*15 values are touched, not all of them.
    off = torch.arange(-pr, pr + 1, device=heatmaps.device)
    rows = py.unsqueeze(-1) + off  # (N, K, ps)
    cols = px.unsqueeze(-1) + off
    inside = ((rows >= 0) & (rows < h)).unsqueeze(-1) & ((cols >= 0) & (cols < w)).unsqueeze(-2)
    idx = rows.clamp(0, h - 1).unsqueeze(-1) * w + cols.clamp(0, w - 1).unsqueeze(-2)
    patch = torch.gather(heatmaps.reshape(n, k, h * w), 2, idx.reshape(n, k, ps * ps)).reshape(n, k, ps, ps)
    patch = patch.masked_fill_(~inside, 0.0).to(dt).reshape(n * k, 1, ps, ps)  # in place: much cheaper than where()

    # Separable blurs as banded matrix products: on the CPU far faster than a 1-channel conv2d.
    g = gaussian_kernel1d(kernel, device=heatmaps.device, dtype=dt)
    band = _band(g, 5, ps, 0)  # (5, 15): output j reads patch j .. j + kernel - 1
    blurred = (band @ patch.reshape(n * k, ps, ps) @ band.T).reshape(n, k, 5, 5)
    # The reference rescales each blurred map by max(raw) / max(blurred) before the 1e-10 log
    # floor. A blur never raises the maximum, so that factor is >= 1 for a positive peak, and
    # where every tap is already above the floor the factor only adds a constant to the log
    # that the differences cancel. Maps with a tap at the floor (weak peaks on a negative
    # background) need the real factor: blur those maps whole (float32, as the reference;
    # kornia's Gaussian with a zero border). The patch blur above stays hand-written: kornia
    # has no blur of one neighbourhood per map, and blurring all maps would cost far more.
    floor = 1e-10
    need = ok & (blurred <= floor).flatten(2).any(dim=2)
    if bool(need.any()):
        sel = heatmaps[need].float()  # (M, h, w)
        g32 = g.float()
        full = _band(g32, h, h, -r) @ sel @ _band(g32, w, w, -r).T
        factor = sel.flatten(1).amax(dim=1) / full.flatten(1).amax(dim=1)
        blurred[need] = blurred[need] * factor.to(dt).view(-1, 1, 1)
    lg = torch.log(blurred.clamp_min(floor))

    c = 2  # peak position inside the 5x5 block
    dx = 0.5 * (lg[..., c, c + 1] - lg[..., c, c - 1])
    dy = 0.5 * (lg[..., c + 1, c] - lg[..., c - 1, c])
    dxx = 0.25 * (lg[..., c, c + 2] - 2 * lg[..., c, c] + lg[..., c, c - 2])
    dyy = 0.25 * (lg[..., c + 2, c] - 2 * lg[..., c, c] + lg[..., c - 2, c])
    dxy = 0.25 * (lg[..., c + 1, c + 1] - lg[..., c - 1, c + 1] - lg[..., c + 1, c - 1] + lg[..., c - 1, c - 1])
    det = dxx * dyy - dxy * dxy
    ok = ok & (det != 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    # offset = -H^-1 @ grad, with the 2x2 inverse written out.
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(-dxy * dx + dxx * dy) / safe
    # A map whose blur underflows (a denormal peak) gets an infinite rescale and NaN steps,
    # where the reference would emit NaN keypoints: keep the integer peak instead.
    ok = ok & torch.isfinite(ox) & torch.isfinite(oy)
    offset = torch.stack([ox, oy], dim=-1)
    offset = torch.where(ok.unsqueeze(-1), offset, torch.zeros_like(offset))
    return (coords.to(dt) + offset).to(coords.dtype)


def decode_heatmaps(heatmaps: torch.Tensor, kernel: int = 11, dark: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints from heatmaps: argmax, then DARK when ``dark``.

    Args:
        heatmaps: (N, K, h, w), any float dtype (computed in float32).

    Returns:
        coords (N, K, 2) x, y in heatmap pixels (float32), scores (N, K) (float32).
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, h, w), got shape {tuple(heatmaps.shape)}")
    hm = heatmaps.float()
    coords, scores = argmax_heatmaps(hm)
    if dark:
        coords = dark_refine(hm, coords, kernel)
    return coords, scores
