"""Prompt encoding through ComfyUI's CLIP object: each side of the edit plan's windows in one batched text-encoder call."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..attention.ore import OreEmbeddings, object_restricted, substitute_spans
from ..attention.plan import EditPlan, EditPlanError, parse_edits
from ..attention.tokens import plan_windows
from .errors import NodeInputError


def encode_plan(clip, edits: str, eos_mode: str, node: str) -> tuple[EditPlan, OreEmbeddings, torch.Tensor]:
    """Parse ``edits``; encode the target base prompt, every object prompt and the empty prompt in ONE batched call."""
    try:
        plan = EditPlan(parse_edits(edits, node))
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    windows, spans, eos_index = plan_token_windows(clip, plan.targets, plan, node, "target")
    cond, pooled = clip.encode_from_tokens(windows, return_pooled=True)
    base, *own, empty = split_windows(cond, windows)
    embeddings = object_restricted(base, torch.stack(own), spans, eos_index, eos_mode, empty)
    plan = replace(plan, target_spans=tuple(spans), target_eos=eos_index, context_dim=cond.shape[-1])
    return plan, embeddings, pooled


def encode_prompt(clip, text: str) -> list:
    """CLIPTextEncode's CONDITIONING for ``text``."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def encode_substituted_source(clip, plan: EditPlan, node: str) -> list:
    """The source branch's CONDITIONING as ALE-Edit builds it: the source base prompt with each object's span replaced
    by that object's own tokens 1..L_i from its solo encoding (``ore.py``, ``get_substituted_base_embeds``), the base
    and the objects in one batched call; the pooled output (SDXL) is the base prompt's.

    ALE-Edit's code reads the solo encoding at the object's positions in the base prompt, which for every object
    but the first are the solo prompt's EOS and padding states; the pack reads its own tokens, as ORE does."""
    windows, spans, _ = plan_token_windows(clip, plan.objects, plan, node, "source")
    windows = {key: parts[:-1] for key, parts in windows.items()}  # the empty prompt is not needed here
    cond, pooled = clip.encode_from_tokens(windows, return_pooled=True)
    base, *own = split_windows(cond, windows)
    return [[substitute_spans(base, torch.stack(own), spans).unsqueeze(0), {"pooled_output": pooled}]]


def encode_source(clip, plan: EditPlan, node: str) -> tuple[list, list[tuple[int, int]], int]:
    """The plain source prompt (objects joined with ' and ') as CONDITIONING, each object's exact token span, the feature width."""
    windows, spans, _ = plan_token_windows(clip, plan.objects, plan, node, "source")
    base = {key: [parts[0]] for key, parts in windows.items()}
    cond, pooled = clip.encode_from_tokens(base, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]], spans, cond.shape[-1]


def plan_token_windows(clip, texts: list[str], plan: EditPlan, node: str, what: str):
    """:func:`plan_windows` with ComfyUI's tokenizer, its errors as the node's."""
    try:
        return plan_windows(clip.tokenize, texts, node, plan.lines, what)
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None


def split_windows(cond: torch.Tensor, windows: dict) -> tuple[torch.Tensor, ...]:
    """The encoded windows ``[T, C]`` of a batched call, in the order they were given."""
    return cond[0].split(len(next(iter(windows.values()))[0]))
