"""A CLI that fits people's habits (issue 24): models by name from the models folder, --overlay
on the source frames, --start / --duration, start-up without torch, `demo --video`, and the
warning when the colour codes did not survive the codec."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import encode_clip
from wanprep_torch import cli, hub, paths
from wanprep_torch import video as videoio
from wanprep_torch.overlay import FrameQueue, draw_overlay
from wanprep_torch.poses import Poses
from wanprep_torch.testkit import make_clip, write_tryout_clip

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
FPS = 24


def decode(path):
    with av.open(str(path)) as c:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]))


def one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err and "Traceback" not in err and err.startswith("wanprep: error: "), err
    for n in needles:
        assert str(n) in err, err
    return err


# ----------------------------------------------------------------------------- the try-out clip


@pytest.fixture(scope="module")
def tryout(tmp_path_factory):
    """`wanprep demo --video` with fast motion (15-30 px a frame), so a frame off is obvious."""
    path = tmp_path_factory.mktemp("tryout") / "clip.mkv"
    got = write_tryout_clip(path, frames=96, motion="fast")
    truth = make_clip(96, H=240, W=416, motion="fast", face_hidden=range(32, 44), seed=0)
    return got, truth


def test_demo_video_is_lossless(tmp_path, capsys):
    """The try-out clip decodes to exactly the rendered frames (FFV1 in .mkv, H.264 RGB in .mp4)."""
    assert cli.main(["demo", "--video", str(tmp_path / "a.mp4"), "--frames", "30"]) == 0
    out = capsys.readouterr().out
    assert "lossless (H.264 RGB, qp 0)" in out and f"wanprep run {tmp_path / 'a.mp4'} --det " in out
    clip = make_clip(30, H=240, W=416, motion="slow", face_hidden=range(10, 13), seed=0)
    want = (clip.frames * 255).round().to(torch.uint8)
    for name, codec, fmt in (("a.mp4", "h264", "gbrp"), ("b.mkv", "ffv1", "bgr0")):
        if name == "b.mkv":
            write_tryout_clip(tmp_path / name, frames=30)
        with av.open(str(tmp_path / name)) as c:
            ctx = c.streams.video[0].codec_context
            assert (ctx.name, ctx.pix_fmt) == (codec, fmt)  # RGB, no chroma subsampling
        assert torch.equal(decode(tmp_path / name), want), name
    rc = cli.main(["demo", "--video", str(tmp_path / "c.avi")])
    one_line_error(capsys, rc, "--video", ".mkv")


# ----------------------------------------------------------------------------- models by name


huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture
def fake_hub(models, monkeypatch):
    """hf_hub_download serving the test kit's models under the catalogue's repository paths."""
    served = {
        (hub.MODELS["yolov10m"].repo_id, hub.MODELS["yolov10m"].filename): models["det"],
        (hub.MODELS["vitpose-l"].repo_id, hub.MODELS["vitpose-l"].filename): models["pose"],
    }
    calls = []

    def fake(repo_id, filename, *, local_dir=None, force_download=False, **kw):
        calls.append((repo_id, filename, local_dir))
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(served[repo_id, filename], dst)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def test_download_then_run_by_name(fake_hub, tryout, user_cache, tmp_path, capsys):
    """The issue's Done-when: `models download` into the default folder, then `run` by name
    with --overlay --start 1 --duration 2."""
    got, truth = tryout
    assert cli.main(["models", "download", "yolov10m", "vitpose-l"]) == 0
    folder = user_cache / "models"
    assert all(c[2] == str(folder) for c in fake_hub)
    out = capsys.readouterr().out
    assert "run with: wanprep run VIDEO --det yolov10m --pose vitpose-l --out out" in out
    assert cli.main(["models"]) == 0
    listing = capsys.readouterr().out
    assert f"downloaded: {folder / hub.MODELS['yolov10m'].filename}" in listing and f"models folder: {folder}" in listing

    o = tmp_path / "o"
    rc = cli.main(["run", str(got.video), "--det", "yolov10m", "--pose", "vitpose-l", "--out", str(o),
                   "--overlay", "--start", "1", "--duration", "2", "--gate", "off", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "body points were seen" not in err  # a lossless clip keeps the colour codes
    rep = json.loads((o / "poses.json").read_text())
    assert rep["frames_done"] == rep["expected_frames"] == 48 and rep["complete"] is True
    rng = rep["video"]["range"]
    assert rng["first_frame"] == 24 and rng["max_frames"] == 48 and rng["start_s"] == 1.0
    assert rng["start"] == {"text": "1", "value": 1.0, "unit": "seconds"} and rng["duration"]["unit"] == "seconds"
    assert rng["source_frames"] == 96
    for name in ("pose.mp4", "face.mp4", "overlay.mp4"):
        assert decode(o / name).shape[0] == 48, name
    # The keypoints are frames 24..71's: against the ground truth, and not a frame off.
    body = np.array([m["keypoints_body"] for m in rep["pose_metas"]])  # (48, 20, 3) normalised
    from wanprep_torch.poses import wan_body

    gt = wan_body(truth.keypoints.double())[..., :2].numpy() / np.array([416, 240])

    def err_px(shift):
        idx = np.arange(24, 72) + shift
        seen = body[..., 2] >= 0.3
        return float(np.abs((body[..., :2] - gt[idx]) * np.array([416, 240]))[seen].max())

    assert err_px(0) < 1.5 and err_px(-1) > 5 and err_px(1) > 5


def test_overlay_is_aligned_with_the_source(fake_hub, tryout, tmp_path, capsys):
    """overlay.mp4 frame i is source frame start + i with the drawing on top: closest to that
    frame and to no other (the person moves 15-30 px a frame)."""
    got, _ = tryout
    assert cli.main(["models", "download", "yolov10m", "vitpose-l", "--models-dir", str(tmp_path / "m")]) == 0
    o = tmp_path / "o"
    assert cli.main(["run", str(got.video), "--det", "yolov10m", "--pose", "vitpose-l", "--models-dir",
                     str(tmp_path / "m"), "--out", str(o), "--overlay", "--start", "30f", "--duration", "20f",
                     "--chunk", "7", "--no-progress"]) == 0
    over = decode(o / "overlay.mp4").float()
    src = decode(got.video).float()
    assert over.shape[0] == 20
    for i in range(20):
        d = (over[i][None] - src).abs().mean(dim=(1, 2, 3))
        assert int(d.argmin()) == 30 + i, (i, d[25:55])
    # The drawing is there: the overlay differs from its source frame where the skeleton is.
    assert float((over[5] - src[35]).abs().amax(-1).gt(60).float().mean()) > 0.005


def test_name_not_downloaded(tryout, tmp_path, capsys, monkeypatch):
    got, _ = tryout
    args = ["run", str(got.video), "--det", "yolov10m", "--pose", "vitpose-l", "--out", str(tmp_path / "o")]
    one_line_error(capsys, cli.main(args), "--det yolov10m: model not downloaded", "get it with: wanprep models download yolov10m")
    assert not (tmp_path / "o").exists()
    rc = cli.main(args + ["--models-dir", str(tmp_path / "m")])
    one_line_error(capsys, rc, f"wanprep models download yolov10m --models-dir {tmp_path / 'm'}")
    monkeypatch.setenv("WANPREP_MODELS", str(tmp_path / "env"))
    one_line_error(capsys, cli.main(args), str(tmp_path / "env"))
    one_line_error(capsys, cli.main(["batch", str(got.video), "--det", "yolov10m", "--pose", "vitpose-l", "--out",
                                     str(tmp_path / "b")]), "model not downloaded")


def test_names_paths_and_mistakes(models, tmp_path, capsys):
    folder = tmp_path / "m"
    # A path is a path, whatever the folder holds.
    assert hub.resolve_model(str(models["det"]), "detector", folder) == models["det"]
    assert hub.resolve_model("missing/yolo.onnx", "detector", folder) == Path("missing/yolo.onnx")
    with pytest.raises(hub.WrongRoleError, match="vitpose-l is a pose model; --det takes yolov10m"):
        hub.resolve_model("vitpose-l", "detector", folder)
    with pytest.raises(hub.UnknownModelError, match="did you mean vitpose-l"):
        hub.resolve_model("vitpose-L", "pose", folder)
    # A downloaded ViTPose-H needs its weights file too.
    h = hub.MODELS["vitpose-h"]
    (folder / h.filename).parent.mkdir(parents=True)
    (folder / h.filename).write_bytes(b"x")
    with pytest.raises(hub.NotDownloadedError, match="vitpose_h_wholebody_data.bin not found"):
        hub.resolve_model("vitpose-h", "pose", folder)
    (folder / h.extra_files[0]).write_bytes(b"x")
    assert hub.resolve_model("vitpose-h", "pose", folder) == folder / h.filename


def test_models_folder_by_platform(tmp_path):
    home = {"HOME": "/home/u"}
    assert paths.user_cache_dir("linux", home) == Path("/home/u/.cache/wanprep")
    assert paths.user_cache_dir("linux", dict(home, XDG_CACHE_HOME="/xdg")) == Path("/xdg/wanprep")
    assert paths.user_cache_dir("linux", dict(home, XDG_CACHE_HOME="rel")) == Path("/home/u/.cache/wanprep")  # XDG: absolute only
    assert paths.user_cache_dir("darwin", home) == Path("/home/u/Library/Caches/wanprep")
    assert paths.user_cache_dir("win32", dict(home, LOCALAPPDATA="C:/L")) == Path("C:/L/wanprep/Cache")
    assert paths.user_cache_dir("linux", dict(home, WANPREP_CACHE="/c")) == Path("/c")
    assert paths.models_dir(None, dict(home, WANPREP_CACHE="/c")) == Path("/c/models")
    assert paths.models_dir(None, dict(home, WANPREP_MODELS="/m")) == Path("/m")
    assert paths.models_dir("/x", dict(home, WANPREP_MODELS="/m")) == Path("/x")


# ----------------------------------------------------------------------------- start-up


HEAVY = ("torch", "onnxruntime", "onnx", "kornia", "av", "numpy")
PROBE = """
import json, sys
from wanprep_torch.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["models"], ["models", "list"], ["run", "--help"],
                                  ["batch", "--help"], ["doctor", "--help"], ["demo", "--help"],
                                  ["models", "download", "--help"]])
