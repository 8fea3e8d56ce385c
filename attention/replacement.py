"""Attention replacement (Prompt-to-Prompt, Hertz et al. 2022, as DPL edits with it: wangkai930418/DPL,
``pipelines/edit_pipeline.py`` ``AttentionReplace``/``AttentionRefine`` and ``_4_image_edit.py``; the word alignment
after google/prompt-to-prompt ``seq_aligner.py``): the target branch draws with the source branch's attention maps.

Cross-attention, in the steps i < floor(cross * N) (DPL: 40 of 50): the target's conditional row attends with

    P'_t = (1 - alpha) * P_t + alpha * (P_s M)                        (P2P's AttentionRefine; alpha = 1: AttentionReplace)

P_t, P_s the target's and the source's softmax(q k^T / sqrt(d)) at the same layer and step, M [T_s, T_t] the word
alignment of the two prompts and alpha [T_t] 1 on the target tokens that take a source map. With DPL's learned
source rows, P_s are the learned maps, so the target's words land where the learned words do. Self-attention, in
the steps i < floor(self * N) (DPL: 20 of 50) and at the layers at least 4x below the latent (DPL: 16x16 and
smaller at 512 px), the target's conditional row takes the source's queries and keys (P'_t = P_s, its own values).
Only the conditional rows change, as in DPL and P2P; the unconditional rows are the model's own.

The alignment, per edit line (each object's source tokens against its target tokens; BOS, the " and " joiners,
EOS and padding position by position): a global alignment with P2P's scores (match 1, mismatch -1, gap 0) pairs
equal tokens; between two pairs, the unpaired source tokens S and target tokens T form a swap: one to one when
|S| = |T|, otherwise every t in T takes sum_{s in S} P_s[s] / |T| (P2P's replacement mapper for words of different
lengths: a row of P' still sums to 1); target tokens with no source counterpart keep their own maps (alpha 0,
P2P's refinement). So "wolf -> brown-colored goat" is a swap, "dog -> dog wearing a hat" a refinement, and
"red car -> blue car" both.

Computed without materialising P: out_t = P_t ((1 - alpha) v_t) + P_s (M diag(alpha) v_t), the second term as
extra value columns of the source row's own attention, so every row of the layer is one SDPA call.

Pure torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..masking.ops import downsampled_grid
from .dual_branch import step_index
from .region_attention import layer_size, split_heads

MATCH, MISMATCH, GAP = 1, -1, 0  # Prompt-to-Prompt's ScoreParams(gap=0, match=1, mismatch=-1)


def aligned_pairs(source: Sequence[int], target: Sequence[int]) -> list[tuple[int | None, int | None]]:
    """A global (Needleman-Wunsch) alignment of two token sequences with P2P's scores, as (source index or None,
    target index or None) in order. Ties prefer a gap in the source, then in the target, as ``seq_aligner.global_align``."""
    rows, columns = len(source), len(target)
    score = [[GAP * (i + j) if i == 0 or j == 0 else 0 for j in range(columns + 1)] for i in range(rows + 1)]
    move = [[1 if i == 0 else 2 for _ in range(columns + 1)] for i in range(rows + 1)]  # 1 left, 2 up, 3 diagonal
    for i in range(1, rows + 1):
        for j in range(1, columns + 1):
            left, up = score[i][j - 1] + GAP, score[i - 1][j] + GAP
            diagonal = score[i - 1][j - 1] + (MATCH if source[i - 1] == target[j - 1] else MISMATCH)
            score[i][j] = max(left, up, diagonal)
            move[i][j] = 1 if score[i][j] == left else 2 if score[i][j] == up else 3
    pairs, i, j = [], rows, columns
    while i > 0 or j > 0:
        step = move[i][j] if i > 0 and j > 0 else (1 if i == 0 else 2)
        if step == 3:
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif step == 1:
            j -= 1
            pairs.append((None, j))
        else:
            i -= 1
            pairs.append((i, None))
    return pairs[::-1]


@dataclass(frozen=True, eq=False)
class WordAlignment:
    """How the target window draws on the source window: ``mapper`` [T, T] (source token s -> target token t),
    ``alphas`` [T] (1 where target token t takes the source's map) and ``kept``, the (source, target) positions of
    the same token paired (where the target keeps the source's word)."""

    mapper: torch.Tensor
    alphas: torch.Tensor
    kept: tuple[tuple[int, int], ...]


def _segment(mapper, alphas, kept, source_ids, target_ids, source_start: int, target_start: int) -> None:
    """Align one segment (an edit line, or a joiner) into ``mapper``/``alphas``/``kept`` at the given offsets."""
    run_source, run_target = [], []

    def flush():
        if run_source and run_target:
            if len(run_source) == len(run_target):
                for s, t in zip(run_source, run_target):
                    mapper[s, t] = 1.0
            else:
                mapper[torch.tensor(run_source)[:, None], torch.tensor(run_target)[None, :]] = 1.0 / len(run_target)
            alphas[run_target] = 1.0
        run_source.clear()
        run_target.clear()

    for s, t in aligned_pairs(source_ids, target_ids):
        if s is not None and t is not None:
            flush()
            mapper[source_start + s, target_start + t] = 1.0
            alphas[target_start + t] = 1.0
            kept.append((source_start + s, target_start + t))
        elif s is not None:
            run_source.append(source_start + s)
        else:
            run_target.append(target_start + t)
    flush()


def align_windows(source_ids: Sequence[int], target_ids: Sequence[int], source_spans, target_spans,
                  source_eos: int, target_eos: int) -> WordAlignment:
    """The :class:`WordAlignment` of two base windows of equal length (token ids), each edit line's span aligned with
    its own span, the text between spans (BOS, joiners) segment by segment, from EOS on position by position."""
    tokens = len(source_ids)
    mapper, alphas, kept = torch.zeros(tokens, tokens), torch.zeros(tokens), []
    source_cuts = [0, *(c for span in source_spans for c in span), source_eos]
    target_cuts = [0, *(c for span in target_spans for c in span), target_eos]
    for (s0, s1), (t0, t1) in zip(zip(source_cuts, source_cuts[1:]), zip(target_cuts, target_cuts[1:])):
        _segment(mapper, alphas, kept, source_ids[s0:s1], target_ids[t0:t1], s0, t0)
    for offset in range(tokens - max(source_eos, target_eos)):  # EOS and padding: the n-th after EOS to the n-th
        mapper[source_eos + offset, target_eos + offset] = 1.0
        alphas[target_eos + offset] = 1.0
    return WordAlignment(mapper=mapper, alphas=alphas, kept=tuple(kept))


def replaced_steps(fraction: float, steps: int) -> int:
    """How many of a run's first steps are replaced: floor(fraction * N) (DPL: 40 of 50 for 0.8)."""
    return int(math.floor(fraction * steps + 1e-6))


def in_first_steps(fraction: float, extra_options: dict) -> bool:
    """Whether the call's step is one of the first floor(fraction * N) of its run (a call outside sampling: never)."""
    sample_sigmas, sigmas = extra_options.get("sample_sigmas"), extra_options.get("sigmas")
    if fraction <= 0 or sample_sigmas is None or sigmas is None:
        return False
    schedule = sample_sigmas.detach().float().cpu()
    return step_index(schedule, float(sigmas.max())) < replaced_steps(fraction, len(schedule) - 1)


@dataclass(frozen=True, eq=False)
class MapReplacement:
    """The program term: the target's conditional rows draw with the source branch's maps.

    ``alignment`` maps the source base window onto the target's; ``cross``/``self_fraction`` the share of the run's
    first steps replaced (DPL: 0.8, 0.4); ``self_factor``: self-attention only at layers this many times below the
    latent or coarser (DPL: 16x16 at 512 px, 4). ``error`` is raised when a call has no dual-branch layout (the model
    was sampled without the Dual-Branch Edit Guider, so there is no source row to take maps from).
    """

    alignment: WordAlignment
    cross: float = 0.8
    self_fraction: float = 0.4
    self_factor: int = 4
    error: type = ValueError
    node: str = "Attention Replacement"

    def cross_active(self, extra_options: dict) -> bool:
        return in_first_steps(self.cross, extra_options)

    def self_active(self, extra_options: dict) -> bool:
        if not in_first_steps(self.self_fraction, extra_options):
            return False
        height, width = layer_size(extra_options)
        latent = extra_options["original_shape"]
        limit = downsampled_grid((int(latent[-2]), int(latent[-1])), self.self_factor)
        return height * width <= limit[0] * limit[1]

    def rows(self, extra_options: dict, layout) -> tuple[torch.Tensor, torch.Tensor]:
        """(target rows, source rows): the conditional rows of the target branch and their source rows."""
        if layout is None:
            raise self.error(
                f"{self.node}: this model was sampled without the Dual-Branch Edit Guider, so no source branch runs beside the "
                "target to take attention maps from. Connect this MODEL to the Dual-Branch Edit Guider (LeakFree) and sample "
                "with SamplerCustomAdvanced.")
        pairs = layout.conditional_only()
        target, source = pairs.target, pairs.source
        if target.numel() < layout.conditional.numel():
            raise self.error(
                f"{self.node}: ComfyUI split the batch into several UNet calls (not enough free memory), so the target rows "
                "could not see their source rows' attention. Free memory (smaller image or batch, other models unloaded).")
        return target, source

    def attend(self, q, k, v, heads: int, extra_options: dict, layout, program) -> torch.Tensor | None:
        """The cross-attention output of every row with the target rows replaced, or None outside the cross window
        (the weights built once per context length for ``program``)."""
        if not self.cross_active(extra_options):
            return None
        target, source = self.rows(extra_options, layout)
        if target.numel() == 0:
            return None
        mapper, keep = program.cached(("replacement", self, k.shape[1], k.device, v.dtype), lambda: self.weights(k.shape[1], k.device, v.dtype))
        return replaced_cross_attention(q, k, v, heads, target, source, mapper, keep)

    def weights(self, tokens: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(M diag(alpha) [K, K], 1 - alpha [K]) for a context of ``tokens`` keys (a multiple of the window, when
        ComfyUI repeated the contexts of the batch to one length)."""
        window = self.alignment.mapper.shape[0]
        if tokens % window:
            raise self.error(f"{self.node}: the prompts have {tokens} tokens, not a multiple of the edit plan's {window}-token window. "
                             "Encode the target and source with Object-Restricted Encode and the same CLIP.")
        copies = tokens // window
        mapper = torch.block_diag(*[self.alignment.mapper * self.alignment.alphas] * copies)
        return mapper.to(device=device, dtype=dtype), (1 - self.alignment.alphas.repeat(copies)).to(device=device, dtype=dtype)


def replaced_cross_attention(q, k, v, heads: int, target: torch.Tensor, source: torch.Tensor,
                             mapper: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v on every row, and on the ``target`` rows P'_t v_t with the ``source`` rows' maps,
    in one SDPA call. ``q``/``k`` [B, HW|K, heads * d], ``v`` [B, K, heads * e] (e may differ from d); ``mapper``
    M diag(alpha) [K, K], ``keep`` 1 - alpha [K]."""
    batch = q.shape[0]
    extra = torch.zeros_like(v)
    extra[source] = torch.einsum("st,rtc->rsc", mapper, v[target])  # P_s (M diag(alpha) v_t) from the source's own softmax
    extra[target] = v[target] * keep[:, None]  # P_t ((1 - alpha) v_t)
    width = v.shape[-1] // heads
    out = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), torch.cat([split_heads(v, heads), split_heads(extra, heads)], dim=-1))
    own, side = out[..., :width], out[..., width:]
    own[target] = side[target] + side[source]
    return own.transpose(1, 2).reshape(batch, -1, heads * width)
