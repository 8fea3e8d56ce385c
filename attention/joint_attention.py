"""Region-guided joint attention for MMDiT models (Flux): object isolation when text and image share one attention.

In Flux's double and single blocks the text tokens and the image tokens attend to each other in ONE attention over
``[text | image]`` (comfy/ldm/flux/layers.py, DoubleStreamBlock and SingleStreamBlock; the text tokens carry no
position: ``txt_ids`` are zeros, comfy/ldm/flux/model.py). T5 is bidirectional, so every token of the base prompt
carries every object: isolation cannot come from picking tokens of one encoding (ALE-Edit's EOS fix), only from
routing which token may attend to which. Every token gets a class, 0 for the background and i+1 for object i:

- text: the target rows read a *joint layout* of fixed slots instead of the base prompt: slot i holds the first
  tokens of object i's prompt encoded alone, the last slot the background prompt (never the target prompts). The
  negative rows of CFG read the negative prompt in every slot (each region its own copy). Tokens appended to the text
  after the window (Redux's image tokens from StyleModelApply, a ConditioningConcat) are a *shared* class;
- image: a token's class comes from the object masks on the token grid (:func:`~..masking.token_grid.token_regions`:
  a token two objects claim goes to the one covering more of it; any token appended to the image such as a Kontext
  reference is background).

Query -> key rules (an additive -inf bias on everything else, one fused attention call per block):

- text of class c <-> text of class c, and text of class c <-> image of class c (both directions);
- image of class c -> image of class c and background image (``region`` mode), or every image token (``all``);
- every token -> shared text; shared text -> shared text only (so it carries nothing of any object and every region
  may read it).

So object i's region reads only object i's text, its own tokens and the background; the background reads only the
background prompt and itself. Nothing a token depends on, over any number of blocks, holds object j's text, so the
model's output in region i is unchanged, bit for bit, when object j's prompt changes (j != i), and the background's
is unchanged by every object's prompt. Slots have a fixed size and place, so a changed prompt moves no other token.

The routed rows are computed by the pack's own fused call (:func:`sdpa_attention`, torch SDPA with the bias), never by
the backend ComfyUI was started with: SageAttention's kernel takes ``attn_mask`` into ``**kwargs`` and drops it, flash
kernels refuse masks. Every other row keeps the user's backend.

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
import torch.nn.functional as F

from ..masking.ops import OVERLAP_RULES
from ..masking.token_grid import token_regions
from .plan import EditPlanError
from .region_attention import SigmaWindow, split_heads, target_rows
from .self_attention import LAYOUT_KEY, BranchLayout, StructureLock, lock_queries_and_keys

NODE = "Region-Guided Joint Attention (LeakFree)"
PROGRAM_KEY = "leakfree_edit_joint"  # the program in transformer_options
STRUCTURE_LOCK_KEY = "leakfree_edit_joint_lock"  # the dual branch's StructureLock for one sampling run
SHARED = -1  # the class of text tokens appended after the window: every token may read them, they read only each other
IMAGE_ATTENTION = ("region", "all")
IMAGE_ATTENTION_HELP = {
    "region": "an object's image tokens attend to their own region and the background (isolated over every block).",
    "all": "image tokens attend to every image token (only the text is routed: object j reaches region i through "
           "object j's image tokens from the second block on).",
}
NEGATIVE_ROWS = ("routed", "plain")
NEGATIVE_ROWS_HELP = {
    "routed": "the negative prompt's rows (CFG above 1) are routed too, each region reading its own copy of the negative "
              "prompt: isolation holds at any CFG.",
    "plain": "the negative's rows run as the unpatched model: from the second step region i follows object j's region "
             "through them (a few % of object j's own change).",
}


@dataclass(frozen=True)
class JointText:
    """The text of the target rows: ``[L, C]`` windows of the text encoder's output (L = 256 for Flux's T5)."""

    keys: torch.Tensor  # the target base prompt's encoding: the target rows' context, found by content
    layout: torch.Tensor  # what the target rows read instead: the objects' slots, then the background's
    classes: torch.Tensor  # long [L]: i+1 in object i's slot, 0 in the background's
    background: torch.Tensor  # the background prompt's whole window: what a ControlNet on the target rows reads

    @property
    def tokens(self) -> int:
        return self.keys.shape[0]

    def slot_offsets(self) -> torch.Tensor:
        """long [L]: each position's index inside its own slot (slots are runs of one class)."""
        starts = torch.ones_like(self.classes, dtype=torch.bool)
        starts[1:] = self.classes[1:] != self.classes[:-1]
        first = torch.cummax(torch.where(starts, torch.arange(self.tokens), 0), dim=0).values
        return torch.arange(self.tokens) - first


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
    return JointText(keys=base, layout=layout, classes=classes, background=background)


