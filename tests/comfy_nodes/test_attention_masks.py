"""Masks from Attention on a random-weight UNet whose attention is forced onto planted regions."""
import math

import pytest
import torch

from leakfree_edit.attention.plan import EditPlan, ObjectEdit
from leakfree_edit.integration.errors import NodeInputError
from leakfree_edit.masking.disjoint import dilate_disjoint, disjoint_regions, otsu_threshold
from leakfree_edit.masking.ops import downsampled_grids
from leakfree_edit.nodes.attention_masks import MasksFromAttention

LATENT_HW = (16, 24)
PLAN = EditPlan((ObjectEdit("wolf", "brown-colored goat"), ObjectEdit("moon", "moon made of gold")))
SPANS = ((1, 2), (3, 4))  # "wolf and moon": BOS, wolf, and, moon, EOS


def planted_labels(height, width):
    """0 background, 1 wolf (top-left block), 2 moon (bottom-right block), on any layer grid."""
    rows, cols = torch.arange(height).view(-1, 1), torch.arange(width).view(1, -1)
    top, left, right = 2 * rows < height, 2 * cols < width, 3 * cols >= 2 * width  # edges on every level's grid
    labels = torch.zeros(height, width, dtype=torch.long)
    labels[top & left] = 1
    labels[~top & right] = 2
    return labels


def layer_hw(pixels):
    h, w = LATENT_HW
    while h * w > pixels:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


class PlantedQuery(torch.nn.Module):
    """to_q that ignores its input: pixel p's query is `scale` times the one-hot of its planted label."""

    def __init__(self, inner, heads, scale):
        super().__init__()
        self.inner, self.heads, self.scale = inner, heads, scale

    def forward(self, x):
        labels = planted_labels(*layer_hw(x.shape[1])).flatten()
        onehot = torch.nn.functional.one_hot(labels, self.inner // self.heads).float() * self.scale
        return onehot.repeat(1, self.heads).expand(x.shape[0], -1, -1)


class PlantedKey(torch.nn.Module):
    """to_k of cross-attention: BOS and EOS/padding -> label 0, wolf's token -> 1, moon's -> 2, 'and' -> 3."""

    def __init__(self, inner, heads):
        super().__init__()
        self.inner, self.heads = inner, heads

    def forward(self, context):
        labels = torch.zeros(context.shape[1], dtype=torch.long)
        labels[1], labels[2], labels[3] = 1, 3, 2
        onehot = torch.nn.functional.one_hot(labels, self.inner // self.heads).float()
        return onehot.repeat(1, self.heads).expand(context.shape[0], -1, -1)


def forced_model():
    from harness import random_models

    model = random_models.unet("sd15")
    for module in model.model.diffusion_model.modules():
        if module.__class__.__name__ == "BasicTransformerBlock":
            inner, heads = module.attn2.to_q.weight.shape[0], module.n_heads
            module.attn2.to_q = PlantedQuery(inner, heads, scale=40.0)
            module.attn2.to_k = PlantedKey(inner, heads)
            module.attn1.to_q = PlantedQuery(inner, heads, scale=6.0)
            module.attn1.to_k = PlantedQuery(inner, heads, scale=6.0)
    return model


@pytest.fixture(scope="module")
def forced():
    return forced_model()


def latent():
    return {"samples": torch.randn(1, 4, *LATENT_HW, generator=torch.Generator().manual_seed(2))}


def test_planted_regions_are_recovered_and_disjoint(models, forced):
    masks, background, preview = MasksFromAttention.execute(forced, models.clip(), PLAN, latent(), timesteps=2, dilation_percent=0.0)
    height, width = 8 * LATENT_HW[0], 8 * LATENT_HW[1]
    assert masks.shape == (2, height, width) and background.shape == (1, height, width) and preview.shape == (1, height, width, 3)
    assert masks.sum(dim=0).max() <= 1  # never overlapping
    planted = planted_labels(height, width)
    for index in range(2):
        truth = planted == index + 1
        found = masks[index] > 0
        iou = (truth & found).sum() / (truth | found).sum()
        assert iou > 0.9, (index, float(iou))
    torch.testing.assert_close(background[0], 1 - masks.sum(dim=0))


def test_dilation_keeps_the_masks_disjoint(models, forced):
    masks, _, _ = MasksFromAttention.execute(forced, models.clip(), PLAN, latent(), timesteps=1, dilation_percent=20.0)
    assert masks.sum(dim=0).max() <= 1
    undilated, _, _ = MasksFromAttention.execute(forced, models.clip(), PLAN, latent(), timesteps=1, dilation_percent=0.0)
    assert (masks >= undilated).all() and masks.sum() > undilated.sum()


def test_the_input_model_is_left_unpatched(models, forced):
    before = dict(forced.model_options.get("transformer_options", {}).get("patches_replace", {}))
    MasksFromAttention.execute(forced, models.clip(), PLAN, latent(), timesteps=1)
    assert forced.model_options.get("transformer_options", {}).get("patches_replace", {}) == before


def test_binarisation_on_plain_tensors():
    scores = torch.zeros(2, 4, 6)
    scores[0, :, :3] = torch.linspace(0.6, 1.0, 3)
    scores[1, :, 2:] = 0.9  # both claim column 2: the higher score wins it
    masks = disjoint_regions(scores, None)
    assert masks.sum(0).max() == 1 and masks[0, :, :2].all() and masks[1, :, 3:].all()
    assert masks[int(scores[0, 0, 2] < 0.9), 0, 2] == 1
    seeds = torch.zeros(2, 1, 5)
    seeds[0, 0, 1], seeds[1, 0, 3] = 1, 1  # two regions two pixels apart
    grown = dilate_disjoint(seeds, 1)
    assert grown[0, 0].tolist() == [1, 1, 0, 0, 0] and grown[1, 0].tolist() == [0, 0, 0, 1, 1]  # the pixel both reach stays free
    assert 0.3 < otsu_threshold(torch.cat([torch.full((50,), 0.1), torch.full((50,), 0.9)])) < 0.9
    assert downsampled_grids((75, 43)) == {(38, 22), (19, 11)}


def test_bad_input_gives_clear_errors(models, forced):
    with pytest.raises(NodeInputError, match=r"Object Masks from Attention \(LeakFree\): refine"):
        MasksFromAttention.execute(forced, models.clip(), PLAN, latent(), refine=2.0)
    with pytest.raises(NodeInputError, match=r"Object Masks from Attention \(LeakFree\): this CLIP gives 2048-d"):
        MasksFromAttention.execute(forced, models.clip("sdxl"), PLAN, latent())
