"""Test kit: synthetic colour-coded people with ground-truth keypoints, and small analytic ONNX
models (detector + wholebody pose) that find them. Used by the tests and the offline demo."""

from .models import build_test_models, default_cache_dir
from .scene import (
    KEYPOINT_CODES,
    PeopleClip,
    SyntheticClip,
    make_clip,
    make_crowd_clip,
    make_people_clip,
    make_two_person_clip,
    render_frame,
)
from .tryout import TryoutClip, write_tryout_clip

__all__ = [
    "make_clip",
    "make_two_person_clip",
    "make_people_clip",
    "make_crowd_clip",
    "PeopleClip",
    "render_frame",
    "SyntheticClip",
    "KEYPOINT_CODES",
    "build_test_models",
    "default_cache_dir",
    "write_tryout_clip",
    "TryoutClip",
]
