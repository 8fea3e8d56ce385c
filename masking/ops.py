"""Mask operations shared by every mask node and by the attention program.

Masks are float tensors in [0, 1] shaped ``[N, H, W]`` (ComfyUI's MASK layout),
one per plan object, in plan order. Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ALE-Edit's official code dilates by 30 px at 768 px, i.e. ~4% of the side.
DEFAULT_DILATION_FRACTION = 0.04

# Distinct, colour-blind-friendly overlay colours (Okabe-Ito), one per object.
PREVIEW_COLORS = (
    (0.90, 0.62, 0.00), (0.34, 0.71, 0.91), (0.00, 0.62, 0.45), (0.94, 0.89, 0.26),
    (0.00, 0.45, 0.70), (0.84, 0.37, 0.00), (0.80, 0.47, 0.65), (0.60, 0.60, 0.60),
)


def dilation_radius(height: int, width: int, fraction: float = DEFAULT_DILATION_FRACTION) -> int:
    """Dilation radius in pixels for a given fraction of the short side."""
    return max(0, int(round(fraction * min(height, width))))


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow each mask by ``radius`` pixels (square structuring element, like cv2.dilate with ones)."""
    if radius <= 0:
        return masks
    return F.max_pool2d(masks.unsqueeze(1), 2 * radius + 1, stride=1, padding=radius).squeeze(1)


def binarize(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return (masks > threshold).to(masks.dtype)


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``[N, H, W]`` masks to exactly ``height`` x ``width`` (area-averaged, then binarised).

    Area averaging keeps thin objects from vanishing at coarse layers less than
    nearest sampling would, and the exact target size keeps odd grids right.
    """
    if masks.shape[-2:] == (height, width):
        return binarize(masks)
    resized = F.interpolate(masks.unsqueeze(1).float(), size=(height, width), mode="area").squeeze(1)
    return binarize(resized).to(masks.dtype)


def stack_object_masks(masks: list[torch.Tensor], height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Stack MASK tensors (each ``[H, W]`` or ``[B, H, W]``) into one ``[N, H, W]`` batch.

    Masks of another size are resized (bilinear) to ``height`` x ``width``, by default the first mask's size.
    """
    flat = [m.unsqueeze(0) if m.ndim == 2 else m for m in masks]
    height = height or flat[0].shape[-2]
    width = width or flat[0].shape[-1]
    resized = [
        m.float() if m.shape[-2:] == (height, width)
        else F.interpolate(m.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False).squeeze(1)
        for m in flat
    ]
    return torch.cat(resized, dim=0).clamp(0, 1)


def background_mask(masks: torch.Tensor) -> torch.Tensor:
    """1 where no object claims the pixel: ALE-Edit's m_bg = 1 - union(m_i). Shape ``[1, H, W]``."""
    return 1.0 - masks.amax(dim=0, keepdim=True).clamp(0, 1)


def region_weights(masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel blend weights ``[H*W, N+1]``: column 0 background, column i+1 object i.

    ALE-Edit's RGB-CAM blend with the overlap rule: a pixel claimed by exactly
    one object takes that object's term; a pixel claimed by none or by two or
    more takes the background term. Expects binary masks ``[N, H, W]``.
    """
    flat = masks.flatten(1).transpose(0, 1)  # [HW, N]
    sole = flat * (flat.sum(dim=1, keepdim=True) == 1).to(flat.dtype)
    return torch.cat([1.0 - sole.sum(dim=1, keepdim=True), sole], dim=1)


def layer_grid(latent_hw: tuple[int, int], tokens: int) -> tuple[int, int]:
    """The (h, w) of a UNet layer with ``tokens`` pixels for a latent of size ``latent_hw``.

    UNet downsamplers are stride-2 convolutions with padding 1, so each level is
    ceil(previous / 2): 75x43 -> 38x22 -> 19x11 -> 10x6. Floor division is wrong on odd sizes.
    """
    h, w = latent_hw
    while h * w > tokens:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != tokens:
        raise ValueError(f"no UNet level of a {latent_hw[0]}x{latent_hw[1]} latent has {tokens} pixels")
    return h, w


def preview_overlay(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Tint ``image`` ``[H, W, 3]`` with each mask ``[N, H, W]`` in its own colour; returns ``[H, W, 3]``."""
    out = image.clone().float()
    masks = stack_object_masks([masks], image.shape[0], image.shape[1])
    for index, mask in enumerate(masks):
        color = torch.tensor(PREVIEW_COLORS[index % len(PREVIEW_COLORS)], dtype=out.dtype)
        weight = (alpha * mask).unsqueeze(-1)
        out = out * (1 - weight) + color * weight
    return out.clamp(0, 1)


def latent_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A pixel mask ``[B, H, W]`` at latent size ``[B, 1, h, w]``, bilinear as ComfyUI's sampler resizes noise masks."""
    return F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=(height, width), mode="bilinear")


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soften a ``[B, H, W]`` mask outward by ``radius`` pixels (box blur of the dilated mask), keeping its core at 1."""
    if radius <= 0:
        return mask
    grown = dilate(mask, radius)
    return F.avg_pool2d(grown.unsqueeze(1), 2 * radius + 1, stride=1, padding=radius, count_include_pad=False).squeeze(1).maximum(mask)
