"""Source-Dominance Rebalance: BindEdit-style token rebalancing and self-attention binding on the region program."""
from comfy_api.latest import io

from ..attention.rebalance import MAX_BINDING, MAX_BOOST, MIN_SINK_SCALE, RegionBinding, TokenRebalance
from ..integration.checks import check_range, check_schedule, schedule_problem
from ..integration.patching import install_region_program, percent_to_sigma, program_with_regions
from ..integration.sockets import CATEGORY, schedule_inputs

NODE = "Source-Dominance Rebalance (LeakFree)"


class SourceDominanceRebalance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeSourceDominanceRebalance",
            display_name=NODE,
            category=f"{CATEGORY}/attention",
            description="Counters source dominance and edit-token leakage (after BindEdit; this pack's forms): object i's tokens "
                        "weigh more inside region i, and self-attention between different objects' regions is damped.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Region-Guided Cross-Attention (its object masks define the regions)."),
                io.Float.Input("boost", default=2.0, min=1.0, max=MAX_BOOST, step=0.1,
                               tooltip="Multiplies object i's token attention inside region i before renormalising (logit + log(boost)). 1 = off."),
                io.Float.Input("sink_scale", default=1.0, min=MIN_SINK_SCALE, max=1.0, step=0.01,
                               tooltip="Multiplies the BOS/EOS/padding attention inside the object regions (logit + log(sink_scale)). 1 = off."),
                io.Float.Input("binding", default=2.0, min=0.0, max=MAX_BINDING, step=0.1,
                               tooltip="Self-attention logits taken off between different objects' regions (weight x e^-binding). 0 = off."),
                io.Float.Input("surroundings", default=0.0, min=0.0, max=MAX_BINDING, step=0.1,
                               tooltip="Self-attention logits taken off from object pixels to unedited background pixels. 0 = off."),
                *schedule_inputs("rebalancing"),
            ],
            outputs=[io.Model.Output(tooltip="The model with rebalancing and binding added to its region attention (a patched clone).")],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return schedule_problem(NODE, start_percent, end_percent)

    @classmethod
    def execute(cls, model, boost=2.0, sink_scale=1.0, binding=2.0, surroundings=0.0, start_percent=0.0, end_percent=1.0):
        program_with_regions(model, NODE)
        check_range(NODE, "boost", boost, 1.0, MAX_BOOST)
        check_range(NODE, "sink_scale", sink_scale, MIN_SINK_SCALE, 1.0)
        check_range(NODE, "binding", binding, 0.0, MAX_BINDING)
        check_range(NODE, "surroundings", surroundings, 0.0, MAX_BINDING)
        check_schedule(NODE, start_percent, end_percent)
        patched = model.clone()
        window = dict(sigma_start=percent_to_sigma(patched, start_percent), sigma_end=percent_to_sigma(patched, end_percent))
        program = program_with_regions(patched, NODE)
        if boost != 1.0 or sink_scale != 1.0:
            program = program.with_cross_bias(TokenRebalance(boost=boost, sink_scale=sink_scale, **window))
        binds = binding > 0 or surroundings > 0
        if binds:
            program = program.with_self_bias(RegionBinding(strength=binding, surroundings=surroundings, **window))
        install_region_program(patched, program, self_attention=binds)
        return io.NodeOutput(patched)
