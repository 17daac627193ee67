"""`wanprep run`: streamed outputs, frame counts, resizing, FP16 cache, one-line errors (exit 2),
--out checked first, interrupts (exit 130), truncated input (exit 3), progress, help and version."""

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import av  # noqa: E402,F401  (the [test] extra installs PyAV)

from conftest import encode_clip  # noqa: E402
from wanprep_torch import cli  # noqa: E402
from wanprep_torch.progress import Progress  # noqa: E402
from wanprep_torch.errors import RunError  # noqa: E402
from wanprep_torch.runner import RunOptions  # noqa: E402
from wanprep_torch import video as videoio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
T = 8
FPS = 24


@pytest.fixture(scope="session")
def video(tmp_path_factory):
    """An 8-frame 832x480 H.264 clip of the synthetic person, encoded here with PyAV."""
    from wanprep_torch.testkit import make_clip

    frames = (make_clip(T, seed=0).frames * 255).round().to(torch.uint8)
    return encode_clip(tmp_path_factory.mktemp("video") / "clip.mp4", frames, FPS)


def encode(path, frames, options=None):
    """Write (T, H, W, 3) uint8 frames as H.264 at FPS (``options``: muxer options)."""
    return encode_clip(path, frames, FPS, options)


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
    assert rep["video"]["gate"] == "safe" and rep["video"]["smooth"] == "auto"  # the defaults
    assert set(rep["noise"]) == {"body", "face", "hands"}  # measured from the video
    assert "keypoint noise (px, measured): body" in stdout
    for k in ("det_ran", "pose_ran", "gate_distance"):
        assert len(rep[k]) == T, k
    timings = (out / "timings.txt").read_text()
    for word in ("total", "decode", "write", "wall"):
        assert word in timings
    # openpose.json: one OpenPose dict per frame, the body points in pixels of the metas.
    op = json.loads((out / "openpose.json").read_text())
    assert len(op) == T and all(f["canvas_width"] == 832 and f["canvas_height"] == 480 for f in op)
    person = op[0]["people"][0]
    assert len(person["pose_keypoints_2d"]) == 18 * 3 and len(person["face_keypoints_2d"]) == 68 * 3
    nose = rep["pose_metas"][0]["keypoints_body"][0]
    if nose[2] >= 0.3:
        assert person["pose_keypoints_2d"][:2] == pytest.approx([nose[0] * 832, nose[1] * 480], abs=1e-3)
    assert not (out / "poses.jsonl").exists()


def test_run_subprocess_resize_odd_width(video, models, tmp_path):
    # --width alone keeps the aspect: 415 x round(480 * 415 / 832) = 415 x 239, rounded up to
    # even sides (H.264 yuv420p), so that the videos and the JSON agree: 416 x 240.
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wanprep_torch", *run_args(video, models, out, "--width", "415", "--gate", "off", "--chunk", "3")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=ENV, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "total" in p.stdout
    assert "416x240" in p.stderr and "even" in p.stderr
    assert probe(out / "pose.mp4")[:3] == (T, 416, 240)
    assert probe(out / "face.mp4")[:3] == (T, 512, 512)
    rep = json.loads((out / "poses.json").read_text())
    assert len(rep["pose_metas"]) == T
    assert (rep["width"], rep["height"]) == (416, 240)
    assert rep["pose_metas"][0]["width"] == 416 and rep["pose_metas"][0]["height"] == 240
    assert rep["video"]["size"] == [416, 240] and rep["video"]["requested_size"] == [415, 239]


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


def test_smooth_option(video, models, tmp_path):
    with pytest.raises(SystemExit):  # argparse rejects it before anything runs
        cli.main(run_args(video, models, tmp_path / "o", "--smooth", "strong"))
    with pytest.raises(RunError, match="--smooth 'strong' is not one of auto, on, off"):
        RunOptions(det=str(models["det"]), pose=str(models["pose"]), smooth="strong").check()
    out = tmp_path / "on"
    assert cli.main(run_args(video, models, out, "--gate", "off", "--smooth", "on", "--width", "208")) == 0
    assert json.loads((out / "poses.json").read_text())["video"]["smooth"] == "on"