def test_quick_commands_import_no_torch(argv):
    p = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(argv)], capture_output=True,
                       text=True, env=ENV, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [], p.stdout


def test_help_importtime_has_no_torch():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "wanprep_torch", "--help"], capture_output=True,
                       text=True, env=ENV, cwd=REPO, timeout=120)
    assert p.returncode == 0 and "usage: wanprep" in p.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "wanprep_torch.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in HEAVY}, sorted(m for m in imported if m.split(".")[0] in HEAVY)


def test_package_names_still_import():
    import wanprep_torch

    assert wanprep_torch.Preprocessor.__name__ == "Preprocessor" and "retarget" in dir(wanprep_torch)
    with pytest.raises(AttributeError):
        wanprep_torch.nothing_here


# ----------------------------------------------------------------------------- --start / --duration


def test_parse_time():
    p = videoio.parse_time
    assert (p("1.5").value, p("1.5").unit) == (1.5, "s")
    assert p("2s").value == 2.0 and p("30f").unit == "f" and p("30F").frames(24) == 30
    assert p("1:02.5").value == 62.5 and p("1:00:01").value == 3601.0
    for bad in ("", "-1", "abc", "1.5f", "f", "1:75", "nan", "inf"):
        with pytest.raises(ValueError, match="expected seconds"):
            p(bad)
    # Seconds round up to the next frame (ffmpeg -ss picks the first frame at or after the time).
    assert p("1").frames(24) == 24 and p("1.01").frames(24) == 25 and p("0.5").frames(30000 / 1001) == 15
    assert videoio.frame_range(p("1"), p("2"), 24) == videoio.FrameRange(24, 48)
    assert videoio.frame_range(None, p("0.1"), 24) == videoio.FrameRange(0, 3)
    with pytest.raises(ValueError, match="selects no frame"):
        videoio.frame_range(None, p("0f"), 24)


