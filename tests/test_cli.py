"""`wanprep run`: outputs, frame counts, resizing, FP16 cache, and one-line errors (exit 2)."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import av  # noqa: E402,F401  (the [test] extra installs PyAV)

from wanprep_torch import cli  # noqa: E402
from wanprep_torch import video as videoio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T = 8
FPS = 24


@pytest.fixture(scope="session")
def video(tmp_path_factory):
    """An 8-frame 832x480 H.264 clip of the synthetic person, encoded here with PyAV."""
    from wanprep_torch.testkit import make_clip

    frames = (make_clip(T, seed=0).frames * 255).round().to(torch.uint8).numpy()
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=FPS)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def probe(path):
    """(decoded frame count, width, height, average rate)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, s.codec_context.width, s.codec_context.height, s.average_rate


def run_args(video, models, out, *extra):
    return ["run", str(video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(out), "--no-progress", *extra]


def check_error(capsys, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("wanprep: error: ")
    for n in needles:
        assert str(n) in err, err


def test_run_in_process(video, models, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(run_args(video, models, out)) == 0
    stdout = capsys.readouterr().out
    assert "total" in stdout and "frames: 8" in stdout

    for name in ("pose.mp4", "face.mp4", "poses.json", "timings.txt"):
        assert (out / name).is_file(), name
    n, w, h, rate = probe(out / "pose.mp4")
    assert (n, w, h) == (T, 832, 480)
    assert rate == FPS  # the source frame rate
    n, w, h, _ = probe(out / "face.mp4")
    assert (n, w, h) == (T, 512, 512)

    rep = json.loads((out / "poses.json").read_text())
    assert len(rep["pose_metas"]) == T and len(rep["face_bboxes"]) == T and len(rep["bboxes"]) == T
    assert (rep["width"], rep["height"]) == (832, 480)
    assert rep["providers"]["detector"] == "CPUExecutionProvider"
    assert rep["timings"]["frames"] == T
    assert rep["video"]["frames"] == T and rep["video"]["fps"] == FPS
    assert isinstance(rep["key_frame_points"], list)
    assert rep["video"]["gate"] == "safe"  # the default
    for k in ("det_ran", "pose_ran", "gate_distance"):
        assert len(rep[k]) == T, k
    timings = (out / "timings.txt").read_text()
    for word in ("total", "decode", "write", "wall"):
        assert word in timings


def test_run_subprocess_resize_odd_width(video, models, tmp_path):
    # --width alone keeps the aspect: 415 x round(480 * 415 / 832) = 415 x 239; the mp4 is
    # padded to even sides.
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "wanprep_torch", *run_args(video, models, out, "--width", "415", "--gate", "off", "--chunk", "3")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "total" in p.stdout
    assert probe(out / "pose.mp4")[:3] == (T, 416, 240)
    assert probe(out / "face.mp4")[:3] == (T, 512, 512)
    rep = json.loads((out / "poses.json").read_text())
    assert len(rep["pose_metas"]) == T
    assert (rep["width"], rep["height"]) == (415, 239)
    assert rep["pose_metas"][0]["width"] == 415


def test_missing_video(models, tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    rc = cli.main(run_args(missing, models, tmp_path / "o"))
    check_error(capsys, rc, "not found", missing)


def test_text_file_as_video(models, tmp_path, capsys):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    rc = cli.main(run_args(fake, models, tmp_path / "o"))
    check_error(capsys, rc, "cannot decode", fake)


def test_audio_only_file(models, tmp_path, capsys):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate = 16000
        for p in list(s.encode(f)) + list(s.encode()):
            c.mux(p)
    rc = cli.main(run_args(path, models, tmp_path / "o"))
    check_error(capsys, rc, "no video stream", path)


def test_missing_model(video, models, tmp_path, capsys):
    missing = tmp_path / "yolo.onnx"
    args = ["run", str(video), "--det", str(missing), "--pose", str(models["pose"]), "--out", str(tmp_path / "o"), "--no-progress"]
    check_error(capsys, cli.main(args), "not found", missing)


def test_wrong_model_kind(video, models, tmp_path, capsys):
    args = ["run", str(video), "--det", str(models["pose"]), "--pose", str(models["pose"]), "--out", str(tmp_path / "o"), "--no-progress"]
    check_error(capsys, cli.main(args), "not a person detector", models["pose"])


def test_bad_frames(video, models, tmp_path, capsys):
    rc = cli.main(run_args(video, models, tmp_path / "o", "--width", "8", "--height", "8"))
    check_error(capsys, rc, "bad frames", video)


def test_unknown_gate_preset(video, models, tmp_path):
    with pytest.raises(SystemExit):  # argparse rejects it before anything runs
        cli.main(run_args(video, models, tmp_path / "o", "--gate", "turbo"))


def test_fp16_models_cached(video, models, tmp_path, capsys):
    out = tmp_path / "out"
    args = run_args(video, models, out, "--fp16", "--width", "208", "--gate", "off")
    assert cli.main(args) == 0
    cached = sorted((out / ".models").glob("*.fp16.onnx"))
    assert len(cached) == 2
    assert probe(out / "pose.mp4")[:3] == (T, 208, 120)
    assert len(json.loads((out / "poses.json").read_text())["pose_metas"]) == T
    stamps = [p.stat().st_mtime_ns for p in cached]
    # Second run: the cached copies are reused; an FP16 model is passed through as is.
    fp16_args = ["run", str(video), "--det", str(models["det_fp16"]), "--pose", str(models["pose"]), "--out", str(out),
                 "--no-progress", "--fp16", "--width", "208", "--gate", "off"]
    assert cli.main(fp16_args) == 0
    assert [p.stat().st_mtime_ns for p in sorted((out / ".models").glob("*.fp16.onnx"))] == stamps


def test_target_size_and_resize():
    assert videoio.target_size((480, 832), None, None) == (480, 832)
    assert videoio.target_size((480, 832), 416, None) == (240, 416)
    assert videoio.target_size((480, 832), None, 240) == (240, 416)
    assert videoio.target_size((480, 832), 100, 50) == (50, 100)
    x = torch.randint(0, 256, (2, 48, 64, 3), dtype=torch.uint8)
    assert videoio.resize_frames(x, (48, 64)) is x
    y = videoio.resize_frames(x, (24, 32))
    assert y.shape == (2, 24, 32, 3) and y.dtype == torch.uint8 and y.is_contiguous()
    f = videoio.resize_frames(x.float() / 255, (24, 32))
    assert f.dtype == torch.float32 and (f * 255 - y.float()).abs().max() <= 1.0
    flat = torch.full((1, 20, 30, 3), 77, dtype=torch.uint8)
    assert bool((videoio.resize_frames(flat, (41, 17)) == 77).all())


def test_write_video_frame_rate(tmp_path):
    frames = torch.zeros((5, 33, 47, 3), dtype=torch.uint8)
    assert videoio.write_video(tmp_path / "v.mp4", [frames[:2], frames[2:]], Fraction(30000, 1001)) == 5
    n, w, h, rate = probe(tmp_path / "v.mp4")
    assert (n, w, h) == (5, 48, 34) and rate == Fraction(30000, 1001)


def test_demo_still_works(tmp_path, models, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--frames", "2", "--models-dir", str(models["det"].parent), "--no-progress"]) == 0
    assert (tmp_path / "d" / "poses.json").is_file()
