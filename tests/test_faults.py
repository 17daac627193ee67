"""A fault campaign: seeded random bad inputs through the API and the command line.

Asserts what users rely on: a user error is a ValueError/TypeError naming the problem (API)
or one line and exit status 2 (CLI), never a traceback; truncated or corrupt videos exit 0 or
3 with outputs that agree with each other; interrupted runs exit 130 keeping the frames done;
frames finished before a bad one are kept. Small frames and few frames: a few seconds.
"""

import json
import os
import random
import signal

import numpy as np
import pytest
import torch

from wanprep_torch import Preprocessor

av = pytest.importorskip("av")

from wanprep_torch import cli  # noqa: E402
from wanprep_torch.progress import Progress  # noqa: E402
from wanprep_torch.video import VideoError, resize_frames  # noqa: E402

SEED = 20261126
T = 10
H, W = 96, 160
CHUNK = 4


@pytest.fixture(scope="module")
def pre(models):
    return Preprocessor(models["det"], models["pose"], progress=False, gate="off", chunk_size=CHUNK)


@pytest.fixture(scope="module")
def small(clip):
    """T uint8 frames of the test person at 160x96."""
    u8 = (clip.frames[:T] * 255).round().to(torch.uint8) if clip.frames.shape[0] >= T else None
    return resize_frames(u8, (H, W))


@pytest.fixture(scope="module")
def clean(pre, small):
    return pre(small)


# ----------------------------------------------------------------------------- the API


def _bad_inputs(rng: random.Random, small):
    """(name, video, expected: None for success, else the exception types allowed)."""
    cases = []
    for _ in range(3):  # sizes: under 16 px fails, else fine
        h, w = rng.randint(1, 40), rng.randint(1, 40)
        cases.append((f"size {w}x{h}", torch.zeros((2, h, w, 3), dtype=torch.uint8), None if min(h, w) >= 16 else (ValueError,)))
    for dtype in rng.sample([torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.int8], 3):
        cases.append((f"dtype {dtype}", torch.zeros((2, 32, 32, 3), dtype=dtype), (TypeError,)))
    for dtype in (torch.float16, torch.float64, torch.bfloat16):
        cases.append((f"dtype {dtype}", small[:2].to(dtype) / 255, None))
    for shape in ([2, 32, 32, 4], [2, 2, 32, 32], [32, 32], [1, 2, 32, 32, 3], [0, 32, 32, 3]):
        cases.append((f"shape {shape}", torch.zeros(shape, dtype=torch.uint8), (ValueError, TypeError)))
    for obj in (None, "video.mp4", 3, [1, 2, 3], [np.zeros((2, 32, 32, 3), np.uint8)]):
        cases.append((f"object {type(obj).__name__}", obj, (TypeError, ValueError)))
    huge = small[:2].float() * 40  # float far outside [0, 1]
    cases.append(("float out of range", huge, (ValueError,)))
    return cases


def test_api_bad_inputs(pre, small):
    rng = random.Random(SEED)
    for name, video, expected in _bad_inputs(rng, small):
        if expected is None:
            res = pre(video)
            assert len(res) == video.shape[0], name
            continue
        with pytest.raises(expected) as e:
            pre(video)
            pytest.fail(f"{name}: no error")
        assert str(e.value).strip(), name  # names the problem


