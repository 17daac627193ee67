"""INT8 models (converters.int8, converters.int8_cache, `wanprep run/batch --int8`).

On the test kit: its pose model quantized (dynamic) and validated on the synthetic scenes, a
detector with a convolution in front of the kit's (the kit's own has nothing to quantize)
through the static recipe, the cache by content hash, refusal and fallback when a model misses
the thresholds, the pipeline with the INT8 models within 1 px of FP32, and the CLI's errors.
Slow: the ViTPose-tiny stand-in (real ViT op sequence) through both recipes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from conftest import encode_clip, load_script
from converters import int8, int8_cache
from converters.int8 import Int8Settings, ValidationFailed, convert_int8, float_nodes
from converters.int8_check import Thresholds, pose_errors
from converters.int8_cache import Int8Fallback, prepare_int8
from wanprep_torch import Preprocessor, cli
from wanprep_torch.testkit import make_clip
from wanprep_torch.testkit.models import make_detector

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
IMPOSSIBLE = Thresholds(pose_mean=1e-9, pose_p95=1e-9, det_mean_iou=1.0 + 1e-6)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 12-frame 832x480 H.264 clip of the synthetic person."""
    frames = (make_clip(12, motion="slow", seed=1).frames * 255).round().to(torch.uint8)
    return encode_clip(tmp_path_factory.mktemp("int8video") / "clip.mp4", frames)


@pytest.fixture(scope="module")
def conv_det(tmp_path_factory):
    """The kit's detector behind two identity convolutions: a detector with something the
    static recipe quantizes (the first conv) and a head kept in float (the last conv, the
    output layer, and everything after it)."""
    m = make_detector("batch")
    for node in m.graph.node:
        for i, name in enumerate(node.input):
            if name == "images":
                node.input[i] = "images_c"
    # 3x3 kernels over 16 channels (a layer's size, not decoding arithmetic's), identity by
    # their centre taps: channels 0-2 carry the image, the others stay zero.
    w1 = np.zeros((16, 3, 3, 3), np.float32)
    w2 = np.zeros((3, 16, 3, 3), np.float32)
    for c in range(3):
        w1[c, c, 1, 1] = w2[c, c, 1, 1] = 1.0
    m.graph.initializer.extend([numpy_helper.from_array(w1, "conv_w"), numpy_helper.from_array(w2, "conv_w2")])
    m.graph.node.insert(0, helper.make_node("Conv", ["images", "conv_w"], ["images_s"], name="stem_conv", pads=[1, 1, 1, 1]))
    m.graph.node.insert(1, helper.make_node("Conv", ["images_s", "conv_w2"], ["images_c"], name="last_conv", pads=[1, 1, 1, 1]))
    onnx.checker.check_model(m)
    path = tmp_path_factory.mktemp("convdet") / "conv_det.onnx"
    onnx.save(m, str(path))
    return path


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


# ----------------------------------------------------------------------------- the converter


def test_dynamic_pose_converts_and_validates(models, video, tmp_path):
    res = convert_int8(models["pose"], tmp_path / "pose8.onnx", video, det_path=models["det"])
    assert res.path == tmp_path / "pose8.onnx" and res.path.is_file() and not res.forced
    assert res.kind == "pose" and res.info.settings.mode == "dynamic" and res.info.int8_ops > 0
    assert "MatMulInteger" in _ops(res.path) or "DynamicQuantizeMatMul" in _ops(res.path)
    rep = res.report
    assert rep.ok and rep.frames == 4  # every third of 12 frames validates
    assert set(rep.groups) == {"body", "face", "hands"}
    for g in rep.groups.values():
        assert g.points > 0 and 0 <= g.mean <= 2.0 and g.p95 <= 4.0 and g.max >= g.p95
        assert g.mean_px > 0  # INT8 is not bit-identical: the numbers come from a real comparison


