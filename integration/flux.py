"""Flux glue: the edit plan encoded through Flux's CLIP object (T5-XXL + CLIP-L) in one batched call, the payload the
target CONDITIONING carries, and region-guided joint attention put on a clone of a Flux model.

Two of ComfyUI's hooks carry the routing, both composing with other packs:

- a ``diffusion_model`` wrapper (``comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL``, one list per model, every
  pack's wrapper runs) finds the target rows by content, gives them the joint layout as their text and, for that
  call only, puts an ``optimized_attention_override`` into ``transformer_options``, wrapping the one already there;
- the override (read by every attention call of Flux's double and single blocks, comfy/ldm/modules/attention.py
  ``wrap_attn``) adds the routing bias on the target rows and leaves every other row's call as it was. Inside the
  Dual-Branch Edit Guider for Flux it also applies the structure lock (the target rows' image tokens take the source
  rows' queries and keys), so the lock needs no attention code of its own.

Block replaces (``patches_replace["dit"]``) are not used: they see a whole block, so a per-row mask would mean
splitting the batch through every linear layer; other packs' block replaces still run and still reach the override.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

import comfy.patcher_extension
from comfy.ldm.common_dit import pad_to_patch_size

from ..attention.joint_attention import NODE as JOINT_NODE
from ..attention.joint_attention import PROGRAM_KEY, JointAttention, JointAttentionProgram, JointText, joint_text, locked_layout
from ..attention.plan import EditPlan, EditPlanError, parse_edits
from ..masking.quality import aspect_mismatch
from .checks import JOINT_KEY, ORE_KEY
from .errors import NodeInputError
from .patching import context_dim, is_flux_model

WRAPPER_KEY = "leakfree_edit_joint"
TEXT_ENCODERS = {"l", "t5xxl"}  # the tokenizer keys of Flux's CLIP (comfy/text_encoders/flux.py, FluxTokenizer)


@dataclass(frozen=True)
class JointPayload:
    """What Region-Guided Joint Attention needs from the encoder, carried by the target CONDITIONING."""

    plan: EditPlan
    text: JointText
    background: str


def check_flux_clip(clip, node: str) -> None:
    encoders = set(clip.tokenize(""))
    if encoders != TEXT_ENCODERS:
        what = "SD1.5/SDXL's CLIP" if "t5xxl" not in encoders else f"a CLIP with the text encoders {sorted(encoders)}"
        raise NodeInputError(
            f"{node}: this is {what}, not Flux's (CLIP-L + T5-XXL). Load Flux's text encoders with DualCLIPLoader "
            "(clip_l and t5xxl, type flux); on SD1.5/SDXL use Object-Restricted Encode (LeakFree)."
        )


def refuse_flux_clip(clip, node: str) -> None:
    """For the SD encoder: a CLIP with a T5 is not SD1.5/SDXL's."""
    if "t5xxl" in clip.tokenize(""):
        raise NodeInputError(
            f"{node}: this CLIP has a T5-XXL text encoder (Flux or SD3), not SD1.5/SDXL's CLIP. "
            "For Flux use Object-Restricted Encode for Flux (LeakFree)."
        )


def _end(window: list[tuple], end_token: int) -> int:
    """Tokens of a T5 window up to and including its end token."""
    return next((index + 1 for index, token in enumerate(window) if token[0] == end_token), len(window))


def encode_flux_plan(clip, edits: str, background: str, node: str) -> tuple[EditPlan, JointText, torch.Tensor]:
    """Parse ``edits``; encode the target base prompt, every target prompt and the background prompt with T5 and the
    background prompt with CLIP-L (the pooled vector) in ONE batched call of ComfyUI's CLIP object."""
    check_flux_clip(clip, node)
    try:
        plan = EditPlan(parse_edits(edits, node))
        empty = clip.tokenize("")["t5xxl"][0]  # [end, pad, pad, ...]: the window length and the special tokens
        length, end_token = len(empty), empty[0][0]
        texts = [plan.target_prompt, *plan.targets, background]
        windows = [clip.tokenize(text)["t5xxl"] for text in texts]
        for index, (text, window) in enumerate(zip(texts, windows)):
            if len(window) > 1 or len(window[0]) > length:
                what = f"prompt {text!r}" if index else "target prompt joined with ' and '"
                raise EditPlanError(f"{node}: the {what} does not fit T5's {length}-token window; shorten it or edit fewer objects at once.")
        windows = [window[0] for window in windows]
        tokens = {"l": clip.tokenize(background)["l"], "t5xxl": windows}
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        base, *own, encoded_background = cond[0].split(length)
        lengths = [_end(window, end_token) for window in windows]
        text = joint_text(base, torch.stack(own), lengths[1:-1], encoded_background, lengths[-1], plan.targets, node)
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    return replace(plan, context_dim=cond.shape[-1]), text, pooled


