"""Object masks from the diffusion model's own attention: ELA's localisation (ICML 2024) with a
self-attention refinement in the spirit of DPL's background estimate (NeurIPS 2023).

Neither paper publishes this exact procedure; the form chosen here:

1. Run the model on the source latent noised to a few moderate noise levels, conditioned on the
   source prompt (objects joined with " and "), and record at the layers downsampled 2x and 4x
   from the latent (16^2 and 32^2 at 512 px):
   - cross-attention: a_i(p) = mean over heads of sum_{t in S_i} softmax_t(q_p . k_t / sqrt(d)),
     the full softmax (BOS included), so background pixels, which give their attention to the
     sink, score low;
   - self-attention: the per-head queries and keys.
2. A_i = mean over layers and timesteps of a_i (bilinear to the finer recorded grid), divided by its max.
3. Refine by one step of attention propagation, P_i = S A_i with S the self-attention map averaged
   over heads, computed as attention with A as the values (one SDPA call per layer, no HW x HW
   tensor): R_i = (1 - refine) A_i + refine P_i, rescaled to [0, 1].
4. At image size (bilinear), object i claims p when R_i(p) >= tau_i (Otsu's threshold of R_i, or a
   fixed one) and R_i(p) is the largest of the claiming objects: regions never overlap.
5. Optional dilation grows each region into unclaimed pixels only; pixels two regions grow into stay
   background, so the masks stay disjoint.

Pure torch; the capture run that feeds :class:`AttentionCapture` is in integration/capture.py, the mask
operations of steps 4 and 5 (Otsu, disjoint regions, disjoint dilation) in masking/disjoint.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masking.disjoint import dilate_disjoint, disjoint_regions
from ..masking.ops import downsampled_grids


def attention_probabilities(query: torch.Tensor, keys: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) ``[..., heads, Q, K]`` of per-head ``query`` [..., Q, d] and ``keys`` [..., K, d],
    for the recorders that need the probabilities themselves (the attention calls never build them)."""
    logits = query @ keys.transpose(-1, -2) * query.shape[-1] ** -0.5
    return (logits if bias is None else logits + bias).softmax(dim=-1)


def span_attention(query: torch.Tensor, keys: torch.Tensor, spans) -> torch.Tensor:
    """a_i(p) ``[R, N, HW]``: the attention each pixel gives object i's tokens, sum over its span of the token
    softmax (per head, over the given keys), averaged over heads. ``query`` [R, heads, HW, d], ``keys`` [R, heads, T, d]."""
    probs = attention_probabilities(query, keys).mean(dim=1)  # [R, HW, T]
    return torch.stack([probs[..., start:end].sum(dim=-1) for start, end in spans], dim=1)


class AttentionCapture:
    """What the capture run records at the chosen levels: object cross-attention maps and self-attention q/k."""

    def __init__(self, spans, factors=(2, 4)):
        self.spans = tuple(spans)
        self.factors = factors
        self.cross: list[tuple[int, int, torch.Tensor]] = []  # (h, w, a [N, HW])
        self.self: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []  # (h, w, q, k [R, heads, HW, d])

    def recorded(self, height: int, width: int, latent_hw: tuple[int, int]) -> bool:
        return (height, width) in downsampled_grids(latent_hw, self.factors)

    def record_cross(self, query, keys, height: int, width: int, latent_hw: tuple[int, int]) -> None:
        """Per-head ``query`` [R, heads, HW, d] and ``keys`` [R, heads, T, d] of one cross-attention call."""
        if self.recorded(height, width, latent_hw):
            self.cross.append((height, width, span_attention(query, keys, self.spans).mean(dim=0).float()))

    def record_self(self, query, keys, height: int, width: int, latent_hw: tuple[int, int]) -> None:
        if self.recorded(height, width, latent_hw):
            self.self.append((height, width, query.detach(), keys.detach()))


def object_scores(capture: AttentionCapture, refine: float) -> torch.Tensor:
    """R_i ``[N, h, w]`` in [0, 1] at the finest recorded grid (steps 2 and 3 of the module docstring)."""
    if not capture.cross:
        raise ValueError("no cross-attention layer 2x or 4x below the latent's size was recorded")
    height, width = max((h, w) for h, w, _ in capture.cross)
    to_grid = lambda maps, h, w, size: F.interpolate(maps.view(1, -1, h, w), size=size, mode="bilinear", align_corners=False)[0]
    scores = torch.stack([to_grid(maps, h, w, (height, width)) for h, w, maps in capture.cross]).mean(dim=0)
    scores = scores / scores.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    if refine > 0 and capture.self:
        propagated = []
        for h, w, query, key in capture.self:
            values = to_grid(scores, height, width, (h, w)).flatten(1).transpose(0, 1)  # [HW, N]
            values = values.to(query.dtype).expand(*query.shape[:2], -1, -1)
            spread = F.scaled_dot_product_attention(query, key, values).float().mean(dim=(0, 1))  # [HW, N]
            propagated.append(to_grid(spread.transpose(0, 1), h, w, (height, width)))
        scores = (1 - refine) * scores + refine * torch.stack(propagated).mean(dim=0)
    low = scores.flatten(1).amin(dim=1)[:, None, None]
    high = scores.flatten(1).amax(dim=1)[:, None, None]
    return (scores - low) / (high - low).clamp_min(1e-12)


def masks_from_attention(capture: AttentionCapture, image_hw: tuple[int, int], refine: float = 0.5,
                         threshold: float | None = None, dilation: int = 0) -> torch.Tensor:
    """Disjoint object masks ``[N, H, W]`` at image size from a finished capture run."""
    scores = F.interpolate(object_scores(capture, refine).unsqueeze(0), size=image_hw, mode="bilinear", align_corners=False)[0]
    return dilate_disjoint(disjoint_regions(scores.clamp(0, 1), threshold), dilation)
