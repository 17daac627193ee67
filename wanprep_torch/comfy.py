"""ComfyUI nodes: drop-in replacements for the "WanAnimatePreprocess" pose nodes.

Same class names, inputs, outputs and order as the reference, so saved workflows load unchanged:

* ``OnnxDetectionModelLoader`` -> POSEMODEL (models from ``ComfyUI/models/detection``)
* ``PoseAndFaceDetection`` (model, images, width, height; optional retarget_image, face_padding,
  and this project's ``gate`` last) -> pose_data, face_images, key_frame_body_points, bboxes,
  face_bboxes, plus an extra last output ``pose_keypoint`` (POSE_KEYPOINT, see
  :func:`wanprep_torch.wan.pose_keypoint_frames`)
* ``DrawViTPose`` -> pose_images
* ``PoseRetargetPromptHelper`` -> prompt, retarget_prompt
* ``PoseDetectionOneToAllAnimation`` (model, images, width, height, align_to, draw_face_points,
  draw_head; optional ref_image) -> pose_images, ref_pose_image, ref_image, ref_mask

Importable without ComfyUI (for tests and scripts): ``folder_paths``, ``comfy.utils`` and
``comfy.model_management`` are imported inside the functions, with fallbacks. Without
``folder_paths`` the model list comes from the folder named by ``WANPREP_COMFY_MODELS``.

Bad input raises ValueError / TypeError whose message starts with the node input at fault
("retarget_image: ...", "images: ..."), checked at the boundary before any work is done (but
for the frames' values, which the pipeline checks chunk by chunk as it reads them).

Frames are processed at their own size and every output is in their pixels; ``width`` and
``height`` only set the area the retarget image is resized to (as the reference). ``bboxes``
is the reference's one-element list with frame 0's (x1, y1, x2, y2); ``face_bboxes`` one
(x1, y1, x2, y2) per frame; the per-frame person boxes are in ``pose_data["wanprep"]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from . import wan
from .frames import MIN_SIDE, as_tchw
from .options import GATES, SMOOTHING, OptionError, PipelineOptions, node_input
from .posemeta import PoseMeta, check_wan_meta
from .progress import Progress
from .retargeting import retarget
from .runtime import ModelError, open_models

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "OnnxDetectionModelLoader",
    "PoseAndFaceDetection",
    "DrawViTPose",
    "PoseRetargetPromptHelper",
    "PoseDetectionOneToAllAnimation",
    "PoseModel",
    "retarget_prompts",
]

log = logging.getLogger("wanprep_torch")

CATEGORY = "WanAnimatePreprocess"
MODELS_ENV = "WANPREP_COMFY_MODELS"
ONNX_DEVICES = ["CUDAExecutionProvider", "CPUExecutionProvider"]
GATE_PRESETS = list(GATES)  # the command line's --gate and --smooth choices (options.py)
SMOOTH_CHOICES = list(SMOOTHING)
MAX_PEOPLE = 16  # Pose and Face Detection's "people" input
_MODEL_TIP = "These models are loaded from the 'ComfyUI/models/detection' folder"
_DRAW_CHUNK = 64  # pose frames drawn per step, then moved to the CPU: bounds device memory


# ----------------------------------------------------------------------------- ComfyUI hooks


def _comfy_module(name: str):
    """A ComfyUI module, or None outside ComfyUI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _folder_paths():
    """ComfyUI's folder_paths with the "detection" folder registered, or None."""
    fp = _comfy_module("folder_paths")
    if fp is None:
        return None
    known = getattr(fp, "folder_names_and_paths", None)
    if isinstance(known, dict) and "detection" not in known and hasattr(fp, "add_model_folder_path"):
        models_dir = getattr(fp, "models_dir", None)
        if models_dir:
            fp.add_model_folder_path("detection", os.path.join(models_dir, "detection"))
    return fp


def _env_models_dir() -> Path | None:
    d = os.environ.get(MODELS_ENV)
    return Path(d) if d else None


def detection_models() -> list[str]:
    """Model file names for the loader's lists."""
    fp = _folder_paths()
    if fp is not None:
        return list(fp.get_filename_list("detection"))
    d = _env_models_dir()
    if d is None or not d.is_dir():
        return []
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.onnx") if p.is_file())


