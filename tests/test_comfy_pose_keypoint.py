"""POSE_KEYPOINT as other ComfyUI packs read it.

The readers are reimplemented here from their sources (not imported):

* comfyui_controlnet_aux (``decode_json_as_poses`` and the drawing helpers): a point whose
  confidence is < 1.0 is dropped; a part whose kept points all lie in [0, 1] (absolute values) is
  taken as normalised and scaled by the canvas, any other part as pixels.
* ComfyUI-ultimate-openpose-editor (``pose_normalized`` and its drawing): a body point is shown
  when its confidence is > 0; the frame's values are divided by the canvas when the first
  person's list holds a value above 2.0, then scaled back by the canvas to draw.

"Visible" for this project: a finite point scored >= 0.3 (the keep rule written out here).
"""

import math

import numpy as np
import pytest
import torch
from comfy_fixtures import fake_comfy, images, loaded  # noqa: F401  (fixtures)

from wanprep_torch import PoseMeta
from wanprep_torch import comfy as nodes
from wanprep_torch.wan import pose_keypoint_frames, pose_metas

W, H = 416, 240
KEEP = 0.3
PARTS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")


def controlnet_aux_decode(frame: dict) -> list[dict]:
    """Every person's parts as lists of (x, y) canvas pixels or None, by controlnet_aux's rule."""
    width, height = frame["canvas_width"], frame["canvas_height"]
    people = []
    for person in frame.get("people", []):
        decoded = {}
        for key in PARTS:
            numbers = person.get(key)
            if not numbers:
                decoded[key] = None
                continue
            assert len(numbers) % 3 == 0
            points = [None if c < 1.0 else (x, y) for x, y, c in zip(numbers[0::3], numbers[1::3], numbers[2::3])]
            kept = [p for p in points if p is not None]
            normalised = bool(kept) and all(0 <= abs(x) <= 1 and 0 <= abs(y) <= 1 for x, y in kept)
            sx, sy = (width, height) if normalised else (1.0, 1.0)
            decoded[key] = [None if p is None else (p[0] * sx, p[1] * sy) for p in points]
        people.append(decoded)
    return people


def ultimate_editor_body(frame: dict) -> list[list]:
    """Each person's body points (x, y) in canvas pixels, or None, by the editor's rule."""
    width, height = frame["canvas_width"], frame["canvas_height"]
    first = frame["people"][0]
    pixels = any(max(first[key]) > 2.0 for key in PARTS if first.get(key))
    out = []
    for person in frame["people"]:
        body = person["pose_keypoints_2d"]
        pts = []
        for x, y, c in zip(body[0::3], body[1::3], body[2::3]):
            if pixels:
                x, y = x / width, y / height
            pts.append((x * width, y * height) if c > 0 else None)
        out.append(pts)
    return out


def expected_points(meta: PoseMeta) -> dict:
    """The points this project considers visible, in canvas pixels (None: not visible), per
    POSE_KEYPOINT part: OpenPose body = Wan body rows 0-17; face = Wan face rows 1-68, then the
    body's right and left eye (rows 14, 15); hands as they are."""

    def pts(xy, p):
        return [tuple(v) if (np.isfinite(v).all() and np.isfinite(s) and s >= KEEP) else None for v, s in zip(xy, p)]

    face_xy = np.concatenate([meta.kps_face[1:69], meta.kps_body[[14, 15]]])
    face_p = np.concatenate([meta.kps_face_p[1:69], meta.kps_body_p[[14, 15]]])
    return {
        "pose_keypoints_2d": pts(meta.kps_body[:18], meta.kps_body_p[:18]),
        "face_keypoints_2d": pts(face_xy, face_p),
        "hand_left_keypoints_2d": pts(meta.kps_lhand, meta.kps_lhand_p),
        "hand_right_keypoints_2d": pts(meta.kps_rhand, meta.kps_rhand_p),
    }


def assert_same_points(got: list, want: list, what: str):
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, f"{what}[{i}] kept but not visible"
        else:
            assert g is not None, f"{what}[{i}] visible but dropped"
            assert g == pytest.approx(w, abs=1e-6), f"{what}[{i}]"


def noisy_keypoints(t: int, seed: int) -> torch.Tensor:
    """(T, 133, 3) pixel keypoints: scores spread over [0, 1] (some exactly 0.3), a few NaN
    points and a few outside the canvas."""
    g = torch.Generator().manual_seed(seed)
    kps = torch.empty(t, 133, 3, dtype=torch.float64)
    kps[..., 0] = torch.rand(t, 133, generator=g, dtype=torch.float64) * (W - 40) + 20
    kps[..., 1] = torch.rand(t, 133, generator=g, dtype=torch.float64) * (H - 40) + 20
    kps[..., 2] = torch.rand(t, 133, generator=g, dtype=torch.float64)
    kps[:, 5:7, 2] = 0.9  # both shoulders seen: the neck (their mean) is
    kps[:, 40, 2] = 0.3  # exactly the threshold: kept
    kps[0, 100, :2] = float("nan")  # a left-hand point not finite
    kps[1, 120, 0] = -12.5  # a right-hand point left of the canvas
    kps[1, 9, 1] = H + 30.0  # a wrist below it
    kps[1, 9, 2] = 0.95
    return kps


