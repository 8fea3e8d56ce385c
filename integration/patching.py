"""Putting the region attention program on a model: ComfyUI's attention function, its transformer blocks,
the program's callables installed once per block (wrapping another pack's replace), sampling progress in sigmas."""
from __future__ import annotations

import logging

import torch

import comfy.conds
import comfy.ldm.modules.attention as comfy_attention
import comfy.patcher_extension

from ..attention.region_attention import (
    LATER_KEY, PROGRAM_KEY, RegionAttentionProgram, RegionCrossAttention, ValueSubstitution, target_rows,
)
from ..attention.self_attention import RegionSelfAttention
from .checks import check_mask_size, is_flux_model
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
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, PROGRAM_KEY, RegionTargetConds())
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


ATTENTION_FLAGS = {"use_sage_attention": "--use-sage-attention", "use_flash_attention": "--use-flash-attention",
                   "use_pytorch_cross_attention": "--use-pytorch-cross-attention", "use_split_cross_attention": "--use-split-cross-attention",
                   "use_quad_cross_attention": "--use-quad-cross-attention"}


def attention_flag() -> str | None:
    """The ``--use-*-attention`` flag ComfyUI was started with, if any (comfy/cli_args.py)."""
    from comfy.cli_args import args

    return next((flag for name, flag in ATTENTION_FLAGS.items() if getattr(args, name, False)), None)


class TargetConds:
    """``calc_cond_batch`` wrapper: what the target's conditioning needs before each model call. Subclasses find the
    program, check it against the latent being sampled, and give the text a ControlNet on the target reads.

    A ControlNet runs its own copy of the model's blocks on the cond's text, outside the pack's patches, and adds its
    output to every pixel: fed the target base prompt (every object's text), it would carry object j into region i.
    ComfyUI's ControlNet reads ``crossattn_controlnet`` when a cond has it, else the cond's own text (comfy/controlnet.py,
    ``get_control``): the target's first window becomes :meth:`object_free`'s, and the other conds with a ControlNet get
    their own text under that key, so that cond and negative still run in one batch."""

    program_key = None

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        program = model_options.get("transformer_options", {}).get(self.program_key)
        if program is not None and self.active(program, timestep):
            self.check(program, x_in)
            if any(c.get("control") is not None for slot in conds if slot for c in slot):
                conds = [None if slot is None else [self.controlnet_text(c, program) for c in slot] for slot in conds]
        return executor(model, conds, x_in, timestep, self.options(model_options))

    def options(self, model_options: dict) -> dict:
        """The model options for the call (subclasses hand the program what it needs from them)."""
        return model_options

    def controlnet_text(self, cond: dict, program) -> dict:
        model_conds = cond.get("model_conds", {})
        text = model_conds.get("c_crossattn")
        if cond.get("control") is None or text is None or "crossattn_controlnet" in model_conds:
            return cond
        context = text.cond
        window = self.object_free(program, context)
        if window is not None:
            window = window.to(context)
            context = torch.cat([window.expand(context.shape[0], -1, -1), context[:, window.shape[0]:]], dim=1)
            self.found_target(program)
        return {**cond, "model_conds": {**model_conds, "crossattn_controlnet": comfy.conds.CONDCrossAttn(context)}}

    def active(self, program, timestep) -> bool:
        raise NotImplementedError

    def check(self, program, x_in: torch.Tensor) -> None:
        """Refuse what the latent being sampled shows to be wrong."""

    def object_free(self, program, context):
        """The window the ControlNet reads instead of ``context``'s first, when ``context`` is the target's; else None."""
        raise NotImplementedError

    def found_target(self, program) -> None:
        """Called when a ControlNet on the target reads the object-free text."""


class RegionTargetConds(TargetConds):
    """SD1.5/SDXL: masks of another shape than the latent are refused (the first node that sees the latent: without an
    image on the Object Masks node nothing checked them); a ControlNet on the target reads the empty prompt (Object-
    Restricted Encode encodes it with the plan)."""

    program_key = PROGRAM_KEY

    def active(self, program, timestep) -> bool:
        return program.cross is not None and program.cross.active(timestep)

    def check(self, program, x_in: torch.Tensor) -> None:
        check_mask_size(program.cross.masks, x_in, "Region-Guided Cross-Attention (LeakFree)", "the latent being sampled",
                        "the image you sample, or connect that image to the Object Masks node's image input to check them there")

    def options(self, model_options: dict) -> dict:
        """Replaces other packs put on blocks under (block, id) keys, for the program's replaces to run them: ComfyUI
        would run the program's (block, id, index) replace instead (comfy/ldm/modules/attention.py, BasicTransformerBlock)."""
        options = model_options.get("transformer_options", {})
        later = {key: patch for key, patch in options.get("patches_replace", {}).get("attn2", {}).items()
                 if len(key) == 2 and not isinstance(patch, RegionCrossAttention)}
        return {**model_options, "transformer_options": {**options, LATER_KEY: later}} if later else model_options

    def object_free(self, program, context):
        keys = program.cross.embeddings.keys
        if context.shape[1] < keys.shape[0] or not target_rows(context[:, : keys.shape[0]], keys.to(context)).numel():
            return None
        return program.cross.embeddings.empty
