"""The attention capture run of Masks from Attention: the model on the noised source, every attention layer recorded."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers

from ..attention.region_attention import layer_size, split_heads
from ..attention.localisation import AttentionCapture
from ..attention.self_attention import LAYOUT_KEY, no_branches
from .patching import percent_to_sigma, plain_attention, wrap_blocks

NOISE_RANGE = (0.5, 0.8)  # sampling progress of the capture timesteps: noisy enough to read, clean enough to see the layout


class CaptureAttention:
    """``attn1``/``attn2`` replace for the capture run: record, then attend as before (or as ``previous`` did)."""

    def __init__(self, capture: AttentionCapture, cross: bool, previous=None):
        self.capture, self.cross, self.previous = capture, cross, previous

    def __call__(self, q, k, v, extra_options):
        heads, latent = extra_options["n_heads"], extra_options["original_shape"]
        height, width = layer_size(extra_options)
        record = self.capture.record_cross if self.cross else self.capture.record_self
        record(split_heads(q, heads), split_heads(k, heads), height, width, (int(latent[-2]), int(latent[-1])))
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return plain_attention(q, k, v, heads, extra_options)


def capture_attention(model, positive, latent: torch.Tensor, capture: AttentionCapture, timesteps: int, seed: int) -> None:
    """Run ``model`` (cloned, every attention layer recording into ``capture``) on ``latent`` noised to ``timesteps``
    levels spread over ``NOISE_RANGE`` of sampling progress, one Euler step each."""
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})[LAYOUT_KEY] = no_branches()  # a plain run: the branch terms stay off
    wrap_blocks(patched, "attn1", CaptureAttention, capture=capture, cross=False)
    wrap_blocks(patched, "attn2", CaptureAttention, capture=capture, cross=True)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    sampler = comfy.samplers.sampler_object("euler")
    for index in range(timesteps):
        progress = NOISE_RANGE[0] + (NOISE_RANGE[1] - NOISE_RANGE[0]) * index / max(1, timesteps - 1)
        sigmas = torch.tensor([percent_to_sigma(patched, progress), 0.0])
        comfy.sample.sample_custom(patched, noise, 1.0, sampler, sigmas, positive, positive, latent, disable_pbar=True, seed=seed)
