"""Latent Background Blend (ALE-Edit's BB) and the exact background paste after sampling."""
from __future__ import annotations

from ..masking.ops import feather as feather_mask, latent_mask
from .comfy_compat import CATEGORY, NodeInputError, percent_to_sigma

BLEND_NODE = "Latent Background Blend"
PASTE_NODE = "Latent Background Paste"


class LatentBackgroundBlend:
    DESCRIPTION = (
        "ALE-Edit's Background Blending: at every step the background of the edited latent is replaced "
        "by the source latent at the same noise level, z_T <- m_bg z_S + (1 - m_bg) z_T. Sets the source "
        "latent's noise mask to the union of the object masks, so any KSampler keeps the background; the "
        "MODEL output stops blending after end_percent (through ComfyUI's denoise-mask hook). Follow the "
        "sampler with Latent Background Paste to make the final background exactly the source."
    )
    CATEGORY = f"{CATEGORY}/blend"
    RETURN_TYPES = ("LATENT", "MODEL")
    RETURN_NAMES = ("latent", "model")
    OUTPUT_TOOLTIPS = (
        "The source latent with a noise mask over the objects: sample from it.",
        "The model with the blend schedule (a patched clone).",
    )
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The source image's latent (VAE Encode of the image you edit)."}),
                "object_masks": ("MASK", {"tooltip": "One mask per object from an Object Masks node; their union is edited, the rest kept."}),
                "model": ("MODEL", {"tooltip": "The model you sample with; its clone carries the blend schedule."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "Blend the background until this fraction of sampling (1.0 = every step, as ALE-Edit)."}),
                "feather": ("INT", {"default": 0, "min": 0, "max": 256,
                                    "tooltip": "Soft edge in image pixels outside the objects; 0 keeps a hard edge."}),
            },
            "optional": {
                "edit_plan": ("EDIT_PLAN", {"tooltip": "Needed only for an image batch with one mask set per image: tells how many masks make one image's set."}),
            },
        }

    def blend(self, samples, object_masks, model, end_percent=1.0, feather=0, edit_plan=None):
        per_image = len(edit_plan) if edit_plan is not None else object_masks.shape[0]
        if object_masks.shape[0] % per_image:
            raise NodeInputError(f"{BLEND_NODE}: {object_masks.shape[0]} masks do not split into sets of {per_image} (one per object of the plan).")
        union = feather_mask(object_masks.float().unflatten(0, (-1, per_image)).amax(dim=1), feather)
        latent = dict(samples)
        latent["noise_mask"] = union
        patched = model.clone()
        if end_percent < 1.0:
            patched.set_model_denoise_mask_function(blend_schedule(percent_to_sigma(patched, end_percent), patched.model_options.get("denoise_mask_function")))
        return latent, patched


def blend_schedule(sigma_end: float, previous=None):
    """Denoise-mask hook: keep the mask while sigma > sigma_end, then let the whole latent evolve."""

    def denoise_mask(sigma, mask, extra_options):
        if previous is not None:
            mask = previous(sigma, mask, extra_options)
        return mask if float(sigma.max()) > sigma_end else mask.new_ones(mask.shape)

    return denoise_mask


class LatentBackgroundPaste:
    DESCRIPTION = (
        "Puts the source latent back exactly where the noise mask is 0 (the background), after sampling: "
        "out = s m + z_S (1 - m), with m the noise mask resized as ComfyUI's sampler resizes it. Samplers "
        "end a step or two of float rounding away from the source; this makes the background bit-exact."
    )
    CATEGORY = f"{CATEGORY}/blend"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The sampled latent with the source background pasted back.",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The sampler's output (it still carries the noise mask from Latent Background Blend)."}),
                "source": ("LATENT", {"tooltip": "The source latent, as encoded from the image."}),
            }
        }

    def paste(self, samples, source):
        mask = samples.get("noise_mask")
        if mask is None:
            raise NodeInputError(f"{PASTE_NODE}: 'samples' has no noise mask. Sample from the LATENT output of Latent Background Blend.")
        sampled, original = samples["samples"], source["samples"]
        if sampled.shape[-2:] != original.shape[-2:]:
            raise NodeInputError(f"{PASTE_NODE}: the sampled latent is {tuple(sampled.shape[-2:])} but the source is {tuple(original.shape[-2:])}; connect the same source latent you sampled from.")
        m = latent_mask(mask, *sampled.shape[-2:]).to(sampled)
        out = dict(samples)
        out["samples"] = sampled * m + original.to(sampled) * (1 - m)
        return (out,)


NODE_CLASS_MAPPINGS = {"LeakFreeLatentBackgroundBlend": LatentBackgroundBlend, "LeakFreeLatentBackgroundPaste": LatentBackgroundPaste}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LeakFreeLatentBackgroundBlend": "Latent Background Blend (LeakFree)",
    "LeakFreeLatentBackgroundPaste": "Latent Background Paste (LeakFree)",
}