def test_static_detector_quantizes_the_conv_and_keeps_the_head_float(conv_det, video, tmp_path):
    res = convert_int8(conv_det, tmp_path / "det8.onnx", video)
    assert res.kind == "detector" and res.info.settings.mode == "static" and res.info.settings.keep_float == ("head",)
    g = onnx.load(str(res.path)).graph
    dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    stem, last = (next(n for n in g.node if n.name == name) for name in ("stem_conv", "last_conv"))
    assert stem.input[0] in dq and stem.input[1] in dq  # QDQ on the activation and the weight
    assert last.input[1] == "conv_w2"  # the output layer keeps its float weight
    # Past the output layer nothing reads a dequantized tensor (the head decodes in float).
    assert all(i not in dq for n in g.node if n.name not in ("stem_conv", "last_conv") for i in n.input)
    assert res.report.ok and res.report.mean_iou > 0.95 and len(res.report.ious) == 4


def test_external_data_in_and_out(models, video, tmp_path):
    """A model stored with external data (as ViTPose-H ships) keeps it; the input is untouched."""
    src = tmp_path / "in" / "pose.onnx"
    src.parent.mkdir()
    onnx.save_model(onnx.load(str(models["pose"])), str(src), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="pose.onnx.data", size_threshold=1024)
    before = (src.parent / "pose.onnx.data").read_bytes()
    res = convert_int8(src, tmp_path / "out" / "pose8.onnx", video, det_path=models["det"])
    assert res.report.ok and (tmp_path / "out" / "pose8.onnx.data").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pose8.onnx", "pose8.onnx.data"]
    assert (src.parent / "pose.onnx.data").read_bytes() == before


def test_nothing_to_quantize_is_an_error(models, video, tmp_path, capsys):
    rc = int8.main([str(models["det"]), str(tmp_path / "d.onnx"), "--video", str(video)])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing in the graph is quantizable" in err and not (tmp_path / "d.onnx").exists()


def test_failing_model_is_refused_with_the_shortfall(models, video, tmp_path):
    out = tmp_path / "pose8.onnx"
    with pytest.raises(ValidationFailed) as e:
        convert_int8(models["pose"], out, video, det_path=models["det"], thresholds=IMPOSSIBLE)
    msg = str(e.value)
    assert "fails validation" in msg and "not written" in msg and "--force" in msg
    assert "body mean" in msg and "(by " in msg
    assert not out.exists() and not list(tmp_path.iterdir())  # no staging folder left either
    forced = convert_int8(models["pose"], out, video, det_path=models["det"], thresholds=IMPOSSIBLE, force=True)
    assert forced.forced and out.is_file() and not forced.report.ok


def test_broken_quantization_fails_on_its_own_numbers(models, video, tmp_path, monkeypatch):
    """A quantizer that ruins the weights (every MatMul weight zeroed) is caught by the default
    thresholds, not only by impossible ones."""
    real = int8.quantize

    def broken(src, dst, kind, settings=Int8Settings(), calibration=None, log=None):
        info = real(src, dst, kind, settings, calibration)
        m = onnx.load(str(dst))
        for t in m.graph.initializer:
            if t.data_type == onnx.TensorProto.INT8:
                t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
        onnx.save(m, str(dst))
        return info

    monkeypatch.setattr(int8, "quantize", broken)
    with pytest.raises(ValidationFailed) as e:
        convert_int8(models["pose"], tmp_path / "p.onnx", video, det_path=models["det"])
    assert not e.value.report.ok and e.value.report.groups["body"].mean > 2.0


def test_pose_errors_per_group_and_crop_pixels():
    ref = torch.zeros(2, 133, 3)
    ref[..., 2] = 1.0
    test = ref.clone()
    test[:, 0:23, 0] += 2.0  # body 2 frame px
    test[:, 91:133, 1] += 4.0  # hands 4 frame px
    window = torch.tensor([[96.0, 128.0], [96.0, 128.0]])  # crop px = frame px * 256 / 128
    rep = pose_errors(ref, test, window, Thresholds(pose_mean=5.0, pose_p95=5.0))
    assert rep.groups["body"].mean == pytest.approx(4.0) and rep.groups["body"].mean_px == pytest.approx(2.0)
    assert rep.groups["hands"].p95 == pytest.approx(8.0) and rep.groups["face"].max == 0.0
    assert not rep.ok and len(rep.failures) == 2 and all(f.startswith("hands") for f in rep.failures)
    ref[:, 23:91, 2] = 0.0  # no face point confident: every one judged, and said so
    assert pose_errors(ref, test, window, Thresholds()).groups["face"].all_points