def model_path(name: str) -> Path:
    """Full path of a model picked in the loader (raises FileNotFoundError if missing)."""
    fp = _folder_paths()
    if fp is not None:
        if hasattr(fp, "get_full_path_or_raise"):
            return Path(fp.get_full_path_or_raise("detection", name))
        full = fp.get_full_path("detection", name)  # older ComfyUI
        if full is None:
            raise FileNotFoundError(f"model {name!r} not found in the 'detection' model folders")
        return Path(full)
    d = _env_models_dir()
    if d is None:
        raise FileNotFoundError(f"model {name!r}: ComfyUI's folder_paths is missing and {MODELS_ENV} is not set")
    path = d / name
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


def torch_device(onnx_device: str) -> torch.device:
    """Where frames are processed for the loader's onnx_device choice."""
    if onnx_device == "CPUExecutionProvider":
        return torch.device("cpu")
    mm = _comfy_module("comfy.model_management")
    if mm is not None and hasattr(mm, "get_torch_device"):
        dev = torch.device(mm.get_torch_device())
        if dev.type == "cuda":
            return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    log.warning("wanprep: CUDAExecutionProvider chosen but torch sees no CUDA device; running on the CPU")
    return torch.device("cpu")


def _draw_device() -> torch.device:
    return torch_device("CUDAExecutionProvider") if torch.cuda.is_available() else torch.device("cpu")


class _Progress(Progress):
    """The common progress helper shown as ComfyUI's progress bar (nothing on the terminal), with
    ComfyUI's interrupt check on every update (fed by the Preprocessor's callback)."""

    def __init__(self, total: int):
        super().__init__(max(int(total), 1), enabled=False)
        utils = _comfy_module("comfy.utils")
        self.ui = utils.ProgressBar(self.total) if utils is not None and hasattr(utils, "ProgressBar") else None
        mm = _comfy_module("comfy.model_management")
        self._check = getattr(mm, "throw_exception_if_processing_interrupted", None) if mm is not None else None

    def check_interrupt(self) -> None:
        if self._check is not None:
            self._check()

    def set(self, done: int) -> None:
        super().set(done)
        if self.ui is not None:
            self.ui.update_absolute(min(int(done), self.total))

    def __call__(self, stage: str, done: int, total=None) -> None:
        self.check_interrupt()
        self.set(done)


class _CallbackRelay:
    """The Preprocessor's progress_callback; forwards to the current run's progress, if any.
    Lets one cached Preprocessor serve runs that each have their own progress bar."""

    def __init__(self):
        self.target = None

    def __call__(self, stage, done, total):
        if self.target is not None:
            self.target(stage, done, total)


# ----------------------------------------------------------------------------- input checks
# Node users wire inputs, not frames or iterables: every message starts with the input's name.


def _blame(name: str, exc: Exception) -> Exception:
    """``exc`` again (same type where it takes a message) with ``name: `` in front."""
    message = f"{name}: {exc}"
    try:
        return type(exc)(message)
    except Exception:  # an exception type with another signature
        return ValueError(message)


def _image_input(name: str, value, first_only: bool = False, values: bool = True) -> torch.Tensor:
    """An IMAGE input checked with the library's frame rules (dtype, NaN / inf, values outside
    [0, 1]); ``first_only`` checks only the frame the node uses; ``values=False`` leaves the
    scan of the values (a pass over the batch) to the caller (the pipeline checks each chunk)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a ComfyUI IMAGE (a (T, H, W, 3) tensor), got {type(value).__name__}")
    if value.dim() != 4 or value.shape[-1] != 3:
        raise ValueError(f"{name}: expected a ComfyUI IMAGE (T, H, W, 3), got shape {tuple(value.shape)}")
    t, h, w = value.shape[:3]
    if t == 0:
        raise ValueError(f"{name}: the IMAGE batch is empty (0 images)")
    if h < MIN_SIDE or w < MIN_SIDE:
        what = "the image is" if t == 1 or first_only else "the images are"
        raise ValueError(f"{name}: {what} {w}x{h} px; at least {MIN_SIDE}x{MIN_SIDE} px is needed")
    try:
        as_tchw(value[:1] if first_only else value, finite=values)
    except (TypeError, ValueError) as exc:
        raise _blame(name, exc) from None
    return value


def _int_input(node, name: str, value) -> int:
    """A whole number within the min / max that ``node``'s INPUT_TYPES declares for ``name``
    (ComfyUI checks those for widgets, not for values linked from other nodes)."""
    spec = node.INPUT_TYPES()
    entry = {**spec.get("required", {}), **spec.get("optional", {})}[name]
    opts = entry[1] if len(entry) > 1 else {}
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or int(value) != value:
        raise TypeError(f"{name}: expected a whole number, got {value!r}")
    lo, hi = opts.get("min"), opts.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}: {int(value)} is outside the allowed range {lo}..{hi}")
    return int(value)


def _choice_input(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name}: {value!r} is not one of {list(options)}")
    return value


def _bool_input(name: str, value) -> bool:
    """A BOOLEAN input; also the strings "True" / "False" (the reference declares its default
    as the string 'True', so its saved workflows hold that string)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TypeError(f"{name}: expected a boolean (true / false), got {value!r}")


