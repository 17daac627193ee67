"""wanprep_torch: torch-native pose and face preprocessing for Wan 2.2 Animate.

    from wanprep_torch import Preprocessor
    pre = Preprocessor(det_model="yolov10m.onnx", pose_model="vitpose_wholebody.onnx", device="cuda")
    res = pre(frames)  # (T, H, W, 3) float in [0, 1], uint8, or (T, 3, H, W); or an iterable of chunks

The names below are imported on first use: importing the package (as the `wanprep` command
does before it can handle Ctrl-C) does not load torch and ONNX Runtime.
"""

import importlib

__all__ = ["Preprocessor", "Result", "PersonDetector", "PoseEstimator", "ModelError", "PoseMeta", "retarget"]
__version__ = "0.1.0"

_HOMES = {
    "PersonDetector": "detect",
    "Preprocessor": "pipeline",
    "Result": "pipeline",
    "PoseEstimator": "pose",
    "PoseMeta": "posemeta",
    "retarget": "retargeting",
    "ModelError": "runtime",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'wanprep_torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
