"""Object-Restricted Encode: ALE-Edit's ORE of the edit prompts, from ComfyUI's own CLIP object."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..attention.ore import EOS_MODE_HELP, EOS_MODES, OreEmbeddings, object_restricted
from ..attention.plan import EditPlan, EditPlanError, parse_edits
from ..attention.tokens import plan_windows
from .comfy_compat import CATEGORY, NodeInputError

NODE = "Object-Restricted Encode"
ORE_KEY = "leakfree_ore"  # where the payload rides in the target conditioning's options


@dataclass(frozen=True)
class OrePayload:
    """What Region-Guided Cross-Attention needs from the encoder, carried by the target CONDITIONING."""

    plan: EditPlan
    embeddings: OreEmbeddings
    eos_mode: str


def encode_plan(clip, edits: str, eos_mode: str = "object") -> tuple[EditPlan, OreEmbeddings, torch.Tensor]:
    """Encode the target base prompt and every object prompt in ONE batched text-encoder call."""
    try:
        plan = EditPlan(parse_edits(edits, NODE))
        windows, spans, eos_index = plan_windows(clip.tokenize, plan.targets, NODE)
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    cond, pooled = clip.encode_from_tokens(windows, return_pooled=True)
    length = len(next(iter(windows.values()))[0])
    base, *own, empty = cond[0].split(length)
    embeddings = object_restricted(base, torch.stack(own), spans, eos_index, eos_mode, empty)
    plan = replace(plan, target_spans=tuple(spans), target_eos=eos_index, context_dim=cond.shape[-1])
    return plan, embeddings, pooled


class ObjectRestrictedEncode:
    DESCRIPTION = (
        "ALE-Edit's Object-Restricted Encoding. One edit per line, 'source -> target' "
        "(e.g. 'wolf -> brown-colored goat'). The target base prompt (targets joined with "
        "' and ') gives the attention keys; each object's ORE value embedding carries only "
        "that object's tokens and its own EOS, so its meaning cannot reach the other objects. "
        "The N+1 prompts are encoded in one batched text-encoder call (SD1.5 and SDXL, "
        "clip-skip, LoRA and weight syntax work as in CLIPTextEncode)."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "EDIT_PLAN")
    RETURN_NAMES = ("target", "source", "edit_plan")
    OUTPUT_TOOLTIPS = (
        "Target base prompt with the ORE payload: feed it to Region-Guided Cross-Attention and to the sampler's positive.",
        "Source base prompt (objects joined with ' and '): for the dual-branch guider or inversion.",
        "The objects in edit order: mask nodes make one mask per object from it.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The CLIP of the checkpoint you sample with (SD1.5 or SDXL)."}),
                "edits": ("STRING", {
                    "multiline": True,
                    "default": "wolf -> brown-colored goat\nmoon -> moon made of gold",
                    "tooltip": "One edit per line: 'source object -> target prompt'. Lines starting with # are ignored. ComfyUI weight syntax works in targets.",
                }),
                "eos_mode": (list(EOS_MODES), {
                    "default": "object",
                    "tooltip": "What fills each object's EOS and padding. " + " ".join(f"{k}: {v}" for k, v in EOS_MODE_HELP.items()),
                }),
            }
        }

    def encode(self, clip, edits, eos_mode):
        plan, embeddings, pooled = encode_plan(clip, edits, eos_mode)
        keys = embeddings.keys.unsqueeze(0)
        payload = OrePayload(plan, embeddings, eos_mode)
        source, source_pooled = clip.encode_from_tokens(clip.tokenize(plan.source_prompt), return_pooled=True)
        target = [[keys, {"pooled_output": pooled, ORE_KEY: payload}]]
        return (target, [[source, {"pooled_output": source_pooled}]], plan)


def ore_payload(conditioning, node: str) -> OrePayload:
    """The ORE payload of a target CONDITIONING, or an error that says where it must come from."""
    for _, options in conditioning or ():
        payload = options.get(ORE_KEY)
        if payload is not None:
            return payload
    raise NodeInputError(
        f"{node}: this conditioning did not come from Object-Restricted Encode. Connect the 'target' output of "
        "LeakFree Object-Restricted Encode (a plain CLIPTextEncode has no object-restricted embeddings)."
    )


NODE_CLASS_MAPPINGS = {"LeakFreeObjectRestrictedEncode": ObjectRestrictedEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeObjectRestrictedEncode": "Object-Restricted Encode (LeakFree)"}