def write_gop_clip(path, frames, gop):
    """Lossless RGB H.264 with a keyframe every ``gop`` frames (so that seeking lands mid-video)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=FPS)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        s.options = {"qp": "0", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for f in frames.numpy():
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.mark.parametrize("first,count", [(0, 5), (13, 10), (24, None), (35, 40), (1, 1)])
def test_reader_range_seeks_to_the_right_frames(tmp_path, first, count):
    frames = (make_clip(40, H=48, W=64, motion="fast", seed=2).frames * 255).round().to(torch.uint8)
    path = write_gop_clip(tmp_path / "g.mp4", frames, gop=12)
    r = videoio.VideoReader(path)
    r.select(videoio.FrameRange(first, count))
    got = torch.cat(list(r.chunks(4)))
    end = 40 if count is None else min(first + count, 40)
    assert torch.equal(got, frames[first:end])
    assert r.decoded == r.expected_frames == end - first and r.shortfall() == 0
    r.close()
    with av.open(str(path)) as c:
        keys = [i for i, pkt in enumerate(sorted((p for p in c.demux(c.streams.video[0]) if p.size), key=lambda p: p.pts))
                if pkt.is_keyframe]
    if first:  # seeked to the last keyframe at or before the start, not decoded from frame 0
        assert r.seeked_to == max(k for k in keys if k <= first), keys
    assert keys == [0, 12, 24, 36]  # keyframes to seek to, and frames between them to drop


def test_reader_range_without_usable_timestamps(tmp_path, monkeypatch):
    """When the timestamps cannot place the frame a seek lands on (here: they all claim to be far
    past the start), the reader decodes from frame 0 and counts: the same frames."""
    frames = (make_clip(30, H=48, W=64, motion="fast", seed=3).frames * 255).round().to(torch.uint8)
    path = write_gop_clip(tmp_path / "g.mp4", frames, gop=12)
    monkeypatch.setattr(videoio.VideoReader, "_index", lambda self, frame: 10**6)
    r = videoio.VideoReader(path)
    r.select(videoio.FrameRange(17, 6))
    assert torch.equal(torch.cat(list(r.chunks(4))), frames[17:23])
    assert r.seeked_to is None and r.decoded == 6 and r.error is None
    r.close()


def test_start_past_the_end_and_bad_values(tryout, models, tmp_path, capsys):
    got, _ = tryout
    base = ["run", str(got.video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(tmp_path / "o")]
    one_line_error(capsys, cli.main(base + ["--start", "10"]), "--start is past the end", "96 frames")
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--duration", "two"])
    assert e.value.code == 2 and "expected seconds" in capsys.readouterr().err


def test_duration_past_the_end_is_complete(tryout, models, tmp_path, capsys):
    got, _ = tryout
    o = tmp_path / "o"
    rc = cli.main(["run", str(got.video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(o),
                   "--start", "90f", "--duration", "1:00", "--no-progress"])
    assert rc == 0
    rep = json.loads((o / "poses.json").read_text())
    assert rep["frames_done"] == 6 and rep["complete"] is True and rep["video"]["range"]["duration"]["value"] == 60.0


# ----------------------------------------------------------------------------- the overlay itself


def test_draw_overlay_draws_on_the_frames(models):
    from wanprep_torch import Preprocessor

    clip = make_clip(3, H=120, W=208, motion="slow", face_hidden=[2], seed=4)
    frames = (clip.frames * 255).round().to(torch.uint8)
    res = Preprocessor(models["det"], models["pose"], progress=False, gate="off")(frames)
    poses = Poses.from_metas(res.pose_metas)
    boxes = res.bboxes.clone()
    boxes[1, 4] = -1  # frame 1: the full-frame fallback, not drawn
    out = draw_overlay(frames, poses, boxes, res.face_bboxes, res.face_held)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    assert not torch.equal(out, frames) and torch.equal(frames, (clip.frames * 255).round().to(torch.uint8))
    b = boxes[0, :4].round().long()
    assert out[0, b[1], (b[0] + b[2]) // 2].tolist() == [0, 255, 0]  # the subject box's top edge
    fx1, fy1, fx2, fy2 = res.face_bboxes[2]
    assert bool(res.face_held[2]) and out[2, fy2, (fx1 + fx2) // 2].tolist() == [128, 128, 128]  # held: grey
    fx1, fy1, fx2, fy2 = res.face_bboxes[0]
    assert out[0, fy1, (fx1 + fx2) // 2].tolist() == [255, 255, 255]
    b1 = res.bboxes[1, :4].round().long()
    assert out[1, b1[1], (b1[0] + b1[2]) // 2].tolist() != [0, 255, 0]
    # Outside the drawing the frames are untouched, and the drawing is the pose images' one.
    from wanprep_torch.draw import draw_pose

    alone = (draw_pose(poses, draw_face=True) * 255).round().to(torch.uint8)
    drawn = alone.amax(-1) > 0
    boxes_only = draw_overlay(frames, Poses(poses.keypoints * torch.tensor([1, 1, 0.0], dtype=poses.keypoints.dtype),
                                            poses.width, poses.height), boxes, res.face_bboxes, res.face_held)
    box_px = (boxes_only != frames).any(-1)
    assert torch.equal(out[drawn & ~box_px], alone[drawn & ~box_px])
    assert torch.equal(out[~drawn & ~box_px], frames[~drawn & ~box_px])


def test_frame_queue():
    q = FrameQueue()
    q.push(torch.arange(5).view(5, 1, 1, 1).expand(5, 2, 2, 3))
    q.push(torch.arange(5, 8).view(3, 1, 1, 1).expand(3, 2, 2, 3))
    assert q.take(0, 3)[:, 0, 0, 0].tolist() == [0, 1, 2]
    assert q.take(3, 4)[:, 0, 0, 0].tolist() == [3, 4, 5, 6] and q.held == 1
    with pytest.raises(ValueError, match="asked for"):
        q.take(3, 1)
    with pytest.raises(ValueError):
        q.take(7, 2)


# ----------------------------------------------------------------------------- colour codes vs codec


def test_warns_when_the_codec_destroyed_the_colour_codes(models, tmp_path, capsys):
    """The test kit's person through 4:2:0 H.264: found, but most body points unseen -> a
    warning naming the pixel format and `demo --video`; the same frames lossless: no warning."""
    frames = (make_clip(6, H=240, W=416, seed=5).frames * 255).round().to(torch.uint8)
    lossy = encode_clip(tmp_path / "lossy.mp4", frames, FPS)
    lossless = write_gop_clip(tmp_path / "lossless.mp4", frames, gop=12)
    for path, warned in ((lossy, True), (lossless, False)):
        rc = cli.main(["run", str(path), "--det", str(models["det"]), "--pose", str(models["pose"]),
                       "--out", str(tmp_path / path.stem), "--no-progress", "--gate", "off"])
        err = capsys.readouterr().err
        assert rc == 0
        assert ("body points were seen on average" in err) is warned, err
        if warned:
            assert "yuv420p" in err and "wanprep demo --video" in err


def test_batch_takes_names_overlay_and_range(fake_hub, tryout, tmp_path, capsys):
    """`wanprep batch` shares run's options: model names, --overlay, --start / --duration per video."""
    got, _ = tryout
    assert cli.main(["models", "download", "yolov10m", "vitpose-l"]) == 0
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mkv", "b.mkv"):
        shutil.copyfile(got.video, clips / name)
    out = tmp_path / "out"
    assert cli.main(["batch", str(clips), "--det", "yolov10m", "--pose", "vitpose-l", "--out", str(out), "--no-progress",
                     "--overlay", "--start", "2s", "--duration", "10f"]) == 0
    for name in ("a", "b"):
        rep = json.loads((out / name / "poses.json").read_text())
        assert rep["frames_done"] == 10 and rep["video"]["range"]["first_frame"] == 48
        assert rep["options"]["start"] == "2s" and rep["options"]["overlay"] is True
        assert decode(out / name / "overlay.mp4").shape[0] == 10