def joint_bias(text_classes: torch.Tensor, image_classes: torch.Tensor, image_attention: str, dtype) -> torch.Tensor:
    """The additive bias ``[I, 1, T+P, T+P]`` of the rules above, for ``[text | image]`` sequences.

    ``text_classes`` long [T] (``SHARED`` for appended text); ``image_classes`` long [I, P] (one row per mask set).
    """
    if image_attention not in IMAGE_ATTENTION:
        raise ValueError(f"image_attention must be one of {IMAGE_ATTENTION}, got {image_attention!r}")
    text = text_classes.to(image_classes.device).expand(image_classes.shape[0], -1)
    classes = torch.cat([text, image_classes], dim=1)  # [I, L]
    image = torch.cat([torch.zeros_like(text, dtype=torch.bool), torch.ones_like(image_classes, dtype=torch.bool)], dim=1)
    allowed = classes.unsqueeze(2) == classes.unsqueeze(1)
    image_pairs = image.unsqueeze(2) & image.unsqueeze(1)
    allowed |= image_pairs if image_attention == "all" else image_pairs & (classes == 0).unsqueeze(1)
    allowed |= (classes == SHARED).unsqueeze(1)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, float("-inf")).unsqueeze(1)


@dataclass(frozen=True)
class JointRegions(SigmaWindow):
    """The program's term: the joint text, the object masks ``[I*N, H, W]`` (one set, or one per image), the image
    attention mode, the overlap rule on the token grid and what the negative's rows read."""

    text: JointText
    masks: torch.Tensor
    count: int
    image_attention: str = "region"
    overlap: str = "background"
    negative: str = "routed"

    def __post_init__(self):
        for name, options in (("overlap", OVERLAP_RULES), ("negative", NEGATIVE_ROWS)):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")

    @property
    def mask_sets(self) -> int:
        return self.masks.shape[0] // self.count


