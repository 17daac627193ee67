"""Frame skipping: the similarity gate, interpolation, detector skipping and subject tracking."""

import dataclasses
import weakref

import numpy as np
import pytest
import torch

from wanprep_torch import Preprocessor
from wanprep_torch.gate import (
    PRESETS,
    GateConfig,
    MotionGate,
    correlation,
    interpolate,
    interpolate_keypoints,
    motion_distance,
    resolve_gate,
    signatures,
    translation,
)
from wanprep_torch.testkit import make_clip, make_people_clip, make_two_person_clip

# ``off`` vs the two models run alone (test below): measured 6.1e-5 px (boxes) and 6.8e-5 px
# (visible keypoints), float32 rounding at 832 px; allowed with a margin of ~8x.
BOX_PX = 5e-4
KP_PX = 5e-4


def run(models, frames, gate, det="det", **kw):
    return Preprocessor(models[det], models["pose"], progress=False, gate=gate, **kw)(frames)


@pytest.fixture(scope="module")
def slow():
    return make_clip(24, motion="slow", seed=0, background=True)


@pytest.fixture(scope="module")
def slow_off(models, slow):
    return run(models, slow.frames, "off")


# -- configuration --------------------------------------------------------------------------


def test_presets_and_overrides():
    assert resolve_gate("off").enabled is False
    assert resolve_gate("safe") == PRESETS["safe"] and resolve_gate("fast").max_gap > resolve_gate("safe").max_gap
    cfg = resolve_gate({"preset": "fast", "max_gap": 3})
    assert cfg.max_gap == 3 and cfg.det_every == PRESETS["fast"].det_every
    assert resolve_gate(cfg) is cfg
    with pytest.raises(ValueError, match="unknown gate preset"):
        resolve_gate("turbo")
    with pytest.raises(ValueError, match="unknown gate fields.*max_gapp"):
        resolve_gate({"max_gapp": 3})
    with pytest.raises(ValueError, match="max_gap"):
        GateConfig(max_gap=0)
    with pytest.raises(TypeError):
        resolve_gate(3)


# -- the pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_signatures_of_half_frames_equal_those_of_their_float32_values(dtype):
    # torch's antialiased resize has no CPU kernel for these dtypes: this crashed the default gate.
    x = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert torch.equal(signatures(x), signatures(x.float()))


def test_motion_distance_estimates_pixels():
    """A shifted textured image: the estimate tracks the shift in frame pixels."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 30, 52, generator=g), size=(480, 832), mode="bicubic")
    base = base.clamp(0, 1)
    ref = signatures(base)[0]
    est = []
    for shift in (2, 4, 8):
        moved = torch.roll(base, shifts=shift, dims=3)
        est.append(motion_distance(ref, signatures(moved)[0], 832))
    assert est[0] < est[1] < est[2]
    for shift, e in zip((2, 4, 8), est):
        assert 0.5 * shift < e < 2.0 * shift, (shift, e)
    assert motion_distance(ref, ref, 832) == 0.0


@pytest.mark.parametrize("shift", [(0, 3), (2, 2), (-4, 1), (6, -5)])
def test_motion_distance_against_phase_correlation(shift):
    """An independent oracle: scikit-image's phase correlation measures the shift between the
    full-resolution frames; the gate's estimate from 64-px signatures stays within 2x of it."""
    registration = pytest.importorskip("skimage.registration")
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 30, 52, generator=g), size=(480, 832), mode="bicubic").clamp(0, 1)
    moved = torch.roll(base, shifts=shift, dims=(2, 3))
    gray = lambda x: (x[0] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).numpy()  # noqa: E731
    measured, _, _ = registration.phase_cross_correlation(gray(base), gray(moved), upsample_factor=10)
    true = float(torch.tensor(shift, dtype=torch.float32).norm())
    assert abs(float(torch.tensor(measured).norm()) - true) < 0.2  # the oracle itself is right
    est = motion_distance(signatures(base)[0], signatures(moved)[0], 832)
    assert 0.5 * true < est < 2.0 * true, (shift, est, measured)


