"""Source-Dominance Rebalance on ComfyUI's UNet classes (random weights) and on plain tensors."""
import comfy.ldm.modules.attention as comfy_attention
import pytest
import torch
import torch.nn.functional as F

from harness.editing import EDITS, object_masks
from leakfree_edit.attention.rebalance import RegionBinding, TokenRebalance
from leakfree_edit.attention.region_attention import RegionAttentionProgram
from leakfree_edit.integration.errors import NodeInputError
from leakfree_edit.integration.patching import attention_blocks, install_region_program, region_program
from leakfree_edit.masking.ops import region_weights, resize_masks
from leakfree_edit.nodes.encode import ObjectRestrictedEncode
from leakfree_edit.nodes.rebalance import SourceDominanceRebalance
from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

LATENT = (1, 4, 12, 16)


@pytest.fixture(scope="module")
def encoded(models):
    target, _, plan = ObjectRestrictedEncode.execute(models.clip(), EDITS, "object")
    negative, pooled = models.clip().encode_from_tokens(models.clip().tokenize(""), return_pooled=True)
    return target, [[negative, {"pooled_output": pooled}]], plan


def region_model(models, encoded):
    model, = RegionGuidedCrossAttention.execute(models.unet(), encoded[0], object_masks())
    return model


def sample(model, positive, negative, cfg=3.0, steps=1):
    import comfy.sample

    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               denoise=1.0, seed=0, disable_pbar=True)


class TokenShare:
    """Observer: the share of region i's cross-attention that object i's tokens get (RGB-CAM bias included)."""

    def __init__(self, spans):
        self.spans, self.shares = spans, []

    def observe(self, query, keys, bias, masks, extra_options):
        probs = (query @ keys.transpose(-1, -2) * query.shape[-1] ** -0.5 + bias).softmax(-1).mean(dim=(0, 1))
        regions = region_weights(masks[0])[:, 1:]
        for index, (start, end) in enumerate(self.spans):
            inside = regions[:, index] > 0
            self.shares.append(float(probs[inside, start:end].sum(-1).mean()))


def test_object_share_in_its_region_rises_with_boost(models, encoded):
    target, negative, plan = encoded
    means = []
    for boost in (1.0, 1.5, 3.0, 8.0):
        model, = SourceDominanceRebalance.execute(region_model(models, encoded), boost=boost, binding=0.0)
        observer = TokenShare(plan.target_spans)
        install_region_program(model, region_program(model).with_cross_observer(observer))
        sample(model, target, negative)
        means.append(sum(observer.shares) / len(observer.shares))
    assert all(later > earlier for earlier, later in zip(means, means[1:])), means
    assert means[-1] > 2 * means[0]


def test_sink_damping_raises_the_share_further(models, encoded):
    target, negative, plan = encoded
    means = []
    for sink_scale in (1.0, 0.2):
        model, = SourceDominanceRebalance.execute(region_model(models, encoded), boost=2.0, sink_scale=sink_scale, binding=0.0)
        observer = TokenShare(plan.target_spans)
        install_region_program(model, region_program(model).with_cross_observer(observer))
        sample(model, target, negative)
        means.append(sum(observer.shares) / len(observer.shares))
    assert means[1] > means[0]


def record_attention_calls(monkeypatch):
    """Route ComfyUI's attention through SDPA and keep (query, key, mask, scale) of every SDPA call."""
    calls = []
    original = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, scale=None, **kwargs):
        calls.append((query.detach(), key.detach(), attn_mask, scale))
        return original(query, key, value, attn_mask=attn_mask, scale=scale, **kwargs)

    monkeypatch.setattr(comfy_attention, "optimized_attention", comfy_attention.attention_pytorch)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return calls


