"""The Preprocessor's options as the front ends set them: one record, one validation, one
mapping to the Preprocessor, shared by the command line, batch and the ComfyUI nodes.

- :class:`PipelineOptions`: the path-free options (device, batch, chunk, gate, smooth,
  face_padding, people) with the front ends' defaults; :class:`~wanprep_torch.runner.RunOptions`
  extends it with the model files and what a run adds (size, time range, outputs), and the
  ComfyUI nodes build it from their inputs.
- :meth:`PipelineOptions.check` raises :class:`OptionError` naming the option the way the
  caller's front end spells it (:func:`cli_flag`: ``--face-padding``; :func:`node_input`:
  ``face_padding:``).
- :meth:`PipelineOptions.preprocessor` builds the Preprocessor from the record plus what a
  front end adds on its own (the face crops' dtype and device, the progress report), which may
  not restate what the record sets.

Torch-free at import (the command line's start-up imports it); the device check and the build
import torch when called.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from .config import CHUNK_SIZE
from .errors import RunError
from .gateconfig import PRESETS

__all__ = ["PipelineOptions", "OptionError", "GATES", "SMOOTHING", "cli_flag", "node_input", "check_device"]

GATES = tuple(PRESETS)  # from the torch-free gateconfig: start-up stays without torch
SMOOTHING = ("auto", "on", "off")  # temporal.resolve_smooth's names, restated to keep torch out of start-up (a test checks)


def cli_flag(option: str, detail: str) -> str:
    """The command line's spelling: ``--face-padding must be >= 0, got -1``."""
    return f"--{option.replace('_', '-')} {detail}"


def node_input(option: str, detail: str) -> str:
    """The ComfyUI nodes' spelling, the node input first: ``face_padding: must be >= 0, got -1``."""
    return f"{option}: {detail}"


class OptionError(RunError, ValueError):
    """A bad option: a RunError (exit 2) for the command line and batch, a ValueError for the
    ComfyUI nodes and library callers. ``option`` is the record's field name."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def check_device(device, allow_auto: bool = False) -> str:
    """The device name if torch can run on it, else RunError listing the accepted values."""
    import torch

    accepted = "cpu, cuda, cuda:N" + (", auto" if allow_auto else "")
    name = "auto" if device is None and allow_auto else str(device)
    if allow_auto and name == "auto":
        return name
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise RunError(f"unknown --device {name!r}; accepted: {accepted}") from None
    if dev.type == "cpu":
        return name
    if dev.type != "cuda":
        raise RunError(f"unsupported --device {name!r}; accepted: {accepted}")
    if not torch.cuda.is_available():
        raise RunError(f"--device {name}: torch sees no CUDA device (this torch build or machine has none); use --device cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RunError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible (cuda:0 ...)")
    return name


def _is_count(v, least: int) -> bool:
    """A whole number (not a bool) >= ``least``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


@dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """The Preprocessor's options that a front end sets (the defaults of `wanprep run` and of
    the Pose and Face Detection node's inputs).

    >>> opts = PipelineOptions(gate="fast", people=2).check()
    >>> {k: v for k, v in opts.preprocessor_kwargs().items() if k in ("gate", "smooth", "people")}
    {'gate': 'fast', 'smooth': 'auto', 'people': 2}
    >>> PipelineOptions(smooth="strong").check(node_input)
    Traceback (most recent call last):
    ...
    wanprep_torch.options.OptionError: smooth: 'strong' is not one of auto, on, off
    """

    device: str = "cpu"  # "cpu", "cuda", "cuda:N" ("auto" only where the caller allows it)
    batch: int | str = "auto"  # frames per model run, or "auto"
    chunk: int = CHUNK_SIZE  # frames processed per step
    gate: str = "safe"  # GATES
    smooth: str = "auto"  # SMOOTHING
    face_padding: int = 0  # extra pixels on each side of the face box
    people: int | str = 1  # several people: N or "all"

    def check(self, spell: Callable[[str, str], str] = cli_flag, allow_auto_device: bool = False):
        """:class:`OptionError` for the first bad option, its message spelled by ``spell``
        (:func:`cli_flag` or :func:`node_input`); returns self."""
        for option, detail in self._problems():
            raise OptionError(option, spell(option, detail))
        check_device(self.device, allow_auto=allow_auto_device)
        return self

    def _problems(self):
        """(option, what is wrong) for each bad option, in the order they are reported."""
        if not _is_count(self.chunk, 1):
            yield "chunk", f"must be >= 1, got {self.chunk!r}"
        if self.gate not in GATES:
            yield "gate", f"{self.gate!r} is not one of {', '.join(GATES)}"
        if self.smooth not in SMOOTHING:
            yield "smooth", f"{self.smooth!r} is not one of {', '.join(SMOOTHING)}"
        if self.batch != "auto" and not _is_count(self.batch, 1):
            yield "batch", f"must be 'auto' or a positive integer, got {self.batch!r}"
        if not _is_count(self.face_padding, 0):
            yield "face_padding", f"must be a whole number >= 0, got {self.face_padding!r}"
        if self.people != "all" and not _is_count(self.people, 1):
            yield "people", f"must be a positive integer or 'all', got {self.people!r}"

    def pipeline_options(self) -> "PipelineOptions":
        """This record's Preprocessor part alone (a :class:`~wanprep_torch.runner.RunOptions`
        without its files and run settings)."""
        return PipelineOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PipelineOptions)})

    def preprocessor_kwargs(self) -> dict:
        """The Preprocessor's keyword arguments these options set: the one mapping."""
        return dict(device=self.device, batch_size=self.batch, chunk_size=self.chunk, gate=self.gate,
                    smooth=self.smooth, face_padding=self.face_padding, people=self.people)

    def preprocessor(self, det_model, pose_model, **front_end):
        """The Preprocessor of these options on ``det_model`` / ``pose_model`` (ONNX files or
        opened sessions), with ``front_end``'s own keyword arguments (face_dtype, face_device,
        progress, progress_callback, intra_op_threads, ...); TypeError where those restate an
        option of this record (one home for each)."""
        from .pipeline import Preprocessor

        kwargs = self.preprocessor_kwargs()
        both = sorted(set(kwargs) & set(front_end))
        if both:
            raise TypeError(f"{', '.join(both)}: set by the options record, not by the front end")
        return Preprocessor(det_model, pose_model, **kwargs, **front_end)
