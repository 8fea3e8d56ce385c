"""Region-Guided Cross-Attention: ALE-Edit's RGB-CAM patched into every cross-attention layer."""
from comfy_api.latest import io

from ..attention.region_attention import CrossAttentionRegions
from ..integration.checks import check_masks, check_model, check_schedule, ore_payload, schedule_problem
from ..integration.errors import NodeInputError
from ..integration.patching import install_region_program, percent_to_sigma, region_program
from ..integration.sockets import CATEGORY, schedule_inputs
from ..masking.ops import MASK_RESIZE_MODES

NODE = "Region-Guided Cross-Attention (LeakFree)"
ISOLATION_MODES = ("ale", "strict")


class RegionGuidedCrossAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeRegionGuidedCrossAttention",
            display_name=NODE,
            category=f"{CATEGORY}/attention",
            description="ALE-Edit's region-guided cross-attention (RGB-CAM) on the target's rows of every cross-attention "
                        "layer: inside object i's mask only object i's text is read, and its tokens get no attention outside it.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL model to patch (it is cloned, never changed)."),
                io.Conditioning.Input("target", tooltip="The 'target' output of Object-Restricted Encode (carries the ORE values)."),
                io.Mask.Input("object_masks", tooltip="One mask per edit line, in edit order, from an Object Masks node. Any size: resized per layer."),
                io.Combo.Input("isolation", options=list(ISOLATION_MODES), default="ale",
                               tooltip="ale: keys from the target base prompt (the paper). strict: region i also takes its keys from object i's own prompt."),
                *schedule_inputs("the patch"),
                io.Combo.Input("mask_resize", options=list(MASK_RESIZE_MODES), default="nearest", optional=True,
                               tooltip="How the masks reach each layer's grid. nearest: ALE-Edit's (each cell takes the mask at its "
                                       "top-left pixel). area: a cell belongs to an object when the object covers most of it "
                                       "(keeps thin objects at the coarse layers)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with region-guided cross-attention (a patched clone; the input model is untouched).")],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return schedule_problem(NODE, start_percent, end_percent)

    @classmethod
    def execute(cls, model, target, object_masks, isolation="ale", start_percent=0.0, end_percent=1.0, mask_resize="nearest"):
        payload = ore_payload(target, NODE)
        check_model(model, payload.plan, NODE)
        masks = check_masks(object_masks, payload.plan, NODE)
        check_schedule(NODE, start_percent, end_percent)
        patched = model.clone()
        if region_program(patched).replacement is not None:
            raise NodeInputError(
                f"{NODE}: this model has Attention Replacement, which gives the target the source's attention maps; the masks "
                "here would decide the same maps. Use one: put Attention Replacement on a model without Region-Guided "
                "Cross-Attention (the mask-free edit), or leave it out (the masked edit).")
        cross = CrossAttentionRegions(
            embeddings=payload.embeddings,
            spans=payload.plan.target_spans,
            masks=masks.float().cpu(),
            strict=isolation == "strict",
            resize=mask_resize,
            sigma_start=percent_to_sigma(patched, start_percent),
            sigma_end=percent_to_sigma(patched, end_percent),
        )
        install_region_program(patched, region_program(patched).with_cross(cross))
        return io.NodeOutput(patched)
