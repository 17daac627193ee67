"""Data integrity of `wanprep run` and `wanprep batch` (issue 21's fault campaign): one test (or
more) per row of the issue's table, on small clips with the test kit's analytic models.

Nothing lost, nothing misaligned: a re-run never leaves "complete": true beside files of
another run; one run per folder; every output frame is the source frame of the same index
(undecodable ones filled and flagged); rotation honoured; the input never written; write
errors and sizes that do not fit are one line; Ctrl-C stops at the next model batch.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from wanprep_torch import cli, outputs, runner  # noqa: E402
from wanprep_torch import video as videoio  # noqa: E402
from wanprep_torch.errors import EXIT_WRITE  # noqa: E402
from wanprep_torch.testkit import make_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
H, W = 96, 160


def encode(path: Path, frames, fps=24, gop=None, rotation=None, faststart=False, crf=None) -> Path:
    """(T, H, W, 3) uint8 frames as H.264 with PyAV (B-frames on: packets reorder), optional
    keyframe interval, display-matrix rotation (degrees counter-clockwise) and quality (crf 0:
    lossless luma, which the test kit's colour-coded keypoints need at small sizes)."""
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if gop:
            s.codec_context.gop_size = gop
        if crf is not None:
            s.options = {"crf": str(crf)}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def clip_u8(T, motion="slow", seed=0, h=H, w=W):
    clip = make_clip(T, H=h, W=w, motion=motion, seed=seed)
    return clip, (clip.frames * 255).round().to(torch.uint8)


def frames_in(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def run_args(video, models, out, *extra):
    return ["run", str(video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(out), "--no-progress", *extra]


def one_line_error(capsys, needle=None) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("wanprep: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    if needle:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def consistent(out: Path) -> dict:
    """poses.json agrees with pose.mp4 and face.mp4; returns poses.json."""
    rep = json.loads((out / "poses.json").read_text())
    n = rep["frames_done"]
    assert len(rep["pose_metas"]) == n == len(rep["source_ok"]) == frames_in(out / "pose.mp4") == frames_in(out / "face.mp4")
    return rep


@pytest.fixture(scope="module")
def clip8(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("i") / "clip8.mp4", clip_u8(8)[1])


@pytest.fixture(scope="module")
def clip16(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("i") / "clip16.mp4", clip_u8(16, seed=2)[1])


# ----------------------------------------------------------------------------- row 1: re-runs


def test_rerun_refused_without_overwrite(clip8, models, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(run_args(clip8, models, out)) == 0
    before = snapshot(out)
    assert cli.main(run_args(clip8, models, out, "--gate", "off")) == 2
    assert "--overwrite" in one_line_error(capsys, "already holds a result")
    assert snapshot(out) == before  # untouched
    assert cli.main(run_args(clip8, models, out, "--gate", "off", "--overwrite")) == 0
    rep = consistent(out)
    assert rep["complete"] is True and rep["options"]["gate"] == "off" and all(rep["pose_ran"])


def _signal_on_call(monkeypatch, at: int, counter: dict):
    """SIGINT to this process when the models' n-th session run starts."""
    from wanprep_torch import runtime

    real = runtime.OrtModel._run_bound

    def run_bound(self, *a, **k):
        counter["calls"] += 1
        if counter["calls"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **k)

    monkeypatch.setattr(runtime.OrtModel, "_run_bound", run_bound)


def test_overwrite_interrupted_is_consistent_partial(clip16, models, tmp_path, capsys, monkeypatch):
    """A finished folder re-run with other options and interrupted: poses.json says
    "complete": false and the videos hold exactly its frames (never the old "complete": true
    beside deleted or broken files); batch --resume then runs it again."""
    out = tmp_path / "out"
    assert cli.main(run_args(clip16, models, out, "--chunk", "8")) == 0
    counter = {"calls": 0}
    _signal_on_call(monkeypatch, 18, counter)  # in the second group of 8 frames (2 runs a frame)
    assert cli.main(run_args(clip16, models, out, "--chunk", "8", "--gate", "off", "--overwrite")) == 130
    rep = consistent(out)
    assert rep["complete"] is False and rep["incomplete_reason"].startswith("interrupted")
    assert rep["frames_done"] == 8 and rep["options"]["gate"] == "off"
    assert not (out / outputs.STAGING).exists() and not (out / outputs.LOCK).exists()
    from wanprep_torch.batch import resume_check

    check = resume_check(out, runner.RunOptions(str(models["det"]), str(models["pose"]), gate="off"))
    assert not check.keep and "incomplete" in check.reason


def test_abort_keeps_the_earlier_result(clip16, models, tmp_path, capsys, monkeypatch):
    """Two Ctrl-C (an abort) in the middle of an --overwrite run: the folder keeps the earlier
    complete result byte for byte (this run's files stay in the staging folder)."""
    out = tmp_path / "out"
    assert cli.main(run_args(clip16, models, out, "--chunk", "4")) == 0
    before = snapshot(out)
    real = outputs.StreamWriter.add

    def add(self, part):
        real(self, part)  # some of this run's frames are written (staged)
        raise KeyboardInterrupt  # what the second signal raises

    monkeypatch.setattr(outputs.StreamWriter, "add", add)
    assert cli.main(run_args(clip16, models, out, "--chunk", "4", "--gate", "off", "--overwrite")) == 130
    err = capsys.readouterr().err
    assert "aborted" in err and "Traceback" not in err
    after = {k: v for k, v in snapshot(out).items() if not k.startswith(outputs.STAGING)}
    assert after == before


def test_commit_interrupted_midway_never_claims_complete(tmp_path, monkeypatch):
    """RunFolder.commit dies after moving one file: poses.json already says incomplete."""
    out = tmp_path / "out"
    out.mkdir()
    for name in outputs.RESULT_FILES:
        (out / name).write_text("old")
    (out / "poses.json").write_text(json.dumps({"complete": True}))
    folder = outputs.RunFolder(out)
    stage = folder.open()
    for name in outputs.RESULT_FILES:
        (stage / name).write_text("new")
    real = os.replace
    moved = []

    def replace(src, dst):
        if Path(src).parent == stage and moved:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)
        if Path(src).parent == stage:
            moved.append(dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(Exception) as e:
        folder.commit()
    assert getattr(e.value, "status", None) == EXIT_WRITE
    assert json.loads((out / "poses.json").read_text())["complete"] is False
    assert (out / "pose.mp4").read_text() == "new" and (out / "face.mp4").read_text() == "old"


# ----------------------------------------------------------------------------- row 2: one run per folder


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from wanprep_torch.outputs import FolderLock
lock = FolderLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_busy_folder_exits_2_at_once_and_stale_lock_is_taken_over(clip8, models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        assert p.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        assert cli.main(run_args(clip8, models, out)) == 2
        assert time.monotonic() - t0 < 5  # at once, not after a run
        line = one_line_error(capsys, "is busy")
        assert str(out) in line and f"pid {p.pid}" in line
        assert not (out / "poses.json").exists()
    finally:
        p.kill()  # SIGKILL: the holder never releases; its lock file stays behind
        p.wait()
    assert (out / outputs.LOCK).exists()
    assert cli.main(run_args(clip8, models, out)) == 0  # the dead run's lock is taken over
    assert f"pid {p.pid}" in capsys.readouterr().err
    assert consistent(out)["complete"] is True and not (out / outputs.LOCK).exists()


def test_lock_without_flock_checks_the_pid(tmp_path, monkeypatch):
    """Where flock does not exist the pid in the lock file decides: a live one is busy, a
    dead one is taken over."""
    monkeypatch.setitem(sys.modules, "fcntl", None)
    (tmp_path / outputs.LOCK).write_text(f"{os.getpid()} here\n")
    with pytest.raises(Exception, match="is busy"):
        outputs.FolderLock(tmp_path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / outputs.LOCK).write_text(f"{dead.pid} here\n")
    lock = outputs.FolderLock(tmp_path).acquire()
    assert lock.took_over == dead.pid
    lock.release()
    assert not (tmp_path / outputs.LOCK).exists()


# ----------------------------------------------------------------------------- row 3: alignment


@pytest.fixture(scope="module")
def zeroed(tmp_path_factory):
    """A 96-frame clip of fast motion (15-30 px a frame), keyframes every 12 frames, with a
    block zeroed in the middle of the file (packets 44 to 52, at least 20 KB, a keyframe among
    them); and its ground truth."""
    clip, u8 = clip_u8(96, motion="fast", seed=4, h=192, w=320)
    d = tmp_path_factory.mktemp("zeroed")
    good = encode(d / "good.mp4", u8, gop=12, crf=0)
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(good.read_bytes())
    a, b = packets[44][0], max(packets[52][0], packets[44][0] + 20_000)
    data[a:b] = bytes(b - a)
    bad = d / "zeroed.mp4"
    bad.write_bytes(bytes(data))
    return clip, bad


def test_zeroed_block_keeps_every_frame_aligned(zeroed, models, tmp_path, capsys):
    """Issue 21's Done-when: 96 output frames, each real one's keypoints those of its own
    source frame; the undecodable ones hold the previous frame's result, those decoded from the
    broken references until the next keyframe keep theirs; both flagged; exit 3."""
    clip, bad = zeroed
    out = tmp_path / "out"
    assert cli.main(run_args(bad, models, out, "--gate", "off", "--chunk", "16")) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not be decoded" in err
    rep = consistent(out)
    assert rep["frames_done"] == 96 and rep["complete"] is False
    ok = rep["source_ok"]
    flagged = [i for i in range(96) if not ok[i]]
    assert rep["filled_frames"] > 0 and len(flagged) == rep["filled_frames"] + rep["concealed_frames"] < 48, flagged
    held = [i for i in flagged if i > 0 and rep["pose_metas"][i] == rep["pose_metas"][i - 1] and rep["bboxes"][i] == rep["bboxes"][i - 1]]
    assert len(held) >= rep["filled_frames"]
    nose = np.array([[m["keypoints_body"][0][0] * 320, m["keypoints_body"][0][1] * 192] for m in rep["pose_metas"]])
    gt = clip.keypoints[:, 0].numpy()  # the nose, frame pixels
    real = np.array([i for i in range(96) if ok[i]])
    own = np.linalg.norm(nose[real] - gt[real], axis=1)
    assert own.max() < 3.0, {int(i): round(float(e), 2) for i, e in zip(real, own) if e >= 3.0}
    # Each frame is its own source frame: against the source shifted by k frames the error grows.
    for k in (-12, -3, -1, 1, 3, 12):
        sel = real[(real + k >= 0) & (real + k < 96)]
        shifted = np.linalg.norm(nose[sel] - gt[sel + k], axis=1).mean()
        assert shifted > 3 * own.mean() + 2, (k, shifted, own.mean())


def test_reader_places_frames_by_timestamp(zeroed):
    clip, bad = zeroed
    r = videoio.VideoReader(bad)
    try:
        frames = torch.cat(list(r.chunks(16, on_error="stop")))
    finally:
        r.close()
    assert frames.shape[0] == 96 == r.produced and r.filled and r.decoded == 96 - len(r.filled)
    assert r.concealed and not set(r.concealed) & set(r.filled)
    src = videoio.resize_frames((clip.frames * 255).round().to(torch.uint8), (192, 320)).float()
    diff = (frames.float() - src).abs().mean(dim=(1, 2, 3))
    for i in range(96):
        if i not in r.filled and i not in r.concealed:
            others = [j for j in (i - 1, i + 1) if 0 <= j < 96]
            assert diff[i] < min((frames[i].float() - src[j]).abs().mean() for j in others), i


def test_rotation_metadata_honoured(models, tmp_path, capsys):
    """A phone video stored sideways with a display matrix: processed upright, as ffmpeg shows
    it, and the rotation recorded."""
    clip, upright = clip_u8(8, h=160, w=96)  # portrait
    stored = torch.rot90(upright, k=1, dims=(1, 2)).contiguous()  # sideways: 160 wide, 96 high
    path = encode(tmp_path / "phone.mp4", stored, rotation=-90)  # display: 90 degrees clockwise
    out = tmp_path / "out"
    assert cli.main(run_args(path, models, out, "--gate", "off")) == 0
    rep = consistent(out)
    assert (rep["width"], rep["height"]) == (96, 160) and rep["video"]["rotation"] == 270
    nose = np.array([[m["keypoints_body"][0][0] * 96, m["keypoints_body"][0][1] * 160] for m in rep["pose_metas"]])
    assert np.linalg.norm(nose - clip.keypoints[:, 0].numpy(), axis=1).max() < 3.0


# ----------------------------------------------------------------------------- row 4: the input


def test_out_holding_the_input_is_refused(models, tmp_path, capsys):
    folder = tmp_path / "prepped"
    src = encode(folder / "pose.mp4", clip_u8(4)[1])  # a video named like an output
    data = src.read_bytes()
    assert cli.main(run_args(src, models, folder)) == 2
    one_line_error(capsys, "would overwrite the input")
    os.link(src, tmp_path / "linked.mp4")  # the same file under another name
    assert cli.main(run_args(tmp_path / "linked.mp4", models, folder)) == 2
    one_line_error(capsys, "would overwrite the input")
    assert src.read_bytes() == data and sorted(p.name for p in folder.iterdir()) == ["pose.mp4"]


# ----------------------------------------------------------------------------- row 5-6: resources


def test_write_error_exit_74_keeps_the_earlier_result(clip8, models, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(run_args(clip8, models, out, "--chunk", "4")) == 0
    before = snapshot(out)
    real = videoio.VideoWriter.write
    calls = {"n": 0}

    def write(self, chunk):
        calls["n"] += 1
        if calls["n"] == 2:  # the face crops of the first part
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, chunk)

    monkeypatch.setattr(videoio.VideoWriter, "write", write)
    assert cli.main(run_args(clip8, models, out, "--chunk", "4", "--overwrite")) == EXIT_WRITE
    line = one_line_error(capsys, "No space left on device")
    assert ".mp4" in line
    assert snapshot(out) == before  # the staging folder removed, the earlier result intact


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
from wanprep_torch import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE")
def test_disk_full_subprocess(models, tmp_path):
    """A real write error (a file-size limit: EFBIG, as a full disk gives ENOSPC): exit 74, one
    line naming the file, no traceback, no poses.json claiming anything."""
    path = encode(tmp_path / "v.mp4", clip_u8(24)[1])
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", _LIMITED, *run_args(path, models, out, "--gate", "off")],
                       capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert p.returncode == EXIT_WRITE, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("wanprep: error:")]
    assert len(lines) == 1 and "cannot write" in lines[0] and str(out) in lines[0], p.stderr
    assert not (out / "poses.json").exists() and not (out / outputs.STAGING).exists()


def test_sizes_that_do_not_fit_are_refused(clip8, models, tmp_path, capsys, monkeypatch):
    from wanprep_torch import resources

    allocated = []
    monkeypatch.setattr(videoio, "resize_frames", lambda *a, **k: allocated.append(1))
    out = tmp_path / "out"
    assert cli.main(run_args(clip8, models, out, "--width", "20000")) == 2
    one_line_error(capsys, "GiB")
    assert not allocated and not out.exists()
    with pytest.raises(Exception, match="--chunk"):
        resources.check_fits((480, 832), (480, 832), 64, "cpu", available=1 << 30)
    need = resources.check_fits((480, 832), (480, 832), 64, "cpu", available=64 << 30)
    assert need == resources.estimate_bytes((480, 832), (480, 832), 64) > 64 * 480 * 832 * 3 * 6


@pytest.mark.parametrize("device, needle", [("gpu", "accepted: cpu, cuda, cuda:N"), ("tpu:0", "accepted"), ("cuda:7", "cuda")])
def test_device_validated(clip8, models, tmp_path, capsys, device, needle):
    if device == "cuda:7" and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("a machine with 8 GPUs")
    out = tmp_path / "out"
    assert cli.main(run_args(clip8, models, out, "--device", device)) == 2
    one_line_error(capsys, needle)
    assert not out.exists()


# ----------------------------------------------------------------------------- row 7: Ctrl-C


def test_ctrl_c_stops_at_the_next_model_batch(clip16, models, tmp_path, capsys, monkeypatch):
    """SIGINT during the second group of 8 frames (gate off, batch 1: a detector and a pose run
    per frame): the run stops before the next session run, not after the chunk of 16 (which
    would be 32 runs), and keeps the first 8 frames."""
    counter = {"calls": 0}
    _signal_on_call(monkeypatch, 18, counter)
    out = tmp_path / "out"
    assert cli.main(run_args(clip16, models, out, "--chunk", "16", "--gate", "off")) == 130
    assert counter["calls"] == 18
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopping at the next model batch" in err
    rep = consistent(out)
    assert rep["frames_done"] == 8 and rep["complete"] is False


def test_ctrl_c_during_start_up(clip8, models, tmp_path, capsys, monkeypatch):
    real = runner.load_preprocessor

    def load(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # while the models load
        return real(*a, **k)

    monkeypatch.setattr(runner, "load_preprocessor", load)
    out = tmp_path / "new" / "out"
    assert cli.main(run_args(clip8, models, out)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "before any frame" in err
    assert not (tmp_path / "new").exists()  # nothing left behind


@pytest.mark.slow
def test_ctrl_c_subprocess_no_traceback(models, tmp_path):
    """SIGINT while the command starts (imports, model loading) or runs: exit 130, no
    KeyboardInterrupt traceback."""
    # 240 frames (the clip five times over): long enough that the run is still going at the
    # later signal on a quiet machine, where 48 frames were done before 2.5 s.
    path = encode(tmp_path / "v.mp4", clip_u8(48)[1].repeat(5, 1, 1, 1))
    for delay in (1.0, 2.5):  # after the signal handler is installed (~0.1-0.3 s): imports, then models
        out = tmp_path / f"out{delay}"
        p = subprocess.Popen([sys.executable, "-m", "wanprep_torch", *run_args(path, models, out, "--gate", "off")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 130 and "Traceback" not in err, (delay, err)


# ----------------------------------------------------------------------------- rows 8-9: other front ends


def test_fp16_converter_without_extra(tmp_path, models):
    code = "import sys; sys.modules['onnxconverter_common'] = None; from converters.fp16 import main; sys.exit(main(sys.argv[1:]))"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code, str(models["pose"]), str(tmp_path / "o.onnx")],
                       capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "pip install 'wanprep_torch[fp16]'" in p.stderr and "loading" not in p.stdout  # before any work
    assert not (tmp_path / "o.onnx").exists() and time.monotonic() - t0 < 60


@pytest.mark.parametrize("frames", ["0", "-3", "many"])
def test_demo_bad_frames(tmp_path, capsys, frames):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--out", str(tmp_path / "d"), "--frames", frames])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--frames" in err and "positive integer" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_demo_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert cli.main(["demo", "--out", str(f), "--frames", "2"]) == 2
    one_line_error(capsys, "not a folder")


# ----------------------------------------------------------------------------- rows 10-11: batch


def batch_args(inputs, models, out, *extra):
    return ["batch", *map(str, inputs), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(out), *extra]


def test_batch_resume_checks_options_and_files(batch_clips, models, tmp_path, capsys):
    out = tmp_path / "out"
    clips = [batch_clips / "clips" / "a.mp4", batch_clips / "clips" / "b.mp4"]
    assert cli.main(batch_args(clips, models, out, "--no-progress")) == 0
    (out / "b" / "face.mp4").write_bytes(b"")  # a broken output beside a "complete" poses.json
    capsys.readouterr()
    assert cli.main(batch_args(clips, models, out, "--no-progress", "--resume")) == 0
    rep = {v["name"]: v for v in json.loads((out / "batch.json").read_text())["videos"]}
    assert rep["a"]["status"] == "skipped" and rep["b"]["status"] == "ok"
    assert "face.mp4 is missing or unreadable" in rep["b"]["rerun"]
    assert "run again: face.mp4" in capsys.readouterr().out
    assert cli.main(batch_args(clips, models, out, "--no-progress", "--resume", "--gate", "off")) == 0
    rep = {v["name"]: v for v in json.loads((out / "batch.json").read_text())["videos"]}
    assert all(v["status"] == "ok" and "gate: 'safe' -> 'off'" in v["rerun"] for v in rep.values())
    assert json.loads((out / "a" / "poses.json").read_text())["options"]["gate"] == "off"


def test_batch_incomplete_video_gives_its_reason(models, tmp_path, capsys):
    clip = encode(tmp_path / "in" / "cut.mp4", clip_u8(24)[1], faststart=True)
    with av.open(str(clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    clip.write_bytes(clip.read_bytes()[: packets[12][0] + packets[12][1] // 2])
    out = tmp_path / "out"
    assert cli.main(batch_args([clip], models, out, "--no-progress")) == 1
    v = json.loads((out / "batch.json").read_text())["videos"][0]
    assert v["status"] == "incomplete" and "frame" in v["error"]  # the reason, not null


def test_batch_busy_output_folder(batch_clips, models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with outputs.FolderLock(out):
        assert cli.main(batch_args([batch_clips / "clips" / "b.mp4"], models, out, "--no-progress")) == 2
    one_line_error(capsys, "is busy")


def test_batch_progress_off_a_terminal_is_plain_lines(batch_clips, models, tmp_path):
    p = subprocess.run([sys.executable, "-m", "wanprep_torch", *batch_args([batch_clips / "clips" / "b.mp4"], models, tmp_path / "o")],
                       capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "\x1b" not in p.stderr
    assert "wanprep: 1/1 videos (100%)" in p.stderr and "frames/s" in p.stderr


# ----------------------------------------------------------------------------- the order of the checks


def test_out_checked_and_locked_before_any_work(clip8, models, tmp_path, capsys, monkeypatch):
    """The order that keeps user errors cheap and folders safe: options, --out (created,
    writable, not the input, locked, no earlier result), then decoding, then the models. Moving
    the --out check after the processing fails here."""
    events = []
    real_acquire, real_decode, real_load = outputs.FolderLock.acquire, videoio.VideoReader._decode, runner.load_preprocessor

    def acquire(self):
        events.append("lock")
        return real_acquire(self)

    def decode(self):
        events.append("decode")
        return real_decode(self)

    def load(*a, **k):
        events.append("models")
        return real_load(*a, **k)

    monkeypatch.setattr(outputs.FolderLock, "acquire", acquire)
    monkeypatch.setattr(videoio.VideoReader, "_decode", decode)
    monkeypatch.setattr(runner, "load_preprocessor", load)
    out = tmp_path / "out"
    assert cli.main(run_args(clip8, models, out)) == 0
    assert events == ["lock", "decode", "models"]
    events.clear()
    assert cli.main(run_args(clip8, models, out)) == 2  # holds a result: refused before decoding
    assert events == ["lock"]
    events.clear()
    f = tmp_path / "afile"
    f.write_text("x")
    assert cli.main(run_args(clip8, models, f)) == 2
    assert events == []
