"""Object-Restricted Encode for Flux: each object's prompt encoded alone, for region-guided joint attention."""
from comfy_api.latest import io

from ..integration.checks import JOINT_KEY
from ..integration.encoding import encode_prompt
from ..integration.flux import JointPayload, encode_flux_plan
from ..integration.sockets import CATEGORY, edit_plan_output, edits_input

NODE = "Object-Restricted Encode for Flux (LeakFree)"


class ObjectRestrictedEncodeFlux(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeObjectRestrictedEncodeFlux",
            display_name=NODE,
            category=f"{CATEGORY}/conditioning",
            description="Encodes an edit list ('source -> target' per line) for Flux: the base prompt, each target prompt alone "
                        "and a background prompt, in one T5 + CLIP-L call, so each region can read only its own object's text.",
            inputs=[
                io.Clip.Input("clip", tooltip="Flux's text encoders (DualCLIPLoader: clip_l + t5xxl, type flux)."),
                edits_input(),
                io.String.Input("background", multiline=True, default="",
                                tooltip="What the background's tokens read, and the text of CLIP-L's pooled vector. Keep the "
                                        "objects' attributes out of it; empty is a neutral choice."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="target", tooltip="The target base prompt (T5) with the per-object encodings: "
                                       "feed it to Region-Guided Joint Attention and to the sampler's positive."),
                io.Conditioning.Output(display_name="source", tooltip="The source base prompt (objects joined with ' and ')."),
                edit_plan_output(),
            ],
        )

    @classmethod
    def execute(cls, clip, edits, background=""):
        plan, text, pooled = encode_flux_plan(clip, edits, background, NODE)
        target = [[text.keys.unsqueeze(0), {"pooled_output": pooled, JOINT_KEY: JointPayload(plan, text, background)}]]
        return io.NodeOutput(target, encode_prompt(clip, plan.source_prompt), plan)