def _model_input(model) -> "PoseModel":
    if not isinstance(model, PoseModel):
        raise TypeError(f"model: expected the POSEMODEL of the ONNX Detection Model Loader, got {type(model).__name__}")
    return model


# ----------------------------------------------------------------------------- POSEMODEL


class PoseModel:
    """The POSEMODEL value: the two model files, the device, their ONNX Runtime sessions
    (opened once) and Preprocessors built on them (one per option set; all share the sessions,
    so changing an option does not load the models again). ComfyUI runs one node at a time,
    which is what sharing the sessions needs."""

    def __init__(self, det_path, pose_path, device: torch.device, onnx_device: str = ""):
        self.det_path = Path(det_path)
        self.pose_path = Path(pose_path)
        self.device = torch.device(device)
        self.onnx_device = onnx_device
        self.relay = _CallbackRelay()
        self._sessions = None
        self._cache: dict = {}

    def sessions(self):
        """The detector and pose sessions (opened on first use); a bad file raises ModelError
        naming the loader input it came from."""
        if self._sessions is None:
            try:
                self._sessions = open_models(self.det_path, self.pose_path, self.device)
            except ModelError as exc:
                raise _blame(self._culprit(str(exc)), exc) from None
        return self._sessions

    def _culprit(self, message: str) -> str:
        # Every ModelError of open_models names the file; the longer path is tried first so
        # that one path being a prefix of the other does not mislead.
        named = sorted((("yolo_model", self.det_path), ("vitpose_model", self.pose_path)), key=lambda e: -len(str(e[1])))
        for name, path in named:
            if str(path) in message:
                return name
        return "vitpose_model / yolo_model"

    def options(self, **inputs) -> PipelineOptions:
        """The Preprocessor's options (:class:`~wanprep_torch.options.PipelineOptions`, as the
        command line's) from node inputs of the same names (gate, smooth, face_padding, people;
        the rest at the defaults) on this model's device, checked by the shared validation:
        a ValueError whose message starts with the node input at fault."""
        try:
            return PipelineOptions(device=str(self.device), **inputs).check(node_input)
        except OptionError as exc:
            raise ValueError(str(exc)) from None

    def preprocessor(self, options: PipelineOptions):
        """The Preprocessor of ``options`` (from :meth:`options`) on this model's sessions,
        built once per option set. What the nodes add, their own: face crops as float32 on the
        CPU (ComfyUI IMAGEs; long videos' crops stay off the GPU), progress through the relay
        (each run's ComfyUI bar)."""
        if torch.device(options.device) != self.device:
            raise ValueError(f"options for {options.device}, but the model runs on {self.device}")
        pre = self._cache.get(options)
        if pre is None:
            det, pose = self.sessions()
            pre = options.preprocessor(det, pose, face_dtype=torch.float32, face_device="cpu", progress_callback=self.relay)
            self._cache[options] = pre
        return pre

    def __repr__(self) -> str:
        return f"PoseModel(det={self.det_path.name}, pose={self.pose_path.name}, device={self.device})"


# ----------------------------------------------------------------------------- nodes


class OnnxDetectionModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        names = detection_models()
        return {
            "required": {
                "vitpose_model": (names, {"tooltip": _MODEL_TIP + " (ViTPose wholebody, 133 keypoints)"}),
                "yolo_model": (names, {"tooltip": _MODEL_TIP + " (YOLO person detector)"}),
                "onnx_device": (ONNX_DEVICES, {"default": "CUDAExecutionProvider", "tooltip": "Device to run the ONNX models on"}),
            },
        }

    RETURN_TYPES = ("POSEMODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "loadmodel"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the ViTPose (pose) and YOLO (person detector) ONNX models for wanprep_torch's torch-native preprocessing."

    def loadmodel(self, vitpose_model, yolo_model, onnx_device):
        _choice_input("onnx_device", onnx_device, ONNX_DEVICES)
        paths = {}
        for name, value in (("vitpose_model", vitpose_model), ("yolo_model", yolo_model)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name}: expected a model file name from the 'detection' folder, got {value!r}")
            try:
                paths[name] = model_path(value)
            except FileNotFoundError as exc:
                raise _blame(name, exc) from None
        if paths["vitpose_model"].resolve() == paths["yolo_model"].resolve():
            raise ValueError(f"vitpose_model and yolo_model: both name {vitpose_model!r}; pick the pose model and the detector")
        model = PoseModel(paths["yolo_model"], paths["vitpose_model"], torch_device(onnx_device), onnx_device)
        model.preprocessor(model.options())  # load now: a wrong file fails here, not mid-workflow
        return (model,)


def _frame_chunks(images: torch.Tensor, size: int, device: torch.device):
    """The IMAGE batch chunk by chunk on ``device`` (only one chunk of frames is there at a
    time), at its own size: stretching frames to width x height would put every output in the
    wrong pixels, as the reference does not."""
    for s in range(0, images.shape[0], size):
        yield images[s : s + size].to(device)


class PoseAndFaceDetection:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("POSEMODEL",),
                "images": ("IMAGE",),
                "width": ("INT", {"default": 832, "min": 64, "max": 2048, "step": 1, "tooltip": "Width of the generation: with width x height it sets the area the retarget image is resized to (frames are processed at their own size)"}),
                "height": ("INT", {"default": 480, "min": 64, "max": 2048, "step": 1, "tooltip": "Height of the generation: with width x height it sets the area the retarget image is resized to (frames are processed at their own size)"}),
            },
            "optional": {
                "retarget_image": ("IMAGE", {"default": None, "tooltip": "Optional reference image: the poses are retargeted onto the body proportions of the person in it"}),
                "face_padding": ("INT", {"default": 0, "min": 0, "max": 512, "step": 1, "tooltip": "Extra pixels on each side of the face box before it is resized to 512x512"}),
                "gate": (GATE_PRESETS, {"default": "safe", "tooltip": "Frame skipping: 'off' runs both models on every frame; 'safe' skips near-still frames and interpolates their keypoints; 'fast' skips more"}),
                "smooth": (SMOOTH_CHOICES, {"default": "auto", "tooltip": "Keypoint smoothing (zero-lag, noise measured from the video; steadier bones and face crops): 'auto' is on with gate safe/fast and off with gate off (the reference's per-frame result)"}),
                "people": ("INT", {"default": 1, "min": 1, "max": MAX_PEOPLE, "step": 1, "tooltip": "How many people to follow with identities (1: the single subject, as the reference)"}),
                "person": ("INT", {"default": 0, "min": 0, "max": MAX_PEOPLE * 8, "step": 1, "tooltip": "Which person feeds the outputs: 0 the primary subject (the largest at the start, kept while in view), k the person with identity k (needs people > 1)"}),
            },
        }

    # "BBOX," is the reference's own spelling of face_bboxes' type: saved workflows' links carry
    # it, and consumers written for the reference declare it (README, differences).
    RETURN_TYPES = ("POSEDATA", "IMAGE", "STRING", "BBOX", "BBOX,", "POSE_KEYPOINT")
    RETURN_NAMES = ("pose_data", "face_images", "key_frame_body_points", "bboxes", "face_bboxes", "pose_keypoint")
    FUNCTION = "process"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Detects the person's wholebody pose and crops the face (512x512) on every frame, torch-native; "
        "optionally retargets the poses onto a reference image's body. bboxes holds frame 0's box "
        "(x1, y1, x2, y2), face_bboxes one per frame, in the frames' pixels; pose_keypoint holds the "
        "poses of pose_data['pose_metas'] as POSE_KEYPOINT (comfyui_controlnet_aux's format: pixels, "
        "confidence 1 for a point scored >= 0.3, else 0, 0, 0)."
    )

    def process(self, model, images, width, height, retarget_image=None, face_padding=0, gate="safe", smooth="auto", people=1, person=0):
        model = _model_input(model)
        _image_input("images", images, values=False)  # the pipeline scans the values chunk by chunk
        width, height = _int_input(type(self), "width", width), _int_input(type(self), "height", height)
        people, person = _int_input(type(self), "people", people), _int_input(type(self), "person", person)
        if person and people == 1:
            raise ValueError(f"person: {person} names a tracked identity, which needs people > 1 (person 0 is the subject)")
        if retarget_image is not None:
            _image_input("retarget_image", retarget_image, first_only=True)
        face_padding = _int_input(type(self), "face_padding", face_padding)
        pre = model.preprocessor(model.options(gate=gate, smooth=smooth, face_padding=face_padding, people=people))
        progress = _Progress(images.shape[0])
        progress.check_interrupt()
        model.relay.target = progress
        try:
            res = pre(
                _frame_chunks(images, pre.chunk_size, pre.device),
                reference_image=None if retarget_image is None else retarget_image[0],
                reference_size=(width, height),
            )
        except ValueError as exc:
            # The inputs' shapes were checked above; what is left is the frames' values (the
            # pipeline's message for a chunk of them) and the retargeting onto the reference's
            # person (a person of zero height, say).
            message = str(exc)
            if message.startswith("chunk "):
                raise ValueError(f"images: {message.split(': ', 1)[-1]}") from None
            if retarget_image is not None and message.startswith("retarget"):
                raise _blame("retarget_image", exc) from None
            raise
        finally:
            model.relay.target = None
        progress.set(progress.total)
        return _node_outputs(res, person)


