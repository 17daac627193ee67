"""wanprep_torch.detect: NMS, output decoding, person choice, boxes, resize, vs NumPy references."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_numpy as ref  # noqa: E402

from wanprep_torch.buffers import Workspace  # noqa: E402
from wanprep_torch.detect import decode_detections, detect_boxes, nms, resize_for_detector, select_person  # noqa: E402


def _random_boxes(rng, n, clustered=True):
    if clustered and n:
        # a few clusters of jittered boxes -> many overlaps around the threshold
        k = max(1, n // 15)
        base = rng.uniform(0, 500, (k, 2))
        size = rng.uniform(20, 200, (k, 2))
        c = rng.integers(0, k, n)
        xy = base[c] + rng.normal(0, 0.15, (n, 2)) * size[c]
        wh = size[c] * rng.uniform(0.7, 1.3, (n, 2))
    else:
        xy = rng.uniform(0, 600, (n, 2))
        wh = rng.uniform(1, 150, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 30, 120, 300])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_equals_greedy(n, thr):
    rng = np.random.default_rng(n * 10 + int(thr * 10))
    for trial in range(3):
        boxes = _random_boxes(rng, n, clustered=trial != 2)
        scores = rng.random(n).astype(np.float32)
        got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
        assert got.dtype == torch.long
        want = ref.greedy_nms_ref(boxes.astype(np.float64), scores, thr)
        assert got.tolist() == want


def test_reference_nms_self_check():
    rng = np.random.default_rng(11)
    boxes = _random_boxes(rng, 80).astype(np.float64)
    scores = rng.random(80)
    assert ref.greedy_nms_ref(boxes, scores, 0.5) == ref.greedy_nms_scalar_ref(boxes, scores, 0.5)


def test_nms_chain_suppression():
    # A suppresses B, B would suppress C, but B is gone so C survives (greedy, not pairwise)
    boxes = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    got = nms(boxes, scores, 0.4)
    assert got.tolist() == [0, 2] == ref.greedy_nms_ref(boxes.numpy(), scores.numpy(), 0.4)
    # identical boxes: only the best survives; IoU exactly at the threshold is kept (> thr rule)
    same = torch.tensor([[0.0, 0, 10, 10]] * 4)
    assert nms(same, torch.tensor([0.1, 0.4, 0.3, 0.2]), 0.5).tolist() == [1]
    half = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])  # IoU 0.5
    assert nms(half, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]


def _v10_output(rng, n, r=300):
    out = np.zeros((n, r, 6), np.float32)
    for i in range(n):
        boxes = _random_boxes(rng, r)
        out[i, :, :4] = boxes
        out[i, :, 4] = rng.random(r) ** 3  # most below 0.05
        out[i, :, 5] = rng.integers(0, 4, r) * (rng.random(r) < 0.6)
    return out


def _check_dets(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-6, atol=1e-4)


def test_decode_yolov10_rows():
    rng = np.random.default_rng(0)
    out = _v10_output(rng, 3)
    out[1, :, 4] = 0.01  # nothing above the threshold
    out[2, 0, 4], out[2, 0, 5] = 0.05, 0.0  # exactly at the threshold: kept
    got = decode_detections(torch.from_numpy(out))
    _check_dets(got, ref.decode_detections_ref(out))
    assert got[1].shape == (0, 5)
    assert (got[0][:, 4] >= 0.05).all()


def test_decode_yolov8_anchors():
    rng = np.random.default_rng(1)
    n, c, a = 2, 5, 400
    out = np.zeros((n, 4 + c, a), np.float32)
    for i in range(n):
        b = _random_boxes(rng, a)
        out[i, 0] = (b[:, 0] + b[:, 2]) / 2
        out[i, 1] = (b[:, 1] + b[:, 3]) / 2
        out[i, 2] = b[:, 2] - b[:, 0]
        out[i, 3] = b[:, 3] - b[:, 1]
        out[i, 4:] = rng.random((c, a)) ** 4
    got = decode_detections(torch.from_numpy(out))
    _check_dets(got, ref.decode_detections_ref(out))


def test_decode_rejects_bad_shapes():
    with pytest.raises(ValueError):
        decode_detections(torch.zeros(300, 6))


def test_select_person_vs_reference():
    rng = np.random.default_rng(2)
    for trial in range(60):
        m = int(rng.integers(1, 12))
        xy = rng.uniform(0, 500, (m, 2))
        wh = rng.uniform(1, 300, (m, 2)) * rng.choice([0.05, 1.0], (m, 2), p=[0.3, 0.7])
        dets = np.concatenate([xy, xy + wh, rng.random((m, 1))], axis=1).astype(np.float32)
        chosen, others = select_person(torch.from_numpy(dets))
        best, want_others = ref.select_person_ref(dets)
        np.testing.assert_array_equal(chosen.numpy(), dets[best])
        assert others == want_others, trial
    assert select_person(torch.zeros(0, 5)) == (None, 0)


def test_select_person_prefers_large_area_among_long_boxes():
    dets = torch.tensor(
        [
            [0.0, 0, 40, 400, 0.9],  # tall thin: longest side 400, area 16000
            [0, 0, 150, 150, 0.8],  # square: longer side 150 < 0.4*400 -> not a candidate, area 22500
            [0, 0, 170, 120, 0.7],  # longer side 170 >= 160, area 20400 -> chosen
            [0, 0, 10, 10, 0.6],  # tiny: not counted as another person
        ]
    )
    chosen, others = select_person(dets)
    assert chosen.tolist() == dets[2].tolist()
    assert others == 2  # the tall one and the square one (both > 0.1 x 20400)
    assert ref.select_person_ref(dets.numpy()) == (2, 2)


def test_detect_boxes_scaling_and_fallback():
    fh, fw = 480, 854
    out = np.zeros((4, 300, 6), np.float32)
    out[0, 0] = [100, 50, 300, 600, 0.9, 0]
    out[0, 1] = [400, 100, 500, 400, 0.8, 0]
    out[0, 2] = [0, 0, 640, 640, 0.95, 2]  # not a person
    out[1, 0] = [100, 100, 105, 300, 0.9, 0]  # 5 px wide in the input -> 6.7 px in the frame: < 10
    out[2, 0] = [10, 10, 600, 20, 0.01, 0]  # below the score threshold
    out[3, 0] = [-20, -10, 700, 660, 0.5, 0]  # not clipped
    boxes, others = detect_boxes(torch.from_numpy(out), (fh, fw), (640, 640))
    want_b, want_o = ref.detect_boxes_ref(out, (fh, fw))
    np.testing.assert_allclose(boxes.numpy(), want_b, rtol=1e-6, atol=1e-3)
    assert others.tolist() == want_o.tolist()
    np.testing.assert_allclose(boxes[0].numpy(), [100 * fw / 640, 50 * fh / 640, 300 * fw / 640, 600 * fh / 640, 0.9], rtol=1e-6)
    for i in (1, 2):
        assert boxes[i].tolist() == [0.0, 0.0, float(fw), float(fh), -1.0]
    assert others[0] == 1
    assert float(boxes[3, 0]) < 0


def test_detect_boxes_random_vs_reference():
    rng = np.random.default_rng(3)
    out = _v10_output(rng, 6)
    boxes, others = detect_boxes(torch.from_numpy(out), (720, 1280), (640, 640))
    want_b, want_o = ref.detect_boxes_ref(out, (720, 1280))
    np.testing.assert_allclose(boxes.numpy(), want_b, rtol=1e-6, atol=1e-3)
    assert others.tolist() == want_o.tolist()


@pytest.mark.parametrize("hw", [(480, 854), (720, 400), (300, 300), (1000, 1300)])
def test_resize_for_detector_float(hw):
    rng = np.random.default_rng(hw[0])
    fr = rng.random((2, 3) + hw, dtype=np.float32)
    got = resize_for_detector(torch.from_numpy(fr))
    assert got.shape == (2, 3, 640, 640) and got.dtype == torch.float32 and got.is_contiguous()
    want_t = F.interpolate(torch.from_numpy(fr), size=(640, 640), mode="bilinear", align_corners=False)
    assert torch.equal(got, want_t)
    want = np.stack([ref.resize_linear_ref(f.transpose(1, 2, 0), 640, 640).transpose(2, 0, 1) for f in fr[:1]])
    # torch computes the source index in float32 (scale * (dst + 0.5) - 0.5): up to ~4e-5 on
    # pixel noise, where neighbours differ by up to 1
    np.testing.assert_allclose(got[:1].numpy(), want, rtol=0, atol=1e-4)
    assert float(got.min()) >= 0 and float(got.max()) <= 1


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw", [(480, 854), (900, 700)])
def test_resize_for_detector_uint8(hw, channels_last):
    rng = np.random.default_rng(7)
    u8 = torch.from_numpy(rng.integers(0, 256, (2,) + hw + (3,), dtype=np.uint8))
    frames = u8.permute(0, 3, 1, 2)  # (T, 3, H, W) view of channels-last memory
    if not channels_last:
        frames = frames.contiguous()
    got = resize_for_detector(frames)
    assert got.shape == (2, 3, 640, 640) and got.dtype == torch.float32
    # exactly torch's uint8 resize, scaled, whatever the intermediate layouts
    want = F.interpolate(frames, size=(640, 640), mode="bilinear", align_corners=False).float().mul_(1.0 / 255.0)
    assert torch.equal(got, want)
    ref_float = resize_for_detector(frames.float() / 255.0)
    assert float((got - ref_float).abs().max()) <= 1 / 255 + 1e-6
    # Independent of torch: OpenCV's half-pixel bilinear rule in float64 (reference_numpy), on the
    # first frame, in 8-bit steps. torch's uint8 kernel rounds between its two passes (fixed-point
    # weights), so up to 1 step off (measured 0.999-1.00001; mean 0.31, bias 0.02-0.06 steps on
    # noise); align_corners=True, say, is off by 7 steps on average.
    want_ref = ref.resize_linear_ref(u8[0].numpy(), 640, 640).transpose(2, 0, 1)  # 0-255
    steps = got[0].double().numpy() * 255.0 - want_ref
    assert np.abs(steps).max() <= 1.001, f"uint8 resize off the reference by {np.abs(steps).max():.3f} steps"
    assert np.abs(steps).mean() < 0.4 and abs(steps.mean()) < 0.1  # rounding, not a shifted or scaled image
    assert float(got.min()) >= 0 and float(got.max()) <= 1
    # and through a workspace: the second call reuses the first call's buffer
    ws = Workspace()
    first = resize_for_detector(frames, workspace=ws)
    ptr = first.data_ptr()
    res = resize_for_detector(frames, workspace=ws)
    assert res.data_ptr() == ptr and torch.equal(res, got)


def test_resize_for_detector_workspace_float():
    fr = torch.rand(2, 3, 100, 120)
    ws = Workspace()
    full = resize_for_detector(fr, workspace=ws)
    part = resize_for_detector(fr[:1], workspace=ws)  # a shorter group reuses the same buffer
    assert part.data_ptr() == full.data_ptr()
    assert torch.equal(part, F.interpolate(fr[:1], size=(640, 640), mode="bilinear", align_corners=False))


def test_person_only_nms_keeps_a_person_under_another_class():
    # A rider on a horse: the horse's box (class 17) scores higher and overlaps the rider's
    # (IoU 0.6). The reference runs NMS over every class before keeping persons, so the rider
    # is suppressed and the frame falls back to the full frame; here only persons take part in
    # NMS (a deliberate difference), so the rider is kept.
    rider = [100.0, 50.0, 200.0, 300.0]
    horse = [100.0, 100.0, 200.0, 400.0]  # intersection 100x200, union 100x350: IoU 0.57
    out = torch.zeros(1, 300, 6)
    out[0, 0] = torch.tensor(horse + [0.95, 17.0])
    out[0, 1] = torch.tensor(rider + [0.80, 0.0])
    (dets,) = decode_detections(out)
    assert dets.shape == (1, 5) and dets[0, :4].tolist() == rider and float(dets[0, 4]) == pytest.approx(0.8)
    boxes, _ = detect_boxes(out, (640, 640), (640, 640))
    assert boxes[0, :4].tolist() == rider and float(boxes[0, 4]) > 0  # not the full-frame fallback
    # What the reference's class-agnostic NMS would do with the same rows.
    both = torch.tensor([horse, rider])
    assert nms(both, torch.tensor([0.95, 0.80]), 0.5).tolist() == [0]
