"""The repository as ComfyUI users install it: a plain clone in custom_nodes/ (no pip install of
the project), loaded the way ComfyUI's nodes.py ``load_custom_node`` loads a folder, in a fresh
interpreter where ``wanprep_torch`` is not importable; plus requirements.txt and the Comfy
Registry metadata."""

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run with `python -I -S`: no site module, so no .pth file runs and an editable install of the
# project (a .pth finder) is invisible; the dependencies' site-packages folders are put on
# sys.path by hand. ComfyUI's loader is mirrored: sys.modules[name] is set before exec_module.
CHILD = r'''
import importlib.util, json, os, sys
custom_node, naming, models_dir, clip_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
sys.path.extend(json.loads(sys.argv[4]))
assert importlib.util.find_spec("wanprep_torch") is None, "wanprep_torch importable before the load"
path_before = list(sys.path)

# ComfyUI's nodes.py: older versions name the module after the folder, newer ones after its
# path with "." replaced by "_x_".
name = os.path.basename(custom_node) if naming == "folder" else custom_node.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, os.path.join(custom_node, "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
report = {"torch_after_exec": "torch" in sys.modules, "web_directory": hasattr(module, "WEB_DIRECTORY")}
mappings = module.NODE_CLASS_MAPPINGS if hasattr(module, "NODE_CLASS_MAPPINGS") else None
report["nodes"] = sorted(mappings)
report["display"] = module.NODE_DISPLAY_NAME_MAPPINGS
import wanprep_torch
report["package_file"] = wanprep_torch.__file__
report["path_unchanged"] = sys.path == path_before

if models_dir:  # run the nodes on the test models and a small synthetic clip (made by the test)
    os.environ["WANPREP_COMFY_MODELS"] = models_dir
    import torch
    frames = torch.load(clip_file)
    (model,) = mappings["OnnxDetectionModelLoader"]().loadmodel("pose.onnx", "det.onnx", "CPUExecutionProvider")
    out = mappings["PoseAndFaceDetection"]().process(model, frames, 416, 240, gate="off")
    (pose_images,) = mappings["DrawViTPose"]().process(out[0], 416, 240, 16, -1, -1, True)
    prompts = mappings["PoseRetargetPromptHelper"]().process(out[0])
    one = mappings["PoseDetectionOneToAllAnimation"]().process(model, frames, 416, 240, "none", "full", "full")
    report["shapes"] = [list(out[1].shape), list(pose_images.shape), list(one[0].shape)]
    report["drawn"] = float(pose_images.max())
    report["prompts"] = list(prompts)
    site_dirs = json.loads(sys.argv[4])
    report["imported_from_site"] = sorted({
        n.split(".")[0] for n, m in list(sys.modules.items())
        if m is not None and any(str(getattr(m, "__file__", None) or "").startswith(d + os.sep) for d in site_dirs)
    })
print("REPORT" + json.dumps(report))
'''

OPTIONAL = {"psutil"}  # runtime.py: physical core count when psutil is installed
NODES = ["DrawViTPose", "OnnxDetectionModelLoader", "PoseAndFaceDetection", "PoseDetectionOneToAllAnimation", "PoseRetargetPromptHelper"]


def site_dirs() -> list[str]:
    """The folders this interpreter's packages (torch, onnxruntime, ...) live in."""
    paths = site.getsitepackages() + [sysconfig.get_paths()[k] for k in ("purelib", "platlib")]
    return sorted({os.path.abspath(p) for p in paths if os.path.isdir(p)})


def clone(into: Path, name: str) -> Path:
    """What `git clone` leaves in custom_nodes/<name> (tracked files; no build outputs)."""
    dst = into / "ComfyUI" / "custom_nodes" / name
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".venv", ".ci-venv")
    dst.mkdir(parents=True)
    for entry in ("__init__.py", "requirements.txt", "pyproject.toml", "README.md", "wanprep_torch", "comfyui"):
        src = REPO / entry
        (shutil.copytree(src, dst / entry, ignore=ignore) if src.is_dir() else shutil.copy(src, dst / entry))
    return dst


def load_like_comfyui(custom_node: Path, naming: str, models_dir: str = "", clip_file: str = "") -> dict:
    script = custom_node.parent.parent / "load_custom_node.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(script), str(custom_node), naming, models_dir, json.dumps(site_dirs()), clip_file],
        capture_output=True, text=True, cwd=custom_node.parent.parent, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")]
    return json.loads(line[len("REPORT"):])


