"""The Preprocessor: frames -> detector -> pose model -> Wan outputs, one chunk at a time."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import wan
from .assembly import CrowdAssembly, CrowdFrames, CrowdSmoothing, SubjectAssembly, SubjectSmoothing, flushed, smoothed
from .buffers import Workspace
from .config import CHUNK_SIZE, override
from .crowd import CrowdScheduler, PeopleNoise
from .detect import DetectConfig, PersonDetector
from .frames import FrameBatch, as_tchw, iter_chunks
from .gate import resolve_gate
from .interrupt import StopRequested
from .noise import NoiseEstimator
from .pose import PoseEstimator
from .progress import Progress
from .reference import ReferencePose, RetargetStream, estimate_reference
from .runtime import RuntimeConfig, open_models, resolve_batch_size
from .schedule import Scheduler
from .temporal import resolve_smooth
from .timing import NULL_TIMER, StageTimer
from .track import PeopleConfig
from .wan import FaceConfig

__all__ = ["Preprocessor", "Result", "CHUNK_SIZE"]


def _check_chunk(chunk_size) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


@dataclass
class Result:
    """Everything the reference "Pose and Face Detection" node returns, and a bit more.

    Tensors live on the input's device unless noted; lists and strings are on the host.
    """

    keypoints: torch.Tensor  # (T, 133, 3) x, y in frame pixels, score
    bboxes: torch.Tensor  # (T, 5) x1, y1, x2, y2, score (-1: full-frame fallback)
    pose_metas: list  # T dicts in Wan's format
    face_images: torch.Tensor  # (T, S, S, 3) float in [0, 1] (or uint8, see face_dtype)
    face_bboxes: list  # T (x1, y1, x2, y2) ints
    face_held: torch.Tensor  # (T,) bool: face not visible, box held from another frame
    key_frame_points: str  # JSON [{"x", "y"}, ...] on frame 0
    key_frames: list  # [{"frame": i, "points": [...]}, ...] for up to 4 key frames
    other_persons: torch.Tensor  # (T,) int: other people larger than 0.1x the chosen box
    det_ran: torch.Tensor  # (T,) bool: the detector ran on this frame
    pose_ran: torch.Tensor  # (T,) bool: the pose model ran (False: keypoints interpolated)
    gate_distance: torch.Tensor  # (T,) float: estimated motion (px) since the last processed frame
    face_bboxes_exact: torch.Tensor  # (T, 4) float32: the boxes the face crops were taken from
    width: int
    height: int
    timings: dict = field(default_factory=dict)
    providers: dict = field(default_factory=dict)
    start: int = 0  # index of the first frame in the video (parts from Preprocessor.stream)
    # Measurement noise (px per coordinate) of each keypoint group (body, face, hands) estimated
    # from the video so far (None: too few measurements yet); see wanprep_torch.temporal.
    noise: dict = field(default_factory=dict)
    # With a reference image (every part of a stream carries the first three):
    reference_meta: dict | None = None  # its pose, a Wan meta dict on the resized image's canvas
    reference_image: torch.Tensor | None = None  # (h, w, 3) float in [0, 1]: the image resized to the area
    reference_box: torch.Tensor | None = None  # (5,) the person box in reference_image (score -1: full image)
    retargeted: list | None = None  # T PoseMeta: these frames' poses on the reference's body, its canvas
    # With people=N (several people): every identity, ordered by id, each a Result of one
    # person over the same frames with ``track_id`` and ``present`` set (people=None there).
    people: list | None = None
    track_id: int | None = None  # this person's identity (a Result in ``people``)
    present: torch.Tensor | None = None  # (T,) bool: this person in view (else keypoints score 0)

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @staticmethod
    def concat(parts) -> "Result":
        """Join consecutive parts (from :meth:`Preprocessor.stream`) into one Result, equal to
        processing the whole video at once; the last part's timings cover the whole run."""
        parts = list(parts)
        if not parts:
            raise ValueError("Result.concat needs at least one part")
        joined = _Joiner(start=parts[0].start)  # a run of parts may start mid-video
        for p in parts:
            joined.add(p)
        return joined.result()

    def to_openpose(self, retargeted: bool = False, min_score: float = 0.3) -> list[dict]:
        """One dict per frame in the OpenPose JSON layout (see :func:`wanprep_torch.wan.openpose_frames`):
        the detected poses in frame pixels, or with ``retargeted=True`` the retargeted ones in
        the reference canvas's pixels (no face points: retargeting drops them)."""
        if retargeted and self.retargeted is None:
            raise ValueError("no retargeted poses: process the video with a reference_image")
        if self.people is None or retargeted:
            return wan.openpose_frames(self.retargeted if retargeted else self.pose_metas, min_score)
        return wan.openpose_people([p.pose_metas for p in self.people], [p.present for p in self.people], min_score)

    def to_json(self) -> dict:
        """A JSON-ready summary (metas as lists)."""
        metas = [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in m.items()} for m in self.pose_metas]
        who = {}
        if self.track_id is not None:
            who = {"track_id": self.track_id, "present": self.present.cpu().tolist()}
        if self.people is not None:
            who["track_ids"] = [p.track_id for p in self.people]
        return {
            **who,
            "width": self.width,
            "height": self.height,
            "pose_metas": metas,
            "bboxes": self.bboxes.cpu().tolist(),
            "face_bboxes": [list(b) for b in self.face_bboxes],
            "face_held": self.face_held.cpu().tolist(),
            "key_frame_points": json.loads(self.key_frame_points),
            "key_frames": self.key_frames,
            "other_persons": self.other_persons.cpu().tolist(),
            "det_ran": self.det_ran.cpu().tolist(),
            "pose_ran": self.pose_ran.cpu().tolist(),
            "gate_distance": [round(v, 4) for v in self.gate_distance.cpu().tolist()],
            "noise": self.noise,
            "providers": self.providers,
            "timings": self.timings,
        }


