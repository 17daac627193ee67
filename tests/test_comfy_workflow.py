"""A workflow saved with the reference pack (ComfyUI-WanAnimatePreprocess) loads, validates and
runs against these nodes.

The saved workflow below is written out in the UI format ComfyUI saves (nodes with their
widgets_values and typed slots, links as [id, from node, from slot, to node, to slot, type]),
with the values the reference saves: its example workflow's PoseAndFaceDetection [832, 480]
(from before face_padding) and DrawViTPose [832, 480, 16, -1, -1, "True"] (draw_head's default
is the string 'True' there), face_bboxes linked with the reference's type "BBOX,", and the
consumers' input types as their packs declare them (Sam2Segmentation's bboxes: "BBOX"; a node
written for the reference's face boxes: "BBOX,").

ComfyUI's rules are reimplemented here, from its source: widget values fill the widget inputs in
INPUT_TYPES order (required, then optional); a link is valid when the output and input type
strings are equal or, split at commas, share a type (comfy_execution/validation.py; ComfyUI
before union types compared the strings only); widget values are converted by type and checked
against min / max.
"""

import pytest
import torch
from comfy_fixtures import fake_comfy, loaded  # noqa: F401  (fixtures)

from wanprep_torch import comfy as nodes

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

SAVED = {
    "nodes": [
        {"id": 1, "type": "OnnxDetectionModelLoader", "widgets_values": ["vitpose-l-wholebody.onnx", "onnx\\yolov10m.onnx", "CUDAExecutionProvider"],
         "outputs": [{"name": "model", "type": "POSEMODEL", "links": [1, 7]}]},
        {"id": 2, "type": "VHS_LoadVideo", "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2, 8]}]},
        {"id": 3, "type": "PoseAndFaceDetection", "widgets_values": [832, 480],
         "inputs": [{"name": "model", "type": "POSEMODEL", "link": 1}, {"name": "images", "type": "IMAGE", "link": 2},
                    {"name": "retarget_image", "shape": 7, "type": "IMAGE", "link": None}],
         "outputs": [{"name": "pose_data", "type": "POSEDATA", "links": [3, 4]}, {"name": "face_images", "type": "IMAGE", "links": None},
                     {"name": "key_frame_body_points", "type": "STRING", "links": None}, {"name": "bboxes", "type": "BBOX", "links": [5]},
                     {"name": "face_bboxes", "type": "BBOX,", "links": [6]}]},
        {"id": 4, "type": "DrawViTPose", "widgets_values": [832, 480, 16, -1, -1, "True"],
         "inputs": [{"name": "pose_data", "type": "POSEDATA", "link": 3}]},
        {"id": 5, "type": "PoseRetargetPromptHelper", "inputs": [{"name": "pose_data", "type": "POSEDATA", "link": 4}]},
        {"id": 6, "type": "Sam2Segmentation", "inputs": [{"name": "bboxes", "type": "BBOX", "link": 5}]},
        {"id": 7, "type": "FaceBoxesConsumer", "inputs": [{"name": "face_bboxes", "type": "BBOX,", "link": 6}]},
        {"id": 8, "type": "PoseDetectionOneToAllAnimation", "widgets_values": [832, 480, "ref", "full", "full"],
         "inputs": [{"name": "model", "type": "POSEMODEL", "link": 7}, {"name": "images", "type": "IMAGE", "link": 8},
                    {"name": "ref_image", "shape": 7, "type": "IMAGE", "link": None}]},
    ],
    "links": [
        [1, 1, 0, 3, 0, "POSEMODEL"], [2, 2, 0, 3, 1, "IMAGE"], [3, 3, 0, 4, 0, "POSEDATA"], [4, 3, 0, 5, 0, "POSEDATA"],
        [5, 3, 3, 6, 0, "BBOX"], [6, 3, 4, 7, 0, "BBOX,"], [7, 1, 0, 8, 0, "POSEMODEL"], [8, 2, 0, 8, 1, "IMAGE"],
    ],
}
# Input types of the other packs' nodes, as they declare them.
OTHER_INPUTS = {"Sam2Segmentation": {"bboxes": "BBOX"}, "FaceBoxesConsumer": {"face_bboxes": "BBOX,"}}
OTHER_OUTPUTS = {"VHS_LoadVideo": ("IMAGE",)}


def comfy_types_match(received: str, expected: str) -> bool:
    """comfy_execution/validation.py's validate_node_input (not strict)."""
    if received == expected:
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def widget_inputs(cls) -> list[tuple[str, tuple]]:
    spec = cls.INPUT_TYPES()
    entries = list(spec["required"].items()) + list(spec.get("optional", {}).items())
    return [(name, e) for name, e in entries if isinstance(e[0], list) or e[0] in WIDGET_TYPES]


def widget_values(node: dict) -> dict:
    """The saved widget values by input name, then the defaults of widgets the save lacks."""
    cls = nodes.NODE_CLASS_MAPPINGS[node["type"]]
    widgets = widget_inputs(cls)
    saved = node.get("widgets_values", [])
    assert len(saved) <= len(widgets), node["type"]
    values = {}
    for i, (name, entry) in enumerate(widgets):
        opts = entry[1] if len(entry) > 1 else {}
        values[name] = saved[i] if i < len(saved) else opts["default"]
    return values


def validate_widget(node_type: str, name: str, entry: tuple, value):
    """ComfyUI's conversion and checks of one widget value; returns the value it passes on."""
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    if isinstance(kind, list):
        if not (node_type == "OnnxDetectionModelLoader" and name.endswith("_model")):  # the user's own files
            assert value in kind, (node_type, name, value)
        return value
    value = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": lambda v: v}[kind](value)
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", value) <= value <= opts.get("max", value), (node_type, name, value)
    return value


def output_type(node_by_id: dict, node_id: int, slot: int) -> str:
    node = node_by_id[node_id]
    if node["type"] in nodes.NODE_CLASS_MAPPINGS:
        return nodes.NODE_CLASS_MAPPINGS[node["type"]].RETURN_TYPES[slot]
    return OTHER_OUTPUTS[node["type"]][slot]


def input_type(node_by_id: dict, node_id: int, slot: int) -> str:
    node = node_by_id[node_id]
    name = node["inputs"][slot]["name"]
    if node["type"] in nodes.NODE_CLASS_MAPPINGS:
        spec = nodes.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
        return {**spec["required"], **spec.get("optional", {})}[name][0]
    return OTHER_INPUTS[node["type"]][name]


def test_saved_reference_workflow_validates(fake_comfy):
    node_by_id = {n["id"]: n for n in SAVED["nodes"]}
    for node in SAVED["nodes"]:
        if node["type"] not in nodes.NODE_CLASS_MAPPINGS:
            continue
        cls = nodes.NODE_CLASS_MAPPINGS[node["type"]]
        entries = dict(widget_inputs(cls))
        for name, value in widget_values(node).items():
            validate_widget(node["type"], name, entries[name], value)
        # The saved slots line up with ours: outputs by position and type, inputs by name.
        for slot, out in enumerate(node.get("outputs", [])):
            assert cls.RETURN_NAMES[slot] == out["name"] and cls.RETURN_TYPES[slot] == out["type"], (node["type"], out)
        spec = cls.INPUT_TYPES()
        for inp in node.get("inputs", []):
            assert inp["name"] in {**spec["required"], **spec.get("optional", {})}, (node["type"], inp)
    for link_id, src, src_slot, dst, dst_slot, saved_type in SAVED["links"]:
        out_t, in_t = output_type(node_by_id, src, src_slot), input_type(node_by_id, dst, dst_slot)
        assert out_t == saved_type, f"link {link_id}: the saved link type {saved_type!r} is no longer the output's {out_t!r}"
        assert comfy_types_match(out_t, in_t), f"link {link_id}: {out_t!r} -> {in_t!r}"
        # ComfyUI before union types compared the strings: equal here too.
        assert out_t == in_t, f"link {link_id}: {out_t!r} -> {in_t!r} needs union-type matching"
    # face_bboxes also reaches consumers that declare the plain "BBOX" in current ComfyUI.
    assert comfy_types_match(nodes.PoseAndFaceDetection.RETURN_TYPES[4], "BBOX")


def test_saved_reference_workflow_runs(fake_comfy, loaded):
    from wanprep_torch.testkit import make_clip

    node_by_id = {n["id"]: n for n in SAVED["nodes"]}
    frames = make_clip(3, H=240, W=416, seed=6).frames  # what VHS_LoadVideo would give
    model = loaded  # the loader's model names are the user's files: the test models stand in
    det = widget_values(node_by_id[3])
    out = nodes.PoseAndFaceDetection().process(model=model, images=frames, **det)
    # gate, smooth, people and person: our extras, at their defaults (people 1: the single subject)
    assert det == {"width": 832, "height": 480, "face_padding": 0, "gate": "safe", "smooth": "auto", "people": 1, "person": 0}
    assert len(out) == 6 and out[1].shape == (3, 512, 512, 3) and len(out[4]) == 3
    draw = widget_values(node_by_id[4])
    assert draw["draw_head"] == "True"
    (images_old,) = nodes.DrawViTPose().process(pose_data=out[0], **draw)  # an older ComfyUI passes the string on
    (images_new,) = nodes.DrawViTPose().process(pose_data=out[0], **dict(draw, draw_head=bool(draw["draw_head"])))  # newer: bool(value)
    assert images_old.shape == (3, 480, 832, 3) and torch.equal(images_old, images_new) and float(images_old.max()) > 0
    prompt, retarget_prompt = nodes.PoseRetargetPromptHelper().process(pose_data=out[0])
    assert prompt == retarget_prompt == "Change the person to face forward."  # no retarget image
    one = nodes.PoseDetectionOneToAllAnimation().process(model=model, images=frames, **widget_values(node_by_id[8]))
    assert one[0].shape == (3, 480, 832, 3) and float(one[0].max()) > 0


@pytest.mark.parametrize("face_padding_saved", [False, True])
def test_reference_widget_order_is_kept(face_padding_saved):
    # Saves from before and after the reference added face_padding both map onto our widgets:
    # our extra widgets (gate, people, person) come last, so a saved list never shifts.
    node = {"type": "PoseAndFaceDetection", "widgets_values": [640, 360] + ([8] if face_padding_saved else [])}
    values = widget_values(node)
    assert values == {
        "width": 640, "height": 360, "face_padding": 8 if face_padding_saved else 0, "gate": "safe", "smooth": "auto", "people": 1, "person": 0
    }
