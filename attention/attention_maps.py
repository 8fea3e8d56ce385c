"""Attention maps of the edit's objects, recorded by the region attention program (an observer term), for the
Attention Map Preview: where each target's tokens are attended, and how much of that lies outside its region.

For target row r, object i with token span S_i and a recorded layer (those 2x and 4x below the latent: the
32^2 and 16^2 levels at 512 px),

    a_i(p) = mean over heads of  sum_{t in S_i} softmax_t(q_p . k_t / sqrt(d) + b_{p,t})

with b = 0 ("model": the model's own attention over the target base prompt, RGB-CAM's bias left out: where the
latent itself puts object i, i.e. the leakage RGB-CAM has to hold back) or b = the program's bias ("applied":
RGB-CAM's region bias and any rebalancing, the attention the layer mixes its values with; in strict mode object
i's own tokens in its own key block count too), summed per layer grid over the layers and steps inside a sigma
window. Per pixel the softmax sums to 1 over all keys, so 0 <= a_i <= 1 and sum_i a_i <= 1. The leak of object i
is measured on each recorded grid g against its region as the program resized it to that grid, R_i^g (the same
resize, nearest or area, as RGB-CAM's bias), then averaged over the grids where object i got attention:

    leak_i = mean_g ( 1 - sum_{p in R_i^g} a_i^g(p) / sum_p a_i^g(p) ).

So under RGB-CAM ("applied") the leak is exactly 0 at every size: the bias is -inf for object i's tokens outside
R_i^g on that very grid. (Measured after resampling a coarse grid's map to a finer one, attention would spread across
the region's border and read as leak.) The picture is drawn from the maps averaged over the grids, bilinear to the
finest one.

With the dual-branch guider, the source branch's conditional rows can be recorded too (the source objects' tokens
in the source prompt, model attention): where the model finds "wolf" in the source, against the wolf's mask.

Pure torch; a new sampling run (the sigma rising again) starts a new recording.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masking.ops import downsampled_grids, resize_masks
from .dual_branch import SOURCE_COND
from .localisation import attention_probabilities, span_attention
from .region_attention import SigmaWindow, layer_size
from .self_attention import LAYOUT_KEY

MODES = ("model", "applied")


class MapRecording:
    """Running sums of object maps per layer grid and row, over the layers and steps a recorder keeps."""

    def __init__(self, spans, window: SigmaWindow, factors=(2, 4)):
        self.spans, self.window, self.factors = tuple(spans), window, factors
        self.reset()

    def __deepcopy__(self, memo):
        return self  # ModelPatcher.clone() deep-copies model_options: every clone records into one recorder

    def reset(self) -> None:
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (h, w) -> [R, N, h, w]
        self.counts: dict[tuple[int, int], int] = {}
        self.sigmas: set[float] = set()
        self.last_sigma: float | None = None

    def layer(self, extra_options) -> tuple[int, int] | None:
        """The call's (h, w) when it is to be recorded (a recorded level, inside the window); a new run resets."""
        sigmas = extra_options.get("sigmas")
        if sigmas is not None:
            sigma = float(sigmas.max())
            if self.last_sigma is not None and sigma > self.last_sigma:  # sampling started again: a new recording
                self.reset()
            self.last_sigma = sigma
            if not self.window.active(sigmas):
                return None
        latent = extra_options["original_shape"]
        size = layer_size(extra_options)
        if size not in downsampled_grids((int(latent[-2]), int(latent[-1])), self.factors):
            return None
        if sigmas is not None:
            self.sigmas.add(float(sigmas.max()))
        return size

    def add(self, maps: torch.Tensor, size: tuple[int, int]) -> None:
        """``maps`` [R, N, h*w] of one call."""
        maps = maps.view(maps.shape[0], len(self.spans), *size).cpu()
        if size in self.sums and self.sums[size].shape[0] != maps.shape[0]:
            self.reset()  # another batch layout than the recording so far
        self.sums[size] = self.sums[size] + maps if size in self.sums else maps
        self.counts[size] = self.counts.get(size, 0) + 1

    def leaks(self, masks: torch.Tensor, resize: str = "nearest") -> torch.Tensor | None:
        """leak_i ``[R, N]`` (see the module docstring): on each recorded grid against ``masks`` [I, N, H, W] (I = 1 or R)
        resized there by ``resize``, then the mean over the grids; NaN for an object no grid gave attention to."""
        if not self.sums:
            return None
        return torch.stack([outside_share(total, masks, resize) for total in self.sums.values()]).nanmean(dim=0)

    def averaged(self) -> torch.Tensor | None:
        """a_i ``[R, N, h, w]`` averaged over the recorded layers (on the finest grid) and steps; None before any record."""
        if not self.sums:
            return None
        height, width = max(self.sums)
        grids = [F.interpolate(total / self.counts[key], size=(height, width), mode="bilinear", align_corners=False)
                 for key, total in self.sums.items()]
        return torch.stack(grids).mean(dim=0)


