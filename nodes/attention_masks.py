"""Masks from Attention: object masks from the model's own attention on the source image (no detector)."""
import torch
from comfy_api.latest import io

from ..integration.capture import capture_attention
from ..integration.object_masks import dilation_pixels
from ..integration.encoding import encode_source
from ..integration.errors import NodeInputError
from ..integration.checks import context_dim
from ..integration.sockets import CATEGORY, EditPlan, object_mask_outputs
from ..attention.localisation import AttentionCapture, masks_from_attention
from ..masking.ops import background_mask
from ..masking.preview import labelled_preview

NODE = "Object Masks from Attention (LeakFree)"


class MasksFromAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeMasksFromAttention",
            display_name=NODE,
            category=f"{CATEGORY}/masks",
            description="Object masks with no detector or segmenter (ELA's localisation, this pack's form): the model's own "
                        "cross-attention on the noised source, refined through self-attention, split into non-overlapping regions.",
            inputs=[
                io.Model.Input("model", tooltip="The model you edit with (its attention locates the objects); it is cloned, never changed."),
                io.Clip.Input("clip", tooltip="The checkpoint's CLIP: encodes the source prompt with each object's exact token span."),
                EditPlan.Input("edit_plan", tooltip="From Object-Restricted Encode: which source objects to find, in edit order."),
                io.Latent.Input("samples", tooltip="The source image's latent (VAE Encode of the image you edit); the first image is used."),
                io.Int.Input("timesteps", default=3, min=1, max=10,
                             tooltip="How many noise levels to average (one model call each), spread over 50-80% of sampling progress."),
                io.Float.Input("refine", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Weight of the self-attention propagation S A in the refined map. 0 = raw cross-attention."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Cut on the [0, 1] object maps; 0 = automatic (Otsu's threshold per object)."),
                io.Float.Input("dilation_percent", default=2.0, min=0.0, max=25.0, step=0.5,
                               tooltip="Grow each mask by this percent of the short side, into unclaimed pixels only (masks stay disjoint)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of the noise added to the source latent."),
                io.Image.Input("image", optional=True, tooltip="The source image, for the preview (a grey canvas without it)."),
            ],
            outputs=object_mask_outputs(),
        )

    @classmethod
    def execute(cls, model, clip, edit_plan, samples, timesteps=3, refine=0.5, threshold=0.0, dilation_percent=2.0, seed=0, image=None):
        if not 0.0 <= refine <= 1.0 or not 0.0 <= threshold <= 1.0 or not 1 <= timesteps <= 10:
            raise NodeInputError(f"{NODE}: refine and threshold must be in [0, 1] and timesteps in [1, 10] (got {refine}, {threshold}, {timesteps}).")
        positive, spans, width = encode_source(clip, edit_plan, NODE)
        expected = context_dim(model)
        if expected is not None and expected != width:
            raise NodeInputError(f"{NODE}: this CLIP gives {width}-d text features but the model takes {expected}-d. Use the CLIP of the same checkpoint.")
        latent = samples["samples"][:1]
        capture = AttentionCapture(spans)
        capture_attention(model, positive, latent, capture, timesteps, seed)
        image_hw = (8 * latent.shape[-2], 8 * latent.shape[-1])
        try:
            masks = masks_from_attention(capture, image_hw, refine, threshold or None, dilation_pixels(*image_hw, dilation_percent))
        except ValueError as error:
            raise NodeInputError(f"{NODE}: {error}; this model has no attention layers at 1/2 or 1/4 of the latent's size.") from None
        canvas = image[0] if image is not None else torch.full((*image_hw, 3), 0.5)
        return io.NodeOutput(masks, background_mask(masks), labelled_preview(canvas, masks, edit_plan.objects).unsqueeze(0))
