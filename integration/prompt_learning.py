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
from ..attention.prompt_learning import SourcePrompt
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


def encode_windows(clip, windows: dict) -> torch.Tensor:
    """What ``CLIP.encode_from_tokens`` does (clip skip included), without loading the model: the caller loads it."""
    clip.cond_stage_model.reset_clip_options()
    if clip.layer_idx is not None:
        clip.cond_stage_model.set_clip_options({"layer": clip.layer_idx})
    return clip.cond_stage_model.encode_token_weights(windows)[0]


def saved_copies():
    """Autograd keeps copies of the tensors it saves: ComfyUI's CLIP layers add their residuals in place
    (``x += self.self_attn(self.layer_norm1(x))``), which would change what the layer norm saved for its backward."""
    return torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor.clone(), lambda tensor: tensor)


class LearnedSourcePrompt:
    """The plan's substituted source prompt (as Object-Restricted Encode's 'source' output) with each object's word
    tokens as learnable rows, shared by the base window and the object's own window."""

    def __init__(self, clip, plan: EditPlan, nouns: str, node: str):
        self.clip, self.node = clip, node
        windows, self.spans, _ = plan_token_windows(clip, plan.objects, plan, node, "source")
        self.windows = {key: parts[:-1] for key, parts in windows.items()}  # base, object 1..N (no empty prompt)
        end_token = next(iter(windows.values()))[-1][1][0]
        self.offsets = word_offsets(clip, plan, chosen_words(plan, nouns, node), node, end_token)
        self.slots = [(key, index) for key in self.windows for index in range(len(plan))]
        self.lent = False
        clip.load_model()
        table = {key: text_encoder(clip, key, node).transformer.get_input_embeddings().weight for key in self.windows}
        self.initial = tuple(table[key][[self.windows[key][index + 1][1 + o][0] for o in self.offsets[index]]].detach().float().clone()
                             for key, index in self.slots)
        self.reference = encode_substituted_source(clip, plan, node)[0][0][0]

    @property
    def tokens(self) -> tuple[tuple[int, ...], ...]:
        """Each object's learned positions in the base window."""
        return tuple(tuple(start + o for o in offsets) for (start, _), offsets in zip(self.spans, self.offsets))

    def encode(self, rows) -> torch.Tensor:
        """``[1, T, C]``: the substituted source encoding with ``rows`` (one tensor per (key, object)) in the word slots."""
        windows = {key: [list(window) for window in parts] for key, parts in self.windows.items()}
        for (key, index), values in zip(self.slots, rows):
            (start, _), base, own = self.spans[index], windows[key][0], windows[key][index + 1]
            for value, offset in zip(values, self.offsets[index]):
                base[start + offset] = (value, *base[start + offset][1:])
                own[1 + offset] = (value, *own[1 + offset][1:])
        if not self.lent:
            self.clip.load_model()
        with saved_copies() if torch.is_grad_enabled() else contextlib.nullcontext():
            cond = encode_windows(self.clip, windows)
        base, *own = split_windows(cond, self.windows)
        return substitute_spans(base, torch.stack(own), self.spans).unsqueeze(0)

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
        return SourcePrompt(encode=self.encode, initial=self.initial, reference=self.reference, tokens=self.tokens)


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