@dataclass
class JointAttentionProgram:
    """What the patched model needs for its routed rows; grids and biases are built once per size."""

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
        """Rows of ``context`` [B, T, C] whose first L tokens hold the target base prompt (T > L: tokens appended after it,
        e.g. Redux's) while the term is active, else None."""
        if not self.regions.active(sigmas) or context.shape[1] < self.regions.text.tokens:
            return None
        rows = target_rows(context[:, : self.regions.text.tokens], self.text_tokens(context.device, context.dtype)[0])
        return rows if rows.numel() else None

    def own_slots(self, window: torch.Tensor) -> torch.Tensor:
        """``window`` [R, L, C] (a negative prompt's first L tokens) laid out in every slot, as the joint layout lays out
        the objects: slot i holds its first tokens (each region reads its own copy)."""
        offsets = self.cached(("offsets",), self.regions.text.slot_offsets).to(window.device)
        return window[:, offsets]

    def bias(self, latent_height: int, latent_width: int, patch: int, text_tokens: int, tokens: int, device, dtype,
             images: tuple[int, ...] = ()) -> torch.Tensor | None:
        """The bias for a sequence of ``tokens`` = ``text_tokens`` (the window, then shared tokens) + the image grid
        (+ appended image tokens, background), or None if it does not fit: ``[1, 1, T, T]`` for one mask set, else one
        per routed row, ``images`` giving each row's mask set."""
        regions = self.regions
        rows, columns = -(-latent_height // patch), -(-latent_width // patch)
        extra = tokens - text_tokens - rows * columns
        if extra < 0 or text_tokens < regions.text.tokens:
            return None

        def build():
            image = token_regions(regions.masks.to(device), regions.count, latent_height, latent_width, patch, regions.overlap)
            image = torch.cat([image, image.new_zeros(image.shape[0], extra)], dim=1)  # appended image tokens: background
            appended = torch.full((text_tokens - regions.text.tokens,), SHARED, dtype=torch.long)
            return joint_bias(torch.cat([regions.text.classes, appended]), image, regions.image_attention, dtype)

        key = ("bias", latent_height, latent_width, patch, text_tokens, tokens, device, dtype)
        bias = self.cached(key, build)
        if bias.shape[0] == 1:
            return bias
        return self.cached((*key, images), lambda: bias[torch.tensor(images, device=bias.device)])


def locked_layout(transformer_options: dict) -> BranchLayout | None:
    """The branch layout of a model call while the dual branch's structure lock is on for it, else None."""
    lock: StructureLock | None = transformer_options.get(STRUCTURE_LOCK_KEY)
    layout: BranchLayout | None = transformer_options.get(LAYOUT_KEY)
    if lock is None or layout is None or not layout.target.numel() or not lock.active(transformer_options.get("sigmas")):
        return None
    return layout


def sdpa_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False, **kwargs):
    """The routed rows' attention: one torch SDPA call with the additive ``mask``, in the signature of ComfyUI's attention
    functions (comfy/ldm/modules/attention.py, ``attention_pytorch``), so another pack's override can take it as its
    ``func``. ``[B, tokens, heads * dim]`` in and out, or ``[B, heads, tokens, dim]`` in with ``skip_reshape``."""
    if not skip_reshape:
        q, k, v = (split_heads(t, heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(q.dtype))
    return out if skip_output_reshape else out.transpose(1, 2).flatten(2)


class RoutingBypassed(RuntimeError):
    """Another pack's override answered a routed call without calling the attention it was handed."""

    def __init__(self, override):
        super().__init__(f"the attention override {type(override).__name__} did not call the routed attention")
        self.override = override


class JointAttention:
    """``optimized_attention_override`` for one model call: the structure lock on the image tokens of the ``lock``
    layout's target rows (text first: ``text_tokens`` of every sequence are text), then the routing bias on the
    routed ``rows``, plain attention elsewhere.

    The routed rows go through :func:`sdpa_attention`, the other rows through the function ComfyUI hands the override
    (the user's backend). ``bias_for(tokens, device, dtype)`` gives the routed rows' bias, one per routed row or one for all.
    ``previous`` is the override another pack had set: it still receives every call (with the locked queries and keys;
    on the routed rows with the bias added to the mask and :func:`sdpa_attention` as its function, which it must call:
    :class:`RoutingBypassed` otherwise). Other rows get exactly the call the unpatched model makes, on their own slice
    of the batch.
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
        region = self._routed(q[rows], k[rows], v[rows], heads, mask=target_mask, **kwargs)
        if others is None:
            return region
        out = region.new_empty((batch, *region.shape[1:]))
        out[rows] = region
        out[others] = attend(q[others], k[others], v[others], heads, mask=own(others), **kwargs)
        return out

    def _routed(self, *args, **kwargs):
        if self.previous is None:
            return sdpa_attention(*args, **kwargs)
        called = []
        out = self.previous(lambda *a, **k: called.append(True) or sdpa_attention(*a, **k), *args, **kwargs)
        if not called:
            raise RoutingBypassed(self.previous)
        return out


def _batched_mask(mask, dtype):
    """An attention mask as ComfyUI's attention functions read it, ``[B or 1, heads or 1, Q, K]``, additive."""
    if mask is None:
        return None
    mask = {2: lambda: mask[None, None], 3: lambda: mask[:, None]}.get(mask.ndim, lambda: mask)()
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else mask


def _as_index(rows: torch.Tensor, batch: int):
    """(routed rows, other rows or None), each a slice when contiguous (views, not copies)."""
    keep = torch.ones(batch, dtype=torch.bool)
    keep[rows.cpu()] = False
    others = torch.nonzero(keep).flatten()
    as_slice = lambda index: slice(int(index[0]), int(index[-1]) + 1) if int(index[-1]) - int(index[0]) + 1 == index.numel() else index
    return as_slice(rows.cpu()), (as_slice(others) if others.numel() else None)
