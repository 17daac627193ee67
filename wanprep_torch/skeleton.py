"""Keypoint layouts and the index maps between them, in one place.

The pose model emits the 133 COCO-wholebody points; the Wan outputs regroup them into a
20-point body (OpenPose-18 order plus the two big toes' feet), two 21-point hands and a
69-point face; OpenPose / DWPose consumers read the first 18 body points, the 68 face points
and the hands (DWPose stacks them right, then left). Every module that needs a row range, an
index map or a bone list takes it from here.

COCO-wholebody rows::

    0-16    body (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
    17-22   feet (left big toe, small toe, heel; right big toe, small toe, heel)
    23-90   face (the 68 iBUG points)
    91-111  left hand (wrist, then thumb to little finger, 4 points each)
    112-132 right hand
"""

from __future__ import annotations

__all__ = [
    "NUM_WHOLEBODY",
    "BODY",
    "FEET",
    "FACE",
    "LEFT_HAND",
    "RIGHT_HAND",
    "GROUPS",
    "WAN_BODY_A",
    "WAN_BODY_B",
    "WAN_FACE",
    "WAN_KEY_POINT_ROWS",
    "OPENPOSE_BODY",
    "OPENPOSE_FACE",
    "OPENPOSE_EYES",
    "WAN_PARTS",
    "WAN_STACK",
    "NUM_WAN",
    "WAN_NUM_BODY",
    "NUM_HAND",
    "WAN_NUM_FACE",
    "OPENPOSE_NUM_BODY",
    "NUM_FACE68",
    "BODY_LIMBS",
    "OPENPOSE_LIMBS",
    "HEAD_POINTS",
    "HAND_EDGES",
    "DWPOSE_HANDS",
    "FACE68_JAW",
    "FACE68_NOSE",
    "FACE68_CHIN",
    "FACE68_NOSE_BRIDGE",
    "FACE68_NOSE_TIP",
    "FACE68_EYE_CORNERS",
    "FACE68_MOUTH_CORNERS",
]

NUM_WHOLEBODY = 133

# Row ranges of the 133 COCO-wholebody points.
BODY = slice(0, 17)
FEET = slice(17, 23)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)

# Groups whose points share a noise level (a real model is steadier on the body than on the
# fingers): the feet go with the body.
GROUPS: dict[str, slice] = {"body": slice(0, 23), "face": FACE, "hands": slice(91, 133)}

# Wan's 20 body rows: row i is the mean of 133-rows WAN_BODY_A[i] and WAN_BODY_B[i] (row 1,
# the neck, is the shoulders' midpoint; rows 18, 19 the feet from the big and small toes).
WAN_BODY_A = (0, 6, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 20)
WAN_BODY_B = (0, 5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 18, 21)
# Wan's 69 face rows are 133-rows 22-90: the right heel, then the 68 face points (consumers
# use rows 1-68).
WAN_FACE = slice(22, 91)
# SAM2 prompt points: nose, neck, both shoulders, both hips, both knees (Wan body rows).
WAN_KEY_POINT_ROWS = (0, 1, 2, 5, 8, 11, 10, 13)

# OpenPose JSON: 18 body points (Wan body rows 0-17 are OpenPose's order), 68 face points
# (Wan face rows 1-68).
OPENPOSE_BODY = slice(0, 18)
OPENPOSE_FACE = slice(1, 69)
# OpenPose-18 rows of the right and left eye: the 69th and 70th face points of the 70-point
# OpenPose face, as DWPose (comfyui_controlnet_aux) appends them to the 68 landmarks.
OPENPOSE_EYES = (14, 15)

# The Wan meta dict's parts in their stacking order, and their sizes.
WAN_NUM_BODY, NUM_HAND, WAN_NUM_FACE = 20, 21, 69
WAN_PARTS: dict[str, int] = {
    "keypoints_body": WAN_NUM_BODY,
    "keypoints_left_hand": NUM_HAND,
    "keypoints_right_hand": NUM_HAND,
    "keypoints_face": WAN_NUM_FACE,
}
# Rows of each part when the four are stacked into one (T, 131, 3) array (the pose
# container's and the drawing's layout): body 0-19, left hand 20-40, right hand 41-61, face 62-130.
WAN_STACK: dict[str, slice] = {}
_row = 0
for _key, _n in WAN_PARTS.items():
    WAN_STACK[_key] = slice(_row, _row + _n)
    _row += _n
NUM_WAN = _row
del _row, _key, _n

OPENPOSE_NUM_BODY, NUM_FACE68 = 18, 68
# Bones over Wan's 20 body rows (OpenPose's 17 limbs over its 18 points, then the feet: left
# ankle -> left toe, right ankle -> right toe).
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    (13, 18), (10, 19),
)  # fmt: skip
OPENPOSE_LIMBS = BODY_LIMBS[:17]
# Nose, eyes and ears (Wan / OpenPose body rows).
HEAD_POINTS: tuple[int, ...] = (0, 14, 15, 16, 17)
# 20 bones over the 21 hand points (wrist 0, then thumb .. little finger, 4 points each).
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4)
)
# DWPose stacks the hands right, then left: their Wan parts in that order.
DWPOSE_HANDS: tuple[str, str] = ("keypoints_right_hand", "keypoints_left_hand")

# Named points of the 68-point (iBUG) face.
FACE68_JAW = slice(0, 17)
FACE68_NOSE = slice(27, 36)
FACE68_CHIN = 8
FACE68_NOSE_BRIDGE = 27
FACE68_NOSE_TIP = 30
FACE68_EYE_CORNERS = (36, 45)  # the outer corners
FACE68_MOUTH_CORNERS = (48, 54)
