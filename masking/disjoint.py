"""Disjoint object regions from per-object scores in [0, 1] (the last steps of Masks from Attention,
attention/localisation.py): Otsu's threshold, the best-scoring claimant per pixel, and a dilation that never makes
two regions meet."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ops import dilate


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: the cut maximising the between-class variance."""
    histogram = torch.histc(values.float().flatten(), bins=bins, min=0.0, max=1.0)
    centers = (torch.arange(bins, dtype=torch.float32) + 0.5) / bins
    weight = histogram.cumsum(0)
    mass = (histogram * centers).cumsum(0)
    total, total_mass = weight[-1], mass[-1]
    between = ((total_mass * weight / total - mass) ** 2 / (weight * (total - weight)).clamp_min(1e-12))[:-1]
    best = torch.nonzero(between >= between.max() * (1 - 1e-6)).float().mean()  # middle of a plateau of equal cuts
    return float(best + 1) / bins


def disjoint_regions(scores: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Binary ``[N, H, W]``: object i where its score passes its threshold and beats the other claimants."""
    cuts = torch.tensor([otsu_threshold(s) if threshold is None else threshold for s in scores]).view(-1, 1, 1)
    claims = scores >= cuts
    best = torch.where(claims, scores, torch.full_like(scores, -1.0)).argmax(dim=0)
    winner = F.one_hot(best, scores.shape[0]).permute(2, 0, 1).bool()
    return (winner & claims).float()


def dilate_disjoint(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow each region by ``radius`` into unclaimed pixels; pixels two regions reach stay unclaimed."""
    if radius <= 0:
        return masks
    grown = dilate(masks, radius)
    free = masks.amax(dim=0, keepdim=True) == 0
    contested = grown.sum(dim=0, keepdim=True) > 1
    return torch.where(free & ~contested, grown, masks)
