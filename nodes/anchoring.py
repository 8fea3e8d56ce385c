"""Region Anchoring: ELA-style latent guidance that keeps each object's attention in its region."""
from comfy_api.latest import io

from ..attention.anchoring import AttentionRecorder, LatentAnchoring
from ..attention.region_attention import SigmaWindow
from ..integration.checks import check_range
from ..integration.patching import install_region_program, percent_to_sigma, program_with_regions
from ..integration.sockets import CATEGORY

NODE = "Region Anchoring (LeakFree)"
MAX_STRENGTH = 1.0
MAX_ITERATIONS = 10


class RegionAnchoring(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeRegionAnchoring",
            display_name=NODE,
            category=f"{CATEGORY}/attention",
            description="ELA-style anchoring (this pack's form): during the first steps, small gradient steps on the latent pull "
                        "each object's cross-attention inside its region and spread it evenly there.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Region-Guided Cross-Attention (or of Source-Dominance Rebalance after it)."),
                io.Float.Input("strength", default=0.05, min=0.0, max=MAX_STRENGTH, step=0.005,
                               tooltip="Step size per iteration, as a fraction of the current noise level (RMS of the step = strength x sigma). 0 = off."),
                io.Float.Input("steps_fraction", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Guide the steps in this first fraction of sampling (ELA anchors early, while the layout forms)."),
                io.Int.Input("iterations", default=1, min=1, max=MAX_ITERATIONS,
                             tooltip="Gradient steps per guided sampling step (each one forward + backward pass)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with region anchoring (a patched clone; other model wrappers on it keep running).")],
        )

    @classmethod
    def execute(cls, model, strength=0.05, steps_fraction=0.25, iterations=1):
        program_with_regions(model, NODE)
        check_range(NODE, "strength", strength, 0.0, MAX_STRENGTH)
        check_range(NODE, "steps_fraction", steps_fraction, 0.0, 1.0)
        check_range(NODE, "iterations", iterations, 1, MAX_ITERATIONS)
        patched = model.clone()
        program = program_with_regions(patched, NODE)
        recorder = AttentionRecorder(program.cross.spans, program.cross.tokens)
        install_region_program(patched, program.with_cross_observer(recorder))
        window = SigmaWindow(sigma_end=percent_to_sigma(patched, steps_fraction))
        previous = patched.model_options.get("model_function_wrapper")
        patched.set_model_unet_function_wrapper(LatentAnchoring(recorder, strength, iterations, window, previous))
        return io.NodeOutput(patched)
