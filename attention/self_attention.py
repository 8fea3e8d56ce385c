"""The self-attention side of the region attention program, one fused call per layer.

Two kinds of change reach self-attention:

- the dual branch's structure lock (ALE-Edit, after InfEdit/MasaCtrl), the program's
  :class:`StructureLock` term: while it is on, each target row attends with its source
  row's queries and keys and keeps its own values. The guider knows the batch layout,
  so it hands a :class:`BranchLayout` to every UNet call under ``LAYOUT_KEY`` in
  ``transformer_options``. Attention replacement (replacement.py) does the same for the
  conditional rows alone, at the coarse layers, in its own steps;
- region biases (BindEdit-style binding): program terms implementing
  :class:`SelfAttentionBias`, each an additive logit bias of low rank expressed as
  extra query/key columns, so SDPA stays one fused call and no HW x HW tensor exists.

Pure torch; ComfyUI's attention function arrives as ``program.attention``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F

from .region_attention import LAYOUT_KEY, PROGRAM_KEY, SigmaWindow, complement, layer_size


@dataclass(frozen=True)
class BranchLayout:
    """The batch rows of one UNet call of the dual branch.

    ``target[i]`` takes its queries and keys from ``source[i]`` while the structure lock is on;
    ``branch`` are all rows of the target branch (its cond and uncond chunks), ``conditional`` the
    rows of its conditional chunk: the rows the region terms act on.
    """

    target: torch.Tensor  # long [R]
    source: torch.Tensor  # long [R]
    branch: torch.Tensor  # long [B]
    conditional: torch.Tensor  # long [C]
    pure_noise: bool = False  # the source rows hold pure noise (the guider's first step from noise): no image in them yet

    def conditional_only(self) -> "BranchLayout":
        """This layout with only the pairs of the conditional chunk: the rows Prompt-to-Prompt's replacement acts on."""
        paired = torch.isin(self.target, self.conditional)
        return replace(self, target=self.target[paired], source=self.source[paired])


def no_branches(device=None) -> BranchLayout:
    """The layout of a call that runs no dual branch (a learning or capture pass): every branch term stays off."""
    nothing = torch.empty(0, dtype=torch.long, device=device)
    return BranchLayout(target=nothing, source=nothing, branch=nothing, conditional=nothing)


@dataclass(frozen=True)
class StructureLock(SigmaWindow):
    """Self-attention term: the target rows of the branch layout use their source rows' Q and K in its sigma window."""


class SelfAttentionBias(Protocol):
    """A self-attention program term: additive logit bias = (q_cols @ k_cols^T) per head.

    ``columns`` returns (q_cols [B, heads or 1, HW, c], k_cols [B, heads or 1, HW, c]),
    already divided by the softmax scale, or None when inactive for this call.
    """

    def columns(self, q: torch.Tensor, extra_options: dict, height: int, width: int, program) -> tuple[torch.Tensor, torch.Tensor] | None: ...


def lock_queries_and_keys(q: torch.Tensor, k: torch.Tensor, layout: BranchLayout | None, tokens: tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Target rows take the source rows' Q and K (values stay their own); ``tokens`` indexes the locked part of a row
    (the axes after the batch axis; all of it by default)."""
    if layout is None or layout.target.numel() == 0:
        return q, k
    q, k = q.clone(), k.clone()
    q[(layout.target, *tokens)] = q[(layout.source, *tokens)]
    k[(layout.target, *tokens)] = k[(layout.source, *tokens)]
    return q, k


def biased_attention(q, k, v, heads: int, q_cols: torch.Tensor, k_cols: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + q_cols k_cols^T) v in one SDPA call, by appending the columns to q and k."""
    batch, pixels, inner = q.shape
    dim = inner // heads
    split = lambda t: t.view(batch, -1, heads, dim).transpose(1, 2)
    q_cols = q_cols.expand(batch, heads, -1, -1).to(q.dtype) * dim**0.5
    k_cols = k_cols.expand(batch, heads, -1, -1).to(k.dtype)
    # q, k and v padded with zeros to one width, a multiple of 8: SDPA's fused kernels need equal widths
    # (and aligned ones on CUDA); otherwise it falls back to the math kernel, which builds the HW x HW map.
    width = -(-(dim + q_cols.shape[-1]) // 8) * 8
    zeros = q_cols.new_zeros(batch, heads, pixels, width - dim - q_cols.shape[-1])
    query = torch.cat([split(q), q_cols, zeros], dim=-1)
    key = torch.cat([split(k), k_cols, zeros], dim=-1)
    out = F.scaled_dot_product_attention(query, key, F.pad(split(v), (0, width - dim)), scale=dim**-0.5)[..., :dim]
    return out.transpose(1, 2).reshape(batch, pixels, inner)


class RegionSelfAttention:
    """``attn1`` replace for one block: structure lock and region biases, else what was there before.

    The biased attention runs on the rows a term gives columns to (the target's conditional rows); every other row
    gets the call the unpatched layer makes, so the unconditional rows stay the unpatched model's bit for bit.
    """

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, q, k, v, extra_options):
        program = extra_options.get(PROGRAM_KEY)
        layout = extra_options.get(LAYOUT_KEY)
        lock = program.structure_lock if program is not None else None
        if lock is not None and lock.active(extra_options.get("sigmas")):
            q, k = lock_queries_and_keys(q, k, layout)
        replacement = program.replacement if program is not None else None
        if layout is not None and replacement is not None and replacement.self_active(extra_options):
            q, k = lock_queries_and_keys(q, k, layout.conditional_only())  # Prompt-to-Prompt: the conditional rows only
        biases = []
        if program is not None and program.self_biases:
            height, width = layer_size(extra_options)
            biases = [c for term in program.self_biases if (c := term.columns(q, extra_options, height, width, program)) is not None]
        heads = extra_options["n_heads"]
        plain = lambda *qkv: self.previous(*qkv, extra_options) if self.previous is not None else program.attention(*qkv, heads, extra_options)
        if not biases:
            return plain(q, k, v)
        q_cols = torch.cat([c[0].expand(q.shape[0], -1, -1, -1) for c in biases], dim=-1)
        k_cols = torch.cat([c[1].expand(q.shape[0], -1, -1, -1) for c in biases], dim=-1)
        rows = torch.nonzero((q_cols != 0).flatten(1).any(dim=1) & (k_cols != 0).flatten(1).any(dim=1)).flatten()
        if rows.numel() == 0:
            return plain(q, k, v)
        out = plain(q, k, v) if self.previous is not None else None
        biased = biased_attention(q[rows], k[rows], v[rows], heads, q_cols[rows], k_cols[rows])
        if out is not None:  # keep another pack's (additive) contribution, as in cross-attention
            out[rows] = biased + out[rows] - program.attention(q[rows], k[rows], v[rows], heads, extra_options)
            return out
        out = biased.new_empty((q.shape[0], *biased.shape[1:]))
        others = complement(rows, q.shape[0])
        if others.numel():
            out[others] = program.attention(q[others], k[others], v[others], heads, extra_options)
        out[rows] = biased
        return out
