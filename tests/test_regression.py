"""Outputs on the test scenes stay what main gave before the core reshape (tests/data/regression.pt).

``gate="off"`` must match bit for bit: it is the full pipeline. The gated presets are in the
snapshot too, so a change to their decisions shows up here and is made on purpose.
"""

import pytest
import torch

from regression_scenes import SNAPSHOT, model_paths, scenes, summarise

SCENES = scenes()


@pytest.fixture(scope="module")
def paths(models, tmp_path_factory):
    return model_paths(models, tmp_path_factory.mktemp("regression"))


@pytest.fixture(scope="module")
def snapshot():
    return torch.load(SNAPSHOT, weights_only=False)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_outputs_equal_the_snapshot(name, paths, snapshot):
    from wanprep_torch import Preprocessor

    (det, pose), frames, opts = SCENES[name]
    got = summarise(Preprocessor(paths[det], paths[pose], progress=False, **opts)(frames))
    want = snapshot[name]
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, torch.Tensor):
            assert g.dtype == w.dtype and g.shape == w.shape, key
            assert torch.equal(g, w), f"{name}: {key} differs (max {(g.float() - w.float()).abs().max():.3g})"
        else:
            assert g == w, f"{name}: {key} differs"
