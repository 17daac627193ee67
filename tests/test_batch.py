"""`wanprep batch` (the local engine): inputs, names, batch.json, same results as `wanprep run`,
resume, failures, interrupts, spawned workers, exit statuses. The clips come from conftest's
``batch_clips``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

av = pytest.importorskip("av")

from wanprep_torch import batch, cli  # noqa: E402
from wanprep_torch.runner import RunOptions, RunSummary  # noqa: E402
from wanprep_torch.video import write_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def batch_args(inputs, models, out, *extra):
    return ["batch", *map(str, inputs), "--det", str(models["det"]), "--pose", str(models["pose"]),
            "--out", str(out), "--no-progress", *extra]


def report(out) -> dict:
    return json.loads((Path(out) / "batch.json").read_text())


def by_name(rep) -> dict:
    return {v["name"]: v for v in rep["videos"]}


def same_poses(a: Path, b: Path) -> bool:
    ra, rb = json.loads((a / "poses.json").read_text()), json.loads((b / "poses.json").read_text())
    keys = ("pose_metas", "bboxes", "face_bboxes", "face_held", "det_ran", "pose_ran", "width", "height")
    return all(ra[k] == rb[k] for k in keys)


# ----------------------------------------------------------------------------- inputs


def test_discover_folders_globs_manifests(tmp_path):
    for rel in ("v/a.mp4", "v/B.MOV", "v/sub/c.mkv", "v/notes.txt", "w/a.mp4", "w/x.webm", "out/a/pose.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# a comment\n\nw/a.mp4\n  v/a.mp4  \nmissing.mp4\n")
    (tmp_path / "list.csv").write_text("id,Video\n1,w/x.webm\n2,v/sub/c.mkv\n")
    videos, missing = batch.discover(
        [tmp_path / "v", str(tmp_path / "w" / "*.webm"), tmp_path / "list.txt", tmp_path / "list.csv",
         str(tmp_path / "nomatch*.mp4"), tmp_path / "out"],
        exclude=tmp_path / "out",
    )
    rel = [str(v.relative_to(tmp_path)) for v in videos]
    # Folder contents sorted, notes.txt inside a folder is not a manifest; each video once; out/ left out.
    assert rel == ["v/a.mp4", "v/B.MOV", "v/sub/c.mkv", "w/x.webm", "w/a.mp4"]
    assert missing == [str(tmp_path / "missing.mp4"), str(tmp_path / "nomatch*.mp4")]


def test_unique_names():
    names = batch.unique_names(["x/a.mp4", "y/a.mp4", "z/A.mov", "a-2.mp4", "batch.json.mp4", ".mp4", "q/.hidden.mp4"])
    assert names == ["a", "a-2", "A-3", "a-2-2", "batch.json-2", "_mp4", "_hidden"]
    assert batch.unique_names(["x/a.mp4", "y/a.mp4"]) == ["a", "a-2"]  # stable: --resume relies on it


def test_plan_nothing_found(tmp_path):
    with pytest.raises(batch.BatchError, match="no videos found"):
        batch.plan([tmp_path / "nope.mp4"], tmp_path / "out")


def test_read_complete(tmp_path):
    assert batch.read_complete(tmp_path) is None
    (tmp_path / "poses.json").write_text("{}")  # today's run: no "complete" key
    assert batch.read_complete(tmp_path) is True
    (tmp_path / "poses.json").write_text('{"complete": false}')
    assert batch.read_complete(tmp_path) is False
    (tmp_path / "poses.json").write_text('{"complete": tr')  # cut short
    assert batch.read_complete(tmp_path) is None


# ----------------------------------------------------------------------------- injected runs (no models)


OPTS = RunOptions(det="det.onnx", pose="pose.onnx", device="cpu")


def fake_load(options, progress_callback=None, threads=None):
    return {"device": options.device, "callback": progress_callback}


def fake_process(pre, video, out_dir, options, stop=None):
    """Writes a 5-frame result (poses.json with the options, tiny pose.mp4 and face.mp4); the
    video's name says what happens: "boom" raises, "cut" leaves the outputs incomplete, "stop" is
    interrupted (Ctrl-C), "slow" beats the progress callback."""
    name = Path(video).stem
    if "boom" in name:
        raise RuntimeError("decoder exploded\n  (second line)")
    if "stop" in name:
        raise KeyboardInterrupt
    if "slow" in name:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "started").touch()
        for i in range(1000):
            if pre["callback"] is not None:
                pre["callback"]("frames", i, None)
            time.sleep(0.01)
    print("this is captured, not shown")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for part in ("pose", "face"):
        write_video(Path(out_dir) / f"{part}.mp4", [torch.zeros((5, 16, 16, 3), dtype=torch.uint8)], 5)
    doc = {"video": {"frames": 5}, "frames_done": 5, "complete": "cut" not in name, "options": options.record()}
    (Path(out_dir) / "poses.json").write_text(json.dumps(doc))
    return RunSummary(0 if doc["complete"] else 3, doc["complete"], 5, str(out_dir), reason=None if doc["complete"] else "cut")


def fake_records(tmp_path, names):
    for n in names:
        (tmp_path / "in" / f"{n}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"{n}.mp4").write_bytes(b"")
    return batch.plan([tmp_path / "in" / f"{n}.mp4" for n in names], tmp_path / "out")


def fake_job(tmp_path, **kw):
    kw = dict(dict(progress=False, log=lambda m: None), **kw)
    return batch.Job(tmp_path / "out", OPTS, process_video=fake_process, load_models=fake_load, **kw)


def run_fake(tmp_path, names, **kw):
    recs = fake_records(tmp_path, names)
    return batch.run_local(recs, fake_job(tmp_path), **kw)


def test_statuses_from_the_run(tmp_path, capsys):
    recs = run_fake(tmp_path, ["ok", "boom", "cut"])
    st = {r.name: r for r in recs}
    assert st["ok"].status == "ok" and st["ok"].frames == 5 and st["ok"].error is None
    assert st["boom"].status == "failed" and st["boom"].error == "decoder exploded (second line)"
    assert st["cut"].status == "incomplete"
    assert batch.exit_code(recs) == 1
    assert "captured" not in capsys.readouterr().out
    rep = report(tmp_path / "out")
    assert rep["counts"] == {"ok": 1, "failed": 1, "incomplete": 1} and rep["finished"] is True
    assert set(rep["videos"][0]) >= {"video", "status", "frames", "seconds", "error"}

    # --resume: the complete one is skipped, the failed and incomplete ones run again.
    again = batch.run_local(fake_records(tmp_path, ["ok", "boom", "cut"]), fake_job(tmp_path, resume=True))
    assert [r.status for r in again] == ["skipped", "failed", "incomplete"]
    assert again[0].frames == 5
    assert again[2].rerun.startswith("the earlier run is incomplete")


def test_inline_interrupt(tmp_path):
    recs = fake_records(tmp_path, ["one", "stop", "three"])
    with pytest.raises(KeyboardInterrupt):
        batch.run_local(recs, fake_job(tmp_path))
    rep = report(tmp_path / "out")
    assert [v["status"] for v in rep["videos"]] == ["ok", "incomplete", "pending"]
    assert rep["interrupted"] is True and rep["finished"] is False


def test_pool_failures_and_progress(tmp_path):
    """Two spawned workers (the injected functions unpickled there), a failing video among them."""
    recs = run_fake(tmp_path, ["p1", "boom", "p3", "cut"], workers=2)
    assert [r.status for r in recs] == ["ok", "failed", "ok", "incomplete"]
    assert report(tmp_path / "out")["workers"] == 2


_POOL_INTERRUPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_batch import fake_records, fake_job
from wanprep_torch import batch
from pathlib import Path
recs = fake_records(Path({tmp!r}), ["slow1", "slow2", "slow3", "slow4"])
print("planned", flush=True)
try:
    batch.run_local(recs, fake_job(Path({tmp!r})), workers=2)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_pool_ctrl_c(tmp_path):
    """Ctrl-C (SIGINT to the process group) stops the workers at their next progress beat: the
    running videos are marked incomplete, the rest pending, the report written."""
    code = _POOL_INTERRUPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    out = tmp_path / "out"
    t_end = time.time() + 60
    while len(list(out.glob("*/started"))) < 2 and time.time() < t_end and p.poll() is None:
        time.sleep(0.1)  # until both workers run a video
    os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, (stdout, stderr)
    st = [v["status"] for v in report(out)["videos"]]
    assert "incomplete" in st and "pending" in st, st
    assert set(st) <= {"ok", "incomplete", "pending"}


# ----------------------------------------------------------------------------- the command, real models


def test_batch_same_as_run(batch_clips, models, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(batch_args([batch_clips / "clips", batch_clips / "bad.mp4"], models, out))
    captured = capsys.readouterr()
    assert rc == 1  # bad.mp4 failed
    lines = captured.out.splitlines()
    assert any(line.startswith("ok") and " a-2: 12 frames" in line for line in lines), captured.out
    assert lines[-1].startswith("batch: 4 videos: 3 ok, 1 failed")
    rep = by_name(report(out))
    assert {n: v["status"] for n, v in rep.items()} == {"a": "ok", "b": "ok", "a-2": "ok", "bad": "failed"}
    assert rep["a-2"]["video"] == str(batch_clips / "clips" / "sub" / "a.mp4") and rep["a-2"]["frames"] == 12
    assert "not a readable video" in rep["bad"]["error"]
    for n in ("a", "b", "a-2"):
        assert {f.name for f in (out / n).iterdir()} >= {"pose.mp4", "face.mp4", "poses.json", "timings.txt"}

    # The same keypoints as `wanprep run` on each video (one Preprocessor served all three).
    for n, src in (("a-2", batch_clips / "clips" / "sub" / "a.mp4"), ("b", batch_clips / "clips" / "b.mp4")):
        single = tmp_path / f"run_{n}"
        assert cli.main(["run", str(src), "--det", str(models["det"]), "--pose", str(models["pose"]),
                         "--out", str(single), "--no-progress"]) == 0
        assert same_poses(out / n, single), n
    capsys.readouterr()

    # --resume: the three complete ones are skipped, bad.mp4 fails again; one made incomplete reruns.
    doc = json.loads((out / "b" / "poses.json").read_text())
    doc["complete"] = False
    (out / "b" / "poses.json").write_text(json.dumps(doc))
    rc = cli.main(batch_args([batch_clips / "clips", batch_clips / "bad.mp4"], models, out, "--resume"))
    assert rc == 1
    rep = by_name(report(out))
    assert {n: v["status"] for n, v in rep.items()} == {"a": "skipped", "b": "ok", "a-2": "skipped", "bad": "failed"}
    assert rep["a"]["frames"] == 10
    assert "skipped" in capsys.readouterr().out

    # All done: exit 0.
    assert cli.main(batch_args([batch_clips / "clips"], models, out, "--resume")) == 0


def test_batch_options_reach_the_run(batch_clips, models, tmp_path):
    out = tmp_path / "out"
    assert cli.main(batch_args([batch_clips / "clips" / "b.mp4"], models, out, "--width", "80", "--gate", "off")) == 0
    rep = json.loads((out / "b" / "poses.json").read_text())
    assert (rep["width"], rep["height"]) == (80, 48) and rep["video"]["gate"] == "off"
    assert all(rep["pose_ran"])


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--ray-address", "auto"], "--ray-address needs --engine ray"),
    ],
)
def test_usage_errors(batch_clips, models, tmp_path, capsys, extra, needle):
    assert cli.main(batch_args([batch_clips / "clips"], models, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wanprep: error: ") and needle in err and "\n" not in err


def test_usage_no_videos_and_missing_model(models, tmp_path, capsys):
    assert cli.main(batch_args([tmp_path / "nothing*.mp4"], models, tmp_path / "o")) == 2
    assert "no videos found" in capsys.readouterr().err
    args = batch_args([tmp_path], models, tmp_path / "o")
    args[args.index("--det") + 1] = str(tmp_path / "missing.onnx")
    assert cli.main(args) == 2
    assert "detector model file not found" in capsys.readouterr().err


def test_ray_missing_exits_2(batch_clips, models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert cli.main(batch_args([batch_clips / "clips"], models, tmp_path / "o", "--engine", "ray")) == 2
    err = capsys.readouterr().err
    assert 'pip install "wanprep_torch[ray]"' in err


def test_progress_display(tmp_path, capsys):
    """One bar (videos done / total, frames/s, ETA) on stderr; a line per finished video."""
    recs = fake_records(tmp_path, ["one", "two"])
    done = batch.run_local(recs, fake_job(tmp_path, progress=True, log=print))
    assert [r.status for r in done] == ["ok", "ok"]
    cap = capsys.readouterr()
    assert "videos" in cap.err and "frames/s" in cap.err and "2/2" in cap.err
    lines = [line for line in cap.out.splitlines() if line.strip()]
    assert lines[0].startswith("ok") and "one: 5 frames in" in lines[0] and "two" in lines[1]


@pytest.mark.slow
def test_batch_fp16_converts_once(batch_clips, models, tmp_path):
    pytest.importorskip("onnxconverter_common")
    out = tmp_path / "out"
    assert cli.main(batch_args([batch_clips / "clips" / "a.mp4", batch_clips / "clips" / "b.mp4"], models, out, "--fp16")) == 0
    # Converted once, into the user cache (conftest points WANPREP_CACHE at a test folder).
    converted = sorted(p.name for p in (Path(os.environ["WANPREP_CACHE"]) / "fp16").glob("*.onnx"))
    assert len(converted) == 2 and all(n.endswith(".fp16.onnx") for n in converted)
    assert not (out / ".models").exists()
    rep = report(out)
    assert rep["options"]["fp16"] is True and rep["options"]["det"].endswith(".fp16.onnx")
    assert not (out / "a" / ".models").exists()  # not converted again per video
