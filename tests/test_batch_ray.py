"""`wanprep batch --engine ray`: a Ray Data job on a local instance (ray.init(num_cpus=2), the
CPU, the tiny test models and clips), compared with the local engine; the actor pool's sizing
from the cluster's resources. Skipped with a reason where Ray is not installed (the `ray` extra;
the `test` extra installs it, so CI runs these)."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("ray", reason='Ray is not installed: pip install "wanprep_torch[ray]"')
pytest.importorskip("ray.data", reason='Ray Data needs pandas and pyarrow: pip install "wanprep_torch[ray]"')

from wanprep_torch import batch, cli  # noqa: E402
from wanprep_torch.batch import rayengine  # noqa: E402
from wanprep_torch.runner import RunOptions  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def batch_args(inputs, models, out, *extra):
    return ["batch", *map(str, inputs), "--det", str(models["det"]), "--pose", str(models["pose"]),
            "--out", str(out), "--no-progress", *extra]


def statuses(out) -> dict:
    rep = json.loads((Path(out) / "batch.json").read_text())
    return {v["name"]: (v["video"], v["status"], v["frames"]) for v in rep["videos"]}


def poses(out, name) -> dict:
    rep = json.loads((Path(out) / name / "poses.json").read_text())
    return {k: rep[k] for k in ("pose_metas", "bboxes", "face_bboxes", "face_held", "det_ran", "pose_ran")}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance on 2 CPUs (its workers import this checkout's wanprep_torch)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=rayengine.local_runtime_env())
    yield ray
    ray.shutdown()


def test_ray_engine_matches_local(local_ray, batch_clips, models, tmp_path, capsys):
    inputs = [batch_clips / "clips", batch_clips / "bad.mp4"]
    assert cli.main(batch_args(inputs, models, tmp_path / "local")) == 1
    assert cli.main(batch_args(inputs, models, tmp_path / "ray", "--engine", "ray")) == 1
    out = capsys.readouterr().out
    assert "batch: 4 videos: 3 ok, 1 failed" in out

    rep = json.loads((tmp_path / "ray" / "batch.json").read_text())
    assert rep["engine"] == "ray" and rep["workers"] == 1 and rep["ray_address"] == "existing"
    # The same records (bar timings) and the same outputs.
    assert statuses(tmp_path / "ray") == statuses(tmp_path / "local")
    for name in ("a", "b", "a-2"):
        assert poses(tmp_path / "ray", name) == poses(tmp_path / "local", name), name
        assert (tmp_path / "ray" / name / "pose.mp4").is_file() and (tmp_path / "ray" / name / "face.mp4").is_file()
    bad = next(v for v in rep["videos"] if v["name"] == "bad")
    assert "not a readable video" in bad["error"]

    # --resume through Ray: the complete ones are skipped.
    assert cli.main(batch_args(inputs, models, tmp_path / "ray", "--engine", "ray", "--resume")) == 1
    st = statuses(tmp_path / "ray")
    assert [st[n][1] for n in ("a", "b", "a-2", "bad")] == ["skipped", "skipped", "skipped", "failed"]


class _FakeRay:
    def __init__(self, resources, nodes):
        self.resources, self._nodes = resources, nodes

    def cluster_resources(self):
        return self.resources

    def nodes(self):
        return [{"Alive": True, "Resources": r} for r in self._nodes]


def test_ray_pool_sizing(monkeypatch):
    import wanprep_torch.runtime as runtime

    monkeypatch.setattr(runtime, "physical_cores", lambda: 8)
    gpus = _FakeRay({"CPU": 64, "GPU": 4}, [{"CPU": 32, "GPU": 2}, {"CPU": 32, "GPU": 2}])
    assert rayengine.ray_pool(gpus, None, None, 100) == ("cuda", 4, 1, 1, None)  # one actor per GPU
    assert rayengine.ray_pool(gpus, None, None, 3).actors == 3  # no more actors than videos
    assert rayengine.ray_pool(gpus, "cpu", None, 100).device == "cpu"
    assert rayengine.ray_pool(gpus, "cuda", 8, 100)[1:4] == (8, 0.5, 1)  # 2 actors a GPU

    cpus = _FakeRay({"CPU": 48}, [{"CPU": 16}, {"CPU": 32}])
    assert rayengine.ray_pool(cpus, None, None, 100) == ("cpu", 6, 0, 8, 8)  # 2 + 4 actors of 8 cores
    assert rayengine.ray_pool(cpus, None, 12, 100)[1:4] == (12, 0, 4)  # --workers 12: 4 CPUs each
    with pytest.raises(batch.BatchError, match="no GPUs"):
        rayengine.ray_pool(cpus, "cuda", None, 100)


def test_devices_flag_is_local_only(batch_clips, models, tmp_path, capsys):
    rc = cli.main(batch_args([batch_clips / "clips"], models, tmp_path / "o", "--engine", "ray", "--devices", "cuda:0"))
    assert rc == 2 and "--devices is for --engine local" in capsys.readouterr().err


def ray_fake_load(options, progress_callback=None, threads=None):
    return {"device": options.device}


def ray_fake_process(pre, video, out_dir, options, stop=None):
    """A "slow" video takes 8 s, the others return at once (no models, no outputs)."""
    import time as _time

    from wanprep_torch.runner import RunSummary

    if "slow" in Path(video).stem:
        _time.sleep(8)
    return RunSummary(0, True, 3, str(out_dir))


def test_ray_reports_each_video_as_it_finishes(local_ray, tmp_path):
    """Two actors, a slow video and a quick one: the quick one's line comes long before the
    batch ends (not all at once at the end)."""
    import time

    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    for n in ("slow", "quick"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{n}.mp4").write_bytes(b"")
    recs = batch.plan([tmp_path / "in" / "slow.mp4", tmp_path / "in" / "quick.mp4"], tmp_path / "out")
    lines = []
    job = batch.Job(tmp_path / "out", RunOptions("d.onnx", "p.onnx", device="cpu"), progress=False,
                    log=lambda m: lines.append((time.monotonic(), m)), load_models=ray_fake_load, process_video=ray_fake_process)
    t0 = time.monotonic()
    done = batch.run_ray(recs, job, workers=2)
    t_end = time.monotonic()
    assert [r.status for r in done] == ["ok", "ok"]
    quick = next(t for t, m in lines if "quick" in m)
    assert t_end - quick > 4, (quick - t0, t_end - t0)
