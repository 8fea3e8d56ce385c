"""Object Masks from Painted Masks: the user's own masks, one per object, in edit order."""
import torch
from comfy_api.latest import io

from ..integration.checks import finish_masks
from ..integration.sockets import CATEGORY, EditPlan, object_mask_outputs
from ..masking.ops import preview_overlay, stack_object_masks

NODE = "Object Masks from Painted Masks (LeakFree)"
MAX_MASK_INPUTS = 8


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
                               tooltip="Grow each mask by this percent of the image's short side (ALE-Edit: 4)."),
                *more,
                io.Image.Input("image", optional=True, tooltip="The source image: masks of another size are resized to it, and the preview is drawn on it."),
            ],
            outputs=object_mask_outputs(),
        )

    @classmethod
    def execute(cls, edit_plan, mask_1, dilation_percent, image=None, **more_masks):
        given = [mask_1] + [more_masks[f"mask_{i}"] for i in range(2, MAX_MASK_INPUTS + 1) if more_masks.get(f"mask_{i}") is not None]
        size = image.shape[1:3] if image is not None else (None, None)
        masks, background = finish_masks(stack_object_masks(given, *size), edit_plan, dilation_percent, NODE)
        canvas = image[0] if image is not None else torch.zeros(*masks.shape[-2:], 3)
        return io.NodeOutput(masks, background, preview_overlay(canvas, masks).unsqueeze(0))
