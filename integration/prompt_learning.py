"""Dynamic Prompt Learning's ComfyUI side: the source prompt's token windows with learned rows in them, the
text encoder run on them (ComfyUI's own textual-inversion path: a tensor in a token window replaces that
token's row of the embedding table), the weights lent for gradients, the clustered background mask and the
cache key.
"""
from __future__ import annotations

import contextlib
import hashlib

import torch

import comfy.utils

from ..attention.anchoring import differentiable_weights
from ..attention.ore import substitute_spans
from ..attention.plan import EditPlan
from ..attention.prompt_learning import SharedTarget, SourcePrompt
from ..attention.replacement import WordAlignment, align_windows
from ..attention.tokens import inner_tokens
from ..attention.clustering import clustered_background
from ..attention.localisation import AttentionCapture
from ..masking.ops import downsampled_grid
from .capture import capture_attention
from .encoding import encode_source, encode_substituted_source, plan_token_windows, split_windows
from .errors import NodeInputError

CAPTURE_TIMESTEPS, CAPTURE_SEED = 3, 0  # the clustering's capture run (DPL averages its DDIM inversion's 50 steps)


def chosen_words(plan: EditPlan, nouns: str, node: str) -> list[str]:
    """The word of each source object whose tokens are learned: one per line or comma of ``nouns``, or each object's last word."""
    named = [word.strip() for line in nouns.splitlines() for word in line.split(",") if word.strip()]
    if not named:
        return [source.split()[-1] for source in plan.objects]
    if len(named) != len(plan):
        raise NodeInputError(
            f"{node}: nouns names {len(named)} words for {len(plan)} objects ({', '.join(plan.objects)}). Name one word of "
            "each source object, in edit order, or leave nouns empty to learn each object's last word.")
    return named


def word_offsets(clip, plan: EditPlan, words: list[str], node: str, end_token: int) -> list[tuple[int, ...]]:
    """For each object, the offsets of its word's tokens among the object's own tokens (the last occurrence)."""
    key = next(iter(clip.tokenize("")))
    offsets = []
    for index, (source, word) in enumerate(zip(plan.objects, words)):
        tokens = [t[0] for t in inner_tokens(clip.tokenize(source)[key][0], end_token)]
        piece = [t[0] for t in inner_tokens(clip.tokenize(word)[key][0], end_token)]
        starts = [s for s in range(len(tokens) - len(piece) + 1) if piece and tokens[s : s + len(piece)] == piece]
        if not starts:
            raise NodeInputError(
                f"{node}: '{word}' is not a word of object {index + 1} ('{source}', line {plan.lines[index]}), so its token is not in "
                "the source prompt. Name a word of that object in nouns (one per object, in edit order), or leave nouns empty.")
        offsets.append(tuple(range(starts[-1], starts[-1] + len(piece))))
    return offsets


def text_encoder(clip, key: str, node: str):
    """The SDClipModel of one token-window key ("l", "g") of ComfyUI's CLIP."""
    model = clip.cond_stage_model
    encoder = getattr(model, f"clip_{key}", None) or getattr(model, getattr(model, "clip", ""), None)
    if encoder is None or not hasattr(encoder, "transformer"):
        raise NodeInputError(f"{node}: the text encoder '{key}' of this CLIP has no token embedding table to learn rows of. "
                             "Use the CLIP of an SD1.5 or SDXL checkpoint (the one that encoded the edit).")
    return encoder


