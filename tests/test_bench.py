"""Smoke test of scripts/bench.py on the tiny analytic models (a few seconds)."""
import re
from pathlib import Path

import pytest
from conftest import load_script



@pytest.fixture(scope="module")
def bench():
    return load_script("bench")


def test_tiny_suite_prints_ratio_stages_and_fresh_write(bench, models, tmp_path, capsys):
    (tmp_path / "tiny").symlink_to(Path(models["det"]).parent, target_is_directory=True)
    assert bench.main(["--suite", "tiny", "--frames", "2", "--repeats", "2", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^\| tiny analytic det \+ pose \| 2 \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) \|", out, re.M)
    assert row, out
    pipe_fps, model_fps, ratio = (float(row.group(i)) for i in (2, 3, 4))
    assert pipe_fps > 0 and model_fps > 0
    assert ratio == pytest.approx(model_fps / pipe_fps, rel=0.02)  # both from the best run of each
    stages = re.search(r"^\| tiny analytic det \+ pose((?: \| [\d.]+){8}) \|$", out, re.M)
    assert stages, out
    assert all(float(v) >= 0 for v in stages.group(1).split("|")[1:])
    fresh = re.search(r"face output took ([\d.]+) ms/frame", out)
    assert fresh and float(fresh.group(1)) > 0


def test_fresh_write_seconds_fills_a_new_tensor(bench):
    import torch

    like = torch.zeros(2, 8, 8, 3)
    assert bench.fresh_write_seconds(like) > 0
    assert float(like.abs().sum()) == 0  # the reference tensor itself is untouched
