"""Object-Restricted Encode: ALE-Edit's ORE of the edit prompts, from ComfyUI's own CLIP object."""
from comfy_api.latest import io

from ..attention.ore import EOS_MODE_HELP, EOS_MODES, SUBSTITUTION_HELP, SUBSTITUTIONS
from ..integration.checks import ORE_KEY, OrePayload
from ..integration.encoding import encode_plan, encode_substituted_source
from ..integration.flux import refuse_flux_clip
from ..integration.sockets import CATEGORY, edit_plan_output, edits_input

NODE = "Object-Restricted Encode (LeakFree)"


class ObjectRestrictedEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeObjectRestrictedEncode",
            display_name=NODE,
            category=f"{CATEGORY}/conditioning",
            description="ALE-Edit's Object-Restricted Encoding of an edit list ('source -> target' per line): each object's "
                        "text embedding carries only that object, so its meaning cannot reach the other objects.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP of the checkpoint you sample with (SD1.5 or SDXL)."),
                edits_input(),
                io.Combo.Input("eos_mode", options=list(EOS_MODES), default="object",
                               tooltip="What fills each object's EOS and padding. " + " ".join(f"{k}: {v}" for k, v in EOS_MODE_HELP.items())),
                io.Combo.Input("source_substitution", options=list(SUBSTITUTIONS), default="pack", optional=True,
                               tooltip="Where the substituted base prompts (the source output, the background's values) take each "
                                       "object's tokens from. " + " ".join(f"{k}: {v}" for k, v in SUBSTITUTION_HELP.items())),
            ],
            outputs=[
                io.Conditioning.Output(display_name="target", tooltip="Target base prompt with the ORE payload: feed it to "
                                       "Region-Guided Cross-Attention and to the sampler's positive."),
                io.Conditioning.Output(display_name="source", tooltip="Source base prompt (objects joined with ' and '), each "
                                       "object's span from its own encoding (ALE-Edit's source branch): for the dual-branch guider."),
                edit_plan_output(),
            ],
        )

    @classmethod
    def execute(cls, clip, edits, eos_mode, source_substitution="pack"):
        refuse_flux_clip(clip, NODE)
        plan, embeddings, pooled = encode_plan(clip, edits, eos_mode, NODE, source_substitution)
        target = [[embeddings.keys.unsqueeze(0), {"pooled_output": pooled, ORE_KEY: OrePayload(plan, embeddings, eos_mode)}]]
        return io.NodeOutput(target, encode_substituted_source(clip, plan, NODE, source_substitution), plan)