def test_fp16_models_cached(video, models, tmp_path, capsys, user_cache):
    """FP16 copies are made once per source model's content, in the user cache: another --out,
    or a copy of the same file elsewhere, reuses them; a changed model converts again."""
    cache = user_cache / "fp16"
    out = tmp_path / "out"
    args = run_args(video, models, out, "--fp16", "--width", "208", "--gate", "off")
    assert cli.main(args) == 0
    assert "--fp16 on the CPU makes the models slower" in capsys.readouterr().err
    cached = sorted(cache.glob("*.fp16.onnx"))
    assert len(cached) == 2 and not (out / ".models").exists()
    assert probe(out / "pose.mp4")[:3] == (T, 208, 120)
    assert len(json.loads((out / "poses.json").read_text())["pose_metas"]) == T
    stamps = [p.stat().st_mtime_ns for p in cached]
    # Another --out, the detector copied elsewhere, an FP16 model passed through as is: no conversion.
    det_copy = tmp_path / "elsewhere" / "det.onnx"
    det_copy.parent.mkdir()
    det_copy.write_bytes(models["det"].read_bytes())
    fp16_args = ["run", str(video), "--det", str(det_copy), "--pose", str(models["pose"]), "--out", str(tmp_path / "out2"),
                 "--no-progress", "--fp16", "--width", "208", "--gate", "off"]
    assert cli.main(fp16_args) == 0
    assert sorted(cache.glob("*.fp16.onnx")) == cached
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    # A different model under the copy's name converts again.
    det_copy.write_bytes(models["det_b1"].read_bytes())
    from wanprep_torch.runner import RunOptions, resolve_models

    conv = resolve_models(RunOptions(det=str(det_copy), pose=str(models["pose"]), fp16=True), log=lambda m: None)
    assert Path(conv.det) not in cached and len(list(cache.glob("*.fp16.onnx"))) == 3


def test_target_size_and_resize():
    assert videoio.target_size((480, 832), None, None) == (480, 832)
    assert videoio.target_size((480, 832), 416, None) == (240, 416)
    assert videoio.target_size((480, 832), None, 240) == (240, 416)
    assert videoio.target_size((480, 832), 100, 50) == (50, 100)
    x = torch.randint(0, 256, (2, 48, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert videoio.resize_frames(x, (48, 64)) is x
    y = videoio.resize_frames(x, (24, 32))
    assert y.shape == (2, 24, 32, 3) and y.dtype == torch.uint8 and y.is_contiguous()
    f = videoio.resize_frames(x.float() / 255, (24, 32))
    # One uint8 step at most; float32 rounding of f * 255 adds ~1e-5 (flaky before the seed:
    # 1.0000153 seen over 300 random inputs).
    assert f.dtype == torch.float32 and (f * 255 - y.float()).abs().max() <= 1.0 + 1e-4
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


# ----------------------------------------------------------------------------- streaming


def decode_all(path):
    with av.open(str(path)) as c:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]))


def test_streamed_json_equals_whole_run(video, models, tmp_path, capsys):
    """poses.json, folded from the per-frame records written part by part, holds what
    Result.to_json() of one whole run holds; no poses.jsonl is left; "complete": true."""
    from wanprep_torch import Preprocessor

    out = tmp_path / "out"
    assert cli.main(run_args(video, models, out, "--chunk", "3")) == 0
    rep = json.loads((out / "poses.json").read_text())
    assert not (out / "poses.jsonl").exists()
    assert rep["complete"] is True and rep["frames_done"] == T
    assert rep["expected_frames"] == T and rep["decoded_frames"] == T
    assert "incomplete_reason" not in rep
    pre = Preprocessor(models["det"], models["pose"], progress=False, chunk_size=3, face_dtype=torch.uint8)
    whole = pre(decode_all(video)).to_json()
    for k in ("width", "height", "pose_metas", "bboxes", "face_bboxes", "face_held", "key_frame_points", "key_frames",
              "other_persons", "det_ran", "pose_ran", "gate_distance"):
        assert rep[k] == whole[k], k
    assert rep["timings"]["frames"] == T


