"""SAM segmenters: box prompts cut into masks, one image embedding per call, from segment-anything checkpoints or
transformers-format ``SamModel`` folders. A segmenter has ``segment(image, boxes) -> [K, H, W]`` bool masks and
``.model`` (so the caller can move it between devices). Nothing here reaches a network or imports ComfyUI."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_weights, read_transformers_folder, read_variant

SAM_VARIANTS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # image encoder width -> builder


class BoxSegmenter:
    """``segment(image uint8 [H, W, 3] RGB, boxes [K, 4] xyxy pixels) -> bool [K, H, W]``; subclasses cut the masks."""

    model: torch.nn.Module

    @torch.no_grad()
    def segment(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        if len(boxes) == 0:
            return torch.zeros(0, *image.shape[:2], dtype=torch.bool)
        return self.cut(image, boxes)

    def cut(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SamSegmenter(BoxSegmenter):
    """segment-anything's ``SamPredictor``: one image embedding, then the box prompts in batches.

    Batches of ``BOX_BATCH`` keep the decoder's full-resolution intermediates bounded: an image with
    hundreds of boxes (a flower field, or a loose threshold) would otherwise need tens of GiB at once.
    """

    BOX_BATCH = 32

    def __init__(self, model):
        from segment_anything import SamPredictor

        self.model = model
        self.predictor = SamPredictor(model)

    def cut(self, image, boxes):
        self.predictor.set_image(image)
        prompts = self.predictor.transform.apply_boxes_torch(boxes.float().to(self.predictor.device), image.shape[:2])
        masks = [self.predictor.predict_torch(None, None, boxes=batch, multimask_output=False)[0][:, 0].cpu()
                 for batch in prompts.split(self.BOX_BATCH)]
        self.predictor.reset_image()
        return torch.cat(masks)


class TransformersSam(BoxSegmenter):
    """``SamModel`` + ``SamProcessor``: image embeddings once, all boxes in one decoder call."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    def cut(self, image, boxes):
        device = next(self.model.parameters()).device
        inputs = self.processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt").to(device)
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"])
        outputs = self.model(image_embeddings=embeddings, input_boxes=inputs["input_boxes"], multimask_output=False)
        masks = self.processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]
        return masks[:, 0].bool()


def load_sam(path: str | os.PathLike) -> SamSegmenter:
    """A segment-anything checkpoint; vit_b / vit_l / vit_h is read from the tensor shapes, not the name."""
    from segment_anything import sam_model_registry

    state, variant = read_variant(path, "image_encoder.patch_embed.proj.weight", SAM_VARIANTS,
                                  "a segment-anything SAM checkpoint (expected sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
                                  "sam_vit_h_4b8939.pth from facebookresearch/segment-anything)")
    model = sam_model_registry[variant]()
    load_weights(model, state, Path(path).name)
    return SamSegmenter(model.eval())


def load_transformers_sam(folder: str | os.PathLike) -> TransformersSam:
    from transformers import SamModel

    return TransformersSam(*read_transformers_folder(folder, "sam", SamModel))
