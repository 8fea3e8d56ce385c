"""Attention maps of the edit's objects, recorded by the region attention program (an observer term), for the
Attention Map Preview: where each target's tokens are attended, and how much of that lies outside its region.

For target row r, object i with token span S_i and a recorded layer (those 2x and 4x below the latent: the
32^2 and 16^2 levels at 512 px),

    a_i(p) = mean over heads of  sum_{t in S_i} softmax_t(q_p . k_t / sqrt(d) + b_{p,t})

with b = 0 ("model": the model's own attention over the target base prompt, RGB-CAM's bias left out: where the
latent itself puts object i, i.e. the leakage RGB-CAM has to hold back) or b = the program's bias ("applied":
RGB-CAM's region bias and any rebalancing, the attention the layer mixes its values with; in strict mode object
i's own tokens in its own key block count too). Maps are averaged over the recorded layers (bilinear to the
finest one) and over the steps inside a sigma window. Per pixel the softmax sums to 1 over all keys, so
0 <= a_i <= 1 and sum_i a_i <= 1. The leak of object i is the share of its attention outside its region R_i:

    leak_i = 1 - sum_{p in R_i} a_i(p) / sum_p a_i(p).

Pure torch; a new sampling run (the sigma rising again) starts a new recording.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masking.from_attention import downsampled_grids
from ..masking.ops import resize_masks
from .region_attention import SigmaWindow, layer_size

MODES = ("model", "applied")


class AttentionMapRecorder:
    """``CrossAttentionObserver`` keeping the running sums of a_i per layer grid, per target row."""

    def __init__(self, spans, tokens: int, strict: bool, window: SigmaWindow, mode: str = "model", factors=(2, 4)):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.spans, self.tokens, self.strict = tuple(spans), tokens, strict
        self.window, self.mode, self.factors = window, mode, factors
        self.reset()

    def __deepcopy__(self, memo):
        return self  # ModelPatcher.clone() deep-copies model_options: every clone records into one recorder

    def reset(self) -> None:
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (h, w) -> [R, N, h, w]
        self.counts: dict[tuple[int, int], int] = {}
        self.sigmas: set[float] = set()
        self.last_sigma: float | None = None

    def object_maps(self, query, keys, bias) -> torch.Tensor:
        """a_i ``[R, N, HW]`` for one call (per-head ``query`` [R, heads, HW, d], ``keys`` [R, heads, K, d], ``bias`` [I, 1, HW, K])."""
        query, keys = query.detach().float(), keys.detach().float()
        if self.mode == "model":
            keys, bias = keys[:, :, : self.tokens], None
        logits = query @ keys.transpose(-1, -2) * query.shape[-1] ** -0.5
        if bias is not None:
            logits = logits + bias.float()
        probs = logits.softmax(dim=-1).mean(dim=1)  # [R, HW, K]
        maps = []
        for index, (start, end) in enumerate(self.spans):
            a = probs[..., start:end].sum(dim=-1)
            if self.mode == "applied" and self.strict:  # object i's own tokens 1..L_i in its own key block
                own = (index + 1) * self.tokens + 1
                a = a + probs[..., own : own + end - start].sum(dim=-1)
            maps.append(a)
        return torch.stack(maps, dim=1)

    def observe(self, query, keys, bias, masks, extra_options) -> None:
        sigmas = extra_options.get("sigmas")
        if sigmas is not None:
            sigma = float(sigmas.max())
            if self.last_sigma is not None and sigma > self.last_sigma:  # sampling started again: a new recording
                self.reset()
            self.last_sigma = sigma
            if not self.window.active(sigmas):
                return
            self.sigmas.add(sigma)
        latent = extra_options["original_shape"]
        height, width = layer_size(extra_options)
        if (height, width) not in downsampled_grids((int(latent[-2]), int(latent[-1])), self.factors):
            return
        maps = self.object_maps(query, keys, bias).view(query.shape[0], len(self.spans), height, width).cpu()
        key = (height, width)
        if key in self.sums and self.sums[key].shape[0] != maps.shape[0]:
            self.reset()  # another batch layout than the recording so far
        self.sums[key] = self.sums[key] + maps if key in self.sums else maps
        self.counts[key] = self.counts.get(key, 0) + 1

    def averaged(self) -> torch.Tensor | None:
        """a_i ``[R, N, h, w]`` averaged over the recorded layers (on the finest grid) and steps; None before any record."""
        if not self.sums:
            return None
        height, width = max(self.sums)
        grids = [F.interpolate(total / self.counts[key], size=(height, width), mode="bilinear", align_corners=False)
                 for key, total in self.sums.items()]
        return torch.stack(grids).mean(dim=0)


def outside_share(maps: torch.Tensor, masks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """leak_i ``[R, N]`` = 1 - (attention inside R_i) / (all attention of object i); ``maps`` [R, N, h, w], ``masks``
    [I, N, H, W] (I = 1 or R) at any size, resized to the maps' grid as the program resizes them."""
    regions = resize_masks(masks.flatten(0, 1).float(), *maps.shape[-2:]).view(masks.shape[0], masks.shape[1], *maps.shape[-2:])
    inside = (maps * regions).flatten(2).sum(dim=-1)
    return 1 - inside / maps.flatten(2).sum(dim=-1).clamp_min(eps)