def _node_outputs(res, person: int = 0) -> tuple:
    """Pose and Face Detection's outputs from a Result: the primary subject's (``person`` 0)
    or identity ``person``'s; ``pose_data["wanprep"]["people"]`` and ``pose_keypoint`` carry
    everyone followed when there are several people."""
    everyone = res.people
    if person:
        if person > len(everyone):
            raise ValueError(f"person: {person}, but {len(everyone)} people were found (identities 1..{len(everyone)})")
        sel = everyone[person - 1]
        res = dataclasses.replace(sel, reference_meta=res.reference_meta, reference_image=res.reference_image, reference_box=res.reference_box)
        if res.reference_meta is not None:
            try:
                res.retargeted = retarget(sel.pose_metas, res.reference_meta)
            except ValueError as exc:  # e.g. not in view on frame 0, where retargeting is planned
                raise ValueError(f"person: identity {person} cannot be retargeted: {exc}") from None
    first_box = tuple(int(v) for v in res.bboxes[0, :4].cpu().tolist())
    face_bboxes = [tuple(int(v) for v in b) for b in res.face_bboxes]
    extras = {
        "keypoints": res.keypoints.cpu(),  # (T, 133, 3) frame pixels + score
        "bboxes": res.bboxes.cpu(),  # (T, 5) with score (-1: full-frame fallback)
        "face_bboxes": face_bboxes,
        "face_held": res.face_held.cpu(),
        "other_persons": res.other_persons.cpu(),
        "key_frames": res.key_frames,
        "width": res.width,
        "height": res.height,
        "timings": res.timings,
        "providers": res.providers,
        "det_ran": res.det_ran.cpu(),
        "pose_ran": res.pose_ran.cpu(),
        "gate_distance": res.gate_distance.cpu(),
        "reference_box": None if res.reference_box is None else res.reference_box.cpu(),
    }
    if everyone is not None:
        extras["person"] = person
        extras["people"] = [
            {"track_id": p.track_id, "present": p.present.cpu(), "keypoints": p.keypoints.cpu(), "bboxes": p.bboxes.cpu(), "pose_metas": p.pose_metas}
            for p in everyone
        ]
    if res.retargeted is not None:
        metas = res.retargeted
        ref_image = res.reference_image.to("cpu", torch.float32).numpy()  # (h, w, 3) in [0, 1], as the reference's numpy image
    else:
        metas = [PoseMeta.from_wan(m) for m in res.pose_metas]
        ref_image = None
    pose_data = {
        "retarget_image": ref_image,
        "pose_metas": metas,  # PoseMeta (pixels): retargeted with a reference image, else the detected poses
        "refer_pose_meta": res.reference_meta,  # Wan meta dict or None
        "pose_metas_original": res.pose_metas,  # Wan meta dicts (normalised x, y, score)
        "wanprep": extras,
    }
    face_images = res.face_images.to("cpu", torch.float32)
    keypoint_poses = metas
    if everyone is not None and res.retargeted is None:
        keypoint_poses = wan.everyone_per_frame([p.pose_metas for p in everyone], [p.present for p in everyone], metas)
    return (pose_data, face_images, res.key_frame_points, [first_box], face_bboxes, wan.pose_keypoint_frames(keypoint_poses))


