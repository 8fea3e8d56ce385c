"""The pack's node category and its custom socket types, declared once for every node."""
from comfy_api.latest import io

CATEGORY = "LeakFreeEdit"
EditPlan = io.Custom("EDIT_PLAN")
GroundingDino = io.Custom("LEAKFREE_GROUNDING_DINO")
Sam = io.Custom("LEAKFREE_SAM")


def object_mask_outputs() -> list:
    """The outputs every object-mask node gives, in this order."""
    return [
        io.Mask.Output(display_name="object_masks", tooltip="One mask per object in edit order (dilated): for Region-Guided "
                       "Cross-Attention and Latent Background Blend."),
        io.Mask.Output(display_name="background_mask", tooltip="Where no object is: the area background blending keeps from the source."),
        io.Image.Output(display_name="preview", tooltip="The image with each object's mask in its own colour."),
    ]
AttentionMaps = io.Custom("LEAKFREE_ATTENTION_MAPS")
