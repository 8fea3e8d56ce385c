"""Region-Guided Cross-Attention: ALE-Edit's RGB-CAM patched into every cross-attention layer."""
from __future__ import annotations

from ..attention.region_attention import CrossAttentionRegions
from .comfy_compat import CATEGORY, NodeInputError, context_dim, install_region_program, percent_to_sigma, region_program
from .encode import ore_payload

NODE = "Region-Guided Cross-Attention"
ISOLATION_MODES = ("ale", "strict")


def check_masks(masks, plan, node: str):
    """One mask per plan object, or one such set per image of a batch (image-major, as the mask nodes give)."""
    if masks is None or masks.ndim != 3 or masks.shape[0] == 0 or masks.shape[0] % len(plan):
        count = 0 if masks is None else (masks.shape[0] if masks.ndim == 3 else 1)
        raise NodeInputError(
            f"{node}: got {count} object masks for {len(plan)} objects ({', '.join(plan.objects)}). "
            "Connect the 'object_masks' output of a LeakFree Object Masks node built from the same edit plan "
            "(one mask per object, or one set per image of a batch)."
        )
    return masks


def check_model(model, plan, node: str):
    expected = context_dim(model)
    if expected is not None and expected != plan.context_dim:
        raise NodeInputError(
            f"{node}: the prompts were encoded for a {plan.family} model ({plan.context_dim}-d text features) "
            f"but this model takes {expected}-d text features. Encode with the CLIP of the checkpoint you sample with."
        )


class RegionGuidedCrossAttention:
    DESCRIPTION = (
        "ALE-Edit's Region-Guided Blending for Cross-Attention Masking (RGB-CAM), on the target's "
        "conditional rows of every cross-attention layer. One attention map M from the target base "
        "prompt's keys; output = (M V_sub) m_bg + sum_i (M V_ORE_i) m_i, with object i's tokens "
        "blocked outside mask i. Isolation 'ale' is the paper's form (object j's values never reach "
        "region i); 'strict' also takes region i's keys from object i's own encoding, so no change of "
        "object j's text can move region i. Unconditional rows and other prompts are left as they were; "
        "another pack's attention patch on the same layers keeps working."
    )
    CATEGORY = f"{CATEGORY}/attention"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with region-guided cross-attention (a patched clone; the input model is untouched).",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 or SDXL model to patch (it is cloned, never changed)."}),
                "target": ("CONDITIONING", {"tooltip": "The 'target' output of Object-Restricted Encode (carries the ORE values)."}),
                "object_masks": ("MASK", {"tooltip": "One mask per edit line, in edit order, from an Object Masks node. Any size: resized per layer."}),
                "isolation": (list(ISOLATION_MODES), {"default": "ale", "tooltip": "ale: keys from the target base prompt (the paper). strict: region i also takes its keys from object i's own prompt."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress at which the patch starts."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress at which the patch stops."}),
            }
        }

    def patch(self, model, target, object_masks, isolation="ale", start_percent=0.0, end_percent=1.0):
        payload = ore_payload(target, NODE)
        check_model(model, payload.plan, NODE)
        masks = check_masks(object_masks, payload.plan, NODE)
        if start_percent > end_percent:
            raise NodeInputError(f"{NODE}: start_percent ({start_percent}) is after end_percent ({end_percent}).")
        patched = model.clone()
        cross = CrossAttentionRegions(
            embeddings=payload.embeddings,
            spans=payload.plan.target_spans,
            masks=masks.float().cpu(),
            strict=isolation == "strict",
            sigma_start=percent_to_sigma(patched, start_percent),
            sigma_end=percent_to_sigma(patched, end_percent),
        )
        install_region_program(patched, region_program(patched).with_cross(cross))
        return (patched,)


NODE_CLASS_MAPPINGS = {"LeakFreeRegionGuidedCrossAttention": RegionGuidedCrossAttention}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeRegionGuidedCrossAttention": "Region-Guided Cross-Attention (LeakFree)"}
