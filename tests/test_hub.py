"""`wanprep models` and wanprep_torch.hub: the registry, downloads (hub call faked with the test
kit's models, no network), the model check, and one-line errors with their exit codes."""

import argparse
import shutil
import sys
from pathlib import Path

import onnx
import pytest

from wanprep_torch import cli, hub

huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def hub_repos(models, tmp_path_factory):
    """{(repo_id, filename): local file}: what the fake hub serves. ViTPose-H comes as the real
    one does, an .onnx whose weights are in vitpose_h_wholebody_data.bin beside it."""
    d = tmp_path_factory.mktemp("hub_src")
    ext = d / "vitpose_h_wholebody_model.onnx"
    onnx.save_model(onnx.load(str(models["pose"])), str(ext), save_as_external_data=True,
                    location="vitpose_h_wholebody_data.bin", size_threshold=1024)
    return {
        ("Wan-AI/Wan2.2-Animate-14B", "process_checkpoint/det/yolov10m.onnx"): models["det"],
        ("JunkyByte/easy_ViTPose", "onnx/wholebody/vitpose-l-wholebody.onnx"): models["pose"],
        ("Kijai/vitpose_comfy", "onnx/vitpose_h_wholebody_model.onnx"): ext,
        ("Kijai/vitpose_comfy", "onnx/vitpose_h_wholebody_data.bin"): d / "vitpose_h_wholebody_data.bin",
    }