@pytest.mark.slow
def test_plain_clone_named_like_the_package_runs(tmp_path, models):
    # A clone keeps the repository's name; an older ComfyUI registers the folder's module under
    # that name, "wanprep_torch", while it loads.
    folder = tmp_path / "detection"
    folder.mkdir()
    shutil.copy(models["det"], folder / "det.onnx")
    shutil.copy(models["pose"], folder / "pose.onnx")
    import torch

    from wanprep_torch.testkit import make_clip

    clip_file = tmp_path / "clip.pt"
    torch.save(make_clip(2, H=240, W=416, seed=3).frames, clip_file)
    node = clone(tmp_path, "wanprep_torch")
    report = load_like_comfyui(node, "folder", str(folder), str(clip_file))
    assert report["nodes"] == NODES and report["display"]["DrawViTPose"] == "Draw ViT Pose"
    assert Path(report["package_file"]) == node / "wanprep_torch" / "__init__.py"
    assert report["path_unchanged"] and not report["web_directory"]
    assert report["shapes"] == [[2, 512, 512, 3], [2, 240, 416, 3], [2, 240, 416, 3]] and report["drawn"] > 0
    # requirements.txt (with torch, which ComfyUI brings) covers everything the nodes imported,
    # but for modules used only when present.
    allowed = requirement_closure(["torch"] + requirement_names()) | OPTIONAL
    imported = {dist for mod in report["imported_from_site"] for dist in distributions_of(mod)}
    assert "onnxruntime" in imported and "kornia" in imported
    assert imported <= allowed, sorted(imported - allowed)


@pytest.mark.parametrize("naming", ["folder", "path"])
def test_clone_loads_lazily_under_any_name(tmp_path, naming):
    node = clone(tmp_path, "ComfyUI-wanprep.torch")  # a dot: newer ComfyUI rewrites it
    report = load_like_comfyui(node, naming)
    assert not report["torch_after_exec"], "importing the folder must not import the nodes yet"
    assert report["nodes"] == NODES
    assert Path(report["package_file"]) == node / "wanprep_torch" / "__init__.py" and report["path_unchanged"]


def test_symlink_route_still_loads(tmp_path):
    # custom_nodes/<link> -> the repository's comfyui/ folder (after pip install -e).
    link = tmp_path / "ComfyUI" / "custom_nodes" / "wanprep_torch"
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO / "comfyui", target_is_directory=True)
    report = load_like_comfyui(link, "folder")
    assert report["nodes"] == NODES and Path(report["package_file"]) == REPO / "wanprep_torch" / "__init__.py"


# -- requirements.txt and pyproject.toml ----------------------------------------------------------


def requirement_lines() -> list:
    from packaging.requirements import Requirement

    lines = [ln.split("#", 1)[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    return [Requirement(ln) for ln in lines if ln]


def requirement_names() -> list[str]:
    """requirements.txt's packages for this platform (markers evaluated)."""
    return [r.name for r in requirement_lines() if r.marker is None or r.marker.evaluate()]


def canonical(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name).lower()
    return "onnxruntime" if name.startswith("onnxruntime") else name  # -gpu and the CPU package: one module


def distributions_of(module: str) -> set[str]:
    from importlib import metadata

    return {canonical(d) for d in metadata.packages_distributions().get(module, [])}


def requirement_closure(names: list[str]) -> set[str]:
    """The distributions ``names`` pull in (installed ones, their non-extra requirements)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    installed = {canonical(d.metadata["Name"]): d for d in metadata.distributions() if d.metadata["Name"]}
    todo, seen = [canonical(n) for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dist = installed.get(name)
        for req in (dist.requires or []) if dist is not None else []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(canonical(r.name))
    return seen


def test_requirements_keep_comfyuis_torch():
    tomllib = pytest.importorskip("tomllib")
    reqs = requirement_lines()
    names = [canonical(r.name) for r in reqs]
    assert not {"torch", "torchvision", "torchaudio"} & set(names), "ComfyUI's torch build must stay"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    from packaging.requirements import Requirement

    declared = {canonical(Requirement(d).name) for d in project["dependencies"]}
    assert set(names) <= declared  # nothing the package does not declare itself
    # Exactly one ONNX Runtime package on every platform: the GPU build where NVIDIA ships one.
    platforms = [("linux", "x86_64", "onnxruntime-gpu"), ("win32", "AMD64", "onnxruntime-gpu"), ("linux", "aarch64", "onnxruntime"),
                 ("darwin", "arm64", "onnxruntime"), ("darwin", "x86_64", "onnxruntime"), ("win32", "ARM64", "onnxruntime")]
    for system, machine, want in platforms:
        env = {"sys_platform": system, "platform_machine": machine}
        ort = [r.name for r in reqs if r.name.startswith("onnxruntime") and (r.marker is None or r.marker.evaluate(env))]
        assert ort == [want], (system, machine, ort)


def test_comfy_registry_metadata():
    tomllib = pytest.importorskip("tomllib")
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy, project = doc["tool"]["comfy"], doc["project"]
    # The fields the registry's pyproject spec documents for [tool.comfy].
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy) and isinstance(comfy.get("includes", []), list)
    assert comfy["DisplayName"] and all(isinstance(comfy[k], str) for k in ("PublisherId", "DisplayName", "Icon"))
    # The node id: under 100 characters, letters, digits, -, _ and . only, no run of them,
    # starting with a letter; a semantic X.Y.Z version.
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert (REPO / "__init__.py").is_file() and (REPO / "requirements.txt").is_file()
