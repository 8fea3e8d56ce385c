"""The region attention program: RGB-CAM (ALE-Edit, ICCV 2025, Sec. 4.2) as one fused attention call.

One program object per patched model lives in ``transformer_options[PROGRAM_KEY]``;
nodes add terms to a copy of it, and two small callables interpret it:

- :class:`ValueSubstitution` (an ``attn2_patch``, sees UNPROJECTED tokens) finds the
  target-conditional rows by content and appends the ORE value sets to the value
  tokens (and, in strict mode, the objects' own key tokens to the context), so the
  layer's own ``to_k``/``to_v`` project them (LoRA, low-VRAM casting and dtype included);
- :class:`RegionCrossAttention` (an ``attn2`` replace, sees PROJECTED tokens) runs
  RGB-CAM on those rows and the plain attention (or the replace another pack had
  installed there) on every other row.

Pure torch; ComfyUI's attention function is passed in as ``program.attention``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from ..masking.ops import region_weights, resize_masks
from .ore import OreEmbeddings

PROGRAM_KEY = "leakfree_edit"
ROWS_KEY = "leakfree_edit_rows"  # per-block hand-over from the attn2_patch to the replace
LATER_KEY = "leakfree_edit_later_replaces"  # {(block, id): replace} other packs put on blocks after the program (see patched_after)
LAYOUT_KEY = "leakfree_edit_layout"  # the dual-branch guider's BranchLayout of the call (self_attention.py)

# fn(q, k, v, heads, extra_options) -> [B, tokens, heads * dim_head]
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, dict], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class SigmaWindow:
    """Every program term's schedule: active while sigma_end <= sigma <= sigma_start (a call without sigmas: always)."""

    sigma_start: float = math.inf
    sigma_end: float = 0.0

    def active(self, sigmas: torch.Tensor | None) -> bool:
        return sigmas is None or self.sigma_end <= float(sigmas.max()) <= self.sigma_start


def layer_size(extra_options: dict) -> tuple[int, int]:
    """The (h, w) of the layer an attention call belongs to: ComfyUI's ``activations_shape`` of its transformer."""
    shape = extra_options["activations_shape"]
    return int(shape[-2]), int(shape[-1])


class CrossAttentionBias(Protocol):
    """A program term adding to RGB-CAM's logit bias, built once per layer size and set of active terms.

    ``bias(masks [N, h, w] binary, cross, dtype)`` returns ``[h*w, K]`` for the
    same key layout as :func:`region_bias` (K = T, or (N+1)T in strict mode).
    """

    def bias(self, masks: torch.Tensor, cross: "CrossAttentionRegions", dtype) -> torch.Tensor: ...

    def active(self, sigmas: torch.Tensor | None) -> bool: ...


class CrossAttentionObserver(Protocol):
    """A program term shown every RGB-CAM call (e.g. to record object attention maps).

    Gets the per-head query [R, heads, HW, d], keys [R, heads, K, d] and bias [I, 1, HW, K]
    of the call, the layer's binary object masks [I, N, h, w] and ``extra_options``; returns nothing.
    """

    def observe(self, query, keys, bias, masks: torch.Tensor, extra_options: dict) -> None: ...


class CrossAttentionCallObserver(Protocol):
    """A program term shown every cross-attention call of a patched block, all rows, before RGB-CAM changes anything
    (e.g. the preview's recorder of the dual branch's source rows, Dynamic Prompt Learning's recorder).

    Gets the per-head query [B, heads, HW, d], the keys of the layer's own context [B, heads, T, d] (the appended
    ORE tokens left out) and ``extra_options``; returns nothing.
    """

    def observe_call(self, query, keys, extra_options: dict) -> None: ...


@dataclass(frozen=True)
class CrossAttentionRegions(SigmaWindow):
    """The RGB-CAM term: ORE values, token spans and object masks.

    ``strict=False`` (ALE): keys from the plain target base prompt, one attention
    map M for every term, A = (M V_sub) m_bg + sum_i (M V_ORE_i) m_i (ALE-Edit Eq. 5),
    object j's tokens biased to -inf outside mask j.
    ``strict=True``: region i attends only to object i's own encoding (keys and
    values), so nothing of object j's text can reach region i; the background
    keeps the base keys and the substituted values.
    """

    embeddings: OreEmbeddings
    spans: tuple[tuple[int, int], ...]
    masks: torch.Tensor  # [I*N, H, W] in [0, 1], any resolution: one set of N for all images, or one per image
    strict: bool = False
    resize: str = "nearest"  # how the masks reach each layer's grid (masking.ops.resize_masks): ALE-Edit's nearest, or area

    @property
    def tokens(self) -> int:
        return self.embeddings.keys.shape[0]

    @property
    def count(self) -> int:
        return len(self.spans)


