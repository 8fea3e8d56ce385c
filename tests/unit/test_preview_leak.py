"""The preview's leak is measured on each recorded layer's own grid, against the mask as Region-Guided Cross-Attention
resized it there, not after upsampling to the finest grid (on planted maps; on the UNet in tests/comfy_nodes/)."""
import torch

from leakfree_edit.attention.attention_maps import TargetMapRecorder, outside_share
from leakfree_edit.attention.region_attention import SigmaWindow, region_bias
from leakfree_edit.masking.ops import resize_masks


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
    recorder = TargetMapRecorder(spans, 8, strict=False, window=SigmaWindow(), mode="applied")
    for query, keys, layer_masks, options in calls:
        recorder.observe(query, keys, region_bias(layer_masks, spans, 8, False, torch.float32), layer_masks[None], options)
    assert torch.equal(recorder.leaks(masks[None]), torch.zeros(1, 2))  # exactly nothing outside each grid's own mask
    upsampled = outside_share(recorder.averaged(), masks[None])  # the coarse grid spread over the border of the fine one
    assert upsampled.max() > 0.05
    model = TargetMapRecorder(spans, 8, strict=False, window=SigmaWindow(), mode="model")
    for query, keys, layer_masks, options in calls:
        model.observe(query, keys, None, layer_masks[None], options)
    per_grid = [outside_share(model.sums[size], masks[None]) for size in ((8, 12), (4, 6))]
    assert torch.allclose(model.leaks(masks[None]), (per_grid[0] + per_grid[1]) / 2)
    assert model.leaks(masks[None]).min() > 0.05  # what the model's own attention would have leaked
    silent = TargetMapRecorder(spans, 8, strict=False, window=SigmaWindow(), mode="applied")
    query, keys, layer_masks, options = calls[1]
    layer_masks = layer_masks.clone()
    layer_masks[1] = 0  # object 2's mask vanishes on this grid: its tokens get no attention anywhere there
    silent.observe(query, keys, region_bias(layer_masks, spans, 8, False, torch.float32), layer_masks[None], options)
    leaks = silent.leaks(layer_masks[None])
    assert leaks[0, 0] == 0 and torch.isnan(leaks[0, 1])  # not counted as leak
