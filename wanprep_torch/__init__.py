"""wanprep_torch: torch-native pose and face preprocessing for Wan 2.2 Animate.

    from wanprep_torch import Preprocessor
    pre = Preprocessor(det_model="yolov10m.onnx", pose_model="vitpose_wholebody.onnx", device="cuda")
    res = pre(frames)  # (T, H, W, 3) float in [0, 1], uint8, or (T, 3, H, W); or an iterable of chunks
"""

from .detect import PersonDetector
from .pipeline import Preprocessor, Result
from .pose import PoseEstimator
from .posemeta import PoseMeta
from .retargeting import retarget
from .runtime import ModelError

__all__ = ["Preprocessor", "Result", "PersonDetector", "PoseEstimator", "ModelError", "PoseMeta", "retarget"]
__version__ = "0.1.0"
