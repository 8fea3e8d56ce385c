"""Stand-ins for the GPU attention backends users pick with ComfyUI's flags, installed the way the flags install them.

ComfyUI chooses its attention function once, at import (comfy/ldm/modules/attention.py: ``optimized_attention =
attention_sage`` under ``--use-sage-attention``, ``attention_flash`` under ``--use-flash-attention``, ...), registers
the ones it has with ``register_attention_function``, and every model module that did ``from
comfy.ldm.modules.attention import optimized_attention`` (Flux's comfy/ldm/flux/math.py among them) keeps that choice.
:func:`attention_backend` makes the same choice after the fact, for the length of a ``with`` block:

- ``"sage"``: ComfyUI's own ``attention_sage`` with its kernel ``sageattn`` replaced by a stand-in of SageAttention's
  signature (``sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs)``):
  like the real kernel it takes ``attn_mask`` into ``**kwargs`` and ignores it;
- ``"refuses_masks"``: a backend registered under that name that raises on any attention mask (as kernels without mask
  support do), plain SDPA otherwise.

Both compute unmasked attention exactly as ``attention_pytorch`` does, so a model that never hands its masks to the
backend gives the same bits under either as under ``--use-pytorch-cross-attention``.
"""
from __future__ import annotations

import contextlib
import sys

import torch.nn.functional as F

BACKENDS = ("sage", "refuses_masks")


def sageattn_stand_in(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
    """SageAttention's ``sageattn`` signature; ``attn_mask`` lands in ``kwargs`` and is dropped, as the real kernel drops it."""
    if tensor_layout == "NHD":  # [B, tokens, heads, dim]
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=is_causal).transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


class MaskRefused(RuntimeError):
    pass


def _refusing_backend():
    import comfy.ldm.modules.attention as attention

    @attention.wrap_attn
    def attention_refusing_masks(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False, **kwargs):
        if mask is not None:
            raise MaskRefused("this attention backend takes no attention mask")
        return attention.attention_pytorch(q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, **kwargs)

    return attention_refusing_masks


@contextlib.contextmanager
def attention_backend(name: str):
    """ComfyUI's attention function is ``name``'s stand-in inside the block, in every module that took the choice."""
    import comfy.ldm.modules.attention as attention

    chosen = attention.optimized_attention
    if name == "sage":
        backend, registered = attention.attention_sage, "sage"
    elif name == "refuses_masks":
        backend, registered = _refusing_backend(), "refuses_masks"
    else:
        raise ValueError(f"unknown backend {name!r}; one of {BACKENDS}")
    previous_registration = attention.REGISTERED_ATTENTION_FUNCTIONS.get(registered)
    attention.REGISTERED_ATTENTION_FUNCTIONS.pop(registered, None)
    attention.register_attention_function(registered, backend)
    had_kernel, kernel = hasattr(attention, "sageattn"), getattr(attention, "sageattn", None)
    attention.sageattn = sageattn_stand_in
    takers = [module for module in list(sys.modules.values())
              if getattr(module, "__name__", "").startswith("comfy") and getattr(module, "optimized_attention", None) is chosen]
    masked = [module for module in takers if getattr(module, "optimized_attention_masked", None) is chosen]
    for module in takers:
        module.optimized_attention = backend
    for module in masked:
        module.optimized_attention_masked = backend
    try:
        yield backend
    finally:
        for module in takers:
            module.optimized_attention = chosen
        for module in masked:
            module.optimized_attention_masked = chosen
        if had_kernel:
            attention.sageattn = kernel
        else:
            del attention.sageattn
        attention.REGISTERED_ATTENTION_FUNCTIONS.pop(registered, None)
        if previous_registration is not None:
            attention.REGISTERED_ATTENTION_FUNCTIONS[registered] = previous_registration
