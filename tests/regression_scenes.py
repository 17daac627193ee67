"""The scenes and settings of the behaviour-regression snapshots (tests/data/).

- ``regression_before_reshape.pt``: taken from main before the core reshape (commit c44f0c8).
  Never regenerated: it pins what the reshape promised to keep.
- ``regression.pt``: today's outputs (``python tests/regression_scenes.py`` writes it).
  Regenerate it only for a deliberate behaviour change, and say so in the commit.

``test_regression.py`` reruns the scenes and compares with both.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

SNAPSHOT = Path(__file__).resolve().parent / "data" / "regression.pt"
BEFORE_RESHAPE = Path(__file__).resolve().parent / "data" / "regression_before_reshape.pt"


def scenes():
    """{name: (model keys (det, pose), frames, Preprocessor options)}."""
    from wanprep_torch.testkit import make_clip
    from wanprep_torch.testkit.scene import make_two_person_clip

    slow = make_clip(12, motion="slow", face_hidden=range(5, 8), seed=1)
    holdslow = make_clip(20, H=240, W=416, motion="holdslow", background=True, seed=3)
    cut = make_clip(12, H=240, W=416, motion="cut", seed=4)
    fast = make_clip(8, H=240, W=416, motion="fast", seed=5)
    two, _ = make_two_person_clip(12, big_frames=range(4, 8), H=240, W=416)
    u8 = (slow.frames * 255).round().to(torch.uint8)
    out = {}
    for gate in ("off", "safe", "fast"):
        out[f"slow_{gate}"] = (("det", "pose"), slow.frames, {"gate": gate})
        out[f"holdslow_{gate}"] = (("det", "pose"), holdslow.frames, {"gate": gate})
        out[f"cut_{gate}"] = (("det", "pose"), cut.frames, {"gate": gate})
        out[f"two_{gate}"] = (("det_two", "pose"), two.frames, {"gate": gate})
    out["slow_u8_off"] = (("det", "pose"), u8, {"gate": "off"})
    out["slow_u8_safe"] = (("det", "pose"), u8, {"gate": "safe"})
    out["fast_off_b4"] = (("det", "pose"), fast.frames, {"gate": "off", "batch_size": 4, "chunk_size": 5})
    out["fast_safe_b4"] = (("det", "pose"), fast.frames, {"gate": "safe", "batch_size": 4, "chunk_size": 5})
    out["slow_off_fixed"] = (("det_b1", "pose_b1"), slow.frames, {"gate": "off", "face_padding": 7})
    out["slow_off_u8faces"] = (("det", "pose"), slow.frames[:6], {"gate": "off", "face_dtype": torch.uint8, "dark": False})
    return out


def model_paths(models: dict, tmp: Path) -> dict:
    """The test kit's models plus the two-person detector."""
    import onnx

    from wanprep_torch.testkit.models import make_two_person_detector

    paths = dict(models)
    two = tmp / "det_two.onnx"
    if not two.exists():
        onnx.save(make_two_person_detector(), str(two))
    paths["det_two"] = two
    return paths


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def summarise(res) -> dict:
    """What the snapshot keeps of a Result: tensors as they are, face crops as a digest."""
    faces = res.face_images.contiguous().cpu()
    return {
        "keypoints": res.keypoints.cpu(),
        "bboxes": res.bboxes.cpu(),
        "pose_metas": _digest(json.dumps([{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in m.items()} for m in res.pose_metas])),
        "face_digest": hashlib.sha256(faces.numpy().tobytes()).hexdigest() + str(faces.dtype),
        "face_bboxes": [list(b) for b in res.face_bboxes],
        "face_held": res.face_held.cpu(),
        "key_frame_points": res.key_frame_points,
        "key_frames": json.dumps(res.key_frames),
        "other_persons": res.other_persons.cpu(),
        "det_ran": res.det_ran.cpu(),
        "pose_ran": res.pose_ran.cpu(),
        "gate_distance": res.gate_distance.cpu(),
    }


def run_all(models: dict) -> dict:
    from wanprep_torch import Preprocessor

    out = {}
    for name, ((det, pose), frames, opts) in scenes().items():
        pre = Preprocessor(models[det], models[pose], progress=False, **opts)
        out[name] = summarise(pre(frames))
    return out


if __name__ == "__main__":
    import tempfile

    from wanprep_torch.testkit import build_test_models

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    models = model_paths(build_test_models(tmp, fp16=False), tmp)
    snap = run_all(models)
    SNAPSHOT.parent.mkdir(exist_ok=True)
    torch.save(snap, SNAPSHOT)
    print(f"wrote {SNAPSHOT} ({len(snap)} scenes)", file=sys.stderr)