def encode_windows(clip, windows: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(cond, pooled) as ``CLIP.encode_from_tokens`` gives them (clip skip included; pooled: the first window's), without
    loading the model: the caller loads it."""
    clip.cond_stage_model.reset_clip_options()
    if clip.layer_idx is not None:
        clip.cond_stage_model.set_clip_options({"layer": clip.layer_idx})
    cond, pooled = clip.cond_stage_model.encode_token_weights(windows)[:2]
    return cond, pooled


def saved_copies():
    """Autograd keeps copies of the tensors it saves: ComfyUI's CLIP layers add their residuals in place
    (``x += self.self_attn(self.layer_norm1(x))``), which would change what the layer norm saved for its backward."""
    return torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor.clone(), lambda tensor: tensor)


class WindowsWithRows:
    """One side's token windows (``{key: [base, object 1..N, ...]}``) with the learned rows written into them: ``places[i]``
    lists, for the rows of slot i (a (key, object) pair), the (window, position, row) each value goes to."""

    def __init__(self, clip, windows: dict, slots, places):
        self.clip, self.windows, self.slots, self.places = clip, windows, slots, places
        self.lent = False

    def encoded(self, rows) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        """Each window's encoding ``[T, C]`` and the pooled output of the base window, with ``rows`` in their places."""
        windows = {key: [list(window) for window in parts] for key, parts in self.windows.items()}
        for (key, _), values, places in zip(self.slots, rows, self.places):
            for window, position, row in places:
                entry = windows[key][window][position]
                windows[key][window][position] = (values[row], *entry[1:])
        if not self.lent:
            self.clip.load_model()
        with saved_copies() if torch.is_grad_enabled() else contextlib.nullcontext():
            cond, pooled = encode_windows(self.clip, windows)
        return split_windows(cond, self.windows), pooled


class LearnedSourcePrompt(WindowsWithRows):
    """The plan's substituted source prompt (as Object-Restricted Encode's 'source' output) with each object's word
    tokens as learnable rows, shared by the base window and the object's own window."""

    def __init__(self, clip, plan: EditPlan, nouns: str, node: str):
        self.node = node
        windows, self.spans, _ = plan_token_windows(clip, plan.objects, plan, node, "source")
        end_token = next(iter(windows.values()))[-1][1][0]  # the empty prompt's second token
        windows = {key: parts[:-1] for key, parts in windows.items()}  # base, object 1..N (no empty prompt)
        self.offsets = word_offsets(clip, plan, chosen_words(plan, nouns, node), node, end_token)
        slots = [(key, index) for key in windows for index in range(len(plan))]
        places = [[(window, position, row) for row, offset in enumerate(self.offsets[index])
                   for window, position in ((0, self.spans[index][0] + offset), (index + 1, 1 + offset))] for _, index in slots]
        super().__init__(clip, windows, slots, places)
        clip.load_model()
        table = {key: text_encoder(clip, key, node).transformer.get_input_embeddings().weight for key in windows}
        self.initial = tuple(table[key][[windows[key][index + 1][1 + o][0] for o in self.offsets[index]]].detach().float().clone()
                             for key, index in slots)
        reference = encode_substituted_source(clip, plan, node)[0]
        self.reference, self.reference_pooled = reference[0][0], reference[1]["pooled_output"]

    @property
    def tokens(self) -> tuple[tuple[int, ...], ...]:
        """Each object's learned positions in the base window."""
        return tuple(tuple(start + o for o in offsets) for (start, _), offsets in zip(self.spans, self.offsets))

    def encode(self, rows) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(``[1, T, C]`` the substituted source encoding with ``rows`` (one tensor per (key, object)) in the word slots,
        the pooled output of its base window)."""
        (base, *own), pooled = self.encoded(rows)
        return substitute_spans(base, torch.stack(own), self.spans).unsqueeze(0), pooled

    @contextlib.contextmanager
    def lend(self, model):
        """For one step of learning: the text encoder loaded, its weights and ``model``'s differentiable (neither gets gradients)."""
        self.clip.load_model()
        self.lent = True
        try:
            with differentiable_weights(self.clip.cond_stage_model), differentiable_weights(model):
                yield
        finally:
            self.lent = False

    def source_prompt(self) -> SourcePrompt:
        return SourcePrompt(encode=self.encode, initial=self.initial, reference=self.reference, tokens=self.tokens,
                            reference_pooled=self.reference_pooled)


class SharedTargetPrompt(WindowsWithRows):
    """The plan's target windows (base, object 1..N, empty prompt) with the learned rows wherever a target keeps the
    learned source word (DPL's edit prompt holds the same placeholder token as its source prompt)."""

    def __init__(self, source: LearnedSourcePrompt, plan: EditPlan, kept, node: str):
        windows, spans, self.eos = plan_token_windows(source.clip, plan.targets, plan, node, "target")
        self.spans = spans
        targets_of = {}  # source position -> the target positions that keep its token
        for s, t in kept:
            targets_of.setdefault(s, []).append(t)
        places = [[(window, position, row) for row, s in enumerate(source.tokens[index]) for t in targets_of.get(s, ())
                   for window, position in ((0, t), (index + 1, 1 + t - spans[index][0]))] for _, index in source.slots]
        self.shares = any(places)
        super().__init__(source.clip, windows, source.slots, places)
        with torch.no_grad():
            base, pooled = self.encode(source.initial)[::3]
        self.reference, self.reference_pooled = base, pooled

    def encode(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(base ``[T, C]``, object windows ``[N, T, C]``, empty prompt ``[T, C]``, the base's pooled output) with ``rows``."""
        (base, *own, empty), pooled = self.encoded(rows)
        return base, torch.stack(own), empty, pooled

    def target_prompt(self) -> SharedTarget:
        return SharedTarget(encode=self.encode, reference=self.reference, reference_pooled=self.reference_pooled,
                            spans=tuple(self.spans), eos=self.eos)


def word_alignment(clip, plan: EditPlan, node: str) -> WordAlignment:
    """The :class:`WordAlignment` of the plan's source and target base windows (token ids of the first text encoder)."""
    source, source_spans, source_eos = plan_token_windows(clip, plan.objects, plan, node, "source")
    target, target_spans, target_eos = plan_token_windows(clip, plan.targets, plan, node, "target")
    key = next(iter(source))
    ids = lambda window: [entry[0] for entry in window]
    return align_windows(ids(source[key][0]), ids(target[key][0]), source_spans, target_spans, source_eos, target_eos)


def clustered_background_mask(model, clip, plan: EditPlan, latent: torch.Tensor, factor: int, clusters: int,
                              threshold: float, node: str) -> torch.Tensor:
    """DPL's background ``[1, h, w]`` from the model's self-attention on the noised source (Masks from Attention's capture
    run), clustered at the level above the loss grid (DPL: 32x32 for its 16x16 losses)."""
    positive, spans, _ = encode_source(clip, plan, node)
    self_factor = max(1, factor // 2)
    capture = AttentionCapture(spans, factors=(self_factor, factor))
    capture_attention(model, positive, latent[:1], capture, CAPTURE_TIMESTEPS, CAPTURE_SEED)
    latent_hw = tuple(latent.shape[-2:])
    try:
        background = clustered_background(capture, downsampled_grid(latent_hw, self_factor), downsampled_grid(latent_hw, factor),
                                          clusters, threshold)
    except ValueError as error:
        raise NodeInputError(f"{node}: {error}; this model has no attention layers there. Choose another attention_grid, or "
                             "connect object_masks for the background term.") from None
    return background.unsqueeze(0)


def progress_bar(total: int):
    return comfy.utils.ProgressBar(total)


def digest(*tensors) -> str:
    hashed = hashlib.sha256()
    for tensor in tensors:
        if tensor is not None:
            hashed.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return hashed.hexdigest()


def model_identity(model) -> tuple:
    """The loaded weights a ModelPatcher stands for: its diffusion model and its weight patches (LoRAs)."""
    return id(model.model), str(model.patches_uuid)
