"""The self-attention callable: structure lock and low-rank region biases in one fused call, in fp32, fp16 and bf16."""
import pytest
import torch
import torch.nn.functional as F

from leakfree_edit.attention.region_attention import RegionAttentionProgram
from leakfree_edit.attention.self_attention import LAYOUT_KEY, BranchLayout, RegionSelfAttention, StructureLock, biased_attention

HEADS, DIM, PIXELS = 2, 4, 12
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])


def plain_attention(q, k, v, heads, extra_options):
    b, _, inner = q.shape
    split = lambda t: t.view(b, -1, heads, inner // heads).transpose(1, 2)
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, -1, inner)


@DTYPES
def test_appended_columns_equal_an_explicit_additive_bias(dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, PIXELS, HEADS * DIM) for _ in range(3))
    q_cols, k_cols = torch.randn(1, 1, PIXELS, 3), torch.randn(1, 1, PIXELS, 3)
    split = lambda t: t.view(2, PIXELS, HEADS, DIM).transpose(1, 2)
    reference = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=q_cols @ k_cols.transpose(-1, -2))
    out = biased_attention(*(t.to(dtype) for t in (q, k, v)), HEADS, q_cols.to(dtype), k_cols.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), reference.transpose(1, 2).reshape(2, PIXELS, HEADS * DIM), rtol=tolerance, atol=tolerance)


class RowBias:
    """A self-attention bias term on the rows ``rows`` of the batch only (as binding acts on the conditional rows)."""

    def __init__(self, rows):
        self.rows = rows

    def columns(self, q, extra_options, height, width, program):
        q_cols, k_cols = torch.zeros(q.shape[0], 1, PIXELS, 2, dtype=q.dtype), torch.zeros(q.shape[0], 1, PIXELS, 2, dtype=q.dtype)
        q_cols[self.rows, :, : PIXELS // 2, 0], k_cols[self.rows, :, PIXELS // 2 :, 0] = 1.0, -3.0
        return q_cols, k_cols


@DTYPES
def test_rows_without_a_bias_are_the_plain_attention_bit_for_bit(dtype):
    """The unconditional rows stay the unpatched model's: the biased call covers only the rows a term biases."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, PIXELS, HEADS * DIM).to(dtype) for _ in range(3))
    program = RegionAttentionProgram(attention=plain_attention).with_self_bias(RowBias([1, 3]))
    options = {"n_heads": HEADS, "leakfree_edit": program, "activations_shape": [4, 8, 3, 4], "sigmas": torch.tensor([1.0])}
    out = RegionSelfAttention()(q, k, v, options)
    assert torch.equal(out[[0, 2]], plain_attention(q[[0, 2]], k[[0, 2]], v[[0, 2]], HEADS, {}))
    assert not torch.equal(out[[1, 3]], plain_attention(q[[1, 3]], k[[1, 3]], v[[1, 3]], HEADS, {}))


@DTYPES
def test_lock_gives_target_rows_the_source_rows_queries_and_keys(dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, PIXELS, HEADS * DIM).to(dtype) for _ in range(3))
    program = RegionAttentionProgram(attention=plain_attention).with_structure_lock(StructureLock(sigma_start=2.0, sigma_end=1.0))
    layout = BranchLayout(target=torch.tensor([0, 1]), source=torch.tensor([2, 3]), branch=torch.tensor([0, 1]), conditional=torch.tensor([0]))
    options = {"n_heads": HEADS, "leakfree_edit": program, LAYOUT_KEY: layout, "sigmas": torch.tensor([1.5])}
    out = RegionSelfAttention()(q, k, v, options)
    expected = plain_attention(q[[2, 3]], k[[2, 3]], v[[0, 1]], HEADS, {})
    assert torch.equal(out[[0, 1]], expected)
    assert torch.equal(out[[2, 3]], plain_attention(q[[2, 3]], k[[2, 3]], v[[2, 3]], HEADS, {}))
    for sigma in (0.5, 2.5):  # outside the lock's sigma window
        unlocked = RegionSelfAttention()(q, k, v, dict(options, sigmas=torch.tensor([sigma])))
        assert torch.equal(unlocked, plain_attention(q, k, v, HEADS, {}))
