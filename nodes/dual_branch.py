"""Dual-Branch Edit Guider: ALE-Edit's source + target branches in one UNet call per step (InfEdit's DDCM)."""
from comfy_api.latest import io

from ..attention.dual_branch import BLEND_RULES, STARTS, lock_fraction
from ..integration.checks import check_masks, check_model, ore_payload
from ..integration.guider import DualBranchCFGGuider, background_blending, check_model_sampling, check_source, source_samples
from ..integration.patching import install_region_program, region_program
from ..integration.sockets import CATEGORY, structure_lock_inputs

NODE = "Dual-Branch Edit Guider (LeakFree)"


class DualBranchGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeDualBranchGuider",
            display_name=NODE,
            category=f"{CATEGORY}/sampling",
            description="ALE-Edit's dual-branch sampling (InfEdit's DDCM virtual inversion) as a GUIDER for SamplerCustomAdvanced: "
                        "source and target branches in one batched UNet call per step, the target's self-attention locked to the "
                        "source's structure for the first steps. Connect the same source latent to the sampler's latent_image.",
            inputs=[
                io.Model.Input("model", tooltip="The model to sample with, after any LeakFree attention nodes and LoRAs (it is cloned, "
                               "never changed). SD1.5/SDXL-style eps or v-prediction models."),
                io.Conditioning.Input("source", tooltip="The 'source' output of Object-Restricted Encode (or any prompt describing the source image)."),
                io.Conditioning.Input("target", tooltip="The 'target' output of Object-Restricted Encode (it carries the object-restricted embeddings)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt for both branches' CFG (an empty prompt is usual with LCM)."),
                io.Latent.Input("source_latent", tooltip="VAE Encode of the image you edit; connect the same latent to SamplerCustomAdvanced."),
                io.Float.Input("source_cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01, tooltip="CFG of the source branch (ALE-Edit: 1)."),
                io.Float.Input("target_cfg", default=2.0, min=0.0, max=30.0, step=0.1, round=0.01, tooltip="CFG of the target branch (ALE-Edit: 2)."),
                *structure_lock_inputs("self_attention_schedule", "the target's self-attention takes the source's queries and keys"),
                io.Mask.Input("object_masks", optional=True, tooltip="One mask per edit line, from an Object Masks node: outside their union "
                              "the source branch's latent is kept at every step. Leave empty to edit the whole image."),
                io.Float.Input("blend_end_percent", optional=True, default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Blend the background until this fraction of sampling (1.0 = every step, as ALE-Edit; the final "
                                       "background is then the source)."),
                io.Int.Input("feather", optional=True, default=0, min=0, max=256,
                             tooltip="Soft edge in image pixels outside the objects (exact blending; with ale it grows the kept-out area)."),
                io.Combo.Input("start", options=list(STARTS), default="noise", optional=True,
                               tooltip="noise: both branches start from the same pure noise (ALE-Edit). img2img: from the source latent "
                                       "noised to the first step (ComfyUI's usual start; with denoise < 1 the layout stays closer)."),
                io.Combo.Input("background_blend", options=list(BLEND_RULES), default="ale", optional=True,
                               tooltip="ale: ALE-Edit's code (blocky mask: the objects' union resized by nearest at 1, 1/2, 1/4, 1/8 of "
                                       "the latent; blended from the second step on; the result is the last step's estimate). exact: "
                                       "bilinear mask, blended at every step, so the result's background is the source latent exactly."),
            ],
            hidden=[io.Hidden.unique_id],
            outputs=[io.Guider.Output(tooltip="The dual-branch guider: connect it to SamplerCustomAdvanced (LCM sampler for InfEdit's exact update).")],
        )

    @classmethod
    def execute(cls, model, source, target, negative, source_latent, source_cfg=1.0, target_cfg=2.0,
                self_attention_schedule="object", custom_schedule=0.5, object_masks=None, blend_end_percent=1.0, feather=0,
                start="noise", background_blend="ale"):
        check_model_sampling(model, NODE)  # first: on Flux it names the Flux guider
        payload = ore_payload(target, NODE)
        check_model(model, payload.plan, NODE)
        check_source(source, NODE)
        latent = source_samples(source_latent, NODE)
        schedule = lock_fraction(self_attention_schedule, custom_schedule)
        patched = model.clone()
        install_region_program(patched, region_program(patched), self_attention=True)
        background = None
        if object_masks is not None:
            masks = check_masks(object_masks, payload.plan, NODE)
            background = background_blending(patched, masks, len(payload.plan), latent, feather, background_blend, blend_end_percent, NODE)
        guider = DualBranchCFGGuider(patched, latent, target_cfg, source_cfg, schedule, NODE, background, start,
                                     getattr(cls.hidden, "unique_id", None))
        guider.inner_set_conds({"positive": target, "negative": negative, "source": source})
        return io.NodeOutput(guider)
