"""Attention Map Preview on a three-level UNet: under RGB-CAM the applied attention leaks exactly nothing at any size
(square or not, ale and strict), while the model's own attention shows what it would have leaked."""
import pytest
import torch

from harness import random_models
from leakfree_edit.masking.ops import downsampled_grids
from leakfree_edit.masking.ops import resize_masks
from leakfree_edit.nodes.attention_preview import AttentionMapPreview, AttentionMapRecorder
from leakfree_edit.nodes.encode import ObjectRestrictedEncode
from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention
from harness.editing import EDITS, encode, object_masks, sample

# (height, width) in pixels: square, and not (odd latent sides, so the grids are odd too)
SIZES = [(128, 128), (128, 184), (256, 256), (256, 200), (512, 512), (512, 360)]


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
    model, applied = AttentionMapRecorder.execute(model, maps="applied")
    model, own = AttentionMapRecorder.execute(model, maps="model")
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
