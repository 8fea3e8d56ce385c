"""Region-Guided Joint Attention: object isolation in Flux's joint text-image attention."""
from comfy_api.latest import io

from ..attention.joint_attention import (
    IMAGE_ATTENTION, IMAGE_ATTENTION_HELP, NEGATIVE_ROWS, NEGATIVE_ROWS_HELP, NODE, JointAttentionProgram, JointRegions,
)
from ..integration.checks import check_masks, check_schedule, schedule_problem
from ..integration.flux import check_flux_model, install_joint_program, joint_payload, window_warnings
from ..integration.object_masks import show_warnings
from ..integration.patching import percent_to_sigma
from ..integration.sockets import CATEGORY, schedule_inputs
from ..masking.ops import OVERLAP_RULES


class RegionGuidedJointAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeRegionGuidedJointAttention",
            display_name=NODE,
            category=f"{CATEGORY}/attention",
            description="Routes Flux's joint attention (double and single blocks): object i's region reads only object i's own "
                        "text, the background only the background prompt, so no object's text reaches another region.",
            inputs=[
                io.Model.Input("model", tooltip="The Flux model to patch (it is cloned, never changed)."),
                io.Conditioning.Input("target", tooltip="The 'target' output of Object-Restricted Encode for Flux."),
                io.Mask.Input("object_masks", tooltip="One mask per edit line, in edit order, from an Object Masks node. Any size: put on the token grid."),
                io.Combo.Input("image_attention", options=list(IMAGE_ATTENTION), default="region",
                               tooltip="Which image tokens an object's image tokens attend to. " + " ".join(f"{k}: {v}" for k, v in IMAGE_ATTENTION_HELP.items())),
                *schedule_inputs("the patch"),
                io.Combo.Input("overlap", options=list(OVERLAP_RULES), default=OVERLAP_RULES[0], optional=True,
                               tooltip="Image tokens two objects' masks claim go to the object covering more of the token. Where both "
                                       "cover it equally (their masks overlap, an object inside another): background gives it the "
                                       "background's text (ALE-Edit's rule), inner the smaller object."),
                io.Combo.Input("negative", options=list(NEGATIVE_ROWS), default=NEGATIVE_ROWS[0], optional=True,
                               tooltip="With CFG above 1. " + " ".join(f"{k}: {v}" for k, v in NEGATIVE_ROWS_HELP.items())),
            ],
            hidden=[io.Hidden.unique_id],
            outputs=[io.Model.Output(tooltip="The model with region-guided joint attention (a patched clone; the input model is untouched).")],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return schedule_problem(NODE, start_percent, end_percent)

    @classmethod
    def execute(cls, model, target, object_masks, image_attention="region", start_percent=0.0, end_percent=1.0,
                overlap=OVERLAP_RULES[0], negative=NEGATIVE_ROWS[0]):
        payload = joint_payload(target, NODE)
        check_flux_model(model, NODE)
        masks = check_masks(object_masks, payload.plan, NODE)
        check_schedule(NODE, start_percent, end_percent)
        patched = model.clone()
        regions = JointRegions(
            text=payload.text,
            masks=masks.float().cpu(),
            count=len(payload.plan),
            image_attention=image_attention,
            overlap=overlap,
            negative=negative,
            sigma_start=percent_to_sigma(patched, start_percent),
            sigma_end=percent_to_sigma(patched, end_percent),
        )
        unique_id = getattr(cls.hidden, "unique_id", None)
        install_joint_program(patched, JointAttentionProgram(regions), unique_id)
        return io.NodeOutput(patched, ui=show_warnings(NODE, window_warnings(start_percent, end_percent), unique_id))