@pytest.fixture
def fake_hub(hub_repos, monkeypatch):
    """Replaces huggingface_hub.hf_hub_download with a copy from hub_repos; records the calls."""
    calls = []

    def fake(repo_id, filename, *, local_dir=None, force_download=False, **kw):
        calls.append(dict(repo_id=repo_id, filename=filename, local_dir=local_dir, force_download=force_download))
        if (repo_id, filename) not in hub_repos:
            raise huggingface_hub.errors.EntryNotFoundError(f"404: {filename} not in {repo_id}")
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        if force_download or not dst.exists():
            shutil.copyfile(hub_repos[repo_id, filename], dst)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def check_error(capsys, rc, code, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("wanprep: error: ")
    for n in needles:
        assert n in err, err


def test_registry_names_the_sources():
    assert set(hub.MODELS) == {"yolov10m", "vitpose-l", "vitpose-h"}
    assert hub.MODELS["yolov10m"].repo_id == "Wan-AI/Wan2.2-Animate-14B"
    assert hub.MODELS["vitpose-h"].files == ("onnx/vitpose_h_wholebody_model.onnx", "onnx/vitpose_h_wholebody_data.bin")
    assert [m.role for m in hub.MODELS.values()] == ["detector", "pose", "pose"]


def test_models_lists_without_huggingface_hub(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # listing needs no hub client
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for m in hub.MODELS.values():
        assert m.name in out and m.repo_id in out and all(f in out for f in m.files)
    assert "wanprep models download" in out
    assert cli.main(["models", "list"]) == 0


def test_download_and_check(fake_hub, tmp_path, capsys):
    to = tmp_path / "m"
    assert cli.main(["models", "download", "yolov10m", "vitpose-h", "--to", str(to)]) == 0
    out = capsys.readouterr().out
    det = to / "process_checkpoint/det/yolov10m.onnx"
    pose = to / "onnx/vitpose_h_wholebody_model.onnx"
    assert det.is_file() and pose.is_file() and (to / "onnx/vitpose_h_wholebody_data.bin").is_file()
    assert f"yolov10m (detector): {det}: images [?, 3, 640, 640]" in out
    assert f"vitpose-h (pose): {pose}: input [?, 3, 256, 192] float32 -> heatmaps [?, 133, 64, 48]" in out
    assert f"run with: wanprep run VIDEO --det yolov10m --pose vitpose-h --models-dir {to} --out out" in out
    # huggingface_hub does the resuming: every file goes through it with local_dir, not forced.
    assert [c["filename"] for c in fake_hub] == [
        "process_checkpoint/det/yolov10m.onnx", "onnx/vitpose_h_wholebody_model.onnx", "onnx/vitpose_h_wholebody_data.bin"]
    assert all(c["local_dir"] == str(to) and c["force_download"] is False for c in fake_hub)


def test_download_again_and_force(fake_hub, tmp_path, capsys):
    to = tmp_path / "m"
    got = hub.download(["vitpose-l"], to)
    assert got[0].path == to / "onnx/wholebody/vitpose-l-wholebody.onnx" and got[0].signature
    got[0].path.write_bytes(b"half a file")  # e.g. damaged after the download
    assert cli.main(["models", "download", "vitpose-l", "--to", str(to)]) == 5  # still there: not fetched again
    check_error(capsys, 5, 5, "vitpose-l", "fails the pose check")
    assert cli.main(["models", "download", "vitpose-l", "--to", str(to), "--force"]) == 0
    assert fake_hub[-1]["force_download"] is True
    assert "(not checked)" not in capsys.readouterr().out


def test_download_no_check(fake_hub, tmp_path, capsys):
    assert cli.main(["models", "download", "vitpose-l", "--to", str(tmp_path), "--no-check"]) == 0
    assert "(not checked)" in capsys.readouterr().out


def test_unknown_name_fetches_nothing(fake_hub, tmp_path, capsys):
    rc = cli.main(["models", "download", "yolov10m", "vitpose", "--to", str(tmp_path / "m")])
    check_error(capsys, rc, 2, "unknown model 'vitpose'", "vitpose-l", "vitpose-h")
    assert fake_hub == [] and not (tmp_path / "m").exists()


def test_missing_huggingface_hub(fake_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    rc = cli.main(["models", "download", "yolov10m", "--to", str(tmp_path / "m")])
    check_error(capsys, rc, 2, "huggingface_hub", "pip install 'wanprep_torch[hub]'")
    assert not (tmp_path / "m").exists()


def test_destination_is_a_file(fake_hub, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc = cli.main(["models", "download", "yolov10m", "--to", str(f)])
    check_error(capsys, rc, 2, "is a file, not a folder")
    assert fake_hub == []


@pytest.mark.parametrize("error", ["offline", "missing"])
def test_network_failure(fake_hub, tmp_path, capsys, monkeypatch, error):
    def fail(repo_id, filename, **kw):
        if error == "offline":
            raise huggingface_hub.errors.LocalEntryNotFoundError(
                "An error happened while trying to locate the file on the Hub and we cannot find the\n"
                "requested files in the local cache. Please check your connection and try again.")
        raise huggingface_hub.errors.RepositoryNotFoundError("404 Client Error.\n\nRepository Not Found")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    rc = cli.main(["models", "download", "vitpose-l", "--to", str(tmp_path)])
    check_error(capsys, rc, 4, "cannot download onnx/wholebody/vitpose-l-wholebody.onnx from JunkyByte/easy_ViTPose")


def test_wrong_kind_fails_the_check(hub_repos, fake_hub, models, tmp_path, capsys, monkeypatch):
    # The detector's name serving a pose model (a repository that changed under us).
    monkeypatch.setitem(hub_repos, ("Wan-AI/Wan2.2-Animate-14B", "process_checkpoint/det/yolov10m.onnx"), models["pose"])
    rc = cli.main(["models", "download", "yolov10m", "--to", str(tmp_path)])
    check_error(capsys, rc, 5, "yolov10m", "is not a person detector", "looks like a pose model")
    with pytest.raises(hub.CheckError):
        hub.download(["yolov10m"], tmp_path)


def test_every_models_option_has_help():
    sub = argparse.ArgumentParser().add_subparsers()
    cli._add_models_parser(sub)
    parsers = [sub.choices["models"]]
    parsers += list(parsers[0]._subparsers._group_actions[0].choices.values())
    for p in parsers:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, (p.prog, action.dest)


def test_models_subprocess_error_is_one_line(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "wanprep_torch", "models", "download", "nope", "--to", str(tmp_path)],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown model 'nope'" in r.stderr, r.stderr


def test_interrupted_download(fake_hub, tmp_path, capsys, monkeypatch):
    def interrupted(repo_id, filename, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    rc = cli.main(["models", "download", "vitpose-l", "--to", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 130 and "run the same command again to resume" in err and "Traceback" not in err
