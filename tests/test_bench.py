"""Smoke test of scripts/bench.py on the tiny analytic models (a few seconds)."""
import re
import statistics
from pathlib import Path

import pytest
from conftest import load_script

NUM = r"([\d.]+) \(([\d.-]+)-([\d.]+)\)"  # median (min-max)


@pytest.fixture(scope="module")
def bench():
    return load_script("bench")


@pytest.mark.slow
def test_tiny_suite_prints_wall_time_ratio_spread_and_stages(bench, models, tmp_path, capsys):
    (tmp_path / "tiny").symlink_to(Path(models["det"]).parent, target_is_directory=True)
    assert bench.main(["--suite", "tiny", "--frames", "2", "--repeats", "3", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^\| tiny analytic det \+ pose \| 2 \| 1 \| 3 \| " + r" \| ".join([NUM] * 6) + r" \|$", out, re.M)
    assert row, out
    v = [float(x) for x in row.groups()]
    pipe, model, ratio, overhead, stages_total, outside = (v[i : i + 3] for i in range(0, 18, 3))
    for med, lo, hi in (pipe, model, ratio, stages_total):
        assert 0 < lo <= med <= hi
    assert stages_total[0] <= pipe[0] and outside[1] >= 0  # the stage timers run inside the wall time
    pairs = re.search(r"pipeline / model-only of each pair, in run order: ([\d., ]+)$", out, re.M)
    pairs = [float(x) for x in pairs.group(1).split(",")]
    assert len(pairs) == 3 and ratio[0] == pytest.approx(statistics.median(pairs), abs=1e-3)
    assert (ratio[1], ratio[2]) == pytest.approx((min(pairs), max(pairs)), abs=1e-3)
    stages = re.search(r"^\| tiny analytic det \+ pose((?: \| [\d.]+){9}) \|$", out, re.M)
    assert stages, out
    assert all(float(x) > 0 for x in stages.group(1).split("|")[1:])  # every stage did work
    fresh = re.search(r"face output took ([\d.]+) ms/frame", out)
    assert fresh and float(fresh.group(1)) > 0
    # The models alone in ORT-default sessions, and the pipeline with spin + stop sessions.
    spin = re.search(r"^\| tiny analytic det \+ pose \| " + r" \| ".join([NUM] * 4) + r" \|$", out, re.M)
    assert spin, out
    w = [float(x) for x in spin.groups()]
    for med, lo, hi in (w[0:3], w[3:6], w[6:9], w[9:12]):
        assert 0 < lo <= med <= hi


def test_model_only_replays_the_pipelines_own_calls(bench, models, clip):
    """Model-only = the model calls the pipeline made, recorded with their arguments (batch size,
    output buffer) and replayed: every frame through each model once, the spies removed after."""
    from wanprep_torch import Preprocessor

    pre = Preprocessor(models["det"], models["pose"], progress=False, gate="off")
    calls = bench.record_model_calls(pre, clip.frames[:3])
    assert "run" not in vars(pre.detector.model) and "run" not in vars(pre.estimator.model)  # the spies are gone
    assert [m.role for m, *_ in calls].count("detector") >= 1 and [m.role for m, *_ in calls].count("pose") >= 1
    assert sum(x.shape[0] for m, x, *_ in calls if m is pre.estimator.model) == 3
    assert sum(x.shape[0] for m, x, *_ in calls if m is pre.detector.model) == 3
    assert bench.model_only(calls) > 0


def test_fresh_write_seconds_fills_a_new_tensor(bench):
    import torch

    like = torch.zeros(2, 8, 8, 3)
    assert bench.fresh_write_seconds(like) > 0
    assert float(like.abs().sum()) == 0  # the reference tensor itself is untouched
