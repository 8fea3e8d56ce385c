"""Object masks on the token grid of a patchifying transformer (Flux: 2x2 latent pixels per image token).

Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ops import OVERLAP_RULES, latent_mask


def token_grid(latent_height: int, latent_width: int, patch: int) -> tuple[int, int]:
    """Image tokens per column and row: Flux pads the latent to a multiple of the patch (comfy/ldm/flux/model.py, process_img)."""
    return math.ceil(latent_height / patch), math.ceil(latent_width / patch)


def token_regions(masks: torch.Tensor, count: int, latent_height: int, latent_width: int, patch: int,
                  overlap: str = "background") -> torch.Tensor:
    """Each image token's region, long ``[I, h_tok * w_tok]``: 0 background, i+1 object i.

    ``masks`` ``[I * count, H, W]``: one set of ``count`` object masks per image (I = 1: one set for the batch), resized
    to the latent as the sampler resizes a noise mask (bilinear), so every latent pixel the sampler edits counts. Each latent pixel belongs to the one object whose mask claims it; a pixel
    two masks claim belongs to none (``overlap = background``, ALE-Edit's rule, as RGB-CAM treats pixels) or to the
    smaller object (``inner``, as :func:`~.ops.resolve_overlaps`). A token goes to the object owning most of its latent
    pixels, a tie to the smaller object (then the earlier edit line): at a seam between touching objects every token
    follows one of them, and only tokens none owns a pixel of are the background's.
    """
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap rule must be one of {OVERLAP_RULES}, got {overlap!r}")
    latent = latent_mask(masks.float(), latent_height, latent_width)  # [I*N, 1, h, w]
    rows, columns = token_grid(latent_height, latent_width, patch)
    padded = F.pad(latent, (0, columns * patch - latent_width, 0, rows * patch - latent_height))  # as Flux pads
    claimed = (padded > 0).view(-1, count, *padded.shape[-2:])  # [I, N, h, w]
    area = claimed.flatten(2).sum(dim=2)  # [I, N]
    rank = (area * (count + 1) + torch.arange(count, device=area.device)).view(*area.shape, 1, 1).float()  # smaller, then earlier
    if overlap == "inner":
        smallest = torch.where(claimed, rank, float("inf")).argmin(dim=1, keepdim=True)
        owned = claimed & (torch.arange(count, device=claimed.device).view(1, -1, 1, 1) == smallest)
    else:
        owned = claimed & (claimed.sum(dim=1, keepdim=True) == 1)
    pixels = F.avg_pool2d(owned.flatten(0, 1).unsqueeze(1).float(), patch).view(*owned.shape[:2], -1)  # [I, N, P]
    most = pixels.amax(dim=1, keepdim=True)
    owner = torch.where(pixels == most, rank.flatten(2), float("inf")).argmin(dim=1) + 1
    return torch.where(most.squeeze(1) > 0, owner, 0)
