"""Region-guided joint attention for MMDiT models (Flux): object isolation when text and image share one attention.

In Flux's double and single blocks the text tokens and the image tokens attend to each other in ONE attention over
``[text | image]`` (comfy/ldm/flux/layers.py, DoubleStreamBlock and SingleStreamBlock; the text tokens carry no
position: ``txt_ids`` are zeros, comfy/ldm/flux/model.py). T5 is bidirectional, so every token of the base prompt
carries every object: isolation cannot come from picking tokens of one encoding (ALE-Edit's EOS fix), only from
routing which token may attend to which. Every token gets a class, 0 for the background and i+1 for object i:

- text: the target rows read a *joint layout* of fixed slots instead of the base prompt: slot i holds the first
  tokens of object i's prompt encoded alone, the last slot the background prompt (never the target prompts);
- image: a token's class comes from the object masks on the token grid (a token claimed by two objects, and any
  token appended to the image such as a Kontext reference, is background).

Query -> key rules (an additive -inf bias on everything else, one fused attention call per block):

- text of class c <-> text of class c, and text of class c <-> image of class c (both directions);
- image of class c -> image of class c and background image (``region`` mode), or every image token (``all``).

So object i's region reads only object i's text, its own tokens and the background; the background reads only the
background prompt and itself. Nothing a token depends on, over any number of blocks, holds object j's text, so the
model's output in region i is unchanged, bit for bit, when object j's prompt changes (j != i), and the background's
is unchanged by every object's prompt. Slots have a fixed size and place, so a changed prompt moves no other token.

The dual branch's structure lock (Dual-Branch Edit Guider for Flux) rides on the same override: while it is on, each
target row's image tokens attend with their source row's queries and keys (after RoPE; both rows share the positions)
and keep their own values, before the routing bias is applied. The text tokens keep their own queries and keys, so
routing still decides which text an image token reads.

Pure torch; ComfyUI's attention function and any other pack's override arrive as arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import torch

from ..masking.token_grid import token_regions
from .plan import EditPlanError
from .region_attention import SigmaWindow, target_rows
from .self_attention import LAYOUT_KEY, BranchLayout, StructureLock, lock_queries_and_keys

NODE = "Region-Guided Joint Attention (LeakFree)"
PROGRAM_KEY = "leakfree_edit_joint"  # the program in transformer_options
STRUCTURE_LOCK_KEY = "leakfree_edit_joint_lock"  # the dual branch's StructureLock for one sampling run
IMAGE_ATTENTION = ("region", "all")
IMAGE_ATTENTION_HELP = {
    "region": "an object's image tokens attend to their own region and the background (isolated over every block).",
    "all": "image tokens attend to every image token (only the text is routed: object j reaches region i through "
           "object j's image tokens from the second block on).",
}


@dataclass(frozen=True)
class JointText:
    """The text of the target rows: ``[L, C]`` windows of the text encoder's output (L = 256 for Flux's T5)."""

    keys: torch.Tensor  # the target base prompt's encoding: the target rows' context, found by content
    layout: torch.Tensor  # what the target rows read instead: the objects' slots, then the background's
    classes: torch.Tensor  # long [L]: i+1 in object i's slot, 0 in the background's

    @property
    def tokens(self) -> int:
        return self.keys.shape[0]


def slot_tokens(length: int, count: int) -> int:
    """Tokens of one object's slot: an equal share of the window for every object and the background."""
    return length // (count + 1)


def joint_text(base, own, own_lengths, background, background_length, targets, node) -> JointText:
    """The joint layout: object i's own encoding (its first ``slot_tokens`` tokens, padding included) in slot i,
    the background prompt's encoding in the rest of the window.

    ``base`` [L, C] the target base prompt, ``own`` [N, L, C] each target prompt encoded alone, ``background``
    [L, C]; ``own_lengths`` / ``background_length``: tokens up to and including each end token.
    """
    length, count = base.shape[0], own.shape[0]
    slot = slot_tokens(length, count)
    rest = length - count * slot
    for target, used in zip(targets, own_lengths):
        if used > slot:
            raise EditPlanError(
                f"{node}: the target prompt {target!r} is {used} tokens with its end token; with {count} objects each gets "
                f"{slot} of the {length}-token window. Shorten it or edit fewer objects at once."
            )
    if background_length > rest:
        raise EditPlanError(f"{node}: the background prompt is {background_length} tokens; with {count} objects {rest} are left for it. Shorten it.")
    layout = torch.cat([own[:, :slot].flatten(0, 1), background[:rest]])
    classes = torch.cat([torch.arange(1, count + 1).repeat_interleave(slot), torch.zeros(rest, dtype=torch.long)])
    return JointText(keys=base, layout=layout, classes=classes)


def joint_bias(text_classes: torch.Tensor, image_classes: torch.Tensor, image_attention: str, dtype) -> torch.Tensor:
    """The additive bias ``[I, 1, T+P, T+P]`` of the rules above, for ``[text | image]`` sequences.

    ``text_classes`` long [T]; ``image_classes`` long [I, P] (one row per mask set).
    """
    if image_attention not in IMAGE_ATTENTION:
        raise ValueError(f"image_attention must be one of {IMAGE_ATTENTION}, got {image_attention!r}")
    text = text_classes.to(image_classes.device).expand(image_classes.shape[0], -1)
    classes = torch.cat([text, image_classes], dim=1)  # [I, L]
    image = torch.cat([torch.zeros_like(text, dtype=torch.bool), torch.ones_like(image_classes, dtype=torch.bool)], dim=1)
    allowed = classes.unsqueeze(2) == classes.unsqueeze(1)
    image_pairs = image.unsqueeze(2) & image.unsqueeze(1)
    allowed |= image_pairs if image_attention == "all" else image_pairs & (classes == 0).unsqueeze(1)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, float("-inf")).unsqueeze(1)