def _meta_dict(meta, what: str = "pose_metas entry") -> Mapping:
    """A Wan meta dict from a dict, or from a reference AAPoseMeta-like object (pixel
    coordinates in kps_* plus scores in kps_*_p), as the reference's retargeting produces."""
    if isinstance(meta, Mapping):
        return meta
    if isinstance(meta, PoseMeta):
        return meta.to_wan()
    if not hasattr(meta, "kps_body"):
        raise TypeError(f"{what}: expected a Wan meta dict or a pose meta object, got {type(meta).__name__}")
    w, h = float(meta.width), float(meta.height)

    def part(xy_name, p_name):
        xy = getattr(meta, xy_name, None)
        if xy is None:
            return None
        xy = np.asarray(xy, dtype=np.float64)[:, :2] / (w, h)
        p = getattr(meta, p_name, None)
        p = np.ones(len(xy)) if p is None else np.asarray(p, dtype=np.float64).reshape(-1)
        return np.concatenate([xy, p[:, None]], axis=1)

    return {
        "width": int(w),
        "height": int(h),
        "keypoints_body": part("kps_body", "kps_body_p"),
        "keypoints_left_hand": part("kps_lhand", "kps_lhand_p"),
        "keypoints_right_hand": part("kps_rhand", "kps_rhand_p"),
        "keypoints_face": part("kps_face", "kps_face_p"),
    }


def _pose_data_input(pose_data) -> Mapping:
    if not isinstance(pose_data, Mapping):
        raise TypeError(f"pose_data: expected the POSEDATA of Pose and Face Detection, got {type(pose_data).__name__}")
    return pose_data


def _pose_metas_input(pose_data) -> list[Mapping]:
    """pose_data["pose_metas"] as checked Wan meta dicts; messages name pose_data."""
    metas = _pose_data_input(pose_data).get("pose_metas")
    if not isinstance(metas, (list, tuple)) or len(metas) == 0:
        raise ValueError(f"pose_data: 'pose_metas' must be a non-empty list of poses, got {metas!r:.80}")
    out = []
    for i, meta in enumerate(metas):
        what = f"pose_data: pose_metas[{i}]"
        out.append(_meta_dict(meta, what))
        check_wan_meta(out[-1], what)
    return out


