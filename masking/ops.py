"""Mask operations shared by every mask node and by the attention program.

Masks are float tensors in [0, 1] shaped ``[N, H, W]`` (ComfyUI's MASK layout),
one per plan object, in plan order. Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import math

import numpy as np
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
    """Dilation radius in pixels: ``int(side * fraction)`` of the short side.

    ALE-Edit's code (``sam_utils.py``): ``int(mask.shape[0] * dilation_percent)`` on its square images.
    """
    return max(0, int(min(height, width) * fraction))


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow each binary mask ``[N, H, W]`` by a disk of ``radius`` pixels.

    A pixel joins when a mask pixel lies within Euclidean distance ``radius``: ALE-Edit's
    ``binary_dilation`` with the structure x² + y² <= r², computed as an exact Euclidean distance
    transform (scipy), which costs the same at any radius.
    """
    if radius <= 0:
        return masks
    from scipy.ndimage import distance_transform_edt

    inside = (masks > 0.5).cpu().numpy()
    grown = np.zeros_like(inside)
    for index, mask in enumerate(inside):
        if mask.any():
            # the distance is the square root of an integer: a margin far below 1/(2r) separates r² from r² + 1
            grown[index] = distance_transform_edt(~mask) <= radius + 1e-6
    return torch.from_numpy(grown).to(device=masks.device, dtype=masks.dtype)


def binarize(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return (masks > threshold).to(masks.dtype)


MASK_RESIZE_MODES = ("nearest", "area")


def resize_masks(masks: torch.Tensor, height: int, width: int, mode: str = "nearest") -> torch.Tensor:
    """Resize ``[N, H, W]`` masks to exactly ``height`` x ``width`` and binarise.

    ``nearest``: ALE-Edit's RGB-CAM (``rgb_cam.py``: torchvision ``Resize``, ``NEAREST``), each
    layer pixel the mask's value at its top-left source pixel. ``area``: the pack's variant, the
    mean over the pixel's source area > 0.5, so a thin object is kept by a coarse layer when it
    covers most of a cell, not only when it passes through the cell's corner. The exact target
    size keeps odd grids right.
    """
    if mode not in MASK_RESIZE_MODES:
        raise ValueError(f"mask resize mode must be one of {MASK_RESIZE_MODES}, got {mode!r}")
    if masks.shape[-2:] == (height, width):
        return binarize(masks)
    resized = F.interpolate(masks.unsqueeze(1).float(), size=(height, width), mode=mode).squeeze(1)
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


OVERLAP_RULES = ("background", "inner")


def resolve_overlaps(masks: torch.Tensor, rule: str = "background") -> torch.Tensor:
    """Binary masks ``[N, H, W]`` after the overlap rule.

    ``background`` (ALE-Edit) leaves them as they are: region-guided cross-attention gives a pixel
    that two objects claim to the background term. ``inner``: the object with the smaller area (the
    inner one of two nested objects; the earlier edit line on a tie) owns each shared pixel, and
    the others give it up, so the masks become disjoint and a nested object is edited.
    """
    if rule not in OVERLAP_RULES:
        raise ValueError(f"overlap rule must be one of {OVERLAP_RULES}, got {rule!r}")
    claimed = masks > 0.5
    if rule == "background" or masks.shape[0] < 2:
        return claimed.to(masks.dtype)
    order = torch.sort(claimed.flatten(1).sum(dim=1), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    owner = torch.where(claimed, rank.view(-1, 1, 1), len(order)).argmin(dim=0)  # the claimant of the lowest rank
    objects = torch.arange(len(order), device=masks.device).view(-1, 1, 1)
    return (claimed & (objects == owner.unsqueeze(0))).to(masks.dtype)


def own_fraction(claimed: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``[N]``: the share of each object's ``claimed`` area (its dilated mask) that it alone holds in ``masks``
    (its mask after the overlap rule), i.e. where its own text reaches; 1 for an object nobody overlaps, 0 for an empty one."""
    own = region_weights(masks)[:, 1:].sum(dim=0)
    return own / claimed.flatten(1).sum(dim=1).clamp_min(1)


def image_unions(masks: torch.Tensor, per_image: int) -> torch.Tensor:
    """``[I, H, W]``: the union of each image's set of ``per_image`` object masks (masks image-major, ``[I*N, H, W]``)."""
    return masks.float().unflatten(0, (-1, per_image)).amax(dim=1)


def multiscale_foreground(union: torch.Tensor, height: int, width: int, factors=(1, 2, 4, 8)) -> torch.Tensor:
    """ALE-Edit's background-blend mask at latent size (``attention_control.py``, ``BackgroundBlend``): the foreground is
    the OR over ``factors`` f of the union resized by nearest to (h // f, w // f), then by nearest back to (h, w).

    ``union`` ``[B, H, W]`` in [0, 1] (any nonzero value is foreground) -> binary ``[B, 1, h, w]``. The coarse
    passes grow the foreground into blocks, so edges of the objects are never blended with the source.
    """
    pixels = (union > 0).float().reshape(-1, 1, *union.shape[-2:])
    foreground = torch.zeros(pixels.shape[0], 1, height, width, device=union.device)
    for factor in factors:
        coarse = F.interpolate(pixels, size=(max(1, height // factor), max(1, width // factor)), mode="nearest")
        foreground = torch.maximum(foreground, F.interpolate(coarse, size=(height, width), mode="nearest"))
    return foreground


def downsampled_grid(latent_hw: tuple[int, int], factor: int) -> tuple[int, int]:
    """The (h, w) of the UNet level ``factor`` (a power of 2) times smaller than the latent.

    UNet downsamplers are stride-2 convolutions with padding 1, so each level is
    ceil(previous / 2): 75x43 -> 38x22 -> 19x11 -> 10x6. Floor division is wrong on odd sizes.
    """
    (h, w), level = latent_hw, 1
    while level < factor:
        h, w, level = math.ceil(h / 2), math.ceil(w / 2), level * 2
    return h, w


def downsampled_grids(latent_hw: tuple[int, int], factors=(2, 4)) -> set[tuple[int, int]]:
    """The (h, w) of the UNet levels ``factors`` times smaller than the latent."""
    return {downsampled_grid(latent_hw, factor) for factor in factors}


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