def test_float_groups_on_a_vit(tmp_path):
    ms = load_script("make_standins")
    m = onnx.load(str(ms.build_vitpose_standin("tiny", tmp_path / "tiny.onnx")))
    int8._name_nodes(m)
    kinds = lambda g: sorted(n.op_type for n in m.graph.node if n.name in set(float_nodes(m, [g])))  # noqa: E731
    depth = ms.CONFIGS["tiny"][1]
    assert kinds("attention") == ["MatMul"] * (2 * depth) + ["Softmax"] * depth
    assert kinds("layernorm") == ["LayerNormalization"] * (2 * depth + 1)
    assert kinds("head") == ["Conv"]  # the final 1x1 conv writes the heatmaps


# ----------------------------------------------------------------------------- prepare_int8


def test_prepare_caches_by_content_hash(models, tmp_path, monkeypatch):
    frames = make_clip(6, seed=2).frames
    calls = []
    real = int8_cache.quantize
    monkeypatch.setattr(int8_cache, "quantize", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    cache = tmp_path / "cache"
    with pytest.warns(Int8Fallback, match="nothing in det_yolov10_dyn.onnx is quantizable"):
        first = prepare_int8(models["det"], models["pose"], frames, cache_dir=cache)
    assert first.pose.int8 and not first.pose.cached and first.pose.path.parent == cache
    assert not first.detector.int8 and first.detector.path == models["det"]  # the kit's detector: FP32
    assert len(calls) == 2
    stamp = first.pose.path.stat().st_mtime_ns
    again = prepare_int8(models["det"], models["pose"], frames, cache_dir=cache, warn=lambda m: None)
    assert again.pose.cached and again.pose.path == first.pose.path and again.pose.report.ok
    assert first.pose.path.stat().st_mtime_ns == stamp and len(calls) == 2  # nothing converted again
    # The same bytes under another name hit the cache; other bytes (or settings) do not.
    copy = tmp_path / "renamed.onnx"
    shutil.copy(models["pose"], copy)
    assert prepare_int8(models["det"], copy, frames, cache_dir=cache, warn=lambda m: None).pose.cached
    m = onnx.load(str(models["pose"]))
    m.doc_string = "another model"
    onnx.save(m, str(copy))
    other = prepare_int8(models["det"], copy, frames, cache_dir=cache, warn=lambda m: None)
    assert not other.pose.cached and other.pose.path != first.pose.path and len(calls) == 3
    static = prepare_int8(models["det"], models["pose"], frames, cache_dir=cache, warn=lambda m: None,
                          settings={"pose": Int8Settings("static")})
    assert static.pose.path != first.pose.path and len(calls) == 4


def test_prepare_falls_back_to_fp32_with_a_warning(models, tmp_path):
    frames = make_clip(6, seed=2).frames
    msgs = []
    rec = prepare_int8(models["det"], models["pose"], frames, cache_dir=tmp_path, thresholds=IMPOSSIBLE, warn=msgs.append)
    assert msgs[-1].startswith("INT8 pose model not used, running FP32 (pose_dyn.onnx): misses the INT8 thresholds")
    assert rec.pose.path == models["pose"] and not rec.pose.int8 and rec.pose.report is not None
    assert "(by " in rec.pose.reason and any("pose model not used" in w for w in rec.warnings)
    assert rec.paths == {"detector": models["det"], "pose": models["pose"]}
    json.dumps(rec.as_dict())  # the record serialises (numbers, not tensors)


def test_prepare_remakes_a_damaged_cache_file(models, tmp_path):
    frames = make_clip(4, seed=2).frames
    quiet = lambda m: None  # noqa: E731
    good = prepare_int8(models["det"], models["pose"], frames, cache_dir=tmp_path, warn=quiet).pose.path
    good.write_bytes(b"not a model")
    msgs = []
    rec = prepare_int8(models["det"], models["pose"], frames, cache_dir=tmp_path, warn=msgs.append)
    assert rec.pose.path == models["pose"] and "the INT8 file cannot be loaded" in msgs[-1]
    assert not good.exists()
    again = prepare_int8(models["det"], models["pose"], frames, cache_dir=tmp_path, warn=quiet)
    assert again.pose.int8 and not again.pose.cached and again.pose.path == good


def test_prepare_rejects_bad_inputs(models, tmp_path):
    with pytest.raises(int8.InputError, match="not a person detector"):
        prepare_int8(models["pose"], models["pose"], make_clip(2).frames, cache_dir=tmp_path)
    with pytest.raises(int8.InputError, match="video not found"):
        prepare_int8(models["det"], models["pose"], tmp_path / "missing.mp4", cache_dir=tmp_path)


def test_read_frames_as_the_run_reads_them(video):
    from converters.int8_check import read_frames
    from wanprep_torch.video import VideoReader

    native = read_frames(video, 5)
    assert native.shape == (5, 480, 832, 3) and native.dtype == torch.uint8
    assert torch.equal(read_frames(video, 5, (480, 832)), native)
    first = next(iter(VideoReader(video).chunks(5, "cpu", (240, 416))))
    assert torch.equal(read_frames(video, 5, (240, 416)), first)
    assert read_frames(video, 100).shape[0] == 12  # a short video gives what it has


def test_default_cache_dir(monkeypatch, tmp_path):
    """INT8 copies live in the user cache's int8/ folder, beside the FP16 copies."""
    from wanprep_torch.paths import fp16_cache_dir

    monkeypatch.setenv("WANPREP_CACHE", str(tmp_path / "c"))
    assert int8_cache.default_cache_dir() == tmp_path / "c" / "int8"
    assert int8_cache.default_cache_dir().parent == fp16_cache_dir().parent
    monkeypatch.delenv("WANPREP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    if sys.platform.startswith("linux"):
        assert int8_cache.default_cache_dir() == tmp_path / "x" / "wanprep" / "int8"


@pytest.mark.parametrize("scene", [dict(T=12, motion="slow", face_hidden=range(5, 8), seed=1),
                                   dict(T=8, motion="fast", seed=3)], ids=["slow", "fast"])
def test_pipeline_with_int8_models_within_1px_of_fp32(models, conv_det, tmp_path, scene):
    clip = make_clip(**scene)
    rec = prepare_int8(conv_det, models["pose"], clip.frames, cache_dir=tmp_path)
    assert rec.detector.int8 and rec.pose.int8, rec.warnings
    ref = Preprocessor(conv_det, models["pose"], progress=False, gate="off")(clip.frames)
    res = Preprocessor(rec.paths["detector"], rec.paths["pose"], progress=False, gate="off")(clip.frames)
    seen = clip.visible & (ref.keypoints[..., 2] >= 0.3)
    assert seen.sum() >= 0.9 * clip.visible.sum()
    err = (res.keypoints[..., :2] - ref.keypoints[..., :2]).norm(dim=-1)[seen]
    assert err.max() < 1.0, f"INT8 vs FP32: max {err.max():.3f} px, mean {err.mean():.3f} px"
    assert err.max() > 0  # the INT8 models really ran
    assert (res.bboxes[:, :4] - ref.bboxes[:, :4]).abs().max() < 2.0


# ----------------------------------------------------------------------------- command lines


def test_converter_cli_errors(models, video, tmp_path, capsys):
    def run(*args):
        rc = int8.main([str(a) for a in args])
        return rc, capsys.readouterr().err.strip()

    rc, err = run(models["pose"], tmp_path / "p.onnx", "--video", video)
    assert rc == 2 and "give the FP32 detector (--det DET.onnx)" in err
    rc, err = run(models["pose"], tmp_path / "p.onnx", "--video", tmp_path / "nope.mp4", "--det", models["det"])
    assert rc == 2 and "video not found" in err and "\n" not in err
    rc, err = run(tmp_path / "missing.onnx", tmp_path / "p.onnx", "--video", video)
    assert rc == 2 and "file not found" in err
    rc, err = run(models["pose"], tmp_path / "p.onnx", "--video", video, "--det", models["det"], "--keep-float", "bogus")
    assert rc == 2 and "unknown --keep-float group 'bogus'" in err
    rc, err = run(models["pose"], tmp_path / "p.onnx", "--video", video, "--det", models["det"], "--max-p95", "1e-9")
    assert rc == 1 and "p95" in err and "(by " in err and "not written" in err
    assert not (tmp_path / "p.onnx").exists()
    assert run(models["pose"], tmp_path / "p.onnx", "--video", video, "--det", models["det"])[0] == 0
    rc, err = run(models["pose"], tmp_path / "p.onnx", "--video", video, "--det", models["det"])
    assert rc == 2 and "already exists" in err
    rc, err = run(tmp_path / "p.onnx", tmp_path / "q.onnx", "--video", video, "--det", models["det"])
    assert rc == 2 and "already quantized" in err


def test_converters_usage_lists_int8(capsys):
    from converters.__main__ import main

    assert main([]) == 0 and "python -m converters.int8" in capsys.readouterr().out


@pytest.mark.slow
def test_converter_cli_subprocess(models, video, tmp_path):
    cmd = [sys.executable, "-m", "converters", "int8", str(models["pose"]), str(tmp_path / "p.onnx"),
           "--video", str(video), "--det", str(models["det"]), "--frames", "6"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "OK: wrote" in p.stdout and "dynamic" in p.stdout and "body  mean" in p.stdout


def test_run_int8(models, video, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANPREP_CACHE", str(tmp_path))  # INT8 copies go to its int8/ folder
    out = tmp_path / "out"
    args = ["run", str(video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out", str(out),
            "--gate", "off", "--int8"]
    assert cli.main(args) == 0
    o = capsys.readouterr()
    assert "INT8 pose model:" in o.out and "PASS" in o.out
    assert "INT8 detector model not used, running FP32" in o.err  # the kit's detector: nothing to quantize
    assert len(list((tmp_path / "int8").glob("pose_dyn-*.int8.onnx"))) == 1
    rec = json.loads((out / "int8.json").read_text())  # the choice and the numbers, kept with the outputs
    assert rec["pose"]["int8"] and rec["pose"]["validation"]["ok"] and not rec["detector"]["int8"]
    assert set(rec["pose"]["validation"]["groups"]) == {"body", "face", "hands"}
    ref = tmp_path / "ref"
    assert cli.main([*args[:7], str(ref), "--gate", "off", "--no-progress"]) == 0
    a = json.loads((out / "poses.json").read_text())
    b = json.loads((ref / "poses.json").read_text())
    assert a["complete"] and a["frames_done"] == b["frames_done"] == 12


def test_run_int8_option_errors(models, video, tmp_path, capsys):
    from wanprep_torch.runner import RunOptions, resolve_int8

    rc = cli.main(["run", str(video), "--det", str(models["det"]), "--pose", str(models["pose"]), "--out",
                   str(tmp_path / "o"), "--int8", "--fp16", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "wanprep: error: --int8 and --fp16 exclude each other: INT8 is for the CPU, FP16 for CUDA"
    assert not (tmp_path / "o").exists()
    # On a CUDA device --int8 is ignored, said once, and nothing is converted.
    opts = RunOptions(det=str(models["det"]), pose=str(models["pose"]), int8=True)
    msgs = []
    same, rec = resolve_int8(opts, video, err=msgs.append, device="cuda:0")
    assert rec is None and same == opts.replace(int8=False)
    assert msgs == ["wanprep: warning: --int8 is for the CPU provider; ignored on cuda:0 (FP32 models used)"]
    assert resolve_int8(opts.replace(int8=False), video) == (opts.replace(int8=False), None)


def test_batch_int8_converts_once(models, tmp_path, monkeypatch, capsys):
    from conftest import write_clip

    monkeypatch.setenv("WANPREP_CACHE", str(tmp_path))  # INT8 copies go to its int8/ folder
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0-broken.mp4").write_text("not a video")  # sorted first: the check moves on
    write_clip(tmp_path / "in" / "a.mp4", 6, 0)
    write_clip(tmp_path / "in" / "b.mp4", 5, 2)
    calls = []
    real = int8_cache.prepare_int8
    monkeypatch.setattr(int8_cache, "prepare_int8", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    rc = cli.main(["batch", str(tmp_path / "in"), "--det", str(models["det"]), "--pose", str(models["pose"]),
                   "--out", str(tmp_path / "out"), "--int8", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1, err  # the broken file fails on its own; the others run
    assert "--int8: cannot check the models on" in err and "0-broken.mp4" in err
    assert len(calls) == 1 and Path(calls[0]).name == "a.mp4"  # once, on the first video that opens
    report = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert report["options"]["int8"] is True
    assert {r["name"]: r["status"] for r in report["videos"]} == {"0-broken": "failed", "a": "ok", "b": "ok"}
    assert json.loads((tmp_path / "out" / "int8.json").read_text())["pose"]["int8"]


# ----------------------------------------------------------------------------- stand-ins (slow)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_vit_standin_both_recipes(models, tmp_path, mode):
    """The ViTPose-tiny stand-in (the real ViTPose op sequence, random weights): each recipe
    makes a model ONNX Runtime runs, with INT8 ops, and validation numbers."""
    ms = load_script("make_standins")
    src = ms.build_vitpose_standin("tiny", tmp_path / "tiny.onnx")
    frames = make_clip(6, seed=4).frames
    rec = prepare_int8(models["det"], src, frames, cache_dir=tmp_path / "c", warn=lambda m: None,
                       settings={"pose": Int8Settings(mode)})
    assert rec.pose.report is not None and (rec.pose.reason is None or "misses" in rec.pose.reason)
    q = rec.pose.path if rec.pose.int8 else next((tmp_path / "c").glob("tiny-*.int8.onnx"))
    ops = _ops(q)
    assert ("QuantizeLinear" in ops) if mode == "static" else bool(ops & {"MatMulInteger", "DynamicQuantizeMatMul"})
    assert "Softmax" in ops and all(np.isfinite(g.mean) for g in rec.pose.report.groups.values())


def _shared_yolo() -> Path | None:
    for p in (REPO.parent / "shared" / "models" / "yolov10m-standin.onnx", Path("/work/shared/models/yolov10m-standin.onnx")):
        if p.is_file():
            return p
    return None


@pytest.mark.slow
def test_yolov10m_standin_static_keeps_the_head_float(tmp_path):
    """The real YOLOv10m graph through the static recipe: convolutions quantized, the
    end-to-end head (last convs, TopK, gathers) reading float, the output close to FP32."""
    src = _shared_yolo()
    if src is None:
        pytest.skip("the YOLOv10m stand-in (../shared/models) is not here")
    from converters.int8_check import model_inputs
    from wanprep_torch.runtime import OrtModel

    det, _ = int8.open_stages(src)
    inputs = model_inputs(make_clip(3, seed=5).frames, det)
    info = int8.quantize(src, tmp_path / "y8.onnx", "detector", Int8Settings(), inputs.det)
    assert info.settings.mode == "static" and info.int8_ops > 100
    g = onnx.load(str(tmp_path / "y8.onnx")).graph
    dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    decode = [n for n in g.node if n.name.startswith("/model.23/") and n.name.count("/") == 2
              and n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Shape")]  # the decoding (a Shape reads no values)
    assert {"TopK", "GatherElements", "Sigmoid"} <= {n.op_type for n in decode}
    for n in decode:
        assert not any(i in dq for i in n.input), n.name
    x = torch.from_numpy(inputs.det[:1])
    ref = OrtModel(src, "cpu", role="detector").run(x).numpy().astype(np.float64)
    out = OrtModel(tmp_path / "y8.onnx", "cpu", role="detector").run(x).numpy()
    noise = ((ref - out) ** 2).sum()  # 0: the outputs agree exactly (infinite dB)
    assert noise == 0 or 10 * np.log10((ref ** 2).sum() / noise) > 30  # dB; 2.5 with the head quantized
