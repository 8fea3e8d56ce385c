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
from ..attention.joint_attention import (
    PROGRAM_KEY, JointAttention, JointAttentionProgram, JointText, RoutingBypassed, joint_text, locked_layout,
)
from ..attention.plan import EditPlan, EditPlanError, parse_edits
from ..attention.self_attention import LAYOUT_KEY
from .checks import JOINT_KEY, ORE_KEY, check_mask_size, context_dim, is_flux_model
from .errors import NodeInputError
from .object_masks import show_warnings
from .patching import TargetConds, attention_flag

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
    """``diffusion_model`` wrapper: the target rows read the joint layout, the negative's rows (CFG) the negative prompt in
    every slot, both the routing bias; while the dual branch's structure lock is on, the target rows' image tokens take
    the source rows' queries and keys.

    Target rows are found by content (their first L tokens are the target base prompt; tokens appended after it are
    the shared class). Negative rows are the unconditional chunks of ComfyUI's CFG batch (``cond_or_uncond`` 1), outside
    the dual branch's layout (where that slot is a branch).

    A latent side that is not a multiple of the patch is padded by Flux circularly (comfy/ldm/common_dit.py), which
    puts the opposite edge's pixels (another region's) into the last row and column of tokens. The routed rows are
    padded here instead, by repeating their own edge, and every other row exactly as Flux pads it.
    """

    def __call__(self, executor, x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs):
        program: JointAttentionProgram | None = transformer_options.get(PROGRAM_KEY)
        rows = None if program is None or context is None else program.target_rows(context, transformer_options.get("sigmas"))
        negative = negative_rows(program, context, transformer_options)
        lock = locked_layout(transformer_options)
        if rows is None and negative is None and lock is None:
            return executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)
        patch, (height, width) = executor.class_obj.patch_size, x.shape[-2:]
        routed, bias_for = None, None
        if rows is not None or negative is not None:
            none = torch.empty(0, dtype=torch.long, device=context.device)
            targets, negatives = (none if found is None else found for found in (rows, negative))
            check_mask_sets(program, targets.numel(), negatives.numel())
            check_mask_size(program.regions.masks, x, JOINT_NODE, "the latent being sampled", "the image you sample")
            context = context.clone()
            window = program.regions.text.tokens
            context[targets, :window] = program.text_tokens(context.device, context.dtype)[1]
            context[negatives, :window] = program.own_slots(context[negatives, :window])
            routed, order = torch.sort(torch.cat([targets, negatives]))
            images = ()  # each routed row's image, to read its own mask set
            if program.regions.mask_sets > 1:
                images = tuple(torch.cat([torch.arange(targets.numel()), torch.arange(negatives.numel())])[order.cpu()].tolist())
            text_tokens = context.shape[1]
            bias_for = lambda tokens, device, dtype: program.bias(height, width, patch, text_tokens, tokens, device, dtype, images)
            if height % patch or width % patch:
                padded = pad_to_patch_size(x, (patch, patch))
                padded[routed] = pad_to_patch_size(x[routed], (patch, patch), padding_mode="replicate")
                x = padded
        override = JointAttention(context.shape[0], routed, bias_for, lock, context.shape[1], transformer_options.get("optimized_attention_override"))
        transformer_options = {**transformer_options, "optimized_attention_override": override}
        try:
            out = executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)
        except RoutingBypassed as error:
            raise NodeInputError(bypass_message(error.override)) from None
        return out[..., :height, :width]


def negative_rows(program: JointAttentionProgram | None, context, transformer_options: dict) -> torch.Tensor | None:
    """The rows of the unconditional chunks of a CFG batch, when the program routes them and is active; else None."""
    if program is None or context is None or program.regions.negative != "routed" or LAYOUT_KEY in transformer_options:
        return None
    if not program.regions.active(transformer_options.get("sigmas")) or context.shape[1] < program.regions.text.tokens:
        return None
    chunks = transformer_options.get("cond_or_uncond") or []
    if 1 not in chunks:
        return None
    per_chunk = context.shape[0] // len(chunks)
    rows = [index * per_chunk + row for index, kind in enumerate(chunks) if kind == 1 for row in range(per_chunk)]
    return torch.tensor(rows, dtype=torch.long, device=context.device)


