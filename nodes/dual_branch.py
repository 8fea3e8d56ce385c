"""Dual-Branch Edit Guider: ALE-Edit's source + target branches in one UNet call per step (InfEdit's DDCM)."""
from comfy_api.latest import io

from ..attention.dual_branch import BLEND_RULES, SELF_ATTENTION_SCHEDULES, STARTS, BackgroundBlending
from ..integration.checks import check_mask_size, check_masks, check_model, ore_payload
from ..integration.guider import DualBranchCFGGuider, check_model_sampling, check_source, source_samples
from ..integration.patching import install_region_program, percent_to_sigma, region_program
from ..integration.errors import NodeInputError
from ..integration.sockets import CATEGORY
from ..masking.ops import feather as feather_mask, image_unions, latent_mask, multiscale_foreground

NODE = "Dual-Branch Edit Guider (LeakFree)"
CUSTOM = "custom"


class DualBranchGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        presets = ", ".join(f"{k} {v}" for k, v in SELF_ATTENTION_SCHEDULES.items())
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
                io.Combo.Input("self_attention_schedule", options=[*SELF_ATTENTION_SCHEDULES, CUSTOM], default="object",
                               tooltip=f"Fraction of the steps in which the target's self-attention takes the source's queries and keys, per "
                                       f"edit type (ALE-Edit: {presets}); custom uses custom_schedule."),
                io.Float.Input("custom_schedule", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="The lock fraction when the schedule is 'custom': locked while (step+1)/steps < this; 0 never locks."),
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
            outputs=[io.Guider.Output(tooltip="The dual-branch guider: connect it to SamplerCustomAdvanced (LCM sampler for InfEdit's exact update).")],
        )

    @classmethod
    def execute(cls, model, source, target, negative, source_latent, source_cfg=1.0, target_cfg=2.0,
                self_attention_schedule="object", custom_schedule=0.5, object_masks=None, blend_end_percent=1.0, feather=0,
                start="noise", background_blend="ale"):
        payload = ore_payload(target, NODE)
        check_model(model, payload.plan, NODE)
        check_source(source, NODE)
        check_model_sampling(model, NODE)
        latent = source_samples(source_latent, NODE)
        schedule = custom_schedule if self_attention_schedule == CUSTOM else SELF_ATTENTION_SCHEDULES[self_attention_schedule]
        patched = model.clone()
        install_region_program(patched, region_program(patched), self_attention=True)
        background = None
        if object_masks is not None:
            masks = check_masks(object_masks, payload.plan, NODE)
            check_mask_size(masks, latent, NODE)
            unions = feather_mask(image_unions(masks, len(payload.plan)), feather)  # one per image of a batch
            if unions.shape[0] not in (1, latent.shape[0]):
                raise NodeInputError(f"{NODE}: {unions.shape[0]} mask sets for a batch of {latent.shape[0]} images. Give one mask set "
                                     "for the whole batch, or one per image (image-major, as the Object Masks nodes make them).")
            resize = multiscale_foreground if background_blend == "ale" else latent_mask
            background = BackgroundBlending(1.0 - resize(unions, *latent.shape[-2:]), background_blend,
                                            percent_to_sigma(patched, blend_end_percent))
        guider = DualBranchCFGGuider(patched, latent, target_cfg, source_cfg, schedule, NODE, background, start)
        guider.inner_set_conds({"positive": target, "negative": negative, "source": source})
        return io.NodeOutput(guider)