class Preprocessor:
    """Detector + pose model + Wan outputs over a video of torch frames.

    Composes a :class:`~wanprep_torch.detect.PersonDetector` (``self.detector``), a
    :class:`~wanprep_torch.pose.PoseEstimator` (``self.estimator``), the scheduler that decides
    per frame what runs (:mod:`~wanprep_torch.schedule`) and the Wan output assembly. Built
    from two ONNX files, or with :meth:`from_stages` from stage objects the caller made.

    Settings come as one record per stage (each the one home of its defaults), or as the
    keyword shorthands below, which override the record's field when given:

    Args:
        det_model, pose_model: ONNX files (YOLO person detector, ViTPose wholebody 133).
        runtime: :class:`~wanprep_torch.runtime.RuntimeConfig` (device, batch_size,
            intra_op_threads, providers). Shorthands: ``device`` ("cpu", "cuda", "cuda:1";
            CUDA frames use ONNX Runtime's CUDA provider, without it the CPU provider with a
            warning), ``batch_size`` (frames per model run, or "auto": 1 on the CPU, 16 on
            CUDA), ``intra_op_threads``, ``providers``.
        detect: :class:`~wanprep_torch.detect.DetectConfig` (thresholds, the subject rule).
            Shorthands: ``score_threshold``, ``iou_threshold`` (reference: 0.05, 0.5).
        face: :class:`~wanprep_torch.wan.FaceConfig` (the face crops). Shorthands:
            ``face_padding`` (extra pixels on each side of the face boxes), ``face_size``
            (512), ``face_dtype`` (torch.float32 in [0, 1], torch.float16 or torch.uint8),
            ``face_device`` (default: the frames' device), ``face_wait`` (leading frames with
            no visible face wait at most this many frames for the first good face box).
        gate: frame skipping: "safe" (default), "fast", "off" (every frame through both models,
            no skipping), a GateConfig, or a dict of GateConfig fields (with an optional "preset").
        dark: DARK sub-pixel decoding (True, as the reference) or plain argmax.
        chunk_size: frames processed per step; memory grows with this, not with the video.
        progress: show a tqdm bar; progress_callback("frames", done, total) is called as frames
            finish.
        smooth: keypoint smoothing (:mod:`~wanprep_torch.temporal`: a zero-lag Kalman/RTS
            smoother per keypoint, its noise measured from the video; face crops follow the
            smoothed face at sub-pixel precision): "auto" (default: on with the gate on, off
            with ``gate="off"``), "on", "off", a bool, a SmoothConfig, or a dict of its fields.
            Parts of a stream wait ``lookahead`` (16) more frames with it on.
        people: 1 (the default) follows one subject; N > 1 or "all" follows up to N people (all)
            with identities (``Result.people``; see :mod:`~wanprep_torch.crowd`).
        people_keep: frames an identity out of view keeps its id (with ``people`` > 1).
        timings: measure per-stage times (``Result.timings``); on CUDA with events, no host waits.
    """

    def __init__(
        self,
        det_model: str | Path,
        pose_model: str | Path,
        device: str | torch.device | None = None,
        batch_size: int | str | None = None,
        intra_op_threads: int | None = None,
        providers=None,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        face_padding: int | None = None,
        face_size: int | None = None,
        face_dtype: torch.dtype | None = None,
        face_device: str | torch.device | None = None,
        face_wait: int | None = None,
        chunk_size: int = CHUNK_SIZE,
        progress: bool = True,
        progress_callback: Callable | None = None,
        dark: bool = True,
        gate="safe",
        timings: bool = True,
        people=1,
        people_keep: int = 24,
        *,
        runtime: RuntimeConfig | None = None,
        detect: DetectConfig | None = None,
        face: FaceConfig | None = None,
        smooth="auto",
    ):
        runtime = override(
            runtime or RuntimeConfig(), device=device, batch_size=batch_size, intra_op_threads=intra_op_threads, providers=providers
        )
        detect = override(detect or DetectConfig(), score_threshold=score_threshold, iou_threshold=iou_threshold)
        face = override(face or FaceConfig(), size=face_size, dtype=face_dtype, device=face_device, padding=face_padding, wait=face_wait)
        device = runtime.resolved_device()
        gate = resolve_gate(gate)  # bad settings fail before the models are opened
        _check_chunk(chunk_size)
        crowd = PeopleConfig.from_option(people, people_keep)
        batch = resolve_batch_size(runtime.batch_size, device)
        det, pose = open_models(det_model, pose_model, device, runtime.providers, runtime.intra_op_threads)
        self._compose(
            PersonDetector(det, device, batch_size=batch, config=detect),
            PoseEstimator(pose, device, batch_size=batch, dark=dark),
            face, gate, resolve_smooth(smooth, gate.enabled), chunk_size, progress, progress_callback, timings, crowd,
        )  # fmt: skip

    @classmethod
    def from_stages(
        cls,
        detector: PersonDetector,
        estimator: PoseEstimator,
        *,
        face: FaceConfig | None = None,
        gate="safe",
        chunk_size: int = CHUNK_SIZE,
        progress: bool = True,
        progress_callback: Callable | None = None,
        timings: bool = True,
        smooth="auto",
        people=1,
        people_keep: int = 24,
    ) -> "Preprocessor":
        """A Preprocessor composed of stages the caller made (their models, devices, batch
        sizes and decoding settings are theirs), as rtmlib's solutions compose a detector and
        a pose object. Both stages must be on the same device.

        >>> import tempfile
        >>> from wanprep_torch.testkit import build_test_models, make_clip
        >>> from wanprep_torch.detect import DetectConfig, PersonDetector
        >>> from wanprep_torch.pose import PoseEstimator
        >>> models = build_test_models(tempfile.mkdtemp(), fp16=False)
        >>> pre = Preprocessor.from_stages(
        ...     PersonDetector(models["det"], config=DetectConfig(score_threshold=0.2)),
        ...     PoseEstimator(models["pose"], dark=False),
        ...     face=FaceConfig(size=256, dtype=torch.uint8), progress=False)
        >>> res = pre(make_clip(4).frames)
        >>> res.face_images.shape, res.face_images.dtype
        (torch.Size([4, 256, 256, 3]), torch.uint8)
        """
        if not isinstance(detector, PersonDetector) or not isinstance(estimator, PoseEstimator):
            raise TypeError(
                f"from_stages takes a PersonDetector and a PoseEstimator, got {type(detector).__name__} and {type(estimator).__name__}"
            )
        if detector.device != estimator.device:
            raise ValueError(f"the detector runs on {detector.device} but the pose model on {estimator.device}")
        gate = resolve_gate(gate)
        _check_chunk(chunk_size)
        self = cls.__new__(cls)
        smooth = resolve_smooth(smooth, gate.enabled)
        crowd = PeopleConfig.from_option(people, people_keep)
        self._compose(detector, estimator, face or FaceConfig(), gate, smooth, chunk_size, progress, progress_callback, timings, crowd)
        return self

    def _compose(self, detector, estimator, face, gate, smooth, chunk_size, progress, progress_callback, timings, people=None) -> None:
        self.device = detector.device
        self.detector = detector
        self.estimator = estimator
        self.face = face
        self.gate = gate
        self.smooth = smooth
        self.people = people  # PeopleConfig with several people, None for the single subject
        self.chunk_size = int(chunk_size)
        self.progress = progress
        self.progress_callback = progress_callback
        self.timings = timings
        self._ws = Workspace()  # frame conversions shared by both stages within a group
        # One run at a time: the sessions' bindings, the stages' scratch buffers and the
        # workspace are shared. Another thread waits for the run in progress; the same thread
        # starting a second run while its stream is open gets a RuntimeError.
        self._lock = threading.Lock()
        self._owner: int | None = None

    @property
    def batch_size(self) -> int:
        """Frames per model run (halved on out-of-memory)."""
        return self.estimator.batch_size

    @property
    def providers(self) -> dict:
        return {"detector": self.detector.model.providers[0], "pose": self.estimator.model.providers[0]}

    def _shrink(self, batch: int) -> None:
        self.detector.batch_size = min(self.detector.batch_size, batch)
        self.estimator.batch_size = min(self.estimator.batch_size, batch)

    def model_inputs(self, frames: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detector and pose inputs this pipeline builds for ``frames`` (any accepted layout)
        and one person box (N, >=4) per frame: for timing the models alone on the same data.

        Returns:
            (N, 3, 640, 640) detector input and (N, 3, 256, 192) pose input, float32, new tensors.
        """
        with self._exclusive():
            fb = FrameBatch(as_tchw(frames))  # its own buffers: the results outlive the call
            det_in = self.detector.preprocess(fb)
            pose_in = self.estimator.preprocess(fb, boxes.float())
            return det_in, pose_in.pixels

    @contextlib.contextmanager
    def _exclusive(self):
        """Hold the Preprocessor for one run: other threads wait; the same thread may not nest."""
        me = threading.get_ident()
        if not self._lock.acquire(blocking=False):
            if self._owner == me:
                raise RuntimeError(
                    "this Preprocessor is already running in this thread (an unfinished stream()): "
                    "finish or close() that stream first, or use a second Preprocessor"
                )
            self._lock.acquire()  # another thread's run: wait for it
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()

    def reference_pose(self, image, size: tuple[int, int]) -> ReferencePose:
        """The pose of the person in a reference image, measured as the reference node does
        (see :func:`~wanprep_torch.reference.estimate_reference`); ``size`` = (width, height)
        of the generation."""
        return estimate_reference(self.detector, self.estimator, image, size)

    # -- the video ---------------------------------------------------------------------------
    def __call__(self, video, reference_image=None, reference_size: tuple[int, int] | None = None) -> Result:
        """Process a video: a tensor of frames, or an iterable of tensor chunks.

        With a ``reference_image``, the video's poses are also retargeted onto the person in
        it (see :meth:`stream`): ``res.reference_meta``, ``res.reference_image`` and
        ``res.retargeted`` (one :class:`~wanprep_torch.PoseMeta` per frame).

        Equals ``Result.concat(list(self.stream(video, reference_image, reference_size)))``.
        Bad input raises ValueError/TypeError naming the problem; when frames were already
        finished (a bad chunk of an iterable, a NaN frame late in a tensor), the error carries
        them as ``.partial_result``.
        """
        total = as_tchw(video, finite=False).shape[0] if isinstance(video, torch.Tensor) else None
        joined = _Joiner(total)
        try:
            for part in self.stream(video, reference_image, reference_size):
                joined.add(part)
        except (ValueError, TypeError) as exc:
            if joined.frames:
                exc.partial_result = joined.result()
            raise
        return joined.result()

    def stream(self, video, reference_image=None, reference_size: tuple[int, int] | None = None):
        """Process a video part by part: yields :class:`Result` objects for consecutive runs of
        frames, in order, as soon as they are final (the gate's lookahead delays them by at most
        its ``max_gap`` frames; leading frames without a face wait up to ``face_wait`` frames).

        With a ``reference_image`` ((H, W, 3), (1, H, W, 3) or (1, 3, H, W), float in [0, 1] or
        uint8, any device) its pose is measured as the reference node does: the image is
        resized to the generation's area with black bars (sides multiples of 16, see
        :func:`~wanprep_torch.reference.area_size`), the detector and the pose model run on it,
        and its keypoints are normalised by that resized image. ``reference_size`` = (width,
        height) of the generation, whose area sets that size; by default the video's frame
        size. Every part then carries ``reference_meta``, ``reference_image``,
        ``reference_box`` and its frames' ``retargeted`` poses (planned on the video's frame
        0, so the parts joined equal ``wanprep_torch.retarget(pose_metas, reference_meta)``).

        Memory follows ``chunk_size``, not the video's length. Each part's ``timings`` cover the
        run so far. On bad input the frames already read are finished and yielded first, then
        the error is raised.

        Thread safety: one run at a time per Preprocessor. A stream holds it from its first
        part until it is exhausted or closed; a call from another thread waits for it, a
        second run started from the same thread meanwhile raises RuntimeError.
        """
        with self._exclusive():
            yield from self._stream(video, reference_image, reference_size)

    def _stream(self, video, reference_image=None, reference_size: tuple[int, int] | None = None):
        total = as_tchw(video, finite=False).shape[0] if isinstance(video, torch.Tensor) else None
        timer = StageTimer(self.device) if self.timings else NULL_TIMER
        prog = Progress(total, enabled=self.progress, desc="frames", callback=self.progress_callback)
        noise = NoiseEstimator(min_score=self.gate.track_kp_score)
        smooth = self.smooth.enabled
        assembler = lambda: wan.WanAssembler(self.face, self.device, self._ws, timer, exact=smooth)  # noqa: E731
        if self.people is None:
            sched = Scheduler(
                self.detector, self.estimator, self.gate, self._ws, timer, on_oom=self._shrink, on_frames=prog.update, noise=noise, cuts=smooth
            )
            smoother = SubjectSmoothing(self.smooth, NoiseEstimator(min_score=self.smooth.min_score), timer) if smooth else None
            wan_out = SubjectAssembly(assembler(), timer)
        else:  # several people: the temporal model per identity (its own noise estimate)
            sched = CrowdScheduler(
                self.detector, self.estimator, self.gate, self.people, self._ws, timer, on_oom=self._shrink, on_frames=prog.update, cuts=smooth
            )
            smoother = CrowdSmoothing(self.smooth, timer) if smooth else None
            wan_out = CrowdAssembly(assembler, self.detector.config, timer)
            noise = sched.people_noise
        state = _PartState(timer, self.providers, noise)
        if reference_image is not None and reference_size is not None:
            state.set_reference(self.reference_pose(reference_image, reference_size))  # bad input fails first
        error = None
        try:
            try:
                for chunk in iter_chunks(video, self.chunk_size):
                    if chunk.device != self.device:
                        raise ValueError(f"frames are on {chunk.device} but the Preprocessor runs on {self.device}")
                    if reference_image is not None and state.reference is None:
                        size = (int(chunk.shape[-1]), int(chunk.shape[-2]))  # chunks are (T, 3, H, W)
                        state.set_reference(self.reference_pose(reference_image, size))
                    wan_out.add(smoothed(smoother, sched.feed(chunk)))
                    part = state.part(wan_out.take())
                    if part is not None:
                        yield part
            except (ValueError, TypeError) as exc:
                error = exc  # finish the frames already read, then raise
            except StopRequested as stop:  # a requested stop: hand out the frames already final
                wan_out.add(flushed(smoother, stop.finished))
                wan_out.flush()
                part = state.part(wan_out.take())
                if part is not None:
                    yield part
                raise
            wan_out.add(flushed(smoother, sched.finish()))
            wan_out.flush()
            part = state.part(wan_out.take())
            if part is not None:
                yield part
        finally:
            prog.close()
        if error is not None:
            raise error


class _PartState:
    """Makes :class:`Result` parts from final Wan frames."""

    def __init__(self, timer, providers: dict, noise: NoiseEstimator | PeopleNoise | None = None):
        self.noise = noise
        self.timer = timer
        self.providers = providers
        self.frames = 0
        self.reference: ReferencePose | None = None
        self.retarget: RetargetStream | None = None

    def set_reference(self, ref: ReferencePose) -> None:
        self.reference = ref
        self.retarget = RetargetStream(ref.meta)

    def part(self, done) -> Result | None:
        """A Result of the final frames ``done`` (:class:`~wanprep_torch.wan.WanFrames`, or a
        :class:`~wanprep_torch.assembly.CrowdFrames` with everyone's)."""
        if done is None or not len(done.primary if isinstance(done, CrowdFrames) else done):
            return None
        with self.timer("wan"):
            people = getattr(done, "people", None)
            res = wan_result(done.primary if people is not None else done)
            res.noise = self.noise.sigmas() if self.noise is not None else {}
            if people is not None:
                res.people = [_person_result(tid, d, res) for tid, d in people]
                for p in res.people:  # each identity's own; res.noise: the median over them
                    p.noise = self.noise.sigmas(p.track_id)
            if self.reference is not None:
                res.reference_meta = self.reference.meta
                res.reference_image = self.reference.image
                res.reference_box = self.reference.box
                res.retargeted = self.retarget.add(res.pose_metas)
        self.frames += len(res)
        res.timings = self.timer.report(self.frames)
        res.providers = dict(self.providers)
        return res


def wan_result(done: "wan.WanFrames") -> Result:
    """A Result of final Wan frames (no timings or reference): the one home of that layout,
    for the subject and for each person of several."""
    kps = torch.cat(done.keypoints)
    dev = kps.device
    extra = done.extra
    faces = done.face_images[0] if len(done.face_images) == 1 else torch.cat(done.face_images)
    boxes = torch.cat([e.boxes for e in extra]).to(dev)
    res = Result(
        keypoints=kps,
        bboxes=boxes,
        pose_metas=list(done.metas),
        face_images=faces,
        face_bboxes=list(done.face_bboxes),
        face_held=torch.tensor(done.face_held, dtype=torch.bool, device=dev),
        key_frame_points=json.dumps(wan.key_frame_points(kps[0], box=boxes[0])),
        key_frames=_key_frames(kps, boxes, extra[0].start),
        other_persons=torch.tensor([o for e in extra for o in e.others], dtype=torch.long, device=dev),
        det_ran=torch.tensor([v for e in extra for v in e.det_ran], dtype=torch.bool, device=dev),
        pose_ran=torch.tensor([v for e in extra for v in e.pose_ran], dtype=torch.bool, device=dev),
        gate_distance=torch.tensor([v for e in extra for v in e.distance], dtype=torch.float32, device=dev),
        face_bboxes_exact=torch.tensor(done.face_exact, dtype=torch.float32, device=dev).reshape(-1, 4),
        width=int(done.metas[0]["width"]),
        height=int(done.metas[0]["height"]),
        start=extra[0].start,
    )
    if extra[0].present is not None:
        res.present = torch.tensor([v for e in extra for v in e.present], dtype=torch.bool, device=dev)
    return res


def _person_result(track_id: int, done: "wan.WanFrames | None", like: Result) -> Result:
    """One person's Result over ``like``'s frames: their Wan frames, after frames before they
    first appeared (absent: see :func:`absent_person`)."""
    res = wan_result(done) if done is not None else None
    lead = len(like) - (len(res) if res is not None else 0)
    if lead:
        pad = absent_person(track_id, like.start, lead, like)
        res = pad if res is None else Result.concat([pad, res])
    res.track_id = track_id
    return res


def absent_person(track_id: int, start: int, n: int, like: Result, faces_like: torch.Tensor | None = None) -> Result:
    """A person's Result for ``n`` frames before they first appeared: not present, keypoints
    and boxes zero (score 0, box score -1), the fallback face box, black face crops (shape and
    dtype of ``faces_like``, default ``like``'s crops); the gate report is ``like``'s first
    ``n`` frames'."""
    dev = like.keypoints.device
    w, h = like.width, like.height
    kps = torch.zeros(n, 133, 3, device=dev)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 0.0, -1.0]], device=dev).expand(n, 5).clone()
    face = wan.fallback_face_box(w, h)
    f = like.face_images if faces_like is None else faces_like
    no = torch.zeros(n, dtype=torch.bool, device=dev)
    return Result(
        keypoints=kps,
        bboxes=boxes,
        pose_metas=wan.pose_metas(kps, w, h)[0],
        face_images=torch.zeros((n,) + tuple(f.shape[1:]), dtype=f.dtype, device=f.device),
        face_bboxes=[face] * n,
        face_held=torch.ones(n, dtype=torch.bool, device=dev),
        face_bboxes_exact=torch.tensor([face] * n, dtype=torch.float32, device=dev).reshape(-1, 4),
        key_frame_points=json.dumps(wan.key_frame_points(kps[0], box=boxes[0])),
        key_frames=_key_frames(kps, boxes, start),
        other_persons=torch.zeros(n, dtype=torch.long, device=dev),
        det_ran=like.det_ran[:n].clone(),
        pose_ran=like.pose_ran[:n].clone(),
        gate_distance=like.gate_distance[:n].clone(),
        width=w,
        height=h,
        start=start,
        track_id=track_id,
        present=no,
    )


