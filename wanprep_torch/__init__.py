"""wanprep_torch: torch-native pose and face preprocessing for Wan 2.2 Animate.

    from wanprep_torch import Preprocessor
    pre = Preprocessor(det_model="yolov10m.onnx", pose_model="vitpose_wholebody.onnx", device="cuda")
    res = pre(frames)  # (T, H, W, 3) float in [0, 1], uint8, or (T, 3, H, W); or an iterable of chunks

The public names are imported on first use (PEP 562), so that ``import wanprep_torch`` (and the
``wanprep`` command's help, version and model list) does not load torch or ONNX Runtime.
"""

from importlib import import_module

__all__ = ["Preprocessor", "Result", "PersonDetector", "PoseEstimator", "ModelError", "PoseMeta", "retarget"]
__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "PersonDetector": ".detect",
    "Preprocessor": ".pipeline",
    "Result": ".pipeline",
    "PoseEstimator": ".pose",
    "PoseMeta": ".posemeta",
    "retarget": ".retargeting",
    "ModelError": ".runtime",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
