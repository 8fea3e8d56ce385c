"""What can silently go wrong with a set of object masks, found before it reaches the attention nodes.

Each case runs "successfully" and edits the wrong thing: an empty mask leaves its object unedited; two
masks that are (nearly) the same make every pixel an overlap, which the overlap rule gives to the
background term or to one object only; a mask over the whole image leaves no background and overlaps
every other object. Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import torch

DUPLICATE_IOU = 0.9  # two masks this alike are one region drawn twice
WHOLE_IMAGE = 0.99  # a mask covering this share of the image covers all of it


def mask_problems(masks: torch.Tensor, names: list[str]) -> tuple[list[str], list[str]]:
    """(errors, warnings) about binary masks ``[N, H, W]`` named ``names`` (one per mask), each a sentence."""
    flat = (masks > 0.5).flatten(1).float()
    area = flat.sum(dim=1)
    errors, warnings = [], []
    for index, name in enumerate(names):
        if area[index] == 0:
            errors.append(f"the mask of {name} is empty, so it would not be edited. Paint it, or remove its edit line.")
        elif area[index] >= WHOLE_IMAGE * flat.shape[1]:
            warnings.append(f"the mask of {name} covers the whole image: nothing is kept from the source as background, "
                            "and every other object overlaps it.")
    overlap = flat @ flat.T
    union = area.view(-1, 1) + area.view(1, -1) - overlap
    iou = overlap / union.clamp_min(1)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if area[i] > 0 and area[j] > 0 and iou[i, j] > DUPLICATE_IOU:
                errors.append(f"the masks of {names[i]} and {names[j]} are the same region (IoU {float(iou[i, j]):.2f}), so neither "
                              "can be edited apart from the other. Give each object its own mask.")
    return errors, warnings


def aspect_mismatch(mask_hw: tuple[int, int], image_hw: tuple[int, int], tolerance: float = 0.05) -> bool:
    """Whether a mask of ``mask_hw`` drawn on another picture than ``image_hw`` would be stretched onto it."""
    (mh, mw), (ih, iw) = mask_hw, image_hw
    return abs((mh / mw) / (ih / iw) - 1) > tolerance
