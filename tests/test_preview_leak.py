"""Attention Map Preview measures each object's leak on each recorded layer's own grid, against its mask as
Region-Guided Cross-Attention resized it there, then averages over the grids: under RGB-CAM the applied attention
leaks exactly nothing at any size, while the model's own attention shows what it would have leaked."""
import pytest
import torch
import torch.nn.functional as F

import random_models
from leakfree_edit.attention.attention_maps import AttentionMapRecorder, outside_share
from leakfree_edit.attention.region_attention import SigmaWindow, region_bias
from leakfree_edit.masking.from_attention import downsampled_grids
from leakfree_edit.masking.ops import resize_masks
from leakfree_edit.nodes.attention_preview import AttentionMapPreview, AttentionMapRecorder as RecorderNode
from leakfree_edit.nodes.encode import ObjectRestrictedEncode
from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention
from leakfree_edit.tests._editing import EDITS, encode, object_masks, sample

# (height, width) in pixels: square, and not (odd latent sides, so the grids are odd too)
SIZES = [(128, 128), (128, 184), (256, 256), (256, 200), (512, 512), (512, 360)]


def coarse_and_fine_call(seed=0):
    """One synthetic RGB-CAM call on a fine (8 x 12) and on a coarse (4 x 6) grid, two objects whose mask edges cross the
    coarse cells."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, 24, 36)
    masks[0, :13, :17], masks[1, 13:, 19:] = 1, 1
    calls = []
    for h, w in ((8, 12), (4, 6)):
        query, keys = torch.randn(1, 2, h * w, 4, generator=generator), torch.randn(1, 2, 8, 4, generator=generator)
        options = {"original_shape": (1, 4, 16, 24), "activations_shape": (1, 320, h, w), "sigmas": torch.tensor([1.0])}
        calls.append((query, keys, resize_masks(masks, h, w), options))
    return masks, calls


def test_leak_is_measured_on_each_grid_not_after_upsampling():
    masks, calls = coarse_and_fine_call()
    spans = ((1, 3), (3, 5))
    recorder = AttentionMapRecorder(spans, 8, strict=False, window=SigmaWindow(), mode="applied")
    for query, keys, layer_masks, options in calls:
        recorder.observe(query, keys, region_bias(layer_masks, spans, 8, False, torch.float32), layer_masks[None], options)
    assert torch.equal(recorder.leaks(masks[None]), torch.zeros(1, 2))  # exactly nothing outside each grid's own mask
    upsampled = outside_share(recorder.averaged(), masks[None])  # the coarse grid spread over the border of the fine one
    assert upsampled.max() > 0.05
    model = AttentionMapRecorder(spans, 8, strict=False, window=SigmaWindow(), mode="model")
    for query, keys, layer_masks, options in calls:
        model.observe(query, keys, None, layer_masks[None], options)
    per_grid = [outside_share(model.sums[size], masks[None]) for size in ((8, 12), (4, 6))]
    assert torch.allclose(model.leaks(masks[None]), (per_grid[0] + per_grid[1]) / 2)
    assert model.leaks(masks[None]).min() > 0.05  # what the model's own attention would have leaked
    silent = AttentionMapRecorder(spans, 8, strict=False, window=SigmaWindow(), mode="applied")
    query, keys, layer_masks, options = calls[1]
    layer_masks = layer_masks.clone()
    layer_masks[1] = 0  # object 2's mask vanishes on this grid: its tokens get no attention anywhere there
    silent.observe(query, keys, region_bias(layer_masks, spans, 8, False, torch.float32), layer_masks[None], options)
    leaks = silent.leaks(layer_masks[None])
    assert leaks[0, 0] == 0 and torch.isnan(leaks[0, 1])  # not counted as leak


@pytest.fixture(scope="module")
def three_level_unet():
    """Cross-attention at 1/2 and 1/4 of the latent, as SD1.5 records at its 32^2 and 16^2 levels at 512 px."""
    return random_models.unet("sd15", "tiny 3 levels")


@pytest.fixture(scope="module")
def edit(models):
    clip = models.clip()
    target, _, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    return target, encode(clip, ""), plan


@pytest.mark.parametrize("isolation", ["ale", "strict"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_applied_maps_leak_exactly_nothing_under_rgb_cam_at_every_size(three_level_unet, edit, isolation, size):
    target, negative, plan = edit
    height, width = size
    masks = object_masks(height, width)
    model, = RegionGuidedCrossAttention.execute(three_level_unet.clone(), target, masks, isolation=isolation)
    model, applied = RecorderNode.execute(model, maps="applied")
    model, own = RecorderNode.execute(model, maps="model")
    sample(model, target, negative, torch.zeros(1, 4, height // 8, width // 8), cfg=2.0, steps=1)
    assert set(applied.recorder.sums) == downsampled_grids((height // 8, width // 8)) and len(applied.recorder.sums) == 2
    sets = masks[None]
    assert torch.equal(applied.recorder.leaks(sets, applied.resize), torch.zeros(1, 2))
    _, text = AttentionMapPreview.execute(applied, torch.rand(1, height, width, 3), None, plan).result
    assert [line.split("leak ")[1].split()[0] for line in text.splitlines() if "leak " in line] == ["0.0000", "0.0000"]
    assert own.recorder.leaks(sets, own.resize).min() > 0.01  # the random model's own attention spreads everywhere
    if (height, width) == (128, 128):  # the measure this replaces: the coarse grid upsampled over the border
        finest = max(applied.recorder.sums)
        old = 1 - (applied.recorder.averaged() * resize_masks(masks, *finest)).flatten(2).sum(-1) / applied.recorder.averaged().flatten(2).sum(-1)
        assert old.max() > 0.01, old
