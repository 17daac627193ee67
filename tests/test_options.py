"""One options record for the three front ends: the command line and batch (RunOptions) and the
ComfyUI nodes (PipelineOptions from their inputs) share the validation and the mapping to the
Preprocessor; what differs is named, and pinned here."""

import dataclasses

import pytest
import torch
from comfy_fixtures import fake_comfy, images, loaded  # noqa: F401  (fixtures)

from wanprep_torch import cli, options, runner
from wanprep_torch import comfy as nodes
from wanprep_torch.errors import RunError
from wanprep_torch.options import OptionError, PipelineOptions
from wanprep_torch.runner import RunOptions


class Built(Exception):
    """Stops a node once it has its Preprocessor (no frames processed)."""


def node_preprocessor(model, monkeypatch, **inputs):
    """The Preprocessor Pose and Face Detection builds for ``inputs``, and the options record."""
    seen = {}
    build = model.preprocessor

    def capture(opts):
        seen["options"], seen["pre"] = opts, build(opts)
        raise Built

    monkeypatch.setattr(model, "preprocessor", capture)
    frames = torch.rand(1, 64, 64, 3)
    with pytest.raises(Built):
        nodes.PoseAndFaceDetection().process(model, frames, 416, 240, **inputs)
    return seen["options"], seen["pre"]


def cli_options(models, tmp_path, *flags) -> RunOptions:
    args = cli.build_parser().parse_args(
        ["run", "v.mp4", "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(tmp_path / "o"), *flags])
    return cli.run_options(args).check()


CASES = [
    ({}, []),  # both front ends' defaults
    (dict(gate="fast", smooth="on", face_padding=3, people=2), ["--gate", "fast", "--smooth", "on", "--face-padding", "3", "--people", "2"]),
    (dict(gate="off", smooth="auto", face_padding=0, people=1), ["--gate", "off"]),
]


@pytest.mark.parametrize("inputs, flags", CASES)
def test_node_and_command_line_give_the_same_preprocessor(fake_comfy, loaded, models, tmp_path, monkeypatch, inputs, flags):
    """The same choices in the node's inputs and on the command line: the same options record,
    and Preprocessors with the same settings but for the face crops' dtype (ComfyUI IMAGEs
    are float32; a run keeps uint8 until the encoder), the nodes' one explicit difference."""
    node_opts, node_pre = node_preprocessor(loaded, monkeypatch, **inputs)
    run_opts = cli_options(models, tmp_path, *flags)
    assert node_opts == run_opts.pipeline_options()
    assert node_opts.preprocessor_kwargs() == run_opts.preprocessor_kwargs()
    run_pre = runner.load_preprocessor(run_opts)
    for name in ("device", "gate", "smooth", "people", "chunk_size", "batch_size"):
        assert getattr(node_pre, name) == getattr(run_pre, name), name
    assert node_pre.detector.config == run_pre.detector.config
    assert node_pre.estimator.dark == run_pre.estimator.dark
    assert (node_pre.face.dtype, run_pre.face.dtype) == (torch.float32, torch.uint8)
    assert node_pre.face == dataclasses.replace(run_pre.face, dtype=torch.float32)
    assert node_pre.face.device == run_pre.face.device == torch.device("cpu")


def test_the_node_defaults_are_the_records(fake_comfy):
    spec = nodes.PoseAndFaceDetection.INPUT_TYPES()["optional"]
    defaults = PipelineOptions()
    assert spec["gate"][0] == list(options.GATES) and spec["smooth"][0] == list(options.SMOOTHING)
    for name in ("gate", "smooth", "face_padding", "people"):
        assert spec[name][1]["default"] == getattr(defaults, name), name


@pytest.mark.parametrize("option, value, names, narrowed", [("gate", "fast", "GATES", ("off", "safe")),
                                                          ("smooth", "on", "SMOOTHING", ("auto", "off"))])
def test_one_check_for_both_front_ends(fake_comfy, loaded, monkeypatch, option, value, names, narrowed):
    """Narrow the shared choices: both front ends refuse the value (neither keeps a list of
    its own), each naming the option its way (the flag; the node input first)."""
    monkeypatch.setattr(options, names, narrowed)
    with pytest.raises(OptionError) as info:
        RunOptions("d.onnx", "p.onnx", **{option: value}).check()
    assert str(info.value).startswith(f"--{option} {value!r} is not one of") and info.value.option == option
    assert isinstance(info.value, RunError)  # exit 2 on the command line
    with pytest.raises(ValueError) as info:
        nodes.PoseAndFaceDetection().process(loaded, torch.rand(1, 64, 64, 3), 416, 240, **{option: value})
    assert str(info.value).startswith(f"{option}: {value!r} is not one of")


@pytest.mark.parametrize("field, value, flag", [
    ("gate", "turbo", "--gate"), ("smooth", "strong", "--smooth"), ("face_padding", -1, "--face-padding"),
    ("face_padding", 1.5, "--face-padding"), ("people", 0, "--people"), ("people", True, "--people"),
    ("chunk", 0, "--chunk"), ("batch", 0, "--batch"), ("batch", "many", "--batch"),
])
def test_the_check_names_the_option(field, value, flag):
    bad = PipelineOptions(**{field: value})
    with pytest.raises(OptionError) as info:
        bad.check()
    assert str(info.value).startswith(flag + " ") and repr(value) in str(info.value)
    with pytest.raises(OptionError) as info:
        bad.check(options.node_input)
    assert str(info.value).startswith(field + ": ")
    assert PipelineOptions(people="all").check() == PipelineOptions(people="all")


def test_front_ends_may_not_restate_an_option(models):
    with pytest.raises(TypeError, match="gate, people: set by the options record"):
        PipelineOptions().preprocessor(models["det"], models["pose"], gate="off", people=2)


def test_a_node_model_takes_its_own_device_only(fake_comfy, loaded):
    assert loaded.options().device == "cpu"
    with pytest.raises(ValueError, match="runs on cpu"):
        loaded.preprocessor(PipelineOptions(device="cuda"))


def test_run_options_extend_the_record():
    """RunOptions is a PipelineOptions plus the files and run settings: positional det and
    pose, the record's fields by keyword, all of them through batch's JSON and --resume."""
    opts = RunOptions("d.onnx", "p.onnx", gate="off", people=3, face_padding=2, width=208)
    assert isinstance(opts, PipelineOptions)
    assert RunOptions.from_json(opts.to_json()) == opts
    assert opts.pipeline_options() == PipelineOptions(gate="off", people=3, face_padding=2)
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    assert set(RunOptions.RESULT_FIELDS) <= fields
    changed = opts.replace(gate="safe").differences(opts.record())
    assert changed == ["gate: 'off' -> 'safe'"]


def test_gate_names_match_the_presets():
    from wanprep_torch.gate import PRESETS

    assert options.GATES == tuple(PRESETS)


def test_smoothing_names_match_the_presets():
    from wanprep_torch.temporal import SMOOTH_PRESETS

    assert set(options.SMOOTHING) == {"auto"} | set(SMOOTH_PRESETS)