def _key_frames(kps: torch.Tensor, boxes: torch.Tensor, start: int = 0) -> list[dict]:
    """SAM2 prompt points for up to 4 evenly spaced frames of ``kps`` (frame numbers from
    ``start``); ``boxes`` (T, 5) give the fallback point of a frame with none scored enough."""
    return [
        {"frame": start + i, "points": wan.key_frame_points(kps[i], box=boxes[i])} for i in wan.key_frame_indices(kps.shape[0])
    ]


class _Joiner:
    """Joins :class:`Result` parts into one, copying each part's face crops into one output
    tensor as it arrives (preallocated when the video's length is known), so the parts can be
    freed as they go."""

    def __init__(self, total: int | None = None, start: int = 0):
        self.total = total
        self.start = start
        self.parts: list[Result] = []
        self.faces: torch.Tensor | None = None
        self.face_chunks: list[torch.Tensor] = []
        self.faces_like: torch.Tensor | None = None  # (0, S, S, 3): the crops' shape and dtype
        self.frames = 0  # frames joined so far

    def add(self, part: Result) -> None:
        expected = self.start + self.frames
        if part.start != expected:
            raise ValueError(f"parts out of order: part starts at frame {part.start}, expected {expected}")
        n = len(part)
        f = part.face_images
        self.faces_like = f[:0]
        if self.total is not None:  # the whole video's length: one output, filled as parts come
            if self.faces is None:
                self.faces = torch.empty((self.total,) + tuple(f.shape[1:]), dtype=f.dtype, device=f.device)
            self.faces[self.frames : self.frames + n] = f
        else:
            self.face_chunks.append(f)
        # Keep the part without its crops (they are copied or held above).
        self.parts.append(dataclasses.replace(part, face_images=None))
        self.frames += n

    def result(self) -> Result:
        parts = self.parts
        if self.faces is not None:
            faces = self.faces[: self.frames]
        else:
            faces = _concat_release(self.face_chunks)
        kps = torch.cat([p.keypoints for p in parts])
        boxes = torch.cat([p.bboxes for p in parts])
        last = parts[-1]
        first = parts[0]
        return Result(
            keypoints=kps,
            bboxes=boxes,
            pose_metas=[m for p in parts for m in p.pose_metas],
            face_images=faces,
            face_bboxes=[b for p in parts for b in p.face_bboxes],
            face_held=torch.cat([p.face_held for p in parts]),
            key_frame_points=parts[0].key_frame_points,
            key_frames=_key_frames(kps, boxes, parts[0].start),
            other_persons=torch.cat([p.other_persons for p in parts]),
            det_ran=torch.cat([p.det_ran for p in parts]),
            pose_ran=torch.cat([p.pose_ran for p in parts]),
            gate_distance=torch.cat([p.gate_distance for p in parts]),
            face_bboxes_exact=torch.cat([p.face_bboxes_exact for p in parts]),
            width=last.width,
            height=last.height,
            timings=last.timings,
            providers=last.providers,
            start=first.start,
            noise=last.noise,
            reference_meta=first.reference_meta,
            reference_image=first.reference_image,
            reference_box=first.reference_box,
            retargeted=None if first.retargeted is None else [m for p in parts for m in p.retargeted],
            people=self._people(),
            track_id=first.track_id,
            present=None if first.present is None else torch.cat([p.present for p in parts]),
        )

    def _people(self) -> list | None:
        """Each identity joined over the parts; a part before it appeared is padded absent."""
        parts = self.parts
        if all(p.people is None for p in parts):
            return None
        ids = sorted({q.track_id for p in parts for q in p.people or []})
        joined = []
        for tid in ids:
            runs = []
            for p in parts:
                q = next((q for q in p.people or [] if q.track_id == tid), None)
                runs.append(q if q is not None else absent_person(tid, p.start, len(p), p, self.faces_like))
            joined.append(Result.concat(runs))
        return joined


def _concat_release(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate chunk tensors into one, freeing each chunk once copied, so the peak is the
    output plus one chunk rather than twice the output."""
    if len(chunks) == 1:
        return chunks[0]
    total = sum(c.shape[0] for c in chunks)
    out = torch.empty((total,) + tuple(chunks[0].shape[1:]), dtype=chunks[0].dtype, device=chunks[0].device)
    pos = 0
    for i in range(len(chunks)):
        c = chunks[i]
        out[pos : pos + c.shape[0]] = c
        pos += c.shape[0]
        chunks[i] = None
        del c
    return out
