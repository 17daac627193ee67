"""Keypoint layouts and the index maps between them, in one place.

The pose model emits the 133 COCO-wholebody points; the Wan outputs regroup them into a
20-point body (OpenPose-18 order plus the two big toes' feet), two 21-point hands and a
69-point face. Every module that needs a row range or an index map takes it from here.

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
