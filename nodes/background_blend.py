"""Latent Background Blend (ALE-Edit's BB) and the exact background paste after sampling."""
from comfy_api.latest import io

from ..integration.checks import check_mask_size, mask_sets, objects_of
from ..integration.errors import NodeInputError
from ..integration.patching import percent_to_sigma
from ..integration.sockets import CATEGORY, EditPlan
from ..masking.ops import feather as feather_mask, image_unions, latent_mask

BLEND_NODE = "Latent Background Blend (LeakFree)"
PASTE_NODE = "Latent Background Paste (LeakFree)"


class LatentBackgroundBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeLatentBackgroundBlend",
            display_name=BLEND_NODE,
            category=f"{CATEGORY}/blend",
            description="ALE-Edit's Background Blending: the source latent's noise mask becomes the union of the objects, so any "
                        "KSampler keeps the background on the source at every step.",
            inputs=[
                io.Latent.Input("samples", tooltip="The source image's latent (VAE Encode of the image you edit)."),
                io.Mask.Input("object_masks", tooltip="One mask per object from an Object Masks node; their union is edited, the rest kept."),
                io.Model.Input("model", tooltip="The model you sample with; its clone carries the blend schedule."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Blend the background until this fraction of sampling (1.0 = every step, as ALE-Edit)."),
                io.Int.Input("feather", default=0, min=0, max=256, tooltip="Soft edge in image pixels outside the objects; 0 keeps a hard edge."),
                EditPlan.Input("edit_plan", optional=True, tooltip="Needed only for an image batch with one mask set per image: tells how "
                               "many masks make one image's set."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The source latent with a noise mask over the objects: sample from it."),
                io.Model.Output(display_name="model", tooltip="The model with the blend schedule (a patched clone)."),
            ],
        )

    @classmethod
    def execute(cls, samples, object_masks, model, end_percent=1.0, feather=0, edit_plan=None):
        sets = mask_sets(object_masks, objects_of(edit_plan, object_masks), BLEND_NODE)
        check_mask_size(object_masks, samples["samples"], BLEND_NODE)
        union = feather_mask(image_unions(object_masks, sets.shape[1]), feather)
        latent = dict(samples)
        latent["noise_mask"] = union
        patched = model.clone()
        if end_percent < 1.0:
            patched.set_model_denoise_mask_function(blend_schedule(percent_to_sigma(patched, end_percent), patched.model_options.get("denoise_mask_function")))
        return io.NodeOutput(latent, patched)


def blend_schedule(sigma_end: float, previous=None):
    """Denoise-mask hook: keep the mask while sigma > sigma_end, then let the whole latent evolve."""

    def denoise_mask(sigma, mask, extra_options):
        if previous is not None:
            mask = previous(sigma, mask, extra_options)
        return mask if float(sigma.max()) > sigma_end else mask.new_ones(mask.shape)

    return denoise_mask


class LatentBackgroundPaste(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeLatentBackgroundPaste",
            display_name=PASTE_NODE,
            category=f"{CATEGORY}/blend",
            description="Puts the source latent back exactly where the noise mask is 0 (the background) after sampling, so the "
                        "background latent is bit-identical to the source.",
            inputs=[
                io.Latent.Input("samples", tooltip="The sampler's output (it still carries the noise mask from Latent Background Blend)."),
                io.Latent.Input("source", tooltip="The source latent, as encoded from the image."),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent with the source background pasted back.")],
        )

    @classmethod
    def execute(cls, samples, source):
        mask = samples.get("noise_mask")
        if mask is None:
            raise NodeInputError(f"{PASTE_NODE}: 'samples' has no noise mask. Sample from the LATENT output of Latent Background Blend.")
        sampled, original = samples["samples"], source["samples"]
        if sampled.shape[-2:] != original.shape[-2:]:
            raise NodeInputError(f"{PASTE_NODE}: the sampled latent is {tuple(sampled.shape[-2:])} but the source is {tuple(original.shape[-2:])}; "
                                 "connect the same source latent you sampled from.")
        m = latent_mask(mask, *sampled.shape[-2:]).to(sampled)
        out = dict(samples)
        out["samples"] = sampled * m + original.to(sampled) * (1 - m)
        return io.NodeOutput(out)
