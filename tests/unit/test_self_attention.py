"""The self-attention callable: structure lock and low-rank region biases in one fused call."""
import torch
import torch.nn.functional as F

from leakfree_edit.attention.region_attention import RegionAttentionProgram
from leakfree_edit.attention.self_attention import LAYOUT_KEY, BranchLayout, RegionSelfAttention, StructureLock, biased_attention

HEADS, DIM, PIXELS = 2, 4, 12


def plain_attention(q, k, v, heads, extra_options):
    b, _, inner = q.shape
    split = lambda t: t.view(b, -1, heads, inner // heads).transpose(1, 2)
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, -1, inner)


def test_appended_columns_equal_an_explicit_additive_bias():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, PIXELS, HEADS * DIM) for _ in range(3))
    q_cols, k_cols = torch.randn(1, 1, PIXELS, 3), torch.randn(1, 1, PIXELS, 3)
    split = lambda t: t.view(2, PIXELS, HEADS, DIM).transpose(1, 2)
    reference = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=q_cols @ k_cols.transpose(-1, -2))
    out = biased_attention(q, k, v, HEADS, q_cols, k_cols)
    torch.testing.assert_close(out, reference.transpose(1, 2).reshape(2, PIXELS, HEADS * DIM), rtol=1e-5, atol=1e-5)


def test_lock_gives_target_rows_the_source_rows_queries_and_keys():
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, PIXELS, HEADS * DIM) for _ in range(3))
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