@dataclass(frozen=True)
class JointRegions(SigmaWindow):
    """The program's term: the joint text, the object masks ``[I*N, H, W]`` (one set, or one per image) and the mode."""

    text: JointText
    masks: torch.Tensor
    count: int
    image_attention: str = "region"

    @property
    def mask_sets(self) -> int:
        return self.masks.shape[0] // self.count


@dataclass
class JointAttentionProgram:
    """What the patched model needs for its target rows; grids and biases are built once per size."""

    regions: JointRegions
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options: share the immutable term, start a fresh cache.
        return replace(self, cache={})

    def cached(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def text_tokens(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(base prompt keys, joint layout), each ``[L, C]`` on ``device``."""
        text = self.regions.text
        return self.cached(("text", device, dtype), lambda: (text.keys.to(device, dtype), text.layout.to(device, dtype)))

    def target_rows(self, context: torch.Tensor, sigmas) -> torch.Tensor | None:
        """Rows of ``context`` [B, L, C] that hold the target base prompt while the term is active, else None."""
        if not self.regions.active(sigmas) or context.shape[1] != self.regions.text.tokens:
            return None
        rows = target_rows(context, self.text_tokens(context.device, context.dtype)[0])
        return rows if rows.numel() else None

    def bias(self, latent_height: int, latent_width: int, patch: int, tokens: int, device, dtype) -> torch.Tensor | None:
        """The bias for a sequence of ``tokens`` = text + image grid (+ appended image tokens), or None if it does not fit."""
        regions = self.regions
        rows, columns = -(-latent_height // patch), -(-latent_width // patch)
        extra = tokens - regions.text.tokens - rows * columns
        if extra < 0:
            return None

        def build():
            image = token_regions(regions.masks.to(device), regions.count, latent_height, latent_width, patch)
            image = torch.cat([image, image.new_zeros(image.shape[0], extra)], dim=1)  # appended tokens: background
            return joint_bias(regions.text.classes, image, regions.image_attention, dtype)

        return self.cached(("bias", latent_height, latent_width, patch, tokens, device, dtype), build)


def locked_layout(transformer_options: dict) -> BranchLayout | None:
    """The branch layout of a model call while the dual branch's structure lock is on for it, else None."""
    lock: StructureLock | None = transformer_options.get(STRUCTURE_LOCK_KEY)
    layout: BranchLayout | None = transformer_options.get(LAYOUT_KEY)
    if lock is None or layout is None or not layout.target.numel() or not lock.active(transformer_options.get("sigmas")):
        return None
    return layout


class JointAttention:
    """``optimized_attention_override`` for one model call: the structure lock on the image tokens of the ``lock``
    layout's target rows (text first: ``text_tokens`` of every sequence are text), then the routing bias on the
    target ``rows``, plain attention elsewhere.

    ``previous`` is the override another pack had set: it still receives every call (with the locked queries and keys,
    and the bias added to the target rows' mask). Other rows get exactly the call the unpatched model makes, on their
    own slice of the batch.
    """

    def __init__(self, batch: int, rows: torch.Tensor | None = None, bias_for=None, lock: BranchLayout | None = None,
                 text_tokens: int = 0, previous=None):
        self.rows, self.others = _as_index(rows, batch) if rows is not None else (None, None)
        self.bias_for, self.lock, self.text_tokens, self.previous = bias_for, lock, text_tokens, previous

    def __call__(self, func, q, k, v, heads, mask=None, **kwargs):
        attend = func if self.previous is None else partial(self.previous, func)
        if self.lock is not None:  # q, k: [B, heads, tokens, dim]
            q, k = lock_queries_and_keys(q, k, self.lock, tokens=(slice(None), slice(self.text_tokens, None)))
        bias = None if self.rows is None else self.bias_for(q.shape[2], q.device, q.dtype)
        if bias is None:
            return attend(q, k, v, heads, mask=mask, **kwargs)
        batch, rows, others = q.shape[0], self.rows, self.others
        mask = _batched_mask(mask, q.dtype)
        own = lambda index: None if mask is None else (mask[index] if mask.shape[0] == batch else mask)
        target_mask = bias if mask is None else bias + own(rows)
        region = attend(q[rows], k[rows], v[rows], heads, mask=target_mask, **kwargs)
        if others is None:
            return region
        out = region.new_empty((batch, *region.shape[1:]))
        out[rows] = region
        out[others] = attend(q[others], k[others], v[others], heads, mask=own(others), **kwargs)
        return out


def _batched_mask(mask, dtype):
    """An attention mask as ComfyUI's attention functions read it, ``[B or 1, heads or 1, Q, K]``, additive."""
    if mask is None:
        return None
    mask = {2: lambda: mask[None, None], 3: lambda: mask[:, None]}.get(mask.ndim, lambda: mask)()
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else mask


def _as_index(rows: torch.Tensor, batch: int):
    """(target rows, other rows or None), each a slice when contiguous (views, not copies)."""
    keep = torch.ones(batch, dtype=torch.bool)
    keep[rows.cpu()] = False
    others = torch.nonzero(keep).flatten()
    as_slice = lambda index: slice(int(index[0]), int(index[-1]) + 1) if int(index[-1]) - int(index[0]) + 1 == index.numel() else index
    return as_slice(rows.cpu()), (as_slice(others) if others.numel() else None)
