"""Object Masks (from painted masks): the user's own masks, one per object, in edit order."""
from __future__ import annotations

import torch

from ..masking.ops import background_mask, binarize, dilate, dilation_radius, preview_overlay, stack_object_masks
from .comfy_compat import CATEGORY, NodeInputError

NODE = "Object Masks (painted)"
MAX_MASK_INPUTS = 8


class ObjectMaskNode:
    """What every object-mask node shares: its category and its three outputs."""

    CATEGORY = f"{CATEGORY}/masks"
    RETURN_TYPES = ("MASK", "MASK", "IMAGE")
    RETURN_NAMES = ("object_masks", "background_mask", "preview")
    OUTPUT_TOOLTIPS = (
        "One mask per object in edit order (dilated): for Region-Guided Cross-Attention and Latent Background Blend.",
        "Where no object is: the area background blending keeps from the source.",
        "The image with each object's mask in its own colour.",
    )
    FUNCTION = "make_masks"


def dilation_pixels(height: int, width: int, dilation_percent: float) -> int:
    return dilation_radius(height, width, dilation_percent / 100.0)


def finish_masks(masks: torch.Tensor, plan, dilation_percent: float, node: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the count against the plan, binarise and dilate; returns (object masks, background)."""
    if masks.shape[0] != len(plan):
        raise NodeInputError(
            f"{node}: got {masks.shape[0]} masks for {len(plan)} objects ({', '.join(plan.objects)}). "
            "Give exactly one mask per edit line, in the same order."
        )
    height, width = masks.shape[-2:]
    masks = dilate(binarize(masks), dilation_pixels(height, width, dilation_percent))
    return masks, background_mask(masks)


class ObjectMasksPainted(ObjectMaskNode):
    DESCRIPTION = (
        "Turns masks you painted (e.g. in Load Image's mask editor), one per edit line and in the "
        "same order, into the object-mask batch the attention and blending nodes take. Masks are "
        "binarised at 0.5 and dilated (default 4% of the short side, as ALE-Edit's code). A pixel "
        "claimed by two objects is given to the background term by Region-Guided Cross-Attention."
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = {
            f"mask_{i}": ("MASK", {"tooltip": f"Mask of the object on edit line {i} (or a batch of several objects' masks)."})
            for i in range(2, MAX_MASK_INPUTS + 1)
        }
        optional["image"] = ("IMAGE", {"tooltip": "The source image: masks of another size are resized to it, and the preview is drawn on it."})
        return {
            "required": {
                "edit_plan": ("EDIT_PLAN", {"tooltip": "From Object-Restricted Encode: says how many masks to expect and their order."}),
                "mask_1": ("MASK", {"tooltip": "Mask of the object on edit line 1, or one MASK batch with a mask per edit line."}),
                "dilation_percent": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 25.0, "step": 0.5,
                                               "tooltip": "Grow each mask by this percent of the image's short side (ALE-Edit: 4)."}),
            },
            "optional": optional,
        }

    def make_masks(self, edit_plan, mask_1, dilation_percent, image=None, **more_masks):
        given = [mask_1] + [more_masks[f"mask_{i}"] for i in range(2, MAX_MASK_INPUTS + 1) if more_masks.get(f"mask_{i}") is not None]
        size = image.shape[1:3] if image is not None else (None, None)
        masks, background = finish_masks(stack_object_masks(given, *size), edit_plan, dilation_percent, NODE)
        canvas = image[0] if image is not None else torch.zeros(*masks.shape[-2:], 3)
        return masks, background, preview_overlay(canvas, masks).unsqueeze(0)


NODE_CLASS_MAPPINGS = {"LeakFreeObjectMasksPainted": ObjectMasksPainted}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeObjectMasksPainted": "Object Masks from Painted Masks (LeakFree)"}
