"""What this machine can run: `wanprep doctor`.

Versions of the packages wanprep uses; the ONNX Runtime execution providers that really work
(each one opens a tiny model in a session of its own and runs it: a provider that is listed
but whose libraries do not load falls back to the CPU, which ``session.get_providers()``
shows); the devices torch sees; ONNX Runtime distributions installed side by side (they share
one ``onnxruntime`` module folder, so the last one installed wins and removing either breaks
the other); the models in the models folder; and the advice that follows from these facts.

Every probe takes its module or lookup as an argument (the real one by default), so the tests
give it fakes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

__all__ = [
    "PACKAGES",
    "ORT_DISTRIBUTIONS",
    "ProviderCheck",
    "TorchInfo",
    "Report",
    "package_versions",
    "ort_distributions",
    "probe_providers",
    "torch_info",
    "advise",
    "diagnose",
    "format_report",
]

# distribution name -> what it is for (versions shown; the first three are needed)
PACKAGES = {
    "torch": "tensors",
    "onnxruntime": "the models",
    "numpy": "host glue",
    "onnx": "model files",
    "kornia": "the pose crop",
    "av": "video files (wanprep run)",
    "huggingface_hub": "wanprep models download",
    "onnxconverter-common": "--fp16",
    "tqdm": "progress bars",
    "pillow": "demo images",
}

# Distributions that all install the same `onnxruntime` module.
ORT_DISTRIBUTIONS = (
    "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-rocm",
    "onnxruntime-qnn", "onnxruntime-silicon", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu",
)

VersionLookup = Callable[[str], str]  # importlib.metadata.version: raises PackageNotFoundError


@dataclass(frozen=True)
class ProviderCheck:
    """One ONNX Runtime execution provider, tried on a tiny model."""

    name: str
    usable: bool
    detail: str  # "ran", or why not


@dataclass(frozen=True)
class TorchInfo:
    version: str | None
    cuda_build: str | None  # torch.version.cuda: None on a CPU build
    cuda_available: bool
    devices: tuple[str, ...]  # "cpu", "cuda:0 (NVIDIA H100 ...)", "mps"
    error: str | None = None


@dataclass
class Report:
    python: str
    platform: str
    versions: dict  # distribution -> version or None
    ort_distributions: list
    providers: list  # ProviderCheck
    torch: TorchInfo
    models_dir: str
    models: dict  # catalogue name -> downloaded?
    advice: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _version_or_none(name: str, version: VersionLookup) -> str | None:
    try:
        return version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(version: VersionLookup = importlib.metadata.version) -> dict:
    """{distribution: version or None} for :data:`PACKAGES`; onnxruntime is whichever
    distribution provides it."""
    out = {name: _version_or_none(name, version) for name in PACKAGES}
    if out["onnxruntime"] is None:
        for alt in ORT_DISTRIBUTIONS[1:]:
            v = _version_or_none(alt, version)
            if v is not None:
                out["onnxruntime"] = f"{v} ({alt})"
                break
    return out


def ort_distributions(version: VersionLookup = importlib.metadata.version) -> list[str]:
    """The ONNX Runtime distributions installed (more than one is a conflict)."""
    return [name for name in ORT_DISTRIBUTIONS if _version_or_none(name, version) is not None]


def _tiny_model() -> bytes:
    """y = x + x on a float tensor of 4: an op every provider has."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # loadable by older ONNX Runtime releases too
    return model.SerializeToString()


def probe_providers(ort=None) -> list[ProviderCheck]:
    """Try every provider ONNX Runtime lists: a session of its own on a tiny model, run once.

    Usable means the session kept the provider (``get_providers()``) and ran: a provider whose
    libraries fail to load is silently replaced by the CPU one.
    """
    if ort is None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return [ProviderCheck("onnxruntime", False, f"cannot import onnxruntime: {exc}")]
    import numpy as np

    model = _tiny_model()
    out = []
    for name in ort.get_available_providers():
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3  # the fallback warning is what this reports
            sess = ort.InferenceSession(model, opts, providers=[name])
            kept = list(sess.get_providers())
            if name not in kept:
                out.append(ProviderCheck(name, False, f"listed, but the session fell back to {', '.join(kept) or 'nothing'} "
                                                      "(its libraries did not load)"))
                continue
            y = sess.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
            ok = np.allclose(y, np.arange(4, dtype=np.float32) * 2)
            out.append(ProviderCheck(name, bool(ok), f"ran (session providers: {', '.join(kept)})" if ok
                                     else f"ran but returned {y.tolist()}"))
        except Exception as exc:  # a provider that cannot even start: its message, one line
            out.append(ProviderCheck(name, False, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]))
    return out


def torch_info(torch=None) -> TorchInfo:
    """torch's version, CUDA build and the devices it sees."""
    try:
        if torch is None:
            import torch
        devices = ["cpu"]
        available = bool(torch.cuda.is_available())
        if available:
            for i in range(torch.cuda.device_count()):
                devices.append(f"cuda:{i} ({torch.cuda.get_device_name(i)})")
        mps = getattr(getattr(torch, "backends", None), "mps", None)
        if mps is not None and mps.is_available():
            devices.append("mps")
        return TorchInfo(str(torch.__version__), getattr(torch.version, "cuda", None), available, tuple(devices))
    except Exception as exc:  # not installed, or broken
        return TorchInfo(None, None, False, (), error=" ".join(f"{type(exc).__name__}: {exc}".split()))


