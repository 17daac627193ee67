"""`wanprep doctor`: providers judged by a session that runs (fakes for the ones this machine
lacks), torch devices, ONNX Runtime distributions side by side, and the advice."""

import importlib.metadata
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from wanprep_torch import cli, doctor


class FakeOrt:
    """onnxruntime as a machine with ``listed`` providers, of which ``broken`` fall back to the
    CPU when a session asks for them (libraries that do not load) and ``failing`` raise."""

    def __init__(self, listed, broken=(), failing=()):
        self.listed, self.broken, self.failing = list(listed), set(broken), set(failing)
        self.sessions = []
        ort = self

        class Session:
            def __init__(self, model, opts, providers):
                assert isinstance(model, bytes) and len(providers) == 1
                ort.sessions.append(providers[0])
                if providers[0] in ort.failing:
                    raise RuntimeError("provider bridge failed\nlibnvinfer.so.10: cannot open shared object file")
                self.providers = ["CPUExecutionProvider"] if providers[0] in ort.broken else [providers[0], "CPUExecutionProvider"]

            def get_providers(self):
                return self.providers

            def run(self, outputs, feeds):
                return [feeds["x"] * 2]

        self.InferenceSession = Session
        self.SessionOptions = lambda: SimpleNamespace(log_severity_level=2)

    def get_available_providers(self):
        return self.listed


def fake_torch(cuda: bool):
    return SimpleNamespace(
        __version__="2.5.1+cu124" if cuda else "2.5.1+cpu",
        version=SimpleNamespace(cuda="12.4" if cuda else None),
        cuda=SimpleNamespace(is_available=lambda: cuda, device_count=lambda: 1, get_device_name=lambda i: "NVIDIA H100"),
        backends=SimpleNamespace(),
    )


def fake_versions(installed: dict):
    def version(name):
        if name in installed:
            return installed[name]
        raise importlib.metadata.PackageNotFoundError(name)
    return version


BASE = {"torch": "2.5.1", "numpy": "2.1", "onnx": "1.17", "kornia": "0.8", "av": "14", "huggingface_hub": "0.26",
        "onnxconverter-common": "1.14", "tqdm": "4", "pillow": "11"}


def report(tmp_path, ort, torch, dists):
    return doctor.diagnose(ort=ort, torch=torch, version=fake_versions(dict(BASE, **dists)), models_dir=tmp_path)


def test_this_machine_cpu_provider_runs():
    checks = doctor.probe_providers()
    cpu = next(p for p in checks if p.name == "CPUExecutionProvider")
    assert cpu.usable and cpu.detail.startswith("ran")


def test_listed_but_not_loading_is_not_usable(tmp_path):
    ort = FakeOrt(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                  broken={"CUDAExecutionProvider"}, failing={"TensorrtExecutionProvider"})
    rep = report(tmp_path, ort, fake_torch(True), {"onnxruntime-gpu": "1.20.1"})
    by = {p.name: p for p in rep.providers}
    assert ort.sessions == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert not by["CUDAExecutionProvider"].usable and "fell back to CPUExecutionProvider" in by["CUDAExecutionProvider"].detail
    assert not by["TensorrtExecutionProvider"].usable and "libnvinfer" in by["TensorrtExecutionProvider"].detail
    assert "\n" not in by["TensorrtExecutionProvider"].detail
    assert by["CPUExecutionProvider"].usable
    assert rep.versions["onnxruntime"] == "1.20.1 (onnxruntime-gpu)"
    assert any("CUDA provider does not load" in t and "12.4" in t for t in rep.advice)
    assert not any("GPU ready" in t for t in rep.advice)
    text = doctor.format_report(rep)
    assert "CUDAExecutionProvider" in text and "NOT usable" in text and "cuda:0 (NVIDIA H100)" in text


def test_side_by_side_distributions(tmp_path):
    ort = FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"])
    rep = report(tmp_path, ort, fake_torch(True), {"onnxruntime": "1.20.1", "onnxruntime-gpu": "1.20.1"})
    assert rep.ort_distributions == ["onnxruntime", "onnxruntime-gpu"]
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in rep.advice[0]
    assert any("GPU ready" in t for t in rep.advice)


def test_gpu_torch_with_the_cpu_distribution(tmp_path):
    rep = report(tmp_path, FakeOrt(["CPUExecutionProvider"]), fake_torch(True), {"onnxruntime": "1.20.1"})
    assert any("pip uninstall -y onnxruntime && pip install onnxruntime-gpu" in t for t in rep.advice)
    assert any("CPU only" in t and "--fp16" in t for t in rep.advice)


def test_cpu_machine_advice_and_missing_packages(tmp_path):
    versions = {k: v for k, v in BASE.items() if k not in ("av", "huggingface_hub")}
    rep = doctor.diagnose(ort=FakeOrt(["CPUExecutionProvider"]), torch=fake_torch(False),
                          version=fake_versions(dict(versions, onnxruntime="1.20.1")), models_dir=tmp_path)
    assert rep.torch.devices == ("cpu",) and rep.torch.cuda_build is None
    assert any("CPU only" in t for t in rep.advice)
    assert any(t.startswith("av is not installed") for t in rep.advice)
    assert any(t.startswith("huggingface_hub is not installed") for t in rep.advice)
    assert any("wanprep models download yolov10m vitpose-l" in t for t in rep.advice)


def test_cuda_provider_with_cpu_torch(tmp_path):
    rep = report(tmp_path, FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"]), fake_torch(False),
                 {"onnxruntime-gpu": "1.20.1"})
    assert any("this torch is a CPU build" in t for t in rep.advice)


def test_doctor_command_json(tmp_path, monkeypatch, capsys):
    """The command probes the onnxruntime module it imports and the installed distributions."""
    fake = FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"], broken={"CUDAExecutionProvider"})
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(importlib.metadata, "version", fake_versions(dict(BASE, onnxruntime="1.20", **{"onnxruntime-gpu": "1.20"})))
    assert cli.main(["doctor", "--json", "--models-dir", str(tmp_path)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ort_distributions"] == ["onnxruntime", "onnxruntime-gpu"]
    assert [(p["name"], p["usable"]) for p in rep["providers"]] == [("CUDAExecutionProvider", False), ("CPUExecutionProvider", True)]
    assert rep["models_dir"] == str(tmp_path) and rep["models"] == {"yolov10m": False, "vitpose-l": False, "vitpose-h": False}
    assert "side by side" in rep["advice"][0]
