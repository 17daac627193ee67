import importlib.util
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("WANPREP_TEST_THREADS", "2")))


# The default run leaves out the tests marked slow (a quick loop while working); --slow runs
# everything, as CI does (.ci/run, the README's test command). A -m expression selects by itself,
# and a test file or test named on the command line runs whatever its marks.
def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (CI does)")


def _named(item, args) -> bool:
    """Whether ``item`` was named on the command line: its file, itself, or its parametrisation."""
    return any(item.nodeid == a or item.nodeid.startswith(a + ("[" if "::" in a else "::")) for a in args)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow") or config.option.markexpr:
        return
    args = []
    for a in config.args:
        path, _, rest = a.partition("::")
        if path.endswith(".py"):  # a file or a test in one, as pytest names it: relative to the root
            args.append(os.path.relpath(os.path.abspath(path), config.rootpath).replace(os.sep, "/") + (f"::{rest}" if rest else ""))
    slow = [it for it in items if it.get_closest_marker("slow") and not _named(it, args)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        left_out = {id(it) for it in slow}
        items[:] = [it for it in items if id(it) not in left_out]


def pytest_report_header(config):
    if not (config.getoption("--slow") or config.option.markexpr):
        return "tests marked slow are left out: add --slow to run them (CI runs everything)"

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cuda_unavailable(reason: str):
    """Skip a CUDA-only test, or fail it under WANPREP_REQUIRE_GPU=1 (a GPU run must not pass
    by skipping)."""
    if os.environ.get("WANPREP_REQUIRE_GPU") == "1":
        pytest.fail(f"WANPREP_REQUIRE_GPU=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own user cache (FP16 copies, the default models folder) instead of
    the real ~/.cache/wanprep, and no $WANPREP_MODELS from the environment."""
    root = tmp_path_factory.mktemp("user_cache")
    monkeypatch.setenv("WANPREP_CACHE", str(root))
    monkeypatch.delenv("WANPREP_MODELS", raising=False)
    return root


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The analytic test models (built once per test session, or taken from WANPREP_TEST_MODELS)."""
    from wanprep_torch.testkit import build_test_models

    where = os.environ.get("WANPREP_TEST_MODELS") or tmp_path_factory.mktemp("models")
    return build_test_models(where)


@pytest.fixture(scope="session")
def clip():
    """12 frames of slow motion at 832x480 with ground truth; the face hidden on frames 5-7."""
    from wanprep_torch.testkit import make_clip

    return make_clip(12, motion="slow", face_hidden=range(5, 8), seed=1)


@pytest.fixture(scope="session")
def run_default(models, clip):
    """The full pipeline's result on ``clip`` (gate off; shared by several tests)."""
    from wanprep_torch import Preprocessor

    pre = Preprocessor(models["det"], models["pose"], progress=False, gate="off")
    return pre(clip.frames)


def golden_file(name: str) -> Path:
    """A file of the reference pack's golden cases: $WANPREP_GOLDEN, else the project's shared
    folder beside the repository (../shared/golden, where CI puts it), else /work/shared/golden.
    Missing in CI (CI=true) is an error, not a skip: those tests are the contract."""
    env = os.environ.get("WANPREP_GOLDEN")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[2] / "shared" / "golden", Path("/work/shared/golden")]
    for d in candidates:
        if (d / name).exists():
            return d / name
    if os.environ.get("CI"):
        pytest.fail(f"golden file {name} not found in {[str(c) for c in candidates]}", pytrace=False)
    return candidates[0] / name


def encode_clip(path: Path, frames, fps=24, options=None) -> Path:
    """Write (T, H, W, 3) uint8 frames (numpy or torch) as an H.264 file with PyAV, independently
    of the library's writer (``options``: muxer options, e.g. movflags=faststart)."""
    import av

    frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_clip(path: Path, T: int, seed: int, H: int = 96, W: int = 160) -> Path:
    """A small H.264 clip of the test kit's synthetic person."""
    from wanprep_torch.testkit import make_clip

    return encode_clip(path, (make_clip(T, H=H, W=W, seed=seed).frames * 255).round().to(torch.uint8))


@pytest.fixture(scope="session")
def batch_clips(tmp_path_factory):
    """clips/a.mp4 (10 frames), clips/b.mp4 (8), clips/sub/a.mp4 (12: the same name), and a
    file that is not a video."""
    root = tmp_path_factory.mktemp("batch_clips")
    write_clip(root / "clips" / "a.mp4", 10, 0)
    write_clip(root / "clips" / "b.mp4", 8, 2)
    write_clip(root / "clips" / "sub" / "a.mp4", 12, 1)
    (root / "bad.mp4").write_text("not a video")
    return root
