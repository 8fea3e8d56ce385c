"""Dual-Branch Edit Guider for Flux: FlowEdit's inversion-free source + target branches in one model call per step,
with region-routed target text, the structure lock and background blending."""
from comfy_api.latest import io

from ..attention.dual_branch import lock_fraction
from ..attention.flow_edit import FLUX_DEFAULTS
from ..integration.errors import NodeInputError
from ..integration.flow_edit import FlowEditGuider, FlowEditSettings, check_flux_branches, with_guidance
from ..integration.flux import check_flux_model, install_joint_wrapper
from ..integration.guider import background_blending, source_samples
from ..integration.sockets import CATEGORY, structure_lock_inputs

NODE = "Dual-Branch Edit Guider for Flux (LeakFree)"


def guidance_input(branch: str, default: float):
    return io.Float.Input(f"{branch}_guidance", default=default, min=0.0, max=100.0, step=0.1, round=0.01,
                          tooltip=f"Flux-dev's distilled guidance of the {branch} branch (FlowEdit: {default}; it replaces a FluxGuidance "
                                  "value). Flux-schnell has no guidance input: no effect there.")


class DualBranchGuiderFlux(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeDualBranchGuiderFlux",
            display_name=NODE,
            category=f"{CATEGORY}/sampling",
            description="FlowEdit's inversion-free dual branch on Flux as a GUIDER for SamplerCustomAdvanced (euler): the edit starts "
                        "at the source latent and moves by the target's minus the source's velocity, both branches in one model call "
                        "per step, the target's image tokens on the source's queries and keys for the first steps. Connect the same "
                        "source latent to the sampler.",
            inputs=[
                io.Model.Input("model", tooltip="Flux (dev or schnell), after Region-Guided Joint Attention and any LoRAs (it is cloned, never changed)."),
                io.Conditioning.Input("source", tooltip="The 'source' output of Object-Restricted Encode for Flux (or any prompt describing the source image)."),
                io.Conditioning.Input("target", tooltip="The 'target' output of Object-Restricted Encode for Flux, the conditioning Region-Guided Joint "
                                      "Attention routes (any target prompt works too: plain FlowEdit)."),
                io.Latent.Input("source_latent", tooltip="VAE Encode of the image you edit; connect the same latent to SamplerCustomAdvanced."),
                guidance_input("source", FLUX_DEFAULTS["source_guidance"]),
                guidance_input("target", FLUX_DEFAULTS["target_guidance"]),
                io.Int.Input("n_max", default=FLUX_DEFAULTS["n_max"], min=1, max=10000,
                             tooltip="FlowEdit's n_max: the edit runs over the last n_max of the scheduler's T steps (FlowEdit: 24 of 28); "
                                     "the first T - n_max are skipped. Higher edits more strongly and keeps less of the source."),
                io.Int.Input("n_min", default=FLUX_DEFAULTS["n_min"], min=0, max=10000,
                             tooltip="FlowEdit's n_min: the last n_min steps sample the target alone from the edit path plus noise (a plain "
                                     "img2img tail, for detail); 0 has none (FlowEdit's default)."),
                io.Int.Input("noise_samples", default=FLUX_DEFAULTS["noise_samples"], min=1, max=16,
                             tooltip="FlowEdit's n_avg: fresh noises averaged per step (FlowEdit: 1); each one is one more model call."),
                *structure_lock_inputs("lock_schedule", "the target's image tokens take the source's queries and keys in the joint attention"),
                io.Mask.Input("object_masks", optional=True, tooltip="One mask per edit line, from an Object Masks node: outside their union "
                              "the edit path stays the source latent at every step. Leave empty to edit the whole image."),
                io.Float.Input("blend_end_percent", optional=True, default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Blend the background until this fraction of sampling (1.0 = every step; the final background is then "
                                       "the source latent exactly)."),
                io.Int.Input("feather", optional=True, default=0, min=0, max=256, tooltip="Soft edge in image pixels outside the objects."),
            ],
            outputs=[io.Guider.Output(tooltip="The FlowEdit guider: connect it to SamplerCustomAdvanced with the euler sampler and the "
                                              "scheduler's T steps (FlowEdit: simple, 28).")],
        )

    @classmethod
    def validate_inputs(cls, n_max=None, n_min=None):
        if n_max is not None and n_min is not None and n_min > n_max:
            return f"{NODE}: n_min ({n_min}) is above n_max ({n_max}); the plain-sampling tail is part of the n_max steps."
        return True

    @classmethod
    def execute(cls, model, source, target, source_latent, source_guidance=1.5, target_guidance=5.5, n_max=24, n_min=0,
                noise_samples=1, lock_schedule="object", custom_schedule=0.5, object_masks=None, blend_end_percent=1.0, feather=0):
        check_flux_model(model, NODE)
        problem = cls.validate_inputs(n_max, n_min)
        if problem is not True:
            raise NodeInputError(problem)
        lock = lock_fraction(lock_schedule, custom_schedule)
        masks, per_image = check_flux_branches(source, target, object_masks, lock > 0, NODE)
        latent = source_samples(source_latent, NODE)
        patched = model.clone()
        install_joint_wrapper(patched)
        background = None
        if masks is not None:
            background = background_blending(patched, masks, per_image, latent, feather, "exact", blend_end_percent, NODE)
        settings = FlowEditSettings(n_max, n_min, noise_samples, lock)
        guider = FlowEditGuider(patched, latent, settings, NODE, background)
        guider.inner_set_conds({"positive": with_guidance(target, target_guidance), "source": with_guidance(source, source_guidance)})
        return io.NodeOutput(guider)
