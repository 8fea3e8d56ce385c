"""Object-Restricted Embeddings (ALE-Edit, ICCV 2025, Sec. 4.1) from text-encoder windows.

Given the encoding of the base prompt (objects joined with " and ") and the
encoding of every object prompt alone, build:

- the substituted base: each object's span in the base encoding replaced by
  that object's own token embeddings (its positions 1..L_i);
- ORE_i: the substituted base with every token between BOS and the base EOS
  zeroed, object i's own tokens written back into its span, and from the base
  EOS onward object i's own EOS-and-padding embeddings, so the EOS carries only
  object i's meaning.

Pure torch; windows are ``[T, C]`` tensors (T = 77 for CLIP).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SUBSTITUTIONS = ("pack", "ale_code")
SUBSTITUTION_HELP = {
    "pack": "each object's own tokens 1..L_i from its solo encoding, written into its span (as ORE does).",
    "ale_code": "as ALE-Edit's code: the solo encoding read at the positions of the object's first occurrence in the base prompt "
                "(for every object after the first: the solo prompt's EOS and padding states). For reproducing its figures.",
}
EOS_MODES = ("object", "naive", "zero", "bos", "empty")
EOS_MODE_HELP = {
    "object": "ALE-Edit: from the base EOS on, object i's own EOS and padding (its EOS carries only object i).",
    "naive": "keep the base prompt's EOS and padding (they carry every object: leaks, for comparison).",
    "zero": "zero the EOS and padding.",
    "bos": "fill the EOS and padding with the BOS embedding (a content-free sink).",
    "empty": "use the empty prompt's EOS and padding.",
}


@dataclass(frozen=True)
class OreEmbeddings:
    """Value embeddings for region-guided cross-attention, all ``[T, C]`` windows."""

    keys: torch.Tensor  # plain encoding of the target base prompt: the attention keys
    substituted: torch.Tensor  # values of the background term
    objects: torch.Tensor  # [N, T, C]: ORE_i, values of object i's term
    own: torch.Tensor  # [N, T, C]: each object prompt encoded alone (strict isolation)
    eos_mode: str = "object"  # what filled ORE_i from the base EOS on (EOS_MODES), to assemble them again from new encodings


def substitute_spans(base: torch.Tensor, own: torch.Tensor, spans: list[tuple[int, int]], substitution: str = "pack") -> torch.Tensor:
    """Base window with object i's span [start, end) replaced from its solo window ``own[i]``, in object order.

    ``pack``: its own tokens 1..L_i (ALE-Edit Eq. 3). ``ale_code``: the solo window at the span's own positions,
    ``own[i][start:end]``, as ALE-Edit's code writes it (ml-postech/ALE ``ale/ore.py`` L35-44,
    ``get_substituted_base_embeds``: ``base[0, indices] = solo[0, indices]``), with ``spans`` located as that code
    locates them (:func:`attention.tokens.first_occurrences`).
    """
    if substitution not in SUBSTITUTIONS:
        raise ValueError(f"substitution must be one of {SUBSTITUTIONS}, got {substitution!r}")
    out = base.clone()
    for (start, end), object_window in zip(spans, own):
        out[start:end] = object_window[1 : 1 + end - start] if substitution == "pack" else object_window[start:end]
    return out


def object_restricted(
    base: torch.Tensor,
    own: torch.Tensor,
    spans: list[tuple[int, int]],
    base_eos: int,
    eos_mode: str = "object",
    empty: torch.Tensor | None = None,
    substitution: str = "pack",
    substitution_spans: list[tuple[int, int]] | None = None,
) -> OreEmbeddings:
    """Assemble the substituted base and ORE_i for every object.

    ``base`` [T, C] plain target base encoding, ``own`` [N, T, C] object prompts
    encoded alone, ``spans`` object i's [start, end) in the base window,
    ``base_eos`` the base EOS index, ``empty`` [T, C] the empty prompt (``empty`` mode).
    ``substitution`` / ``substitution_spans`` (default ``spans``): how the substituted base is made
    (:func:`substitute_spans`); ORE_i does not depend on it (its tokens 1..eos-1 are rewritten, position 0 is BOS).
    """
    if eos_mode not in EOS_MODES:
        raise ValueError(f"eos_mode must be one of {EOS_MODES}, got {eos_mode!r}")
    if eos_mode == "empty" and empty is None:
        raise ValueError("eos_mode 'empty' needs the empty prompt's encoding")
    substituted = substitute_spans(base, own, spans if substitution_spans is None else substitution_spans, substitution)
    tail = base.shape[0] - base_eos
    objects = []
    for (start, end), object_window in zip(spans, own):
        ore = substituted.clone()
        ore[1:base_eos] = 0
        ore[start:end] = object_window[1 : 1 + end - start]
        own_eos = 1 + end - start
        ore[base_eos:] = {
            "object": lambda: object_window[own_eos : own_eos + tail],
            "naive": lambda: substituted[base_eos:],
            "zero": lambda: torch.zeros_like(substituted[base_eos:]),
            "bos": lambda: substituted[0:1].expand(tail, -1),
            "empty": lambda: empty[1 : 1 + tail],
        }[eos_mode]()
        objects.append(ore)
    return OreEmbeddings(keys=base, substituted=substituted, objects=torch.stack(objects), own=own, eos_mode=eos_mode)
