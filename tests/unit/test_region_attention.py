"""RGB-CAM invariants on plain tensors (no ComfyUI): value isolation, token masking, strict mode, composition with
another pack's replace; each in fp32, fp16 and bf16 (the ``embeddings`` fixture and the layer carry the dtype)."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from leakfree_edit.attention.ore import object_restricted
from leakfree_edit.attention.region_attention import (
    CrossAttentionRegions,
    RegionAttentionProgram,
    RegionCrossAttention,
    ValueSubstitution,
    region_bias,
)
from leakfree_edit.masking.ops import downsampled_grid, downsampled_grids, region_weights, resize_masks

TOKENS, WIDTH, HEADS, DIM = 16, 8, 2, 4
H, W = 5, 7  # odd, non-square layer
SPANS = [(1, 3), (4, 6)]
EOS = 7


def plain_attention(q, k, v, heads, extra_options):
    b, _, inner = q.shape
    split = lambda t: t.view(b, -1, heads, inner // heads).transpose(1, 2)
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, -1, inner)


def make_masks():
    masks = torch.zeros(2, H, W)
    masks[0, :, :3] = 1
    masks[1, :, 4:] = 1
    masks[1, 0, 2] = 1  # a pixel claimed by both objects: background term
    return masks


def make_program(base, own, strict=False, masks=None):
    embeddings = object_restricted(base, own, SPANS, EOS)
    cross = CrossAttentionRegions(embeddings, tuple(SPANS), make_masks() if masks is None else masks, strict=strict)
    return RegionAttentionProgram(attention=plain_attention).with_cross(cross)


class Layer(torch.nn.Module):
    """A cross-attention layer driven the way BasicTransformerBlock drives patches."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(1)
        self.to_q = torch.nn.Linear(WIDTH, HEADS * DIM, bias=False, dtype=dtype)
        self.to_k = torch.nn.Linear(WIDTH, HEADS * DIM, bias=False, dtype=dtype)
        self.to_v = torch.nn.Linear(WIDTH, HEADS * DIM, bias=False, dtype=dtype)

    def forward(self, x, context, program, previous=None):
        options = {"n_heads": HEADS, "original_shape": [x.shape[0], 4, H, W], "activations_shape": [x.shape[0], 32, H, W],
                   "leakfree_edit": program, "sigmas": torch.tensor([1.0])}
        x, context, value = ValueSubstitution()(x, context, context, options)
        return RegionCrossAttention(previous)(self.to_q(x), self.to_k(context), self.to_v(value), options)


def inputs(base, batch_uncond=1):
    torch.manual_seed(2)
    x = torch.randn(batch_uncond + 1, H * W, WIDTH).to(base.dtype)
    uncond = torch.randn(batch_uncond, TOKENS, WIDTH).to(base.dtype)
    return x, torch.cat([uncond, base.unsqueeze(0)])


