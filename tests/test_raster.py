"""wanprep_torch.raster: sampling, the painter's bookkeeping, thread policy; the OpenCV-rules
pixel checks of every primitive are in test_draw.py (against an emulation of OpenCV)."""

from __future__ import annotations

import numpy as np
import torch

from wanprep_torch.raster import Primitives, cpu_threads, order_scratch, rasterize, top_order
from wanprep_torch.resample import LinearResize


def _shapes(h: int = 60, w: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    prims = Primitives(h, w, torch.device("cpu"))
    n = 12
    frame = torch.from_numpy(rng.integers(0, 3, n))
    order = torch.arange(n)
    prims.circles(torch.from_numpy(rng.integers(-5, 85, (n, 2))).double(), 4, frame, order)
    prims.thick_lines(
        torch.from_numpy(rng.integers(-10, 90, (n, 2))).double(), torch.from_numpy(rng.integers(-10, 90, (n, 2))).double(), 5, frame, order + n
    )
    prims.ellipses(
        torch.from_numpy(rng.integers(0, 80, (n, 2))).double(),
        torch.from_numpy(rng.integers(1, 30, (n, 2))).double(),
        torch.from_numpy(rng.integers(-180, 180, n)).double(),
        frame,
        order + 2 * n,
    )
    return prims.build()


def test_sampled_rasterize_is_the_full_one_on_the_sampled_rows_and_columns():
    h, w = 60, 80
    shapes = _shapes(h, w)
    full = rasterize(shapes.segments, shapes.count, w)
    rows = torch.tensor([0, 3, 4, 17, 30, 59])
    cols = torch.tensor([1, 2, 40, 41, 79])
    row_map = torch.full((h,), -1, dtype=torch.long)
    row_map[rows] = torch.arange(rows.numel())
    col_rank = torch.zeros(w + 1, dtype=torch.long)
    col_rank[cols + 1] = 1
    got = rasterize(shapes.segments, shapes.count, w, row_map=row_map, col_rank=col_rank.cumsum(0))
    keep = torch.isin(full.y, rows) & torch.isin(full.x, cols)
    want = {(o, int(row_map[y]), int((cols == x).nonzero())) for o, y, x in zip(full.owner[keep].tolist(), full.y[keep].tolist(), full.x[keep].tolist())}
    assert set(zip(got.owner.tolist(), got.y.tolist(), got.x.tolist())) == want
    assert got.owner.numel() == len(want)  # one entry per pixel of each primitive


def test_a_polygon_that_is_one_point_paints_that_pixel():
    prims = Primitives(10, 10, torch.device("cpu"))
    one = torch.tensor([0])
    prims.polygons(torch.full((1, 5, 2), 4), one, one)
    shapes = prims.build()
    px = rasterize(shapes.segments, shapes.count, 10)
    assert sorted(set(zip(px.y.tolist(), px.x.tolist()))) == [(4, 4)]


def test_top_order_picks_the_highest_and_leaves_the_scratch_clean():
    index = torch.tensor([3, 3, 7, 3, 9])
    order = torch.tensor([5, 9, 2, 1, 0])
    scratch = order_scratch(16, torch.device("cpu"))
    assert top_order(index, order, scratch).tolist() == [9, 9, 2, 9, 0]
    assert int(scratch.sum()) == 0


def test_linear_resize_splat_is_the_dense_resize():
    """Splatting every pixel of a dense 8-bit image equals the resize computed directly from
    the taps (cv2 INTER_LINEAR's 11-bit weights, rounded)."""
    from wanprep_torch.resample import linear_taps

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 53, 3))
    r = LinearResize.of(37, 53, 11, 16, torch.device("cpu"))
    rr, cc = torch.meshgrid(torch.arange(r.rows.numel()), torch.arange(r.cols.numel()), indexing="ij")
    rgb = torch.from_numpy(img)[r.rows[rr.reshape(-1)], r.cols[cc.reshape(-1)]].int()
    acc = torch.zeros(11 * 16, 3, dtype=torch.int32)
    dst, val = r.splat(acc, torch.zeros_like(rr.reshape(-1)), rr.reshape(-1), cc.reshape(-1), rgb)
    got = np.zeros((11 * 16, 3), np.int64)
    got[dst.numpy()] = val.numpy()
    y0, y1, wy = linear_taps(37, 11)
    x0, x1, wx = linear_taps(53, 16)
    top, bot = img[y0].astype(np.int64), img[y1].astype(np.int64)
    rows = top * (2048 - wy)[:, None, None] + bot * wy[:, None, None]
    want = (rows[:, x0] * (2048 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None] + (1 << 21)) >> 22
    np.testing.assert_array_equal(got.reshape(11, 16, 3), want)
    assert int(acc.abs().sum()) == 0


def test_cpu_threads_is_scoped_to_the_block():
    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu")):
        inside = torch.get_num_threads()
    assert inside == 1 and torch.get_num_threads() == before
    with cpu_threads(torch.device("meta")):  # other devices: untouched
        assert torch.get_num_threads() == before