class DrawViTPose:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_data": ("POSEDATA",),
                "width": ("INT", {"default": 832, "min": 64, "max": 2048, "step": 1, "tooltip": "Width of the generation"}),
                "height": ("INT", {"default": 480, "min": 64, "max": 2048, "step": 1, "tooltip": "Height of the generation"}),
                "retarget_padding": ("INT", {"default": 16, "min": 0, "max": 512, "step": 1, "tooltip": "When > 0 and the pose data has a retarget image, the pose is cropped to frame 0's drawn bounds plus this padding (black past the canvas) and resized to the target size"}),
                "body_stick_width": ("INT", {"default": -1, "min": -1, "max": 20, "step": 1, "tooltip": "Width of the body sticks. Set to 0 to disable body drawing, -1 for auto"}),
                "hand_stick_width": ("INT", {"default": -1, "min": -1, "max": 20, "step": 1, "tooltip": "Width of the hand sticks. Set to 0 to disable hand drawing, -1 for auto"}),
                "draw_head": ("BOOLEAN", {"default": True, "tooltip": "Whether to draw head keypoints"}),
            },
            "optional": {
                "draw_people": ("BOOLEAN", {"default": False, "tooltip": "With pose data of several people (Pose and Face Detection's people > 1): draw everyone followed (their detected poses, in the frames' canvas), not only the selected person"}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_images",)
    FUNCTION = "process"
    CATEGORY = CATEGORY
    DESCRIPTION = "Draws pose images from pose data (torch-native)."

    def process(self, pose_data, width, height, retarget_padding=16, body_stick_width=-1, hand_stick_width=-1, draw_head=True, draw_people=False):
        from .draw import draw_pose
        from .raster import lazy_zeros

        metas = _pose_metas_input(pose_data)
        people = _people_metas(pose_data) if _bool_input("draw_people", draw_people) else None
        node = type(self)
        width, height = _int_input(node, "width", width), _int_input(node, "height", height)
        retarget_padding = _int_input(node, "retarget_padding", retarget_padding)
        body_stick_width = _int_input(node, "body_stick_width", body_stick_width)
        hand_stick_width = _int_input(node, "hand_stick_width", hand_stick_width)
        draw_head = _bool_input("draw_head", draw_head)
        n = len(metas)
        # As the reference: the crop-to-bounds framing only applies to retargeted poses.
        crop = retarget_padding > 0 and pose_data.get("retarget_image") is not None
        progress = _Progress(n)

        def on_chunk(done: int) -> None:
            progress.check_interrupt()
            progress.set(done)

        style = dict(
            out_size=(height, width),
            retarget_padding=retarget_padding,
            body_stick_width=body_stick_width,
            hand_stick_width=hand_stick_width,
            draw_head=draw_head,
            device=_draw_device(),
            chunk=_DRAW_CHUNK,
        )
        # Drawn chunk by chunk on the draw device straight into the CPU output (zeros whose
        # pages the OS maps lazily: only the painted pixels are written).
        out = lazy_zeros((n, height, width, 3), torch.float32, torch.device("cpu"))
        if people is None:
            draw_pose(metas, mode="crop" if crop else "pad", out=out, on_chunk=on_chunk, **style)
            return (out,)
        # Everyone: each person drawn in the frames' canvas, combined by the brighter pixel.
        if any(len(p) != n for p in people):
            raise ValueError(f"pose_data: every person needs {n} poses, one per frame")
        for poses in people:
            torch.maximum(out, draw_pose(poses, mode="pad", **style), out=out)
            progress.check_interrupt()
        progress.set(n)
        return (out,)


def _people_metas(pose_data) -> list | None:
    """Everyone's Wan metas from Pose and Face Detection's pose data with people > 1 (None
    when it holds one subject)."""
    people = _pose_data_input(pose_data).get("wanprep", {}).get("people")
    if people is None:
        return None
    return [[_meta_dict(m, f"pose_data: person {p.get('track_id')}") for m in p["pose_metas"]] for p in people]


# Prompts of the reference's PoseRetargetPromptHelper (originally for Flux Kontext).
PROMPT_FORWARD = "Change the person to face forward."
_PROMPTS = {
    ("legs", True): "Change the person to a standard T-pose (facing forward with arms extended). The person is standing. Feet and Hands are visible in the image.",
    ("legs", False): "Change the person to a standard pose with the face oriented forward and arms extending straight down by the sides. The person is standing. Feet and Hands are visible in the image.",
    ("arms", True): "Change the person to a standard T-pose (facing forward with arms extended). Hands are visible in the image.",
    ("arms", False): "Change the person to a standard pose with the face oriented forward and arms extending straight down by the sides. Hands are visible in the image.",
}
ARM_ROWS = (3, 4, 6, 7)  # Wan body rows: elbows and wrists
LEG_ROWS = (9, 10, 12, 13)  # knees and ankles
PROMPT_MIN_SCORE = 0.75


def _canvas_of(meta) -> tuple[int, int]:
    if isinstance(meta, Mapping):
        return int(meta["width"]), int(meta["height"])
    return int(meta.width), int(meta.height)


def _visible(body: np.ndarray, rows) -> bool:
    """Any of ``rows`` at x <= 1, y <= 1 (normalised) with score >= 0.75 (NaN is not visible)."""
    b = body[list(rows)]
    return bool(((b[:, 0] <= 1) & (b[:, 1] <= 1) & (b[:, 2] >= PROMPT_MIN_SCORE)).any())


def retarget_prompts(pose_metas_original, refer_pose_meta) -> tuple[str, str]:
    """The reference's PoseRetargetPromptHelper: (prompt for the template, prompt for the
    reference pose).

    Without a reference pose both are "Change the person to face forward.". Otherwise the
    template's Wan meta dicts are scanned in order for a visible arm joint and a visible leg
    joint (stopping once both are found); the wording then follows what was seen (legs, else
    arms, else neither) and each pose's orientation (landscape: width > height), the template's
    from the last meta scanned, the reference's from its own canvas.
    """
    if refer_pose_meta is None:
        return PROMPT_FORWARD, PROMPT_FORWARD
    arms = legs = False
    last = None
    for meta in pose_metas_original:
        last = meta
        body = np.asarray(_meta_dict(meta)["keypoints_body"], dtype=np.float64)
        arms = arms or _visible(body, ARM_ROWS)
        legs = legs or _visible(body, LEG_ROWS)
        if arms and legs:
            break
    if not (arms or legs):
        return PROMPT_FORWARD, PROMPT_FORWARD
    seen = "legs" if legs else "arms"
    tw, th = _canvas_of(last)
    rw, rh = _canvas_of(refer_pose_meta)
    return _PROMPTS[(seen, tw > th)], _PROMPTS[(seen, rw > rh)]


class PoseRetargetPromptHelper:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pose_data": ("POSEDATA",)}}

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("prompt", "retarget_prompt")
    FUNCTION = "process"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Text prompts for pose retargeting from which limbs of the template pose are visible "
        "(originally used for Flux Kontext)."
    )

    def process(self, pose_data):
        pose_data = _pose_data_input(pose_data)
        try:
            return retarget_prompts(pose_data.get("pose_metas_original") or [], pose_data.get("refer_pose_meta"))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"pose_data: not the POSEDATA of Pose and Face Detection ({type(exc).__name__}: {exc})") from None


