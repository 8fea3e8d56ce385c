"""Prompt encoding through ComfyUI's CLIP object: the edit plan's windows in one batched text-encoder call."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..attention.ore import OreEmbeddings, object_restricted
from ..attention.plan import EditPlan, EditPlanError, parse_edits
from ..attention.tokens import plan_windows
from .errors import NodeInputError


def encode_plan(clip, edits: str, eos_mode: str, node: str) -> tuple[EditPlan, OreEmbeddings, torch.Tensor]:
    """Parse ``edits``; encode the target base prompt, every object prompt and the empty prompt in ONE batched call."""
    try:
        plan = EditPlan(parse_edits(edits, node))
        windows, spans, eos_index = plan_windows(clip.tokenize, plan.targets, node)
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    cond, pooled = clip.encode_from_tokens(windows, return_pooled=True)
    length = len(next(iter(windows.values()))[0])
    base, *own, empty = cond[0].split(length)
    embeddings = object_restricted(base, torch.stack(own), spans, eos_index, eos_mode, empty)
    plan = replace(plan, target_spans=tuple(spans), target_eos=eos_index, context_dim=cond.shape[-1])
    return plan, embeddings, pooled


def encode_prompt(clip, text: str) -> list:
    """CLIPTextEncode's CONDITIONING for ``text``."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def encode_source(clip, plan: EditPlan, node: str) -> tuple[list, list[tuple[int, int]], int]:
    """The source prompt (objects joined with ' and ') as CONDITIONING, each object's exact token span, the feature width."""
    try:
        windows, spans, _ = plan_windows(clip.tokenize, plan.objects, node)
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    base = {key: [parts[0]] for key, parts in windows.items()}
    cond, pooled = clip.encode_from_tokens(base, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]], spans, cond.shape[-1]