def cross_region_mass(calls) -> float:
    """Self-attention probability mass from region i to region j (j != i), summed over layers."""
    total = 0.0
    for query, key, mask, scale in calls:
        pixels = query.shape[-2]
        if key.shape[-2] != pixels:
            continue  # cross-attention
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        logits = query @ key.transpose(-1, -2) * scale
        probs = (logits if mask is None else logits + mask).softmax(-1).mean(dim=(0, 1))  # [HW, HW]
        height = next(h for h in (12, 6, 3) if h * (h * 16 // 12) == pixels)
        regions = region_weights(resize_masks(object_masks(), height, height * 16 // 12))[:, 1:]
        for i in range(2):
            for j in range(2):
                if i != j:
                    total += float(probs[regions[:, i] > 0][:, regions[:, j] > 0].sum(-1).mean())
    return total


def test_binding_halves_self_attention_between_object_regions(models, encoded, monkeypatch):
    target, negative, _ = encoded
    calls = record_attention_calls(monkeypatch)
    unbound, = SourceDominanceRebalance.execute(region_model(models, encoded), binding=0.0)
    sample(unbound, target, negative, cfg=1.0)
    before = cross_region_mass(calls)
    calls.clear()
    bound, = SourceDominanceRebalance.execute(region_model(models, encoded))  # default binding strength
    sample(bound, target, negative, cfg=1.0)
    after = cross_region_mass(calls)
    assert before > 0 and after <= 0.5 * before, (before, after)


def test_attention_kernel_calls_unchanged_by_rebalancing(models, encoded, monkeypatch):
    target, negative, _ = encoded
    calls = record_attention_calls(monkeypatch)
    sample(region_model(models, encoded), target, negative)
    alone = len(calls)
    calls.clear()
    model, = SourceDominanceRebalance.execute(region_model(models, encoded), boost=3.0, sink_scale=0.5, binding=2.0, surroundings=1.0)
    sample(model, target, negative)
    # one more per self-attention layer: the unconditional rows' own plain call, so they stay the unpatched model's
    assert len(calls) == alone + len(attention_blocks(model.model.diffusion_model, "attn1"))
    assert all(mask is None or mask.shape[-1] != mask.shape[-2] for _, _, mask, _ in calls)  # never an HW x HW bias


def test_binding_columns_equal_the_explicit_bias():
    masks = object_masks(6, 8)
    masks[1, 2, 3] = 1  # a pixel claimed by both objects belongs to neither region
    binding = RegionBinding(strength=2.0, surroundings=0.5)
    q_cols, k_cols = binding.region_columns(masks.unsqueeze(0), torch.float32)
    regions = region_weights(masks)[:, 1:]
    outside = 1 - masks.amax(0).flatten()
    explicit = -2.0 * (regions @ (regions.sum(1, keepdim=True) - regions).T) - 0.5 * regions.sum(1)[:, None] * outside[None]
    assert q_cols.shape[-1] <= 3
    torch.testing.assert_close(q_cols[0, 0] @ k_cols[0, 0].T, explicit)


def test_strict_layout_boosts_the_objects_own_window():
    from leakfree_edit.attention.ore import object_restricted
    from leakfree_edit.attention.region_attention import CrossAttentionRegions

    embeddings = object_restricted(torch.randn(16, 4), torch.randn(2, 16, 4), [(1, 3), (4, 5)], 5)
    cross = CrossAttentionRegions(embeddings, ((1, 3), (4, 5)), object_masks(6, 8), strict=True)
    bias = TokenRebalance(boost=4.0, sink_scale=0.5).bias(resize_masks(cross.masks, 6, 8), cross, torch.float32)
    inside_first = 0  # pixel (0, 0) is in object 0's region
    assert bias.shape == (48, 3 * 16)
    log4, log_half = torch.log(torch.tensor(4.0)), torch.log(torch.tensor(0.5))
    torch.testing.assert_close(bias[inside_first, 1:3], log4.expand(2))  # base window span
    torch.testing.assert_close(bias[inside_first, 16 + 1 : 16 + 3], log4.expand(2))  # own window tokens 1..L
    assert bias[inside_first, 16 + 3 : 32].eq(log_half).all() and bias[inside_first, 32:].eq(0).all()  # window 2: other region


def test_bad_input_gives_clear_errors(models, encoded):
    with pytest.raises(NodeInputError, match="Connect Region-Guided Cross-Attention first"):
        SourceDominanceRebalance.execute(models.unet())
    model = region_model(models, encoded)
    with pytest.raises(NodeInputError, match="boost is 50"):
        SourceDominanceRebalance.execute(model, boost=50.0)
    with pytest.raises(NodeInputError, match="binding is -1"):
        SourceDominanceRebalance.execute(model, binding=-1.0)
    with pytest.raises(NodeInputError, match="start_percent"):
        SourceDominanceRebalance.execute(model, start_percent=0.8, end_percent=0.2)
    with pytest.raises(NodeInputError, match="got 1 object masks for 2 objects"):
        RegionGuidedCrossAttention.execute(models.unet(), encoded[0], object_masks()[:1])


def test_binding_uses_each_images_own_mask_set():
    from types import SimpleNamespace

    first, second = object_masks(6, 8), object_masks(6, 8).flip(-1)
    program = RegionAttentionProgram(attention=None, cross=SimpleNamespace(masks=torch.cat([first, second]), count=2, resize="nearest"))
    options = {"cond_or_uncond": [1, 0], "sigmas": torch.tensor([1.0])}  # rows 0-1 uncond, rows 2-3 cond (images 0, 1)
    q_cols, k_cols = RegionBinding(strength=2.0).columns(torch.zeros(4, 48, 8), options, 6, 8, program)
    assert q_cols[:2].eq(0).all()
    expected = [RegionBinding(strength=2.0).region_columns(m.unsqueeze(0), torch.float32) for m in (first, second)]
    for row, (q_expected, k_expected) in zip((2, 3), expected):
        assert torch.equal(q_cols[row], q_expected[0]) and torch.equal(k_cols[row], k_expected[0])
