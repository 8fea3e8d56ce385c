"""Source-dominance rebalancing and token-to-region binding (after BindEdit, 2026) as region-program terms.

BindEdit names two leakages left after region-restricted cross-attention and
publishes no formulas; the concrete forms here are this pack's design:

- :class:`TokenRebalance` (a ``CrossAttentionBias``): inside region i, object i's
  target tokens get the logit bias log(boost), and the attention sinks (BOS, EOS,
  padding) optionally log(sink_scale). Through the softmax this multiplies their
  attention weight by boost (sink_scale) before renormalisation:
  P'(p, t) = P(p, t) w_t / sum_t' P(p, t') w_t',  w_t = boost on object i's tokens at p in R_i.
- :class:`RegionBinding` (a ``SelfAttentionBias``): a query in region i loses
  weight on keys in the other objects' regions, and optionally on the unedited
  surroundings: B(p, p') = -s [p in R_i][p' in R_j, j != i] - s_bg [p in any R][p' in background],
  rank <= N+1, written as one-hot query columns and scaled key columns (never HW x HW).

Both terms carry a sigma window [sigma_end, sigma_start]. Pure torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..masking.ops import region_weights
from .region_attention import SigmaWindow
from .self_attention import LAYOUT_KEY

MAX_BOOST = 20.0  # log(20) ~ 3: beyond it the object's tokens take all of the region's attention
MIN_SINK_SCALE = 0.01  # a sink weight of 0 would leave pixels with no finite logit in some layouts
MAX_BINDING = 20.0


@dataclass(frozen=True)
class TokenRebalance(SigmaWindow):
    """Cross-attention term: log(boost) on object i's tokens and log(sink_scale) on the sinks inside region i."""

    boost: float = 2.0
    sink_scale: float = 1.0

    def __post_init__(self):
        if not 1.0 <= self.boost <= MAX_BOOST:
            raise ValueError(f"boost must be in [1, {MAX_BOOST}] (1 = off), got {self.boost}")
        if not MIN_SINK_SCALE <= self.sink_scale <= 1.0:
            raise ValueError(f"sink_scale must be in [{MIN_SINK_SCALE}, 1] (1 = off), got {self.sink_scale}")

    def bias(self, masks: torch.Tensor, cross, dtype) -> torch.Tensor:
        """``[HW, K]`` for RGB-CAM's key layout: the base window, then (strict) object i's own window i."""
        inside = masks.flatten(1).transpose(0, 1) > 0  # [HW, N]
        tokens, eos = cross.tokens, cross.spans[-1][1]  # the base EOS follows the last object's span
        boost, sink = math.log(self.boost), math.log(self.sink_scale)
        blocks = 1 + (cross.count if cross.strict else 0)
        bias = torch.zeros(inside.shape[0], blocks * tokens, dtype=torch.float32, device=masks.device)
        sinks = torch.zeros(tokens, dtype=torch.bool, device=masks.device)
        sinks[0], sinks[eos:] = True, True
        bias[:, :tokens] += sink * inside.any(dim=1, keepdim=True) * sinks
        for index, (start, end) in enumerate(cross.spans):
            region = inside[:, index : index + 1].float()
            bias[:, start:end] += boost * region
            if cross.strict:  # object i's own window: its tokens at 1..L_i, then its EOS and padding
                own = slice((index + 1) * tokens, (index + 2) * tokens)
                own_tokens = torch.zeros(tokens, device=masks.device)
                own_tokens[1 : 1 + end - start] = boost
                own_sinks = torch.zeros(tokens, dtype=torch.bool, device=masks.device)
                own_sinks[0], own_sinks[1 + end - start :] = True, True
                bias[:, own] += region * (own_tokens + sink * own_sinks)
        return bias.to(dtype)


def biased_rows(extra_options: dict, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows the binding applies to, each row's image index in the latent batch).

    The conditional rows of the target: inside the dual branch the rows of its target-cond chunk
    (from the layout the guider hands over), elsewhere every row of the conditional chunks.
    Unconditional rows keep their plain logits.
    """
    layout = extra_options.get(LAYOUT_KEY)
    if layout is not None:
        rows = layout.conditional.to(device)
        return rows, torch.arange(rows.numel(), device=device)
    chunks = extra_options.get("cond_or_uncond")
    if not chunks:
        rows = torch.arange(batch, device=device)
        return rows, rows
    per_chunk = batch // len(chunks)
    conditional = [c * per_chunk + r for c, kind in enumerate(chunks) if kind == 0 for r in range(per_chunk)]
    rows = torch.tensor(conditional, dtype=torch.long, device=device)
    return rows, rows % per_chunk


@dataclass(frozen=True)
class RegionBinding(SigmaWindow):
    """Self-attention term: queries in region i lose ``strength`` logits on the other objects' keys.

    ``surroundings`` does the same on background keys for queries in any object's region.
    Regions are RGB-CAM's: a pixel belongs to object i when mask i alone claims it.
    """

    strength: float = 2.0
    surroundings: float = 0.0

    def __post_init__(self):
        for name in ("strength", "surroundings"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_BINDING:
                raise ValueError(f"{name} must be in [0, {MAX_BINDING}] (0 = off), got {value}")

    def columns(self, q, extra_options, height, width, program):
        if not self.active(extra_options.get("sigmas")) or program.cross is None:
            return None
        rows, images = biased_rows(extra_options, q.shape[0], q.device)
        if rows.numel() == 0:
            return None
        q_cols, k_cols = program.cached(("binding", self, height, width, q.device, q.dtype),
                                        lambda: self.region_columns(program.layer_masks(height, width, q.device), q.dtype))
        images = images % q_cols.shape[0]  # one mask set for every image, or one per image
        q_rows = q_cols.new_zeros(q.shape[0], *q_cols.shape[1:])
        k_rows = k_cols.new_zeros(q.shape[0], *k_cols.shape[1:])
        q_rows[rows], k_rows[rows] = q_cols[images], k_cols[images]
        return q_rows, k_rows

    def region_columns(self, masks: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(one-hot query columns [I, 1, HW, c], scaled key columns [I, 1, HW, c]), c = N (+1 with surroundings).

        ``masks`` [I, N, h, w]: the layer's binary object masks, one set per image (I = 1: one set for the batch).
        """
        q_sets, k_sets = [], []
        for image in masks:
            objects = region_weights(image)[:, 1:]  # [HW, N]: sole membership (overlaps belong to no object)
            q_cols = [objects]
            k_cols = [-self.strength * (objects.sum(dim=1, keepdim=True) - objects)]  # column i: the other objects
            if self.surroundings > 0:
                outside = 1.0 - image.amax(dim=0).flatten().unsqueeze(1)  # claimed by no mask
                q_cols.append(objects.sum(dim=1, keepdim=True))
                k_cols.append(-self.surroundings * outside)
            q_sets.append(torch.cat(q_cols, dim=1))
            k_sets.append(torch.cat(k_cols, dim=1))
        return torch.stack(q_sets).unsqueeze(1).to(dtype), torch.stack(k_sets).unsqueeze(1).to(dtype)
