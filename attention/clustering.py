"""DPL's background mask without a detector (Wang et al., NeurIPS 2023, code ``_2_DDIM_inv.py`` and
``tools/sd_study_utils.py``): cluster the pixels of the self-attention map, and call background every
cluster that no object's cross-attention claims.

1. S: the self-attention probabilities at the finer recorded grid (DPL: 32x32 at 512 px), averaged over
   layers, heads and timesteps; pixel p is described by its row S[p] (the attention it gives every pixel).
2. scikit-learn's KMeans on the rows, ``clusters`` centres (DPL: 5, ``n_init=10``).
3. Each object's cross-attention map at the coarser grid (DPL: 16x16), nearest-upsampled to S's grid and
   normalised as DPL does, (m - |min m|) / max m; cluster c scores mean_{p in c} m_i(p) for object i.
4. Cluster c is background when no object scores above ``threshold`` (DPL: 0.2); the mask is their union.

Pure torch and scikit-learn; the capture run is Masks from Attention's (attention/localisation.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .localisation import AttentionCapture, attention_probabilities


def kmeans_labels(points: torch.Tensor, clusters: int, seed: int = 1) -> torch.Tensor:
    """Labels ``[P]`` of scikit-learn's KMeans on ``points`` ``[P, D]``, as DPL runs it (``n_init=10``; its seed 1, fixed here)."""
    from sklearn.cluster import KMeans

    clusters = min(clusters, points.shape[0])
    fitted = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(points.detach().float().cpu().numpy())
    return torch.from_numpy(fitted.labels_).long()


def self_attention_rows(capture: AttentionCapture, grid: tuple[int, int]) -> torch.Tensor:
    """S ``[HW, HW]``: the self-attention probabilities at ``grid``, averaged over the recorded layers, rows and heads."""
    maps = []
    for h, w, query, key in capture.self:
        if (h, w) == tuple(grid):
            probs = torch.stack([attention_probabilities(q, k).float().mean(dim=0)
                                 for q, k in zip(query, key)])  # one row of the batch at a time: [R, HW, HW]
            maps.append(probs.mean(dim=0))
    if not maps:
        raise ValueError(f"no self-attention layer at {grid[0]}x{grid[1]} was recorded")
    return torch.stack(maps).mean(dim=0)


def object_maps_at(capture: AttentionCapture, grid: tuple[int, int]) -> torch.Tensor:
    """Each object's cross-attention map ``[N, h, w]`` at ``grid``, averaged over the recorded layers and timesteps."""
    maps = [a for h, w, a in capture.cross if (h, w) == tuple(grid)]
    if not maps:
        raise ValueError(f"no cross-attention layer at {grid[0]}x{grid[1]} was recorded")
    return torch.stack(maps).mean(dim=0).view(-1, *grid)


def background_from_clusters(labels: torch.Tensor, maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Steps 3 and 4: the union ``[h, w]`` (float 0/1) of the clusters of ``labels`` ``[h, w]`` no object claims.

    ``maps``: each object's cross-attention map ``[N, h', w']`` at a grid as fine or coarser (nearest-upsampled to ``labels``' grid).
    """
    maps = F.interpolate(maps.float().unsqueeze(0), size=labels.shape, mode="nearest")[0]
    low = maps.flatten(1).amin(dim=1).abs()[:, None, None]
    high = maps.flatten(1).amax(dim=1)[:, None, None]
    normalised = (maps - low) / high.clamp_min(1e-12)
    background = torch.zeros(labels.shape)
    for cluster in labels.unique():
        members = labels == cluster
        scores = normalised[:, members].mean(dim=1)
        if float(scores.max()) <= threshold:
            background[members] = 1.0
    return background


def clustered_background(capture: AttentionCapture, self_grid: tuple[int, int], cross_grid: tuple[int, int],
                         clusters: int = 5, threshold: float = 0.2) -> torch.Tensor:
    """DPL's background mask ``[h, w]`` at ``self_grid`` from a finished capture run (steps 1 to 4)."""
    labels = kmeans_labels(self_attention_rows(capture, self_grid), clusters).view(self_grid)
    return background_from_clusters(labels, object_maps_at(capture, cross_grid), threshold)