def joint_payload(conditioning, node: str) -> JointPayload:
    """The payload of a target CONDITIONING from Object-Restricted Encode for Flux, or an error saying where it comes from."""
    for _, options in conditioning or ():
        if options.get(JOINT_KEY) is not None:
            return options[JOINT_KEY]
        if options.get(ORE_KEY) is not None:
            raise NodeInputError(
                f"{node}: this conditioning was encoded for SD1.5/SDXL by Object-Restricted Encode. For Flux encode the edits "
                "with Object-Restricted Encode for Flux (LeakFree) from Flux's CLIP; on SD1.5/SDXL use Region-Guided Cross-Attention (LeakFree)."
            )
    raise NodeInputError(
        f"{node}: this conditioning did not come from Object-Restricted Encode for Flux. Connect that node's 'target' output "
        "(a plain CLIPTextEncode has no per-object encodings)."
    )


def check_flux_model(model, node: str) -> None:
    if not is_flux_model(model):
        width = context_dim(model)
        what = {768: "an SD1.5", 1024: "an SD2", 2048: "an SDXL"}.get(width, "a non-Flux")
        raise NodeInputError(
            f"{node}: this is {what} model (UNet cross-attention), not Flux. Use Region-Guided Cross-Attention (LeakFree) "
            "with Object-Restricted Encode (LeakFree) there; this node needs a Flux model (UNETLoader or a Flux checkpoint)."
        )


class JointAttentionRouting:
    """``diffusion_model`` wrapper: the target rows read the joint layout, their attention the routing bias, and, while
    the dual branch's structure lock is on, their image tokens the source rows' queries and keys.

    A latent side that is not a multiple of the patch is padded by Flux circularly (comfy/ldm/common_dit.py), which
    puts the opposite edge's pixels (another region's) into the last row and column of tokens. The target rows are
    padded here instead, by repeating their own edge, and every other row exactly as Flux pads it.
    """

    def __call__(self, executor, x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs):
        program: JointAttentionProgram | None = transformer_options.get(PROGRAM_KEY)
        rows = None if program is None or context is None else program.target_rows(context, transformer_options.get("sigmas"))
        lock = locked_layout(transformer_options)
        if rows is None and lock is None:
            return executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)
        patch, (height, width) = executor.class_obj.patch_size, x.shape[-2:]
        bias_for = None
        if rows is not None:
            check_mask_sets(program, rows.numel())
            check_mask_shape(program, height, width)
            context = context.clone()
            context[rows] = program.text_tokens(context.device, context.dtype)[1]
            bias_for = lambda tokens, device, dtype: program.bias(height, width, patch, tokens, device, dtype)
            if height % patch or width % patch:
                padded = pad_to_patch_size(x, (patch, patch))
                padded[rows] = pad_to_patch_size(x[rows], (patch, patch), padding_mode="replicate")
                x = padded
        override = JointAttention(context.shape[0], rows, bias_for, lock, context.shape[1], transformer_options.get("optimized_attention_override"))
        transformer_options = {**transformer_options, "optimized_attention_override": override}
        out = executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)
        return out[..., :height, :width]


def check_mask_sets(program: JointAttentionProgram, rows: int) -> None:
    sets = program.regions.mask_sets
    if sets not in (1, rows):
        raise NodeInputError(f"{JOINT_NODE}: masks for {sets} images but {rows} target rows in the batch; "
                             "give one mask set, or one per image of the latent batch.")


def check_mask_shape(program: JointAttentionProgram, latent_height: int, latent_width: int) -> None:
    height, width = program.regions.masks.shape[-2:]
    if aspect_mismatch((height, width), (latent_height, latent_width)):
        raise NodeInputError(
            f"{JOINT_NODE}: the object masks are {width}x{height} px but the latent being sampled is for a "
            f"{8 * latent_width}x{8 * latent_height} px image (another shape). Make the masks from the image you sample "
            "(resize or crop both alike)."
        )


def install_joint_program(model, program: JointAttentionProgram) -> None:
    """Put ``program`` on ``model`` (a clone) and the routing wrapper on it, once."""
    model.model_options.setdefault("transformer_options", {})[PROGRAM_KEY] = program
    install_joint_wrapper(model)


def install_joint_wrapper(model) -> None:
    """The wrapper that carries routing and the structure lock into the joint attention, on ``model`` (a clone), once."""
    if not model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, JointAttentionRouting())