class TargetMapRecorder(MapRecording):
    """``CrossAttentionObserver``: the target rows' maps of the target objects, from each RGB-CAM call."""

    def __init__(self, spans, tokens: int, strict: bool, window: SigmaWindow, mode: str = "model", factors=(2, 4)):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(spans, window, factors)
        self.tokens, self.strict, self.mode = tokens, strict, mode

    def call_maps(self, query, keys, bias) -> torch.Tensor:
        """a_i ``[R, N, HW]`` for one call (per-head ``query`` [R, heads, HW, d], ``keys`` [R, heads, K, d], ``bias`` [I, 1, HW, K])."""
        query, keys = query.detach().float(), keys.detach().float()
        if self.mode == "model":
            return span_attention(query, keys[:, :, : self.tokens], self.spans)
        probs = attention_probabilities(query, keys, bias.float()).mean(dim=1)  # [R, HW, K]
        maps = []
        for index, (start, end) in enumerate(self.spans):
            a = probs[..., start:end].sum(dim=-1)
            if self.strict:  # object i's own tokens 1..L_i in its own key block
                own = (index + 1) * self.tokens + 1
                a = a + probs[..., own : own + end - start].sum(dim=-1)
            maps.append(a)
        return torch.stack(maps, dim=1)

    def observe(self, query, keys, bias, masks, extra_options) -> None:
        size = self.layer(extra_options)
        if size is not None:
            self.add(self.call_maps(query, keys, bias), size)


class SourceMapRecorder(MapRecording):
    """``CrossAttentionCallObserver``: under the dual-branch guider, the source branch's conditional rows' maps of the
    source objects (token spans of the source prompt, the objects joined with " and "), the model's own attention."""

    def __init__(self, spans, tokens: int, window: SigmaWindow, factors=(2, 4)):
        super().__init__(spans, window, factors)
        self.tokens = tokens

    def observe_call(self, query, keys, extra_options) -> None:
        slots = list(extra_options.get("cond_or_uncond", ()))
        if LAYOUT_KEY not in extra_options or SOURCE_COND not in slots:  # no source branch in this call
            return
        size = self.layer(extra_options)
        if size is None:
            return
        chunk = query.shape[0] // len(slots)
        rows = slice(slots.index(SOURCE_COND) * chunk, (slots.index(SOURCE_COND) + 1) * chunk)
        self.add(span_attention(query[rows].detach().float(), keys[rows, :, : self.tokens].detach().float(), self.spans), size)


def outside_share(maps: torch.Tensor, masks: torch.Tensor, resize: str = "nearest") -> torch.Tensor:
    """1 - (attention inside R_i) / (all attention of object i), ``[R, N]``, on the maps' own grid: ``maps`` [R, N, h, w],
    ``masks`` [I, N, H, W] (I = 1 or R) at any size, resized to (h, w) by ``resize`` as the program resizes them
    (:func:`masking.ops.resize_masks`). NaN where object i has no attention at all."""
    regions = resize_masks(masks.flatten(0, 1).float(), *maps.shape[-2:], resize).view(masks.shape[0], masks.shape[1], *maps.shape[-2:])
    inside, total = (maps * regions).flatten(2).sum(dim=-1), maps.flatten(2).sum(dim=-1)
    return torch.where(total > 0, 1 - inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.nan)
