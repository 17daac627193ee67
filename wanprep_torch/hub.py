"""Where the models come from: the detector and pose models users run, their Hugging Face Hub
sources, and their download (``huggingface_hub``, the optional ``hub`` extra).

    from wanprep_torch import hub
    print(hub.format_model_list())
    folder = paths.models_dir()                               # the default models folder
    got = hub.download(["yolov10m", "vitpose-l"], folder)     # -> [Downloaded(...), ...]
    Preprocessor(hub.resolve_model("yolov10m", "detector", folder),
                 hub.resolve_model("vitpose-l", "pose", folder))

Files land in the destination folder under their path in the repository (as
``huggingface_hub.hf_hub_download(..., local_dir=DIR)`` puts them); an interrupted download
resumes where it stopped when asked again, and a file already there is not fetched again.
Each downloaded model is then opened in ONNX Runtime (CPU) and its signature checked for its
role (person detector, or wholebody pose model).

Errors are :class:`HubError` subclasses with one-line messages: :class:`UnknownModelError`,
:class:`HubNotInstalledError`, :class:`DestinationError`, :class:`DownloadError`,
:class:`CheckError`, :class:`NotDownloadedError`, :class:`WrongRoleError`.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

__all__ = [
    "HubModel",
    "MODELS",
    "Downloaded",
    "HubError",
    "UnknownModelError",
    "HubNotInstalledError",
    "DestinationError",
    "DownloadError",
    "CheckError",
    "get_model",
    "format_model_list",
    "download",
    "check_model",
    "run_hint",
    "INSTALL_HINT",
    "NotDownloadedError",
    "WrongRoleError",
    "resolve_model",
    "download_command",
]

INSTALL_HINT = "pip install 'wanprep_torch[hub]'  (or: pip install huggingface_hub)"


@dataclass(frozen=True)
class HubModel:
    """One model file (plus any files it needs beside it) in a Hugging Face repository."""

    name: str  # what users type: `wanprep models download NAME`
    role: str  # "detector" or "pose"
    description: str
    repo_id: str
    filename: str  # path of the .onnx inside the repository
    extra_files: tuple[str, ...] = ()  # e.g. external weights the .onnx refers to

    @property
    def files(self) -> tuple[str, ...]:
        return (self.filename, *self.extra_files)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/main/{self.filename}"


MODELS: dict[str, HubModel] = {
    m.name: m
    for m in (
        HubModel("yolov10m", "detector", "YOLOv10m person detector (the one Wan 2.2 Animate's preprocessing uses)",
                 "Wan-AI/Wan2.2-Animate-14B", "process_checkpoint/det/yolov10m.onnx"),
        HubModel("vitpose-l", "pose", "ViTPose-L wholebody, 133 keypoints (one .onnx file)",
                 "JunkyByte/easy_ViTPose", "onnx/wholebody/vitpose-l-wholebody.onnx"),
        HubModel("vitpose-h", "pose", "ViTPose-H wholebody, 133 keypoints (weights in a .bin beside the .onnx)",
                 "Kijai/vitpose_comfy", "onnx/vitpose_h_wholebody_model.onnx",
                 ("onnx/vitpose_h_wholebody_data.bin",)),
    )
}


class HubError(Exception):
    """A model could not be named, fetched or checked; the message is one line."""


class UnknownModelError(HubError, ValueError):
    """A name that is not in :data:`MODELS`."""


class HubNotInstalledError(HubError, ImportError):
    """huggingface_hub is not installed."""


class DestinationError(HubError):
    """The destination folder cannot be created or written."""


class DownloadError(HubError):
    """The hub call failed (network, missing repository or file, access, disk)."""


class CheckError(HubError):
    """A downloaded file does not load in ONNX Runtime, or has the wrong signature."""


class NotDownloadedError(HubError):
    """A model named by the catalogue whose files are not in the models folder."""


class WrongRoleError(HubError, ValueError):
    """A catalogue name given for the other role (a pose model as the detector)."""


@dataclass(frozen=True)
class Downloaded:
    model: HubModel
    path: Path  # the .onnx on disk (its extra files beside it)
    signature: str | None  # "input -> output" as ONNX Runtime sees it; None when not checked


def get_model(name: str) -> HubModel:
    """The registry entry for ``name``; UnknownModelError (naming the close matches) otherwise."""
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, list(MODELS), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint}; known models: {', '.join(MODELS)}")


def format_model_list(models_dir=None) -> str:
    """A table of the known models, where each comes from and, with ``models_dir``, whether it
    is downloaded there; for `wanprep models`."""
    lines = []
    for m in MODELS.values():
        lines.append(f"{m.name:<11}{m.role:<10}{m.description}")
        lines.append(f"{'':<21}Hugging Face repo {m.repo_id}, file {m.filename}")
        for f in m.extra_files:
            lines.append(f"{'':<21}  with {f} (kept in the same folder)")
        lines.append(f"{'':<21}{m.url}")
        if models_dir is not None:
            where = Path(models_dir) / m.filename
            have = all((Path(models_dir) / f).is_file() for f in m.files)
            lines.append(f"{'':<21}{'downloaded: ' + str(where) if have else 'not downloaded'}")
    lines.append("")
    if models_dir is not None:
        lines.append(f"models folder: {models_dir}  (--models-dir DIR or $WANPREP_MODELS to change)")
    lines += [
        "download:  wanprep models download yolov10m vitpose-l   (needs huggingface_hub)",
        "then:      wanprep run VIDEO --det yolov10m --pose vitpose-l --out out",
    ]
    return "\n".join(lines)


def download_command(names: Sequence[str], models_dir=None) -> str:
    """The `wanprep models download` line that puts ``names`` where a run looks for them
    (``models_dir``: a folder given with --models-dir; None for the default one)."""
    extra = f" --models-dir {models_dir}" if models_dir is not None else ""
    return f"wanprep models download {' '.join(names)}{extra}"


def resolve_model(value, role: str, models_dir, *, flag: str | None = None, explicit_dir: bool = False) -> Path:
    """The model file that ``--det`` / ``--pose`` ``value`` means.

    An existing file is itself; a catalogue name (:data:`MODELS`) is its file in ``models_dir``
    (where `wanprep models download` puts it); anything else that looks like a path (a folder
    part or a suffix) is returned as is, so that the model check names the missing file.
    Raises :class:`WrongRoleError` (a pose model as the detector), :class:`NotDownloadedError`
    (the message holds the download command; ``explicit_dir``: the folder came from
    --models-dir, so the command names it) or :class:`UnknownModelError`.
    """
    flag = flag or ("--det" if role == "detector" else "--pose")
    text = str(value)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if text in MODELS:
        m = MODELS[text]
        if m.role != role:
            fits = ", ".join(n for n, x in MODELS.items() if x.role == role)
            raise WrongRoleError(f"{flag} {text}: {text} is a {m.role} model; {flag} takes {fits} or an ONNX file")
        folder = Path(models_dir)
        missing = [f for f in m.files if not (folder / f).is_file()]
        if missing:
            cmd = download_command([text], folder if explicit_dir else None)
            raise NotDownloadedError(f"{flag} {text}: model not downloaded ({folder / missing[0]} not found); "
                                     f"get it with: {cmd}")
        return folder / m.filename
    if path.suffix or len(path.parts) > 1:
        return path
    names = [n for n, x in MODELS.items() if x.role == role]
    close = difflib.get_close_matches(text, names, n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UnknownModelError(f"{flag} {text}: no such file and not a model name{hint}; "
                            f"model names: {', '.join(names)}, or give a path to an .onnx file")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _prepare_destination(to: Path) -> None:
    if to.exists() and not to.is_dir():
        raise DestinationError(f"--to {to} is a file, not a folder")
    try:
        to.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".wanprep-write-test-", dir=to)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DestinationError(f"cannot write into {to}: {exc.strerror or _one_line(exc)}") from None


def _kind_check(role: str):
    from .runtime import check_detector, check_pose

    return check_detector if role == "detector" else check_pose


def check_model(model: HubModel, path) -> str:
    """Open ``path`` in ONNX Runtime (CPU) and check its signature for ``model.role``.

    Returns "input -> output" as ONNX Runtime describes them; raises CheckError.
    """
    from .runtime import ModelError, OrtModel

    try:
        m = OrtModel(path, "cpu", role=model.role, intra_op_threads=1)
        _kind_check(model.role)(m)
    except ModelError as exc:
        raise CheckError(f"{model.name}: downloaded file {path} fails the {model.role} check: "
                         f"{' '.join(str(exc).split())}") from None
    signature = f"{m.input.describe()} -> {m.output.describe()}"
    del m
    return signature


def download(names: Iterable[str], to, *, force: bool = False, check: bool = True,
             log: Callable[[str], None] | None = None) -> list[Downloaded]:
    """Fetch the named models into ``to`` with huggingface_hub and check each.

    Every name is looked up and the destination checked before anything is fetched.
    ``force`` fetches again even when a file is already there. Returns one Downloaded per
    name, in order. Raises a HubError subclass (see the module docstring).
    """
    log = log or (lambda _msg: None)
    names = list(dict.fromkeys(names))  # each once, in the order given
    if not names:
        raise UnknownModelError(f"no model named; known models: {', '.join(MODELS)}")
    models = [get_model(n) for n in names]
    try:
        import huggingface_hub
    except ImportError:
        raise HubNotInstalledError(f"downloading models needs huggingface_hub: {INSTALL_HINT}") from None
    to = Path(to)
    _prepare_destination(to)

    done = []
    for m in models:
        paths = []
        for filename in m.files:
            log(f"{m.name}: fetching {filename} from {m.repo_id}")
            try:
                # Looked up on the module at call time (the tests replace it). With local_dir,
                # huggingface_hub resumes a partial file and skips one that is up to date.
                got = huggingface_hub.hf_hub_download(m.repo_id, filename, local_dir=str(to),
                                                      force_download=force)
            except Exception as exc:  # network, HTTP (404, 401), disk: all one line
                raise DownloadError(f"cannot download {filename} from {m.repo_id}: {_one_line(exc)}") from None
            paths.append(Path(got))
        onnx_path = paths[0]
        for extra in paths[1:]:
            if extra.parent.resolve() != onnx_path.parent.resolve():
                raise CheckError(f"{m.name}: {extra.name} landed in {extra.parent}, not beside {onnx_path}")
        signature = None
        if check:
            log(f"{m.name}: checking {onnx_path} in ONNX Runtime")
            signature = check_model(m, onnx_path)
        done.append(Downloaded(m, onnx_path, signature))
    return done


def run_hint(done: Sequence[Downloaded], models_dir=None) -> str | None:
    """A `wanprep run` line naming the downloaded detector and pose model, when both are there
    (``models_dir``: a folder given with --models-dir or --to, named in the line)."""
    det = next((d.model.name for d in done if d.model.role == "detector"), None)
    pose = next((d.model.name for d in done if d.model.role == "pose"), None)
    if det is None or pose is None:
        return None
    extra = f" --models-dir {models_dir}" if models_dir is not None else ""
    return f"wanprep run VIDEO --det {det} --pose {pose}{extra} --out out"