@pytest.mark.parametrize("trial", range(3))
def test_api_nan_frames_keep_finished_frames(pre, small, clean, trial):
    rng = random.Random(SEED + trial)
    bad = rng.randrange(T)
    kind = rng.choice([float("nan"), float("inf"), -float("inf")])
    video = small.float() / 255
    video[bad, rng.randrange(H), rng.randrange(W), rng.randrange(3)] = kind
    as_chunks = rng.random() < 0.5
    src = [video[s : s + 3] for s in range(0, T, 3)] if as_chunks else video
    with pytest.raises(ValueError, match=f"frame {bad} ") as e:
        pre(src)
    done = (bad // 3) * 3 if as_chunks else (bad // CHUNK) * CHUNK  # whole chunks before the bad one
    partial = getattr(e.value, "partial_result", None)
    if done == 0:
        assert partial is None
    else:
        assert len(partial) == done
        assert torch.allclose(partial.keypoints, clean.keypoints[:done], atol=1e-3)


def test_api_chunk_size_changes(pre, small):
    with pytest.raises(ValueError) as e:
        pre([small[:4], resize_frames(small[4:8], (H // 2 * 2 - 16, W))])
    assert len(e.value.partial_result) == 4


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def mp4(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "clip.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in small.numpy():
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def run_cli(capsys, args):
    try:
        rc = cli.main(args)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return rc, cap.err


def frames_in(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def check_outputs(out, rc):
    """Outputs of a run that exited 0, 3 or 130 agree with each other."""
    rep = json.loads((out / "poses.json").read_text())
    n = rep["frames_done"]
    assert len(rep["pose_metas"]) == n == len(rep["face_bboxes"])
    assert frames_in(out / "pose.mp4") == n == frames_in(out / "face.mp4")
    assert rep["complete"] is (rc == 0)
    if rc == 0:
        assert n == rep["decoded_frames"]
    return rep


def args_for(video, models, out, *extra):
    return ["run", str(video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(out),
            "--no-progress", "--chunk", str(CHUNK), *extra]


def test_cli_broken_files(mp4, models, tmp_path, capsys):
    rng = random.Random(SEED)
    data = mp4.read_bytes()
    variants = {
        "empty": b"",
        "random bytes": bytes(rng.getrandbits(8) for _ in range(4096)),
        "header only": data[:64],
    }
    variants["cut anywhere"] = data[: rng.randrange(len(data) // 4, len(data))]
    with av.open(str(mp4)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    for i, k in enumerate(rng.sample(range(2, len(packets)), 2)):  # cut inside a later packet
        pos, size = packets[k]
        variants[f"cut {i}"] = data[: pos + rng.randrange(size)]
    for i in range(2):  # random bytes overwritten mid-file
        b = bytearray(data)
        at = rng.randrange(len(data) // 3, len(data) - 64)
        b[at : at + 48] = bytes(rng.getrandbits(8) for _ in range(48))
        variants[f"corrupt {i}"] = bytes(b)
    outcomes = {}
    for name, blob in variants.items():
        path = tmp_path / f"{name.replace(' ', '_')}.mp4"
        path.write_bytes(blob)
        out = tmp_path / f"out_{path.stem}"
        rc, err = run_cli(capsys, args_for(path, models, out))
        assert rc in (0, 2, 3), (name, rc, err)
        if rc == 2:
            lines = [ln for ln in err.splitlines() if ln.startswith("wanprep: error:")]
            assert len(lines) == 1, (name, err)
            assert not out.exists() or not any(out.iterdir()), name  # nothing left behind
        else:
            rep = check_outputs(out, rc)
            if rc == 3:
                assert "truncated or corrupt" in err and rep["incomplete_reason"], name
        outcomes[name] = rc
    # The campaign covers each outcome: unreadable (2), cut or corrupt but partly decoded (3).
    assert {2, 3} <= set(outcomes.values()), outcomes


def test_cli_bad_options(mp4, models, tmp_path, capsys):
    rng = random.Random(SEED + 1)
    cases = [
        ("--width", str(rng.randint(-5, 0))),
        ("--height", str(rng.randint(1, 15))),
        ("--chunk", str(rng.randint(-3, 0))),
        ("--batch", rng.choice(["0", "-2", "many"])),
        ("--gate", "turbo"),
        ("--face-padding", "wide"),
    ]
    for opt, val in cases:
        out = tmp_path / f"o{opt}{val}"
        rc, err = run_cli(capsys, args_for(mp4, models, out, opt, val))
        assert rc == 2, (opt, val, err)
        assert not out.exists(), (opt, val)
    for w in rng.sample(range(17, 61, 2), 2):  # odd widths: the JSON and the videos agree
        out = tmp_path / f"odd{w}"
        rc, err = run_cli(capsys, args_for(mp4, models, out, "--width", str(w)))
        assert rc == 0, err
        rep = check_outputs(out, rc)
        with av.open(str(out / "pose.mp4")) as c:
            s = c.streams.video[0].codec_context
            assert [rep["width"], rep["height"]] == [s.width, s.height] == rep["video"]["size"]


@pytest.mark.parametrize("trial", range(3))
def test_cli_interrupted_runs(mp4, models, tmp_path, capsys, monkeypatch, trial):
    rng = random.Random(SEED + 10 + trial)
    at = rng.randint(1, T - 2)
    sig = rng.choice([signal.SIGINT, signal.SIGTERM])
    chunk = rng.choice([1, 2, 3, 4])
    real = Progress.__call__

    def call(self, stage, done, total=None):
        real(self, stage, done, total)
        if done >= at and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Progress, "__call__", call)
    out = tmp_path / "out"
    args = args_for(mp4, models, out, "--gate", rng.choice(["off", "safe"]))
    args[args.index("--chunk") + 1] = str(chunk)
    rc, err = run_cli(capsys, args)
    assert rc == 130, err
    rep = check_outputs(out, rc)
    assert at <= rep["frames_done"] < T or rep["frames_done"] == T  # stopped after the chunk in flight
    assert rep["incomplete_reason"].startswith("interrupted")


def test_video_reader_raises_video_error_on_corruption(mp4, tmp_path):
    from wanprep_torch.video import VideoReader

    data = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    with av.open(str(mp4)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pos, size = packets[-3]
    cut.write_bytes(data[: pos + size // 2])  # inside a late packet
    r = VideoReader(cut)
    try:
        n = sum(c.shape[0] for c in r.chunks(CHUNK, on_error="stop"))
    finally:
        r.close()
    assert n == r.produced and 0 < r.decoded < T and (r.shortfall() or r.error)
    half = tmp_path / "half.mp4"  # nothing decodes: an unreadable video even when decoding goes on
    half.write_bytes(data[: packets[0][0] + packets[0][1] // 2])  # inside the first packet
    r = VideoReader(half)
    try:
        with pytest.raises(VideoError, match="cannot decode"):
            next(r.chunks(CHUNK, on_error="stop"))
    finally:
        r.close()
    r = VideoReader(cut)
    try:
        with pytest.raises(VideoError):
            for _ in r.chunks(CHUNK):
                pass
            if r.shortfall():  # a clean end of stream: no decoder error to raise
                raise VideoError("short")
    finally:
        r.close()
