"""Pixel Background Composite: the source's own pixels outside the edited objects, after VAE decoding.

ALE-Edit blends the background in latent space and decodes, so its background is the source's VAE round
trip (which caps background PSNR near 30 dB). Here, with m the union of the object masks resized to the
source image (bilinear) and F the feather width in pixels,

    w(p)   = max(m(p), r(p)),  r(p) = (F + 1 - d(p)) / (F + 1) for d(p) <= F, 0 beyond,
    out(p) = w(p) edited(p) + (1 - w(p)) source(p)

where d(p) is the distance (in pixels, square metric: F steps of a 3 x 3 dilation) from p to the objects'
core m >= 0.5. Where w = 0, out is the source bit for bit (0 x e + 1 x s = s in floating point); where
w = 1, out is the edited image bit for bit. Pure torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feather_ramp(core: torch.Tensor, width: int) -> torch.Tensor:
    """``core`` [B, H, W] in {0, 1} -> 1 on it, falling linearly to 0 over ``width`` px outside it, exactly 0 beyond."""
    weight, grown = core.clone(), core
    for _ in range(width):
        grown = F.max_pool2d(grown.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
        weight = weight + grown
    return weight / (width + 1)


def composite_weight(masks: torch.Tensor, height: int, width: int, feather: int) -> torch.Tensor:
    """``masks`` [I, h, w] (one union per image) -> w [I, height, width] at the image's size."""
    masks = masks.float().clamp(0, 1)
    if masks.shape[-2:] != (height, width):
        masks = F.interpolate(masks.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False).squeeze(1).clamp(0, 1)
    return torch.maximum(masks, feather_ramp((masks >= 0.5).float(), feather))


def pixel_composite(edited: torch.Tensor, source: torch.Tensor, union: torch.Tensor, feather: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(composite [B, H, W, C], weight [B, H, W]) at the source's size.

    ``edited`` [B, h, w, C] (resized to the source's size, bicubic, when it differs: VAE sizes are multiples
    of 8), ``source`` [1 or B, H, W, C], ``union`` [1 or B, H', W'] the objects' union per image: one source or mask
    set serves every edited image, never the other way round (an edited image is not copied onto several sources).
    """
    height, width = source.shape[1:3]
    batch = edited.shape[0]
    for name, count in (("source images", source.shape[0]), ("mask sets", union.shape[0])):
        if count not in (1, batch):
            raise ValueError(f"{count} {name} for {batch} edited image{'s' if batch > 1 else ''}: give one, or one per edited image")
    if edited.shape[1:3] != (height, width):
        edited = F.interpolate(edited.movedim(-1, 1).float(), size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1).movedim(1, -1)
    edited = edited.to(source.dtype)
    weight = composite_weight(union.to(source.device), height, width, feather).to(source.dtype)
    w = weight.unsqueeze(-1).expand(batch, height, width, 1)
    out = w * edited.expand(batch, -1, -1, -1) + (1 - w) * source.expand(batch, -1, -1, -1)
    return out, weight.expand(batch, -1, -1)
