"""Fixtures of the ComfyUI node tests: ComfyUI's modules stubbed (folder_paths, comfy.utils,
comfy.model_management), the loaded test models and a small clip. Test modules import them by
name (``from comfy_fixtures import ...``)."""

import sys
import types
from pathlib import Path

import pytest
import torch

from wanprep_torch import comfy as nodes


class Interrupted(Exception):
    pass


@pytest.fixture
def no_comfy(monkeypatch):
    """As outside ComfyUI: none of its modules importable."""
    for name in ("folder_paths", "comfy", "comfy.utils", "comfy.model_management"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes import fail
    monkeypatch.delenv(nodes.MODELS_ENV, raising=False)


@pytest.fixture
def fake_comfy(monkeypatch, models):
    models_dir = Path(models["det"]).parent
    fp = types.ModuleType("folder_paths")

    def get_filename_list(kind):
        assert kind == "detection"
        return sorted(p.name for p in models_dir.glob("*.onnx"))

    def get_full_path_or_raise(kind, name):
        p = models_dir / name
        if kind != "detection" or not p.is_file():
            raise FileNotFoundError(f"Model in folder '{kind}' with filename '{name}' not found.")
        return str(p)

    fp.get_filename_list = get_filename_list
    fp.get_full_path_or_raise = get_full_path_or_raise

    state = types.SimpleNamespace(bars=[], interrupt=False, checks=0)

    class ProgressBar:
        def __init__(self, total):
            self.total = total
            self.updates = []
            state.bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.updates.append(value)

    def throw_exception_if_processing_interrupted():
        state.checks += 1
        if state.interrupt:
            raise Interrupted("Processing interrupted")

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    comfy.utils, comfy.model_management = utils, mm
    for name, mod in (("folder_paths", fp), ("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, mod)
    return state


@pytest.fixture
def loaded(fake_comfy, models):
    (model,) = nodes.OnnxDetectionModelLoader().loadmodel(models["pose"].name, models["det"].name, "CPUExecutionProvider")
    return model


@pytest.fixture(scope="module")
def images():
    from wanprep_torch.testkit import make_clip

    return make_clip(6, H=240, W=416, seed=3).frames  # ComfyUI IMAGE: (T, H, W, 3) float in [0, 1]
