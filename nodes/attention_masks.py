"""Masks from Attention: object masks from the model's own attention on the source image (no detector)."""
from __future__ import annotations

import torch

from ..attention.plan import EditPlanError
from ..attention.tokens import plan_windows
from ..masking.from_attention import AttentionCapture, CaptureAttention, masks_from_attention
from ..masking.ops import background_mask
from ..masking.preview import labelled_preview
from .comfy_compat import NodeInputError, attention_blocks, context_dim, percent_to_sigma, plain_attention
from .painted_masks import ObjectMaskNode, dilation_pixels

NODE = "Masks from Attention"
NOISE_RANGE = (0.5, 0.8)  # sampling progress of the capture timesteps: noisy enough to read, clean enough to see the layout


def encode_source(clip, plan):
    """The source prompt (objects joined with ' and ') as CONDITIONING, and each object's exact token span."""
    try:
        windows, spans, _ = plan_windows(clip.tokenize, plan.objects, NODE)
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    base = {key: [parts[0]] for key, parts in windows.items()}
    cond, pooled = clip.encode_from_tokens(base, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]], spans, cond.shape[-1]


def capture_model(model, capture: AttentionCapture):
    """A clone whose attention layers record into ``capture`` (another pack's replace keeps running)."""
    patched = model.clone()
    replaced = patched.model_options.get("transformer_options", {}).get("patches_replace", {})
    for attention, cross in (("attn1", False), ("attn2", True)):
        current = replaced.get(attention, {})
        for key in attention_blocks(patched.model.diffusion_model, attention):
            previous = current.get(key, current.get(key[:2]))
            patched.set_model_patch_replace(CaptureAttention(capture, cross, plain_attention, previous), attention, *key)
    return patched


class MasksFromAttention(ObjectMaskNode):
    DESCRIPTION = (
        "Object masks with no detector or segmenter (ELA's localisation, DPL-style self-attention "
        "refinement; this pack's concrete form). Noises the source latent to a few moderate levels and runs "
        "the model once per level on the source prompt (objects joined with ' and '). At the layers 2x and "
        "4x below the latent, object i's map is a_i(p) = sum over its tokens of the full token softmax "
        "(BOS included, so background scores low), averaged over heads, layers and levels and max-normalised. "
        "Refinement: R_i = (1 - refine) A_i + refine S A_i, S the self-attention map (computed as attention "
        "with A as values, no HW x HW tensor). Pixel p goes to the object with the highest R_i(p) among "
        "those above their threshold (Otsu's by default), so masks never overlap; dilation grows regions "
        "into unclaimed pixels only. Outputs are at image size (8x the latent)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model you edit with (its attention locates the objects); it is cloned, never changed."}),
                "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP: encodes the source prompt with each object's exact token span."}),
                "edit_plan": ("EDIT_PLAN", {"tooltip": "From Object-Restricted Encode: which source objects to find, in edit order."}),
                "samples": ("LATENT", {"tooltip": "The source image's latent (VAE Encode of the image you edit); the first image is used."}),
                "timesteps": ("INT", {"default": 3, "min": 1, "max": 10, "tooltip": "How many noise levels to average (one model call each), spread over 50-80% of sampling progress."}),
                "refine": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Weight of the self-attention propagation S A in the refined map. 0 = raw cross-attention."}),
                "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Cut on the [0, 1] object maps; 0 = automatic (Otsu's threshold per object)."}),
                "dilation_percent": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 25.0, "step": 0.5, "tooltip": "Grow each mask by this percent of the short side, into unclaimed pixels only (masks stay disjoint)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Seed of the noise added to the source latent."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "The source image, for the preview (a grey canvas without it)."}),
            },
        }

    def make_masks(self, model, clip, edit_plan, samples, timesteps=3, refine=0.5, threshold=0.0, dilation_percent=2.0, seed=0, image=None):
        import comfy.sample
        import comfy.samplers

        if not 0.0 <= refine <= 1.0 or not 0.0 <= threshold <= 1.0 or not 1 <= timesteps <= 10:
            raise NodeInputError(f"{NODE}: refine and threshold must be in [0, 1] and timesteps in [1, 10] (got {refine}, {threshold}, {timesteps}).")
        positive, spans, width = encode_source(clip, edit_plan)
        expected = context_dim(model)
        if expected is not None and expected != width:
            raise NodeInputError(f"{NODE}: this CLIP gives {width}-d text features but the model takes {expected}-d. Use the CLIP of the same checkpoint.")
        latent = samples["samples"][:1]
        capture = AttentionCapture(spans)
        patched = capture_model(model, capture)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
        sampler = comfy.samplers.sampler_object("euler")
        for index in range(timesteps):
            progress = NOISE_RANGE[0] + (NOISE_RANGE[1] - NOISE_RANGE[0]) * index / max(1, timesteps - 1)
            sigmas = torch.tensor([percent_to_sigma(patched, progress), 0.0])
            comfy.sample.sample_custom(patched, noise, 1.0, sampler, sigmas, positive, positive, latent, disable_pbar=True, seed=seed)
        image_hw = (8 * latent.shape[-2], 8 * latent.shape[-1])
        try:
            masks = masks_from_attention(capture, image_hw, refine, threshold or None, dilation_pixels(*image_hw, dilation_percent))
        except ValueError as error:
            raise NodeInputError(f"{NODE}: {error}; this model has no attention layers at 1/2 or 1/4 of the latent's size.") from None
        canvas = image[0] if image is not None else torch.full((*image_hw, 3), 0.5)
        return masks, background_mask(masks), labelled_preview(canvas, masks, edit_plan.objects).unsqueeze(0)


NODE_CLASS_MAPPINGS = {"LeakFreeMasksFromAttention": MasksFromAttention}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeMasksFromAttention": "Masks from Attention (LeakFree)"}