def _usable(providers: list[ProviderCheck], name: str) -> bool:
    return any(p.name == name and p.usable for p in providers)


def advise(report: Report) -> list[str]:
    """What to do, from the facts in ``report`` (most important first)."""
    tips = []
    t, dists, prov = report.torch, report.ort_distributions, report.providers
    cuda_ep = _usable(prov, "CUDAExecutionProvider")
    listed_cuda = any(p.name == "CUDAExecutionProvider" for p in prov)
    if len(dists) > 1:
        keep = "onnxruntime-gpu" if t.cuda_available else "onnxruntime"
        tips.append(f"{' and '.join(dists)} are installed side by side: they share one onnxruntime folder, so the "
                    f"last one installed wins and removing one breaks the other. Fix: pip uninstall -y {' '.join(dists)} "
                    f"&& pip install {keep}")
    if t.version is None:
        tips.append(f"torch does not import ({t.error}): install the torch build for this machine first")
    if not dists:
        tips.append("ONNX Runtime is not installed: pip install onnxruntime (or onnxruntime-gpu on an NVIDIA GPU)")
    if t.cuda_available and not cuda_ep:
        if listed_cuda:
            tips.append("torch sees a GPU, but ONNX Runtime's CUDA provider does not load: onnxruntime-gpu needs the "
                        "CUDA and cuDNN versions it was built for (onnxruntime.ai, CUDA execution provider "
                        "requirements); match it to torch's CUDA " + str(t.cuda_build))
        elif len(dists) <= 1:
            tips.append("torch sees a GPU but this ONNX Runtime has no CUDA provider: "
                        "pip uninstall -y onnxruntime && pip install onnxruntime-gpu")
    if cuda_ep and t.cuda_available:
        tips.append("GPU ready: run with --device cuda; --fp16 halves the models' memory and speeds them up there")
    elif cuda_ep and not t.cuda_available and t.version is not None:
        tips.append("ONNX Runtime can use CUDA but this torch is a CPU build: frames would stay on the CPU; "
                    "install a CUDA build of torch for --device cuda")
    if not (cuda_ep and t.cuda_available):
        tips.append("CPU only: run with --device cpu (the default) and without --fp16: ONNX Runtime's CPU kernels "
                    "compute most FP16 ops through float32 casts, so FP16 models run slower there")
    for dist, what in (("av", "reading videos (wanprep run): pip install av"),
                       ("huggingface_hub", "downloading models: pip install huggingface_hub"),
                       ("onnxconverter-common", "--fp16: pip install onnxconverter-common")):
        if report.versions.get(dist) is None:
            tips.append(f"{dist} is not installed; needed for {what}")
    if report.models and not any(report.models.values()):
        tips.append("no model downloaded yet: wanprep models download yolov10m vitpose-l")
    return tips


def diagnose(*, ort=None, torch=None, version: VersionLookup | None = None, models_dir=None) -> Report:
    """Run every probe (torch first: importing it loads the CUDA libraries that ONNX Runtime's
    CUDA provider can then use, as in a real run) and add the advice. ``version`` defaults to
    ``importlib.metadata.version`` looked up at call time."""
    from . import hub, paths

    version = version or importlib.metadata.version

    tinfo = torch_info(torch)
    folder = paths.models_dir(models_dir)
    models = {name: all((Path(folder) / f).is_file() for f in m.files) for name, m in hub.MODELS.items()}
    report = Report(
        python=sys.version.split()[0],
        platform=platform.platform(),
        versions=package_versions(version),
        ort_distributions=ort_distributions(version),
        providers=probe_providers(ort),
        torch=tinfo,
        models_dir=str(folder),
        models=models,
    )
    report.advice = advise(report)
    return report


def format_report(report: Report, as_json: bool = False) -> str:
    """The report as text (or JSON)."""
    if as_json:
        return json.dumps(report.to_json(), indent=1)
    lines = [f"{'python':<22}{report.python} ({report.platform})"]
    for name, v in report.versions.items():
        lines.append(f"{name:<22}{v or 'not installed':<16}{PACKAGES[name]}")
    lines.append("")
    lines.append(f"ONNX Runtime distributions installed: {', '.join(report.ort_distributions) or 'none'}")
    lines.append("ONNX Runtime providers (a tiny model run on each):")
    for p in report.providers:
        lines.append(f"  {p.name:<30}{'usable' if p.usable else 'NOT usable'}: {p.detail}")
    t = report.torch
    if t.version is None:
        lines.append(f"torch: {t.error}")
    else:
        lines.append(f"torch {t.version}, CUDA build {t.cuda_build or 'none (CPU build)'}; devices: {', '.join(t.devices)}")
    have = [n for n, ok in report.models.items() if ok]
    lines.append(f"models folder {report.models_dir}: {', '.join(have) or 'nothing downloaded'}")
    lines.append("")
    lines.append("advice:")
    lines += [f"  - {tip}" for tip in report.advice]
    return "\n".join(lines)
