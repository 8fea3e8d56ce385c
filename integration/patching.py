"""Putting the region attention program on a model: ComfyUI's attention function, its transformer blocks,
the program's callables installed once per block (wrapping another pack's replace), sampling progress in sigmas."""
from __future__ import annotations

import logging

import comfy.ldm.flux.model as comfy_flux
import comfy.ldm.modules.attention as comfy_attention

from ..attention.region_attention import PROGRAM_KEY, RegionAttentionProgram, RegionCrossAttention, ValueSubstitution
from ..attention.self_attention import RegionSelfAttention
from .errors import NodeInputError

log = logging.getLogger("LeakFreeEdit")


def plain_attention(q, k, v, heads, extra_options):
    """ComfyUI's configured attention, called as the unpatched ``CrossAttention`` calls it."""
    return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"),
                                               transformer_options=extra_options)


def attention_blocks(diffusion_model, attention: str = "attn2") -> list[tuple[str, int, int]]:
    """Replace keys ``(block, id, index)`` of every transformer block that has ``attention`` (attn1/attn2).

    Walks the model instead of trusting a hard-coded id list (SD1.5, SD2, SDXL and
    fine-tunes with other depths all come out right, the middle block included).
    """
    groups = [("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]), ("output", diffusion_model.output_blocks)]
    keys = []
    for name, blocks in groups:
        for number, block in enumerate(blocks):
            for module in block:
                for index, transformer in enumerate(getattr(module, "transformer_blocks", ())):
                    if getattr(transformer, attention, None) is not None:
                        keys.append((name, number, index))
    return keys


def context_dim(model) -> int | None:
    return model.model.model_config.unet_config.get("context_dim")


def is_flux_model(model) -> bool:
    """A Flux (MMDiT) diffusion model: dev, schnell, Kontext, fine-tunes (ComfyUI's comfy.ldm.flux.model.Flux)."""
    return isinstance(model.model.diffusion_model, comfy_flux.Flux)


def percent_to_sigma(model, percent: float) -> float:
    return float(model.get_model_object("model_sampling").percent_to_sigma(percent))


def region_program(model) -> RegionAttentionProgram:
    """The program already on ``model`` (a clone), or a new one."""
    program = model.model_options.get("transformer_options", {}).get(PROGRAM_KEY)
    return program if program is not None else RegionAttentionProgram(attention=plain_attention)


def program_with_regions(model, node: str) -> RegionAttentionProgram:
    """The region program on ``model``; an error naming the fix when RGB-CAM is not on it."""
    if is_flux_model(model):
        raise NodeInputError(
            f"{node}: this is a Flux model; this node works on SD1.5/SDXL's cross-attention layers. "
            "On Flux, Region-Guided Joint Attention (LeakFree) isolates the objects."
        )
    program = region_program(model)
    if program.cross is None:
        raise NodeInputError(
            f"{node}: this model has no region-guided cross-attention, so there are no object regions to work on. "
            "Connect Region-Guided Cross-Attention first: its MODEL output goes into this node's model input."
        )
    return program


def install_region_program(model, program: RegionAttentionProgram, self_attention: bool = False) -> None:
    """Put ``program`` on ``model`` (a clone) and its callables on every attention block, once.

    Cross-attention callables always; self-attention ones when a term needs them
    (structure lock, binding). A replace another pack put on a block is wrapped, not overwritten.
    """
    options = model.model_options.setdefault("transformer_options", {})
    options[PROGRAM_KEY] = program
    patches = options.get("patches", {}).get("attn2_patch", [])
    if not any(isinstance(p, ValueSubstitution) for p in patches):
        model.set_model_attn2_patch(ValueSubstitution())
        wrap_blocks(model, "attn2", RegionCrossAttention)
    if self_attention:
        wrap_blocks(model, "attn1", RegionSelfAttention)


def wrap_blocks(model, attention: str, patch_class, **arguments) -> None:
    """``patch_class(previous=..., **arguments)`` as the ``attention`` replace of every block of ``model`` (a clone),
    ``previous`` being the replace that was there (kept running inside it). Blocks that have one already are left."""
    replaced = model.model_options.setdefault("transformer_options", {}).get("patches_replace", {}).get(attention, {})
    for key in attention_blocks(model.model.diffusion_model, attention):
        previous = replaced.get(key, replaced.get(key[:2]))
        if isinstance(previous, patch_class):
            continue
        if previous is not None:
            log.info("LeakFreeEdit: chaining the %s patch already on block %s", attention, key)
        model.set_model_patch_replace(patch_class(previous=previous, **arguments), attention, *key)