def test_correlation_marks_cuts():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(36, 64, generator=g), torch.rand(36, 64, generator=g)
    assert correlation(a, a) == pytest.approx(1.0)
    assert correlation(a, a * 0.5 + 0.2) == pytest.approx(1.0, abs=1e-5)  # blind to brightness/contrast
    assert abs(correlation(a, b)) < 0.2


def _subject_box(clip, pad=40.0):
    kp = clip.keypoints[0, :23]
    return [float(kp[:, 0].min()) - pad, float(kp[:, 1].min()) - pad, float(kp[:, 0].max()) + pad, float(kp[:, 1].max()) + pad]


def test_translation_is_a_signed_shift_that_jitter_averages_out_of():
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(60.0), indexing="ij")
    pattern = lambda dx, dy: torch.sin(0.3 * (xx - dx)) + torch.cos(0.25 * (yy - dy))  # noqa: E731
    shift = translation(pattern(0.0, 0.0), pattern(0.15, -0.1), 120)  # 2 frame px per signature px
    assert torch.allclose(shift, torch.tensor([0.3, -0.2], dtype=torch.float64), atol=0.01)
    # A held pose whose points each jitter by 0.5 px: the magnitude adds it up, the signed
    # shift averages it out.
    clip = make_clip(2, H=480, W=832, motion="hold", background=True, seed=2, noise_px=0.5)
    frames, box = clip.frames.permute(0, 3, 1, 2), _subject_box(clip)
    fine, coarse = signatures(frames, 256), signatures(frames, 64)
    assert float(translation(fine[0], fine[1], 832, box).norm()) < 0.25
    assert motion_distance(coarse[0], coarse[1], 832, box) > 1.0
    assert torch.equal(translation(torch.ones(8, 8), torch.ones(8, 8), 64), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("seed", [3, 4])
def test_velocity_changes_mark_starts_and_stops_under_jitter(seed):
    """Holds and slow moves (0.5-0.9 px/frame) with every point jittered by 0.5 px: the
    distance's hold hysteresis sees motion everywhere (the frame before each start or stop is
    no keyframe), the signed velocity finds each start and stop on its frame."""
    clip = make_clip(40, H=480, W=832, motion="holdslow", background=True, seed=seed, noise_px=0.5)
    frames, box = clip.frames.permute(0, 3, 1, 2), _subject_box(clip)
    sig, fine = signatures(frames, 64), signatures(frames, 256)
    moving = [False] + ((clip.keypoints[1:, 0] - clip.keypoints[:-1, 0]).norm(dim=-1) > 1e-6).tolist()
    changes = [t for t in range(1, 40) if moving[t] != moving[t - 1]]
    gate = MotionGate(PRESETS["safe"], 832)
    # Frame 1: the hysteresis turns to "moving" at once under jitter (the frame before is the
    # first frame, a keyframe anyway).
    found = [t for t in range(40) if gate.step(sig[t], box, fine[t]).boundary and t > 1]
    assert len(changes) >= 5 and found == changes, (changes, found)


def test_velocity_changes_of_one_of_several_people():
    """Several people: the velocity is tested in each one's box; one starting to walk while
    the other stands is a boundary."""
    T, H, W = 30, 240, 640
    a = np.tile([[0.25 * W, H / 2]], (T, 1))
    b = np.tile([[0.72 * W, H / 2]], (T, 1)).astype(float)
    b[12:, 0] += 0.8 * np.arange(1, T - 11)
    clip = make_people_clip(np.stack([a, b]), [0.6 * H, 0.6 * H], H=H, W=W, seed=1, noise_px=0.3)
    frames = clip.frames.permute(0, 3, 1, 2)
    sig, fine = signatures(frames, 64), signatures(frames, 256)
    boxes = []
    for p in range(2):
        k = clip.keypoints[p, 0, :23]
        boxes.append([float(k[:, 0].min()) - 20, float(k[:, 1].min()) - 20, float(k[:, 0].max()) + 20, float(k[:, 1].max()) + 20])
    gate = MotionGate(PRESETS["safe"], W)
    assert [t for t in range(T) if gate.step(sig[t], boxes, fine[t]).boundary and t > 1] == [12]


def test_motion_gate_bounds():
    cfg = dataclasses.replace(PRESETS["safe"], max_gap=4, noise_warmup=0)
    s = MotionGate(cfg, 832)
    still = torch.full((36, 64), 0.5)
    still[10:20, 10:30] = 0.9
    flags = [s.step(still).process for _ in range(12)]
    assert flags == [True, False, False, False] * 3  # first frame, then one every max_gap
    # With a noise warm-up the first frames are all keyframes (three measurements in a row)
    # where the picture moves from the start; a still start needs none (its holds go unchecked).
    warm = MotionGate(dataclasses.replace(cfg, noise_warmup=3), 832)
    assert [warm.step(still).process for _ in range(7)] == [True, False, False, False, True, False, False]
    warm = MotionGate(dataclasses.replace(cfg, noise_warmup=3), 832)
    jitter = torch.Generator().manual_seed(3)
    moving = [still + 0.05 * torch.randn(still.shape, generator=jitter) for _ in range(7)]
    assert [warm.step(m).process for m in moving][:3] == [True, True, True]
    other = torch.rand(36, 64, generator=torch.Generator().manual_seed(2))
    d = s.step(other)
    assert d.process and d.cut


def test_interpolate_is_linear():
    a, b = torch.tensor([0.0, 10.0]), torch.tensor([4.0, 2.0])
    out = interpolate(a, b, 10, 14, [11, 12, 13])
    assert torch.allclose(out, torch.tensor([[1.0, 8.0], [2.0, 6.0], [3.0, 4.0]]))


def test_keypoints_appearing_or_vanishing_keep_their_confident_position():
    a = torch.tensor([[0.0, 0.0, 0.9], [10.0, 10.0, 0.9], [50.0, 50.0, 0.01]])
    b = torch.tensor([[4.0, 8.0, 0.9], [300.0, -20.0, 0.02], [54.0, 58.0, 0.9]])
    out = interpolate_keypoints(a, b, 0, 4, [1, 2, 3], min_score=0.3)
    assert torch.allclose(out[:, 0], torch.tensor([[1.0, 2.0, 0.9], [2.0, 4.0, 0.9], [3.0, 6.0, 0.9]]))
    assert torch.allclose(out[:, 1, :2], torch.tensor([10.0, 10.0]).expand(3, 2))  # vanishing: held
    assert torch.allclose(out[:, 2, :2], torch.tensor([54.0, 58.0]).expand(3, 2))  # appearing: taken
    assert torch.allclose(out[:, 1, 2], torch.tensor([0.68, 0.46, 0.24]))  # scores still fade


# -- the pipeline with the gate ---------------------------------------------------------------


def two_models_alone(det_path, pose_path, frames: torch.Tensor):
    """Keypoints (T, 133, 3) and boxes (T, 5) from the two ONNX models run frame by frame with
    onnxruntime's own ``session.run``, no scheduler: every input built and every output decoded
    by the independent NumPy references (tests/reference_numpy.py), following the documented
    CPU conventions: the detector reads the frame rounded to 8 bits, resized half-pixel
    bilinear to 640x640 and rounded again; the pose crop samples the float frame in the exact
    window; ImageNet mean/std written out; DARK decoding."""
    import numpy as np
    import onnxruntime as ort
    import reference_numpy as ref

    so = ort.SessionOptions()
    so.log_severity_level = 3
    det = ort.InferenceSession(str(det_path), so, providers=["CPUExecutionProvider"])
    pose = ort.InferenceSession(str(pose_path), so, providers=["CPUExecutionProvider"])
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    kps, boxes = [], []
    for f in frames.numpy().astype(np.float64):  # (H, W, 3) in [0, 1]
        h, w = f.shape[:2]
        u8 = np.clip(np.round(f * 255.0), 0, 255)
        det_in = np.round(ref.resize_linear_ref(u8, 640, 640)).transpose(2, 0, 1)[None] / 255.0
        out = det.run(None, {det.get_inputs()[0].name: det_in.astype(np.float32)})[0]
        box, _ = ref.detect_boxes_ref(out, (h, w))
        center, window = ref.box_to_center_window_ref(box)
        crop = ref.crop_windows_ref(f.transpose(2, 0, 1)[None], center, window)
        pose_in = ((crop - mean) / std).astype(np.float32)
        heat = pose.run(None, {pose.get_inputs()[0].name: pose_in})[0]
        coords, scores = ref.decode_heatmaps_ref(heat)
        xy = ref.heatmap_to_frame_ref(coords, center, window, heat.shape[-2:])
        kps.append(np.concatenate([xy, scores[..., None]], axis=-1)[0])
        boxes.append(box[0])
    return torch.tensor(np.stack(kps), dtype=torch.float32), torch.tensor(np.stack(boxes), dtype=torch.float32)


def test_off_is_the_two_models_run_alone_frame_by_frame(models, slow, slow_off):
    """``off`` = every frame through both models and nothing else: its keypoints equal an
    independent run of the two models alone, frame by frame (inputs and decoding by the NumPy
    references), not bit for bit: the detector input differs by the 8-bit rounding of torch's
    fixed-point resize (up to 1 step, tests/test_detect.py) and float32 vs float64 rounding in
    the crop and DARK, which together move boxes and keypoints by under 1e-4 px here."""
    assert slow_off.pose_ran.all() and slow_off.det_ran.all()
    idx = list(range(0, 24, 5))
    kps, boxes = two_models_alone(models["det"], models["pose"], slow.frames[idx])
    box_err = (slow_off.bboxes[idx] - boxes).abs()
    assert float(box_err[:, :4].max()) < BOX_PX, f"boxes differ by {float(box_err[:, :4].max()):.2e} px"
    assert float(box_err[:, 4].max()) < 1e-5
    vis = slow.visible[idx]
    xy = (slow_off.keypoints[idx, :, :2] - kps[..., :2]).norm(dim=-1)
    assert float(xy[vis].max()) < KP_PX, f"keypoints differ by {float(xy[vis].max()):.2e} px"
    assert float((slow_off.keypoints[idx, :, 2] - kps[..., 2]).abs().max()) < 1e-4
    # Gate off with any chunking is the same run: frames one at a time give the same bits.
    pre = Preprocessor(models["det"], models["pose"], progress=False, gate="off")
    single = torch.cat([pre(slow.frames[i : i + 1]).keypoints for i in idx])
    assert torch.equal(single, slow_off.keypoints[idx])
    assert torch.equal(slow_off.gate_distance, torch.zeros(24))


def test_safe_interpolates_close_to_off_on_slow_motion(models, slow, slow_off):
    res = run(models, slow.frames, "safe")
    err = (res.keypoints[..., :2] - slow_off.keypoints[..., :2]).norm(dim=-1)[slow.visible]
    # Measured with verified keyframes: 0.184 mean / 1.32 max px (7 pose runs). Holding the
    # previous processed frame's keypoints instead of interpolating gives 0.91 / 3.08 (taking
    # the next frame's, 0.90 / 2.81).
    assert err.mean() < 0.30, f"mean {err.mean():.3f} px"
    assert err.max() < 1.8, f"max {err.max():.3f} px"
    ran = int(res.pose_ran.sum())
    assert ran < 24 * 0.6, f"the gate skipped too little: {ran}/24"
    assert res.pose_ran[0] and res.pose_ran[-1], "first and last frames are processed"
    assert int(res.det_ran.sum()) < ran, "the detector is skipped on some processed frames"
    assert not res.det_ran[~res.pose_ran].any()
    # Interpolated frames are marked, with boxes, faces and metas like any other frame.
    assert res.face_images.shape[0] == 24 and len(res.pose_metas) == 24
    assert (res.gate_distance[1:] > 0).any()


def test_held_segment_runs_pose_once_per_max_gap(models):
    clip = make_clip(16, motion="hold", seed=3, background=True)
    for preset in ("safe", "fast"):
        res = run(models, clip.frames, preset)
        gap = resolve_gate(preset).max_gap
        ran = res.pose_ran.int()
        warmup = resolve_gate(preset).noise_warmup  # frames 0..warmup-1 measure the noise
        for s in range(warmup, 16 - gap + 1):
            assert int(ran[s : s + gap].sum()) <= 2  # at most 1 per max_gap, plus the forced last frame
        assert int(ran.sum()) <= 16 // gap + 2 + warmup - 1
        err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
        assert err.mean() < 0.5


def test_cut_forces_detection_and_pose(models):
    clip = make_clip(16, motion="cut", seed=0, background=True)
    res = run(models, clip.frames, "fast")
    assert res.pose_ran[8] and res.det_ran[8], "the cut frame runs both models"
    err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
    assert err.max() < 2.0, "no frame blends the two scenes"


def test_fast_motion_processes_every_frame(models):
    clip = make_clip(10, motion="fast", seed=0, background=True)
    res = run(models, clip.frames, "safe")
    assert res.pose_ran.all()
    err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
    assert err.mean() < 0.5


def test_streaming_gate_matches_tensor_and_releases_chunks(models, slow):
    whole = run(models, slow.frames, "safe")
    refs = []

    def gen():
        for i in range(0, 24, 5):
            c = slow.frames[i : i + 5].clone()
            refs.append(weakref.ref(c))
            yield c
            del c

    streamed = run(models, gen(), "safe", chunk_size=3)
    assert torch.equal(streamed.pose_ran, whole.pose_ran)
    assert torch.allclose(streamed.keypoints, whole.keypoints, atol=1e-4)
    assert streamed.face_bboxes == whole.face_bboxes
    assert all(r() is None for r in refs), "the gate keeps no finished chunk alive"


def test_subject_is_kept_when_a_bigger_person_appears(models):
    clip, other = make_two_person_clip(14, big_frames=range(4, 9))
    on = run(models, clip.frames, "safe", det="det_two")
    err = (on.keypoints[..., :2] - clip.keypoints).norm(dim=-1).mean(dim=1)
    assert err.max() < 2.0, f"the subject switched: per-frame error {err.tolist()}"
    assert (on.other_persons[:4] >= 1).all()
    # The per-frame largest-box rule ("off") jumps to the bigger person: the behaviour tracking fixes.
    off = run(models, clip.frames, "off", det="det_two")
    jumped = (off.keypoints[4:9, :, :2] - other[4:9]).norm(dim=-1).mean(dim=1)
    assert (jumped < 2.0).all()


def test_progress_reaches_every_frame_with_skipping(models, slow):
    calls = []
    Preprocessor(
        models["det"], models["pose"], progress=False, gate="safe",
        progress_callback=lambda stage, done, total: calls.append((stage, done, total)),
    )(slow.frames[:9])
    assert calls[-1] == ("frames", 9, 9)
    done = [c[1] for c in calls]
    assert done == sorted(done)


def test_tracked_box_redetects_when_the_head_returns(models, clip, run_default):
    """The detector box of a face-hidden frame excludes the head; when the face turns back,
    keypoints at the tracked window's edge make the detector run again."""
    res = run(models, clip.frames, "safe")
    err = (res.keypoints[..., :2] - run_default.keypoints[..., :2]).norm(dim=-1)[clip.visible]
    assert err.max() < 2.0, f"max {err.max():.1f} px from the full pipeline"


def test_face_turning_away_and_back_stays_accurate(models):
    clip = make_clip(24, motion="slow", face_hidden=range(8, 12), seed=0)
    res = run(models, clip.frames, "safe")
    err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
    assert err.mean() < 0.5, f"mean {err.mean():.2f} px against ground truth"


# -- verified keyframes: ground-truth scenes per motion type -----------------------------------

# (motion, frames, bound on the mean error above off's, max pose fraction, max detector fraction)
MOTION_CASES = [
    ("hold", 32, 0.5, 0.40, 0.25),
    ("slow", 32, 0.5, 0.40, 0.25),
    ("pan", 40, 0.5, 0.40, 0.25),  # steady 1.5 px/frame
    ("holdslow", 48, 0.5, 0.40, 0.25),
    ("accel", 32, 0.5, 1.0, 0.5),  # speeds up to 8 px/frame: more checks, still accurate
    ("fast", 16, 0.3, 1.0, 1.0),  # 15-30 px/frame: may process every frame
    ("enter", 24, 0.3, 1.0, 1.0),  # walks in and out fast
]


@pytest.mark.parametrize("motion, T, extra_px, max_pose, max_det", MOTION_CASES, ids=[c[0] for c in MOTION_CASES])
def test_safe_against_ground_truth_by_motion(models, motion, T, extra_px, max_pose, max_det):
    clip = make_clip(T, H=240, W=416, motion=motion, background=True, seed=2)
    off = run(models, clip.frames, "off")
    safe = run(models, clip.frames, "safe")
    vis = clip.visible
    e_off = (off.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[vis].mean()
    e_safe = (safe.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[vis].mean()
    assert e_safe <= e_off + extra_px, f"{motion}: safe {e_safe:.3f} px vs off {e_off:.3f} px"
    assert safe.pose_ran.float().mean() <= max_pose, f"{motion}: pose on {int(safe.pose_ran.sum())}/{T}"
    assert safe.det_ran.float().mean() <= max_det, f"{motion}: detector on {int(safe.det_ran.sum())}/{T}"
    assert safe.pose_ran[0] and safe.det_ran[0] and safe.pose_ran[-1]  # first and last frames
    # Boxes stay inside the frame and never degenerate, whatever the motion.
    b = safe.bboxes
    assert bool(((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= 416) & (b[:, 3] <= 240) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all())


def test_cut_frame_runs_both_models_and_nothing_blends(models):
    clip = make_clip(24, H=240, W=416, motion="cut", seed=0, background=True)
    for preset in ("safe", "fast"):
        res = run(models, clip.frames, preset)
        assert res.pose_ran[12] and res.det_ran[12], "the first frame after the cut runs both models"
        assert res.pose_ran[11], "the last frame before the cut is a keyframe too"
        err = (res.keypoints[..., :2] - clip.keypoints).norm(dim=-1)[clip.visible]
        assert err.max() < 2.0


def test_checked_frames_keep_the_pose_models_keypoints(models):
    """A verification run is not wasted: a checked frame's keypoints are the pose model's on
    that frame (with the box reported for it), not the interpolation."""
    from wanprep_torch import PoseEstimator

    clip = make_clip(40, H=240, W=416, motion="pan", seed=2, background=True)
    res = run(models, clip.frames, "safe", smooth="off")  # smoothing would move them
    checked = (res.pose_ran & ~res.det_ran).nonzero().flatten().tolist()
    assert checked, "the pan's gaps were checked"
    pose = PoseEstimator(models["pose"])
    again = pose(clip.frames[checked], res.bboxes[checked])
    assert torch.equal(again, res.keypoints[checked])


def test_verify_px_decides_splitting(models):
    clip = make_clip(24, H=240, W=416, motion="pan", seed=2, background=True)
    strict = run(models, clip.frames, {"preset": "safe", "verify_px": 0.0, "verify_mean_px": 0.0, "hold_px": 0.0})
    # No tolerance: only what the measured noise explains passes (~0.005 px on the body here;
    # the first check, with the noise of the 3 warm-up frames only, may pass), so the gaps
    # split down to single frames (measured: 18 of 24, every frame from 10 on).
    assert int(strict.pose_ran.sum()) >= 18, strict.pose_ran.int().tolist()
    assert strict.pose_ran[10:].all()
    assert int(strict.pose_ran.sum()) > int(run(models, clip.frames, "safe").pose_ran.sum())
    loose = run(models, clip.frames, {"preset": "safe", "verify_px": 1e9, "verify_mean_px": 1e9})
    keyframes = 2 + len(range(2, 24, 8)) + 1  # the noise warm-up (0, 1), every 8th frame from 2, the last
    assert int(loose.pose_ran.sum()) <= 2 * keyframes, "accepted gaps need one check each, no splits"


def test_exact_holds_are_not_checked(models):
    clip = make_clip(32, H=240, W=416, motion="hold", seed=2, background=True)
    res = run(models, clip.frames, "safe")
    # frames 0, 8, 16, 24 and the last: no checks, and no noise warm-up on a still start
    assert res.pose_ran.nonzero().flatten().tolist() == [0, 8, 16, 24, 31]


def test_a_noisy_still_start_needs_no_warm_up(models):
    """A held pose with every point jittered by 0.5 px: the signed velocity shows the picture
    starts still, so there is no warm-up, and the first gap's check takes the noise from its
    ends' difference (the body did not move between them); without the velocity test the
    jitter looks like motion and the first three frames are keyframes."""
    clip = make_clip(40, H=240, W=416, motion="hold", seed=2, background=True, noise_px=0.5)
    res = run(models, clip.frames, "safe")
    assert res.pose_ran.nonzero().flatten().tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 39]
    assert res.noise["body"] == pytest.approx(0.5, rel=0.25)
    warm = run(models, clip.frames, {"preset": "safe", "velocity_width": 0})
    assert warm.pose_ran[:3].all() and int(warm.pose_ran.sum()) == 13


# -- tracked boxes stay sane --------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["off", "safe", "fast"])
def test_empty_frames_report_the_fallback_box(models, preset):
    clip = make_clip(20, H=240, W=416, motion="slow", seed=1, background=False)
    frames = clip.frames.clone()
    frames[8:14] = 0.0  # six black frames in the middle
    res = run(models, frames, preset)
    fallback = torch.tensor([0.0, 0.0, 416.0, 240.0, -1.0])
    assert bool((res.bboxes[8:14] == fallback).all()), res.bboxes[8:14]
    assert not bool((res.bboxes[:8, 4] < 0).any()) and not bool((res.bboxes[14:, 4] < 0).any())
    err = (res.keypoints[14:, :, :2] - clip.keypoints[14:]).norm(dim=-1)[clip.visible[14:]]
    assert err.mean() < 0.5, "the person is found again after the empty frames"


def test_person_walking_out_and_back(models):
    clip = make_clip(20, H=240, W=416, motion="enter", seed=1, background=True)
    frames = torch.cat([clip.frames, clip.frames.flip(0)])  # out past the right edge, then back
    gone = ~torch.cat([clip.visible, clip.visible.flip(0)])[:, :17].any(dim=1)
    assert gone.any()
    for preset in ("off", "safe"):
        res = run(models, frames, preset)
        b = res.bboxes
        inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= 416) & (b[:, 3] <= 240) & (b[:, 2] - b[:, 0] >= 10) & (b[:, 3] - b[:, 1] >= 10)
        assert bool(inside.all()), preset
        assert bool((b[gone, 4] == -1).all()), f"{preset}: frames with nobody report the fallback"