def bypass_message(override) -> str:
    flag = attention_flag()
    backend = f"ComfyUI runs with {flag}" if flag else "ComfyUI's attention"
    return (
        f"{JOINT_NODE}: another node's attention override on this model ({type(override).__name__}) computed the routed rows "
        f"with an attention call of its own, so the routing bias may not have been applied ({backend}; sage and flash kernels "
        "drop attention masks). The routing computes its rows with torch's SDPA whatever the backend: take the node that sets "
        "that override (a per-model attention patch) out of this model's chain."
    )


def check_mask_sets(program: JointAttentionProgram, rows: int, negatives: int = 0) -> None:
    sets = program.regions.mask_sets
    for count, what in ((rows, "target rows"), (negatives, "negative rows")):
        if count and sets not in (1, count):
            raise NodeInputError(f"{JOINT_NODE}: masks for {sets} images but {count} {what} in the batch; "
                                 "give one mask set, or one per image of the latent batch.")


def install_joint_program(model, program: JointAttentionProgram, unique_id=None) -> None:
    """Put ``program`` on ``model`` (a clone) and its wrappers on it, once: the routing, and what a ControlNet on the
    target reads (``unique_id``: the node the ControlNet warning is shown on)."""
    model.model_options.setdefault("transformer_options", {})[PROGRAM_KEY] = program
    install_joint_wrapper(model)
    if not model.get_wrappers(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY):
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, JointTargetConds(unique_id))


def install_joint_wrapper(model) -> None:
    """The wrapper that carries routing and the structure lock into the joint attention, on ``model`` (a clone), once."""
    if not model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, JointAttentionRouting())


CONTROLNET_WARNING = (
    "a ControlNet is applied to the target. It reads the background prompt instead of the objects' text, but its own "
    "attention is not routed (ComfyUI gives it no hook): from the second step on, region i follows object j's region "
    "through it ({measured}). For isolation bit for bit, end the ControlNet early (its end_percent) or leave it out."
)
CONTROLNET_MEASURED = "on the random-weight test Flux over 4 steps, 0.1 % of the unpatched model's leak; 29 % when it read the base prompt"


class JointTargetConds(TargetConds):
    """Flux: a ControlNet on the target reads the background prompt (and any tokens appended after the window), and the
    node warns once: the ControlNet's own joint attention is not routed."""

    program_key = PROGRAM_KEY

    def __init__(self, unique_id=None):
        self.unique_id = unique_id

    def active(self, program: JointAttentionProgram, timestep) -> bool:
        return program.regions.active(timestep)

    def object_free(self, program: JointAttentionProgram, context):
        return program.regions.text.background if program.target_rows(context, None) is not None else None

    def found_target(self, program: JointAttentionProgram) -> None:
        if not program.cache.get("controlnet warned"):
            program.cache["controlnet warned"] = True
            show_warnings(JOINT_NODE, [CONTROLNET_WARNING.format(measured=CONTROLNET_MEASURED)], self.unique_id)


def window_warnings(start_percent: float, end_percent: float) -> list[str]:
    """The node's warning when its window leaves steps unrouted."""
    if start_percent <= 0.0 and end_percent >= 1.0:
        return []
    return [f"the routing is off outside {start_percent:.2f}-{end_percent:.2f} of sampling: in those steps every region reads every "
            f"object's text and image ({WINDOW_MEASURED}). Keep 0.00-1.00 for isolation."]


WINDOW_MEASURED = ("on the random-weight test Flux over 4 steps, the first step unrouted brings back 13 % of the unpatched model's "
                   "leak, the last step 57 %")