def test_video_writer_incremental(tmp_path):
    w = videoio.VideoWriter(tmp_path / "v.mp4", FPS)
    w.write(torch.zeros((3, 32, 48, 3), dtype=torch.uint8))
    w.write(torch.ones((2, 32, 48, 3)))  # float in [0, 1]
    assert w.frames == 5 and not w.padded
    with pytest.raises(ValueError, match="after frames of"):
        w.write(torch.zeros((1, 30, 48, 3), dtype=torch.uint8))
    assert w.close() == 5 and w.close() == 5  # idempotent
    assert probe(tmp_path / "v.mp4")[:3] == (5, 48, 32)
    with videoio.VideoWriter(tmp_path / "odd.mp4", FPS) as w:
        w.write(torch.zeros((2, 33, 47, 3), dtype=torch.uint8))
    assert w.padded and probe(tmp_path / "odd.mp4")[:3] == (2, 48, 34)


# ----------------------------------------------------------------------------- --out first


def _no_decoding(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("decoded before --out was checked")

    monkeypatch.setattr(videoio.VideoReader, "chunks", boom)
    monkeypatch.setattr(videoio.VideoReader, "_decode", boom)  # every decoding goes through it


def test_out_under_a_file(video, models, tmp_path, capsys, monkeypatch):
    _no_decoding(monkeypatch)
    f = tmp_path / "afile"
    f.write_text("x")
    check_error(capsys, cli.main(run_args(video, models, f / "sub")), "cannot create --out", f / "sub")
    check_error(capsys, cli.main(run_args(video, models, f)), "not a folder", f)


def test_out_not_writable(video, models, capsys, monkeypatch):
    _no_decoding(monkeypatch)
    # /proc/1 is a folder nobody can create files in, root included.
    check_error(capsys, cli.main(run_args(video, models, Path("/proc/1"))), "not writable", "/proc/1")


# ----------------------------------------------------------------------------- interrupts


def check_partial(out, expect_frames=None):
    """An interrupted or incomplete run's outputs agree with each other; returns poses.json."""
    rep = json.loads((out / "poses.json").read_text())
    n = rep["frames_done"]
    assert rep["complete"] is False and rep["incomplete_reason"]
    assert len(rep["pose_metas"]) == n == len(rep["bboxes"]) == len(rep["face_held"]) == rep["video"]["frames"]
    assert probe(out / "pose.mp4")[0] == n  # playable, exactly the frames done
    assert probe(out / "face.mp4")[0] == n
    assert not (out / "poses.jsonl").exists()
    if expect_frames is not None:
        assert n == expect_frames
    return rep


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_in_process(video, models, tmp_path, capsys, monkeypatch, sig):
    """The signal arrives when 2 frames are done: the run stops after that chunk of 2."""
    real = Progress.__call__

    def call(self, stage, done, total=None):
        real(self, stage, done, total)
        if done >= 2 and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Progress, "__call__", call)
    out = tmp_path / "out"
    assert cli.main(run_args(video, models, out, "--chunk", "2", "--gate", "off")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted after" in err and str(out) in err
    rep = check_partial(out)
    assert 2 <= rep["frames_done"] < T
    assert rep["incomplete_reason"].startswith("interrupted")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


SLOW_RUNNER = """
import sys, time
from wanprep_torch import cli, video
real = video.VideoReader.chunks
def slow(self, *a, **k):
    for i, c in enumerate(real(self, *a, **k)):
        if i:
            time.sleep({delay})  # test-only: time to send signals between chunks
        yield c
video.VideoReader.chunks = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def start_slow(tmp_path, args, delay):
    script = tmp_path / "slow_runner.py"
    script.write_text(SLOW_RUNNER.format(delay=delay))
    err = open(tmp_path / "stderr.txt", "w")
    p = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=err, env=ENV, cwd=REPO)
    return p, tmp_path / "stderr.txt"


def wait_for(pred, timeout=120):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigint_subprocess_keeps_finished_frames(video, models, tmp_path):
    out = tmp_path / "out"
    p, err = start_slow(tmp_path, run_args(video, models, out, "--chunk", "2", "--gate", "off"), delay=1.0)
    jsonl = out / ".wanprep-partial" / "poses.jsonl"
    wait_for(lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 2)  # the first part is written
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    text = err.read_text()
    assert "Traceback" not in text and "interrupted after" in text and "\x1b" not in text
    rep = check_partial(out)
    assert 2 <= rep["frames_done"] < T


@pytest.mark.slow
def test_second_sigint_aborts_at_once(video, models, tmp_path):
    out = tmp_path / "out"
    p, err = start_slow(tmp_path, run_args(video, models, out, "--chunk", "2", "--gate", "off"), delay=3.0)
    jsonl = out / ".wanprep-partial" / "poses.jsonl"
    wait_for(lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 2)
    p.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping at the next model batch" in err.read_text())
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    assert time.monotonic() - t0 < 2.5  # did not wait for the chunk
    text = err.read_text()
    assert "aborted" in text and "Traceback" not in text
    assert not (out / "poses.json").exists() and jsonl.exists()


# ----------------------------------------------------------------------------- bad input


def test_truncated_mp4_exit_3(models, tmp_path, capsys):
    """An mp4 with its index at the front, cut short (a broken download): the frames decoded
    are processed and kept, poses.json says expected vs decoded, a warning, exit 3."""
    from wanprep_torch.testkit import make_clip

    frames = (make_clip(24, seed=3).frames * 255).round().to(torch.uint8)
    frames = videoio.resize_frames(frames, (240, 416)).numpy()
    full = encode(tmp_path / "full.mp4", frames, {"movflags": "faststart"})
    with av.open(str(full)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: packets[12][0] + packets[12][1] // 2])  # cut inside packet 12
    out = tmp_path / "out"
    assert cli.main(run_args(cut, models, out, "--chunk", "4")) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "truncated or corrupt" in err and "of 24 frames decoded" in err
    rep = check_partial(out)
    assert rep["expected_frames"] == 24 and 0 < rep["decoded_frames"] < 24
    assert rep["frames_done"] == rep["decoded_frames"] + rep["filled_frames"]  # lost frames are filled, flagged


def test_empty_result_warns(models, tmp_path, capsys):
    """Nothing to detect (black frames): exit 0 but a warning naming the counts and the cause."""
    out = tmp_path / "out"
    path = encode(tmp_path / "black.mp4", np.zeros((6, 64, 96, 3), np.uint8))
    assert cli.main(run_args(path, models, out)) == 0
    err = capsys.readouterr().err
    assert "no person detected on 6 of 6 frames" in err and "random-weight" in err
    assert "no face visible on 6 of 6 frames" in err
    assert json.loads((out / "poses.json").read_text())["complete"] is True


def test_fp16_without_converter(video, models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)  # import raises ImportError
    out = tmp_path / "new" / "out"
    check_error(capsys, cli.main(run_args(video, models, out, "--fp16")), "pip install", "[fp16]")
    assert not (tmp_path / "new").exists()  # nothing left behind


def test_failed_run_leaves_nothing(video, models, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    rc = cli.main(run_args(video, models, out, "--width", "8", "--height", "8"))
    check_error(capsys, rc, "bad frames")
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- progress, help


def test_progress_plain_lines_when_not_a_terminal(video, models, tmp_path, capsys):
    # In this process: pytest's capture, like a pipe or a log file, is not a terminal.
    out = tmp_path / "out"
    args = [a for a in run_args(video, models, out) if a != "--no-progress"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    assert f"wanprep: {T}/{T} frames (100%)" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("wanprep: ")]) <= 3


def test_progress_one_bar_with_total(capsys):
    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    tty = Tty()
    bar = Progress(40, True, stream=tty)
    for done in (8, 16, 40):
        bar("frames", done, None)
    assert bar.bar.total == 40 and bar.bar.n == 40
    bar.close()
    assert "40/40" in tty.text


def test_version_and_no_arguments(capsys):
    from wanprep_torch import __version__

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "usage: wanprep" in out and "run" in out and "demo" in out


def test_every_option_has_help():
    import argparse

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"run", "demo"} <= set(subs.choices)
    for name in ("run", "demo"):
        for action in subs.choices[name]._actions:
            assert action.help, (name, action.dest)
    epilog = subs.choices["run"].epilog
    for code in ("0 ", "2 ", "3 ", "130"):
        assert code in epilog
    for code in ("0 ", "1 ", "2 ", "3 ", "74 ", "130"):
        assert f"    {code}" in cli.__doc__


def test_measure_memory_script(tmp_path):
    """scripts/measure_memory.py: its clip maker and its per-child peak RSS reading."""
    from conftest import load_script

    mm = load_script("measure_memory")
    path = mm.make_video(tmp_path / "v.mp4", 5, (64, 48))
    assert probe(path)[:3] == (5, 64, 48)
    mb, _, rc = mm.peak_rss_mb([sys.executable, "-c", "x = bytearray(80_000_000); x[::4096] = b'1' * len(x[::4096])"], ENV)
    assert rc == 0 and mb >= 80