@dataclass
class RegionAttentionProgram:
    """Everything the patched attention layers need; terms are data, the callables interpret them."""

    attention: AttentionFn
    cross: CrossAttentionRegions | None = None
    cross_biases: tuple = ()  # CrossAttentionBias terms, added to RGB-CAM's token bias
    cross_observers: tuple = ()  # CrossAttentionObserver terms, shown each RGB-CAM call's inputs
    call_observers: tuple = ()  # CrossAttentionCallObserver terms, shown every cross-attention call's query and own keys
    self_biases: tuple = ()  # SelfAttentionBias terms (see self_attention.py)
    structure_lock: object = None  # the dual branch's StructureLock term (see self_attention.py), for one run
    replacement: object = None  # Prompt-to-Prompt's MapReplacement term (see replacement.py)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options: share the immutable terms, start a fresh cache.
        return replace(self, cache={})

    def with_cross(self, cross: CrossAttentionRegions) -> "RegionAttentionProgram":
        return replace(self, cross=cross, cache={})

    def with_self_bias(self, term) -> "RegionAttentionProgram":
        return replace(self, self_biases=self.self_biases + (term,), cache={})

    def with_cross_bias(self, term) -> "RegionAttentionProgram":
        return replace(self, cross_biases=self.cross_biases + (term,), cache={})

    def with_cross_observer(self, term) -> "RegionAttentionProgram":
        return replace(self, cross_observers=self.cross_observers + (term,), cache={})

    def with_call_observer(self, term) -> "RegionAttentionProgram":
        return replace(self, call_observers=self.call_observers + (term,), cache={})

    def with_structure_lock(self, term) -> "RegionAttentionProgram":
        return replace(self, structure_lock=term, cache={})

    def with_replacement(self, term) -> "RegionAttentionProgram":
        return replace(self, replacement=term, cache={})

    def cached(self, key, build):
        """``build()``, computed once per ``key`` for this program (grids, masks and columns per layer size)."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def layer_masks(self, height: int, width: int, device) -> torch.Tensor:
        """The object masks at one layer's grid, binary ``[I, N, h, w]`` (I mask sets), resized once per size."""
        masks = lambda: self.cross.masks.to(device=device, dtype=torch.float32)
        build = lambda: resize_masks(masks(), height, width, self.cross.resize).view(-1, self.cross.count, height, width)
        return self.cached(("masks", height, width, device), build)

    def text_tokens(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(keys [T, C], extra value tokens [(N+1)T, C], extra key tokens [NT, C] or None) on device."""

        def build():
            e = self.cross.embeddings
            objects = e.own if self.cross.strict else e.objects
            values = torch.cat([e.substituted.unsqueeze(0), objects]).flatten(0, 1)
            keys = e.own.flatten(0, 1) if self.cross.strict else None
            move = lambda t: None if t is None else t.to(device=device, dtype=dtype)
            return move(e.keys), move(values), move(keys)

        return self.cached(("tokens", device, dtype), build)

    def grid(self, height: int, width: int, device, dtype, sigmas=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(additive bias [I, 1, HW, K], term of each pixel [I, HW]: 0 background, i+1 object i) for one layer size, built once.

        I is 1 for one mask set shared by the batch, or the batch size for a mask set per image.

        The ``cross_biases`` terms active at ``sigmas`` are added; each set of active terms is built once.
        """

        images = self.layer_masks(height, width, device)  # one mask set per image of the batch

        def build():
            bias = torch.cat([region_bias(m, self.cross.spans, self.cross.tokens, self.cross.strict, dtype) for m in images])
            return bias, torch.stack([region_weights(m).argmax(dim=1) for m in images])

        bias, term = self.cached(("grid", height, width, device, dtype), build)
        active = tuple(i for i, term in enumerate(self.cross_biases) if term.active(sigmas))
        if active:
            extra = lambda m: sum(self.cross_biases[i].bias(m, self.cross, dtype) for i in active)
            terms = lambda: bias + torch.stack([extra(m) for m in images]).unsqueeze(1)
            bias = self.cached(("biased grid", height, width, device, dtype, active), terms)
        return bias, term


def region_bias(masks: torch.Tensor, spans, tokens: int, strict: bool, dtype) -> torch.Tensor:
    """RGB-CAM's token bias: object j's span gets -inf at pixels outside mask j.

    In strict mode the keys are [base | own_1 | ... | own_N] blocks of ``tokens``
    each, and a pixel sees only the block of its region (overlaps go to the base block).
    """
    inside = masks.flatten(1).transpose(0, 1) > 0  # [HW, N]
    blocked = torch.zeros(inside.shape[0], tokens, dtype=torch.bool, device=masks.device)
    for index, (start, end) in enumerate(spans):
        blocked[:, start:end] = ~inside[:, index : index + 1]
    if strict:
        region = region_weights(masks).argmax(dim=1)  # [HW]: 0 background, i+1 object i
        blocks = torch.arange(len(spans) + 1, device=masks.device).repeat_interleave(tokens)
        blocked = torch.cat([blocked, blocked.new_zeros(blocked.shape[0], tokens * len(spans))], dim=1)
        blocked |= blocks.unsqueeze(0) != region.unsqueeze(1)
    bias = torch.zeros(blocked.shape, dtype=dtype, device=masks.device)
    return bias.masked_fill_(blocked, float("-inf"))[None, None]


def target_rows(context: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Indices of batch rows whose context is the target base prompt (lcm-repeated or not)."""
    tokens = keys.shape[0]
    if context.shape[1] % tokens or context.shape[-1] != keys.shape[-1]:
        return torch.empty(0, dtype=torch.long, device=context.device)
    distance = (context[:, :tokens] - keys).abs().flatten(1).amax(dim=1)
    tolerance = 1e-3 * (1.0 + float(keys.abs().max()))
    return torch.nonzero(distance <= tolerance).flatten()


class ValueSubstitution:
    """``attn2_patch``: append the ORE value (and strict key) tokens for the layer to project."""

    def __call__(self, n, context, value, extra_options):
        program: RegionAttentionProgram | None = extra_options.get(PROGRAM_KEY)
        extra_options[ROWS_KEY] = None
        if program is None or program.cross is None or not program.cross.active(extra_options.get("sigmas")):
            return n, context, value
        keys, values, own_keys = program.text_tokens(context.device, context.dtype)
        rows = target_rows(context, keys)
        if rows.numel() == 0:
            return n, context, value
        extra_options[ROWS_KEY] = (_as_slice(rows), context.shape[1])
        batch = context.shape[0]
        value = torch.cat([value, values.unsqueeze(0).expand(batch, -1, -1)], dim=1)
        if own_keys is not None:
            context = torch.cat([context, own_keys.unsqueeze(0).expand(batch, -1, -1)], dim=1)
        return n, context, value


class RegionCrossAttention:
    """``attn2`` replace for one block: RGB-CAM on the target rows, the usual attention elsewhere.

    ``previous`` is the replace another pack had installed on this block: it still runs once on every row, with the
    original keys and values, except that the target rows' text values are zeros. Its attention over the text then
    gives exactly 0 there, and what it adds beyond that attention (IP-Adapter's image attention, comfyui
    IPAdapter_plus CrossAttentionPatch.py: ``out + out_ip``) is added to RGB-CAM exactly: no term depends on another
    object's text, and no subtraction leaves its rounding behind.
    """

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, q, k, v, extra_options):
        program: RegionAttentionProgram | None = extra_options.get(PROGRAM_KEY)
        stash = extra_options.pop(ROWS_KEY, None)
        heads = extra_options["n_heads"]
        plain = program.attention if program is not None else None
        previous = self.previous or patched_after(extra_options)
        if program is not None and program.call_observers:
            query, keys = split_heads(q, heads), split_heads(k if stash is None else k[:, : stash[1]], heads)
            for observer in program.call_observers:
                observer.observe_call(query, keys, extra_options)
        if stash is None:
            replaced = None
            if program is not None and program.replacement is not None:
                replaced = program.replacement.attend(q, k, v, heads, extra_options, extra_options.get(LAYOUT_KEY), program)
            if replaced is None:
                return previous(q, k, v, extra_options) if previous else plain(q, k, v, heads, extra_options)
            if previous is not None:  # keep another pack's (additive) contribution
                replaced = replaced + previous(q, k, v, extra_options) - plain(q, k, v, heads, extra_options)
            return replaced
        rows, context_tokens = stash
        base_k, base_v = k[:, :context_tokens], v[:, :context_tokens]
        region = rgb_cam(q[rows], k[rows], v[rows], context_tokens, heads, program, extra_options)
        if previous is not None:
            values = base_v.clone()
            values[rows] = 0
            out = previous(q, base_k, values, extra_options)
            out[rows] = region + out[rows]
            return out
        if isinstance(rows, slice):  # the usual layout: one contiguous chunk of target rows, no gathers
            before, after = slice(0, rows.start), slice(rows.stop, q.shape[0])
            parts = [plain(q[s], base_k[s], base_v[s], heads, extra_options) if s.stop > s.start else None for s in (before, after)]
            return torch.cat([p for p in (parts[0], region, parts[1]) if p is not None])
        out = region.new_empty((q.shape[0], *region.shape[1:]))
        others = complement(rows, q.shape[0])
        if others.numel():
            out[others] = plain(q[others], base_k[others], base_v[others], heads, extra_options)
        out[rows] = region
        return out


    def add(self, *args, **kwargs):
        """ComfyUI_IPAdapter_plus stacks its patch on a block that already has a replace by calling the replace's ``add``
        (IPAdapterPlus.py, ``set_model_patch_replace``; SDXL's keys are the ones this program uses): refused, with the
        order that works, instead of an AttributeError or a patch that never runs."""
        raise ValueError(
            "Region-Guided Cross-Attention (LeakFree) is already on this model's cross-attention layers, so IP-Adapter cannot "
            "add its patch to them. Apply IP-Adapter first: connect its MODEL output to Region-Guided Cross-Attention's model input."
        )


def patched_after(extra_options: dict):
    """A replace another pack put on this block after the region program, under the block's (block, id) key (SD1.5
    IP-Adapter's): ComfyUI runs the (block, id, index) key first, which is this program's, so it would never run.
    ComfyUI hands the replaces no ``patches_replace``: the sampling wrapper lists them under ``LATER_KEY``."""
    found = extra_options.get(LATER_KEY, {}).get(tuple(extra_options.get("block", ())))
    return None if isinstance(found, RegionCrossAttention) else found


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, tokens, heads * d] -> [B, heads, tokens, d] (a view)."""
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def complement(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """The batch rows not in ``rows``, in order."""
    keep = torch.ones(batch, dtype=torch.bool, device=rows.device)
    keep[rows] = False
    return torch.nonzero(keep).flatten()


def _as_slice(rows: torch.Tensor) -> slice | torch.Tensor:
    """Contiguous row indices as a slice (views instead of copies), others unchanged."""
    first, count = int(rows[0]), rows.numel()
    return slice(first, first + count) if int(rows[-1]) - first + 1 == count else rows


def rgb_cam(q, k, v, context_tokens: int, heads: int, program: RegionAttentionProgram, extra_options) -> torch.Tensor:
    """RGB-CAM for target rows in one ``scaled_dot_product_attention`` call.

    ``q`` [R, HW, heads*d]; ``k``/``v`` hold the context tokens first, then the
    appended ORE tokens. Default mode: values of the N+1 terms are laid side by
    side on the feature axis (SDPA allows a value width other than q/k's), so
    one attention map serves all terms; strict mode: key/value blocks on the
    token axis, each pixel's bias selecting its region's block.
    """
    cross = program.cross
    rows, pixels, inner = q.shape
    dim = inner // heads
    tokens, terms = cross.tokens, cross.count + 1
    height, width = layer_size(extra_options)
    bias, term = program.grid(height, width, q.device, q.dtype, extra_options.get("sigmas"))
    if term.shape[0] not in (1, rows):
        raise ValueError(f"Region-Guided Cross-Attention: masks for {term.shape[0]} images but {rows} target rows in the batch; "
                         "give one mask set, or one per image of the latent batch.")
    split = lambda t: t.view(rows, -1, heads, dim).transpose(1, 2)  # [R, heads, tokens, d]
    query = split(q)
    keys = split(torch.cat([k[:, :tokens], k[:, context_tokens:]], dim=1) if cross.strict else k[:, :tokens])
    for observer in program.cross_observers:
        observer.observe(query, keys, bias, program.layer_masks(height, width, q.device), extra_options)
    if cross.strict:
        out = F.scaled_dot_product_attention(query, keys, split(v[:, context_tokens:]), attn_mask=bias)
    else:
        values = v[:, context_tokens:].view(rows, terms, tokens, heads, dim).permute(0, 3, 2, 1, 4)
        out = F.scaled_dot_product_attention(query, keys, values.reshape(rows, heads, tokens, terms * dim), attn_mask=bias)
        # Binary region weights: the blend of Eq. 5 picks each pixel's own term (an exact selection, no arithmetic).
        pick = term.view(-1, 1, pixels, 1, 1).expand(rows, heads, pixels, 1, dim)
        out = out.view(rows, heads, pixels, terms, dim).gather(3, pick).squeeze(3)
    return out.transpose(1, 2).reshape(rows, pixels, inner)
