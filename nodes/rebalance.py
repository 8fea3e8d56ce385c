"""Source-Dominance Rebalance: BindEdit-style token rebalancing and self-attention binding on the region program."""
from __future__ import annotations

from ..attention.rebalance import MAX_BINDING, MAX_BOOST, MIN_SINK_SCALE, RegionBinding, TokenRebalance
from .comfy_compat import CATEGORY, NodeInputError, install_region_program, percent_to_sigma, region_program

NODE = "Source-Dominance Rebalance"


def program_with_regions(model, node: str):
    """The region program on ``model``; an error naming the fix when RGB-CAM is not on it."""
    program = region_program(model)
    if program.cross is None:
        raise NodeInputError(
            f"{node}: this model has no region-guided cross-attention, so there are no object regions to work on. "
            "Connect Region-Guided Cross-Attention first: its MODEL output goes into this node's model input."
        )
    return program


def check_range(node: str, name: str, value: float, low: float, high: float):
    if not low <= value <= high:
        raise NodeInputError(f"{node}: {name} is {value}; it must be between {low} and {high}.")


def check_schedule(node: str, start_percent: float, end_percent: float):
    check_range(node, "start_percent", start_percent, 0.0, 1.0)
    check_range(node, "end_percent", end_percent, 0.0, 1.0)
    if start_percent > end_percent:
        raise NodeInputError(f"{node}: start_percent ({start_percent}) is after end_percent ({end_percent}).")


class SourceDominanceRebalance:
    DESCRIPTION = (
        "Counters source dominance and edit-token leakage (after BindEdit; its formulas are not public, "
        "these are this pack's). Cross-attention: inside region i, object i's target tokens get the logit "
        "bias log(boost) and the sink tokens (BOS, EOS, padding) log(sink_scale); the softmax renormalises, "
        "so object i's share of region i's attention rises with boost. Self-attention binding: a pixel of "
        "region i loses 'binding' logits on pixels of the other objects' regions (and 'surroundings' on "
        "unedited background), B = -s [p in R_i][p' in R_j, j != i] - s_bg [p in any R][p' in bg], as "
        "appended one-hot q/k columns: still one fused attention call per layer, no HW x HW tensor. "
        "Binding acts on conditional rows only. Needs Region-Guided Cross-Attention before it (its regions)."
    )
    CATEGORY = f"{CATEGORY}/attention"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with rebalancing and binding added to its region attention (a patched clone).",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL output of Region-Guided Cross-Attention (its object masks define the regions)."}),
                "boost": ("FLOAT", {"default": 2.0, "min": 1.0, "max": MAX_BOOST, "step": 0.1,
                                    "tooltip": "Multiplies object i's token attention inside region i before renormalising (logit + log(boost)). 1 = off."}),
                "sink_scale": ("FLOAT", {"default": 1.0, "min": MIN_SINK_SCALE, "max": 1.0, "step": 0.01,
                                         "tooltip": "Multiplies the BOS/EOS/padding attention inside the object regions (logit + log(sink_scale)). 1 = off."}),
                "binding": ("FLOAT", {"default": 2.0, "min": 0.0, "max": MAX_BINDING, "step": 0.1,
                                      "tooltip": "Self-attention logits taken off between different objects' regions (weight x e^-binding). 0 = off."}),
                "surroundings": ("FLOAT", {"default": 0.0, "min": 0.0, "max": MAX_BINDING, "step": 0.1,
                                           "tooltip": "Self-attention logits taken off from object pixels to unedited background pixels. 0 = off."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress at which rebalancing starts."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Sampling progress at which rebalancing stops."}),
            }
        }

    def patch(self, model, boost=2.0, sink_scale=1.0, binding=2.0, surroundings=0.0, start_percent=0.0, end_percent=1.0):
        program = program_with_regions(model, NODE)
        check_range(NODE, "boost", boost, 1.0, MAX_BOOST)
        check_range(NODE, "sink_scale", sink_scale, MIN_SINK_SCALE, 1.0)
        check_range(NODE, "binding", binding, 0.0, MAX_BINDING)
        check_range(NODE, "surroundings", surroundings, 0.0, MAX_BINDING)
        check_schedule(NODE, start_percent, end_percent)
        patched = model.clone()
        window = dict(sigma_start=percent_to_sigma(patched, start_percent), sigma_end=percent_to_sigma(patched, end_percent))
        program = region_program(patched)
        if boost != 1.0 or sink_scale != 1.0:
            program = program.with_cross_bias(TokenRebalance(boost=boost, sink_scale=sink_scale, **window))
        binds = binding > 0 or surroundings > 0
        if binds:
            program = program.with_self_bias(RegionBinding(strength=binding, surroundings=surroundings, **window))
        install_region_program(patched, program, self_attention=binds)
        return (patched,)


NODE_CLASS_MAPPINGS = {"LeakFreeSourceDominanceRebalance": SourceDominanceRebalance}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeSourceDominanceRebalance": "Source-Dominance Rebalance (LeakFree)"}
