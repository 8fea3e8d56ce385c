"""Prompt encoding through ComfyUI's CLIP object: each side of the edit plan's windows in one batched text-encoder call."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..attention.ore import OreEmbeddings, object_restricted, substitute_spans
from ..attention.plan import EditPlan, EditPlanError, parse_edits
from ..attention.tokens import first_occurrences, plan_windows
from .errors import NodeInputError


def encode_plan(clip, edits: str, eos_mode: str, node: str, substitution: str = "pack") -> tuple[EditPlan, OreEmbeddings, torch.Tensor]:
    """Parse ``edits``; encode the target base prompt, every object prompt and the empty prompt in ONE batched call."""
    try:
        plan = EditPlan(parse_edits(edits, node))
    except EditPlanError as error:
        raise NodeInputError(str(error)) from None
    windows, spans, eos_index = plan_token_windows(clip, plan.targets, plan, node, "target")
    cond, pooled = clip.encode_from_tokens(windows, return_pooled=True)
    base, *own, empty = split_windows(cond, windows)
    embeddings = object_restricted(base, torch.stack(own), spans, eos_index, eos_mode, empty,
                                   substitution, substitution_spans(windows, spans, substitution))
    plan = replace(plan, target_spans=tuple(spans), target_eos=eos_index, context_dim=cond.shape[-1])
    return plan, embeddings, pooled


def encode_prompt(clip, text: str) -> list:
    """CLIPTextEncode's CONDITIONING for ``text``."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def substitution_spans(windows: dict, spans: list[tuple[int, int]], substitution: str) -> list[tuple[int, int]]:
    """Where each object's span is substituted: its exact span (``pack``), or where ALE-Edit's code finds it (``ale_code``)."""
    return spans if substitution == "pack" else first_occurrences(next(iter(windows.values()))[0], spans)


def encode_substituted_source(clip, plan: EditPlan, node: str, substitution: str = "pack") -> list:
    """The source branch's CONDITIONING as ALE-Edit builds it: the source base prompt with each object's span replaced
    from its solo encoding (``ore.py``, ``get_substituted_base_embeds``), the base and the objects in one batched call;
    the pooled output (SDXL) is the base prompt's.

    ``pack``: each object's own tokens 1..L_i, as ORE does. ``ale_code``: ALE-Edit's code, which reads the solo encoding
    at the object's positions in the base prompt: for every object but the first, the solo prompt's EOS and padding
    states (:func:`attention.ore.substitute_spans`)."""
    windows, spans, _ = plan_token_windows(clip, plan.objects, plan, node, "source")
    windows = {key: parts[:-1] for key, parts in windows.items()}  # the empty prompt is not needed here
    cond, pooled = clip.encode_from_tokens(windows, return_pooled=True)
    base, *own = split_windows(cond, windows)
    substituted = substitute_spans(base, torch.stack(own), substitution_spans(windows, spans, substitution), substitution)
    return [[substituted.unsqueeze(0), {"pooled_output": pooled}]]


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
