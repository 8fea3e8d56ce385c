"""Object Masks from Painted Masks: the user's own masks, one per object, in edit order."""
import re

from comfy_api.latest import io

from ..integration.errors import NodeInputError
from ..integration.object_masks import painted_object_masks, show_warnings
from ..integration.sockets import CATEGORY, EditPlan, object_mask_outputs, overlap_input
from ..masking.ops import OVERLAP_RULES

NODE = "Object Masks from Painted Masks (LeakFree)"
MAX_MASK_INPUTS = 8
MASK_INPUT = re.compile(r"mask_(\d+)$")


class ObjectMasksPainted(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        more = [io.Mask.Input(f"mask_{i}", optional=True, tooltip=f"Mask of the object on edit line {i} (or a batch of several objects' masks).")
                for i in range(2, MAX_MASK_INPUTS + 1)]
        return io.Schema(
            node_id="LeakFreeObjectMasksPainted",
            display_name=NODE,
            category=f"{CATEGORY}/masks",
            description="Masks you painted, one per edit line in the same order, binarised and dilated into the object-mask "
                        "batch the attention and blending nodes take.",
            inputs=[
                EditPlan.Input("edit_plan", tooltip="From Object-Restricted Encode: says how many masks to expect and their order."),
                io.Mask.Input("mask_1", tooltip="Mask of the object on edit line 1, or one MASK batch with a mask per edit line."),
                io.Float.Input("dilation_percent", default=4.0, min=0.0, max=25.0, step=0.5,
                               tooltip="Grow each mask by a disk of this percent of the image's short side (ALE-Edit: 4)."),
                *more,
                io.Image.Input("image", optional=True, tooltip="The source image: masks of another size are resized to it, and the preview is drawn on it."),
                overlap_input(),
            ],
            outputs=object_mask_outputs(),
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, edit_plan, mask_1, dilation_percent, image=None, overlap=OVERLAP_RULES[0], **more_masks):
        cls.refuse_unread_masks()
        given = [mask_1] + [more_masks[f"mask_{i}"] for i in range(2, MAX_MASK_INPUTS + 1) if more_masks.get(f"mask_{i}") is not None]
        masks, background, preview, warnings = painted_object_masks(given, image, edit_plan, dilation_percent, overlap, NODE)
        return io.NodeOutput(masks, background, preview, ui=show_warnings(NODE, warnings, getattr(cls.hidden, "unique_id", None)))

    @classmethod
    def refuse_unread_masks(cls):
        """A mask wired to an input past the last one (e.g. mask_9 in an API prompt) would be dropped without a word."""
        prompt, node_id = getattr(cls.hidden, "prompt", None) or {}, getattr(cls.hidden, "unique_id", None)
        inputs = prompt.get(str(node_id), {}).get("inputs", {})
        extra = sorted(name for name in inputs if (m := MASK_INPUT.match(name)) and int(m.group(1)) > MAX_MASK_INPUTS)
        if extra:
            raise NodeInputError(f"{NODE}: {', '.join(extra)} is connected, but the node reads mask_1 to mask_{MAX_MASK_INPUTS}. "
                                 f"For more objects, connect one MASK batch (e.g. from a Batch node) to mask_{MAX_MASK_INPUTS} or mask_1.")