@pytest.mark.parametrize("as_objects", [False, True])
def test_decoded_by_controlnet_aux_rule(as_objects):
    metas, _ = pose_metas(noisy_keypoints(3, seed=11), W, H)
    if as_objects:
        metas = [PoseMeta.from_wan(m) for m in metas]
    frames = pose_keypoint_frames(metas)
    assert len(frames) == 3  # one dict per frame
    for t, (frame, meta) in enumerate(zip(frames, metas)):
        assert (frame["canvas_width"], frame["canvas_height"]) == (W, H)
        (person,) = frame["people"]
        assert [len(person[k]) for k in PARTS] == [18 * 3, 70 * 3, 21 * 3, 21 * 3]
        for key in PARTS:  # confidence exactly 1 or a [0, 0, 0] triple, nothing else
            for x, y, c in zip(person[key][0::3], person[key][1::3], person[key][2::3]):
                assert c == 1.0 or (x, y, c) == (0.0, 0.0, 0.0)
        want = expected_points(meta if isinstance(meta, PoseMeta) else PoseMeta.from_wan(meta))
        (decoded,) = controlnet_aux_decode(frame)
        for key in PARTS:
            assert_same_points(decoded[key], want[key], f"frame {t} {key}")
        (body,) = ultimate_editor_body(frame)
        assert_same_points(body, want["pose_keypoints_2d"], f"frame {t} editor body")
    # The scenes exercise both sides of the rule.
    p = np.concatenate([PoseMeta.from_wan(m).kps_body_p if not as_objects else m.kps_body_p for m in metas])
    assert (p < KEEP).any() and (p >= KEEP).any()


def test_threshold_and_people():
    metas, _ = pose_metas(noisy_keypoints(2, seed=5), W, H)
    # A lower threshold keeps more points; 0 keeps every finite point scored above 0.
    low = pose_keypoint_frames(metas, threshold=0.0)
    (person,) = controlnet_aux_decode(low[0])
    meta = PoseMeta.from_wan(metas[0])
    finite = np.isfinite(meta.kps_lhand).all(1) & (meta.kps_lhand_p > 0)
    assert [p is not None for p in person["hand_left_keypoints_2d"]] == finite.tolist()
    # Several people in a frame: the people list, one canvas per frame.
    other = PoseMeta.from_wan(metas[1])
    frames = pose_keypoint_frames([[metas[0], other], metas[1]])
    assert [len(f["people"]) for f in frames] == [2, 1]
    one = pose_keypoint_frames([metas[0], metas[1]])
    assert frames[0]["people"] == one[0]["people"] + one[1]["people"] and frames[1] == one[1]
    with pytest.raises(ValueError, match="at least one person"):
        pose_keypoint_frames([[]])


def test_node_output_decodes_to_the_clip(fake_comfy, loaded):
    # End to end: the node's pose_keypoint, decoded by controlnet_aux's rule, keeps every point
    # scored >= 0.3 in pose_data["pose_metas"], and the body lands on the clip's ground truth.
    from wanprep_torch.testkit import make_clip

    clip = make_clip(3, H=H, W=W, seed=7)
    pose_data, *_, pose_keypoint = nodes.PoseAndFaceDetection().process(loaded, clip.frames, W, H, gate="off")
    assert len(pose_keypoint) == 3
    truth_body = clip.keypoints[:, :17]  # COCO body rows: nose, eyes, ears, shoulders, ...
    coco_to_openpose = {0: 0, 2: 14, 1: 15, 4: 16, 3: 17, 6: 2, 8: 3, 10: 4, 5: 5, 7: 6, 9: 7, 12: 8, 14: 9, 16: 10, 11: 11, 13: 12, 15: 13}
    drawn = 0
    for t, (frame, meta) in enumerate(zip(pose_keypoint, pose_data["pose_metas"])):
        (decoded,) = controlnet_aux_decode(frame)
        want = expected_points(meta)
        for key in PARTS:
            assert_same_points(decoded[key], want[key], f"frame {t} {key}")
        body = decoded["pose_keypoints_2d"]
        for coco, op in coco_to_openpose.items():
            if bool(clip.visible[t, coco]):
                assert body[op] is not None, (t, coco)
                x, y = body[op]
                assert math.dist((x, y), truth_body[t, coco].tolist()) < 1.5, (t, coco)
                drawn += 1
    assert drawn > 30  # the scene has a visible body to draw
