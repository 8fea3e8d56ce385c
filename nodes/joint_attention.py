"""Region-Guided Joint Attention: object isolation in Flux's joint text-image attention."""
from comfy_api.latest import io

from ..attention.joint_attention import IMAGE_ATTENTION, IMAGE_ATTENTION_HELP, NODE, JointAttentionProgram, JointRegions
from ..integration.checks import check_masks, check_schedule, schedule_problem
from ..integration.flux import check_flux_model, install_joint_program, joint_payload
from ..integration.patching import percent_to_sigma
from ..integration.sockets import CATEGORY, schedule_inputs


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
            ],
            outputs=[io.Model.Output(tooltip="The model with region-guided joint attention (a patched clone; the input model is untouched).")],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return schedule_problem(NODE, start_percent, end_percent)

    @classmethod
    def execute(cls, model, target, object_masks, image_attention="region", start_percent=0.0, end_percent=1.0):
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
            sigma_start=percent_to_sigma(patched, start_percent),
            sigma_end=percent_to_sigma(patched, end_percent),
        )
        install_joint_program(patched, JointAttentionProgram(regions))
        return io.NodeOutput(patched)
