"""Region Anchoring: ELA-style latent guidance that keeps each object's attention in its region."""
from __future__ import annotations

from ..attention.anchoring import AttentionRecorder, RegionAnchoring
from .comfy_compat import CATEGORY, install_region_program, percent_to_sigma, region_program
from .rebalance import check_range, program_with_regions

NODE = "Region Anchoring"
MAX_STRENGTH = 1.0
MAX_ITERATIONS = 10


class RegionAnchoringNode:
    DESCRIPTION = (
        "ELA's anchoring with BindEdit's region-fidelity term (no public formulas; this pack's form). "
        "During the first steps_fraction of sampling, before each model call: record each object's "
        "attention a_i on its target tokens at the downsampled cross-attention layers (the model's own "
        "attention, RGB-CAM's mask left out), loss L = mean_i [(1 - share of a_i inside region i) + "
        "total-variation distance of a_i within region i from uniform], and step the latent "
        "x <- x - strength * sigma * g / rms(g), g = dL/dx, 'iterations' times. Each iteration costs one "
        "forward and backward pass of the UNet; gradients exist only inside the step. Needs "
        "Region-Guided Cross-Attention before it."
    )
    CATEGORY = f"{CATEGORY}/attention"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with region anchoring (a patched clone; other model wrappers on it keep running).",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL output of Region-Guided Cross-Attention (or of Source-Dominance Rebalance after it)."}),
                "strength": ("FLOAT", {"default": 0.05, "min": 0.0, "max": MAX_STRENGTH, "step": 0.005,
                                       "tooltip": "Step size per iteration, as a fraction of the current noise level (RMS of the step = strength x sigma). 0 = off."}),
                "steps_fraction": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Guide the steps in this first fraction of sampling (ELA anchors early, while the layout forms)."}),
                "iterations": ("INT", {"default": 1, "min": 1, "max": MAX_ITERATIONS,
                                       "tooltip": "Gradient steps per guided sampling step (each one forward + backward pass)."}),
            }
        }

    def patch(self, model, strength=0.05, steps_fraction=0.25, iterations=1):
        program_with_regions(model, NODE)
        check_range(NODE, "strength", strength, 0.0, MAX_STRENGTH)
        check_range(NODE, "steps_fraction", steps_fraction, 0.0, 1.0)
        check_range(NODE, "iterations", iterations, 1, MAX_ITERATIONS)
        patched = model.clone()
        program = region_program(patched)
        recorder = AttentionRecorder(program.cross.masks, program.cross.spans, program.cross.tokens)
        install_region_program(patched, program.with_cross_observer(recorder))
        anchoring = RegionAnchoring(
            recorder, strength, iterations,
            sigma_start=float("inf"), sigma_end=percent_to_sigma(patched, steps_fraction),
            previous=patched.model_options.get("model_function_wrapper"),
        )
        patched.set_model_unet_function_wrapper(anchoring)
        return (patched,)


NODE_CLASS_MAPPINGS = {"LeakFreeRegionAnchoring": RegionAnchoringNode}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeRegionAnchoring": "Region Anchoring (LeakFree)"}
