"""Object masks on the token grid of a patchifying transformer (Flux: 2x2 latent pixels per image token).

Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ops import latent_mask, region_weights


def token_grid(latent_height: int, latent_width: int, patch: int) -> tuple[int, int]:
    """Image tokens per column and row: Flux pads the latent to a multiple of the patch (comfy/ldm/flux/model.py, process_img)."""
    return math.ceil(latent_height / patch), math.ceil(latent_width / patch)


def token_masks(masks: torch.Tensor, latent_height: int, latent_width: int, patch: int) -> torch.Tensor:
    """Binary ``[M, h_tok, w_tok]``: a token belongs to a mask when any of its latent pixels is inside it.

    ``masks`` ``[M, H, W]`` in [0, 1] at any resolution. They are resized to the latent as the sampler resizes a
    noise mask (bilinear), so every latent pixel the sampler edits lies in a token of its object.
    """
    latent = latent_mask(masks, latent_height, latent_width)  # [M, 1, h, w]
    rows, columns = token_grid(latent_height, latent_width, patch)
    padded = F.pad(latent, (0, columns * patch - latent_width, 0, rows * patch - latent_height))
    return (F.max_pool2d(padded, patch) > 0).to(masks.dtype).squeeze(1)


def token_regions(masks: torch.Tensor, count: int, latent_height: int, latent_width: int, patch: int) -> torch.Tensor:
    """Each image token's region, long ``[I, h_tok * w_tok]``: 0 background, i+1 object i (a token claimed by two objects: 0).

    ``masks`` ``[I * count, H, W]``: one set of ``count`` object masks per image (I = 1: one set for the batch).
    """
    grid = token_masks(masks.float(), latent_height, latent_width, patch)
    sets = grid.view(-1, count, *grid.shape[-2:])
    return torch.stack([region_weights(objects).argmax(dim=1) for objects in sets])