@pytest.fixture(params=[torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def dtype(request):
    return request.param


@pytest.fixture
def embeddings(dtype):
    torch.manual_seed(0)
    return torch.randn(TOKENS, WIDTH).to(dtype), torch.randn(2, TOKENS, WIDTH).to(dtype)


def region_pixels(i):
    return region_weights(make_masks())[:, i + 1] == 1


def test_object_values_never_reach_other_regions(embeddings):
    base, own = embeddings
    layer = Layer(base.dtype)
    x, context = inputs(base)
    program = make_program(base, own)
    out = layer(x, context, program)
    objects = program.cross.embeddings.objects.clone()
    objects[1] = torch.randn(TOKENS, WIDTH).to(base.dtype)
    perturbed = program.with_cross(replace(program.cross, embeddings=replace(program.cross.embeddings, objects=objects)))
    moved = layer(x, context, perturbed)
    assert torch.equal(out[1, region_pixels(0)], moved[1, region_pixels(0)])  # bit-identical in region 0
    assert not torch.equal(out[1, region_pixels(1)], moved[1, region_pixels(1)])  # region 1 does change


def test_object_tokens_get_no_attention_outside_their_region(embeddings):
    base, own = embeddings
    layer = Layer(base.dtype)
    with torch.no_grad():
        layer.to_v.weight.copy_(torch.eye(HEADS * DIM, WIDTH, dtype=base.dtype))
    # Values: only object 1's span is non-zero, in every value set.
    span = torch.zeros(TOKENS, 1, dtype=base.dtype)
    span[SPANS[1][0] : SPANS[1][1]] = 1
    program = make_program(base, own)
    e = program.cross.embeddings
    only_span = replace(e, substituted=e.substituted * span, objects=e.objects * span, own=e.own * span)
    program = program.with_cross(replace(program.cross, embeddings=only_span))
    x, context = inputs(base)
    out = layer(x, context, program)[1]
    inside = resize_masks(make_masks(), H, W)[1].flatten() > 0
    assert torch.count_nonzero(out[~inside]) == 0
    assert out[inside].abs().sum() > 0


def test_unconditional_rows_equal_plain_attention(embeddings):
    base, own = embeddings
    layer = Layer(base.dtype)
    x, context = inputs(base, batch_uncond=2)
    out = layer(x, context, make_program(base, own))
    plain = plain_attention(layer.to_q(x[:2]), layer.to_k(context[:2]), layer.to_v(context[:2]), HEADS, {})
    assert torch.equal(out[:2], plain)


def test_strict_region_is_independent_of_other_objects_text(embeddings):
    base, own = embeddings
    layer = Layer(base.dtype)
    x, context = inputs(base)
    out = layer(x, context, make_program(base, own, strict=True))
    # Change everything about object 1's text: its own encoding, and the base prompt around it.
    base2, own2 = base.clone(), own.clone()
    own2[1] = torch.randn(TOKENS, WIDTH).to(base.dtype)
    base2[SPANS[1][0] :] = torch.randn(TOKENS - SPANS[1][0], WIDTH).to(base.dtype)
    x2, context2 = inputs(base2)
    moved = layer(x, context2, make_program(base2, own2, strict=True))
    assert torch.equal(out[1, region_pixels(0)], moved[1, region_pixels(0)])


def test_strict_bias_never_blocks_a_whole_row(dtype):
    bias = region_bias(make_masks(), SPANS, TOKENS, True, dtype)
    assert bias.dtype == dtype and torch.isfinite(bias).any(dim=-1).all()
    assert (torch.isfinite(bias).sum(dim=-1) <= TOKENS).all()  # one block per pixel


def test_lcm_repeated_context_gives_the_same_result(embeddings):
    base, own = embeddings
    layer = Layer(base.dtype)
    x, context = inputs(base)
    out = layer(x, context, make_program(base, own))
    repeated = layer(x, context.repeat(1, 3, 1), make_program(base, own))
    tolerance = 1e-5 if base.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out[1], repeated[1], rtol=tolerance, atol=tolerance)


def ip_adapter_like(calls, term):
    """Another pack's additive replace in IP-Adapter's form: the attention over the text plus a term of its own."""

    def previous(q, k, v, extra_options):
        calls.append(q.shape[0])
        return plain_attention(q, k, v, HEADS, extra_options) + term(q)

    return previous


def test_another_packs_replace_is_chained(embeddings):
    base, own = embeddings
    layer = Layer(base.dtype)
    x, context = inputs(base)
    calls = []
    alone = layer(x, context, make_program(base, own))
    chained = layer(x, context, make_program(base, own), ip_adapter_like(calls, lambda q: torch.ones_like(q)))
    assert calls == [2]  # called once, on every row
    assert torch.equal(chained[1], alone[1] + 1)  # its term added to RGB-CAM exactly
    tolerance = 1e-5 if base.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(chained[0], alone[0] + 1, rtol=tolerance, atol=tolerance)


def test_strict_isolation_holds_bit_for_bit_with_an_additive_replace_chained(embeddings):
    """Object 1's whole text changes: with an IP-Adapter-like replace on the block, region 0 is still bit-identical
    (its term was added as previous - plain before, whose rounding followed the other object's text)."""
    base, own = embeddings
    layer = Layer(base.dtype)
    x, context = inputs(base)
    term = lambda q: q.flip(-1) * 0.37  # depends on the query only, as IP-Adapter's image attention does
    out = layer(x, context, make_program(base, own, strict=True), ip_adapter_like([], term))
    base2, own2 = base.clone(), own.clone()
    own2[1] = torch.randn(TOKENS, WIDTH).to(base.dtype)
    base2[SPANS[1][0] :] = torch.randn(TOKENS - SPANS[1][0], WIDTH).to(base.dtype)
    _, context2 = inputs(base2)
    moved = layer(x, context2, make_program(base2, own2, strict=True), ip_adapter_like([], term))
    assert torch.equal(out[1, region_pixels(0)], moved[1, region_pixels(0)])
    assert not torch.equal(out[1, region_pixels(1)], moved[1, region_pixels(1)])


def test_schedule_turns_the_term_off():
    program = make_program(torch.randn(TOKENS, WIDTH), torch.randn(2, TOKENS, WIDTH))
    late = CrossAttentionRegions(program.cross.embeddings, tuple(SPANS), make_masks(), sigma_start=5.0, sigma_end=2.0)
    assert late.active(torch.tensor([3.0])) and not late.active(torch.tensor([1.0])) and not late.active(torch.tensor([6.0]))


@pytest.mark.parametrize("latent, factor, expected", [((75, 43), 1, (75, 43)), ((75, 43), 2, (38, 22)),
                                                      ((75, 43), 8, (10, 6)), ((96, 128), 4, (24, 32))])
def test_downsampled_grids_are_ceil_halved(latent, factor, expected):
    assert downsampled_grid(latent, factor) == expected
    assert downsampled_grids(latent, (factor, 2 * factor)) == {expected, downsampled_grid(expected, 2)}


def test_region_weights_give_overlaps_to_the_background():
    weights = region_weights(make_masks())
    assert torch.equal(weights.sum(dim=1), torch.ones(H * W))
    overlap = 0 * W + 2
    assert weights[overlap, 0] == 1
