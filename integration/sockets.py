"""The pack's node category, its custom socket types and the inputs and outputs several nodes share, declared once."""
from comfy_api.latest import io

from ..attention.dual_branch import CUSTOM_SCHEDULE, SELF_ATTENTION_SCHEDULES
from ..masking.ops import OVERLAP_RULES

CATEGORY = "LeakFreeEdit"
EditPlan = io.Custom("EDIT_PLAN")
GroundingDino = io.Custom("LEAKFREE_GROUNDING_DINO")
Sam = io.Custom("LEAKFREE_SAM")
AttentionMaps = io.Custom("LEAKFREE_ATTENTION_MAPS")


def object_mask_outputs() -> list:
    """The outputs every object-mask node gives, in this order."""
    return [
        io.Mask.Output(display_name="object_masks", tooltip="One mask per object in edit order (dilated): for Region-Guided "
                       "Cross-Attention and Latent Background Blend."),
        io.Mask.Output(display_name="background_mask", tooltip="Where no object is: the area background blending keeps from the source."),
        io.Image.Output(display_name="preview", tooltip="The image with each object's mask in its own colour."),
    ]


def overlap_input():
    """The object-mask nodes' overlap rule (an optional widget, so workflows saved before it keep their values)."""
    return io.Combo.Input("overlap", options=list(OVERLAP_RULES), default=OVERLAP_RULES[0], optional=True,
                          tooltip="Pixels two objects claim. background: ALE-Edit's rule, they take the background's text (an object "
                                  "inside another, a shirt on a boy, is then not edited). inner: the smaller object owns them. The "
                                  "preview says how much of each object's area is its own.")


def schedule_inputs(what: str) -> list:
    """The start/end widgets of a node that acts over part of sampling (``what`` names the action in the tooltips)."""
    return [io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=f"Sampling progress at which {what} starts."),
            io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=f"Sampling progress at which {what} stops.")]


def edits_input():
    """The edit list every encoder takes."""
    return io.String.Input("edits", multiline=True, default="wolf -> brown-colored goat\nmoon -> moon made of gold",
                           tooltip="One edit per line: 'source object -> target prompt'. Lines starting with # are ignored. "
                                   "ComfyUI weight syntax works in targets.")


def edit_plan_output():
    return EditPlan.Output(display_name="edit_plan", tooltip="The objects in edit order: mask nodes make one mask per object from it.")


def structure_lock_inputs(name: str, locked: str) -> list:
    """A dual-branch guider's structure-lock preset (``name``) and custom fraction; ``locked`` says what the lock does."""
    presets = ", ".join(f"{k} {v}" for k, v in SELF_ATTENTION_SCHEDULES.items())
    return [
        io.Combo.Input(name, options=[*SELF_ATTENTION_SCHEDULES, CUSTOM_SCHEDULE], default="object",
                       tooltip=f"Fraction of the steps in which {locked}, per edit type (ALE-Edit: {presets}); custom uses custom_schedule."),
        io.Float.Input("custom_schedule", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="The lock fraction when the schedule is 'custom': locked while (step+1)/steps < this; 0 never locks."),
    ]