ONETOALL_CHOICES = ["full", "weak", "none"]
ALIGN_CHOICES = ["ref", "pose", "none"]


def _person_keypoints(pre, images: torch.Tensor, progress: "_Progress | None" = None) -> torch.Tensor:
    """(T, 133, 3) keypoints of the IMAGE batch in its own pixels, on the CPU: the detector's
    largest person per frame, then the pose model (every frame, as the reference node)."""
    out = []
    for s in range(0, images.shape[0], pre.chunk_size):
        if progress is not None:
            progress.check_interrupt()
        chunk = images[s : s + pre.chunk_size].to(pre.device)
        out.append(pre.estimator(chunk, pre.detector(chunk).boxes).cpu())
        if progress is not None:
            progress.set(s + chunk.shape[0])
    return torch.cat(out)


class PoseDetectionOneToAllAnimation:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("POSEMODEL",),
                "images": ("IMAGE",),
                "width": ("INT", {"default": 832, "min": 64, "max": 2048, "step": 2, "tooltip": "Width of the pose images"}),
                "height": ("INT", {"default": 480, "min": 64, "max": 2048, "step": 2, "tooltip": "Height of the pose images"}),
                "align_to": (ALIGN_CHOICES, {"default": "ref", "tooltip": "ref: retarget the poses to the reference character; pose: warp the reference image onto the first pose; none: no alignment"}),
                "draw_face_points": (ONETOALL_CHOICES, {"default": "full", "tooltip": "Face points: full, weak (faint) or none"}),
                "draw_head": (ONETOALL_CHOICES, {"default": "full", "tooltip": "Head limbs: full, weak (faint) or none"}),
            },
            "optional": {
                "ref_image": ("IMAGE", {"tooltip": "The reference character image (one frame)"}),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("pose_images", "ref_pose_image", "ref_image", "ref_mask")
    FUNCTION = "process"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Detects the poses and draws them in the One-to-All Animation model's style, optionally aligned "
        "to a reference character image (torch-native, batched drawing)."
    )

    def process(self, model, images, width, height, align_to="ref", draw_face_points="full", draw_head="full", ref_image=None):
        from .onetoall import onetoall

        model = _model_input(model)
        _image_input("images", images)
        node = type(self)
        width, height = _int_input(node, "width", width), _int_input(node, "height", height)
        _choice_input("align_to", align_to, ALIGN_CHOICES)
        _choice_input("draw_face_points", draw_face_points, ONETOALL_CHOICES)
        _choice_input("draw_head", draw_head, ONETOALL_CHOICES)
        ref = None if ref_image is None else _image_input("ref_image", ref_image, first_only=True)[:1]
        pre = model.preprocessor(model.options(gate="off"))  # keypoints on every frame
        progress = _Progress(images.shape[0])
        kps = _person_keypoints(pre, images, progress)
        ref_kps = None if ref is None else _person_keypoints(pre, ref)[0]
        try:
            out = onetoall(
                kps, width, height, align_to, draw_face_points, draw_head,
                reference_keypoints=ref_kps, reference_image=None if ref is None else ref[0].cpu(),
                frame_size=(int(images.shape[1]), int(images.shape[2])),
            )
        except ValueError as exc:
            # Every other input was checked above: what is left is the reference (no person in it).
            if ref is not None:
                raise _blame("ref_image", exc) from None
            raise
        progress.set(progress.total)
        return tuple(t.to("cpu", torch.float32) for t in out)


NODE_CLASS_MAPPINGS = {
    "OnnxDetectionModelLoader": OnnxDetectionModelLoader,
    "PoseAndFaceDetection": PoseAndFaceDetection,
    "DrawViTPose": DrawViTPose,
    "PoseRetargetPromptHelper": PoseRetargetPromptHelper,
    "PoseDetectionOneToAllAnimation": PoseDetectionOneToAllAnimation,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "OnnxDetectionModelLoader": "ONNX Detection Model Loader",
    "PoseAndFaceDetection": "Pose and Face Detection",
    "DrawViTPose": "Draw ViT Pose",
    "PoseRetargetPromptHelper": "Pose Retarget Prompt Helper",
    "PoseDetectionOneToAllAnimation": "Pose Detection OneToAll Animation",
}
