"""ALE-Edit's official rules, each pinned on exact inputs (ml-postech/ALE: sam_utils.py, rgb_cam.py,
attention_control.py, ore.py, pipeline_ead.py), and the pack's own variants beside them: the rules that need no
ComfyUI (dilation, layer masks, the blend mask, overlaps, the workflow's settings). The schedule is in tests/comfy_nodes/."""
import numpy as np
import pytest
import torch

from leakfree_edit.masking.ops import (
    dilate,
    dilation_radius,
    multiscale_foreground,
    own_fraction,
    region_weights,
    resize_masks,
    resolve_overlaps,
)
from pipelines.comfyui import ROOT


def ale_structure(radius: int) -> np.ndarray:
    """sam_utils.py: y, x = np.ogrid[-k:k+1, -k:k+1]; circular_structure = x**2 + y**2 <= k**2."""
    y, x = np.ogrid[-radius: radius + 1, -radius: radius + 1]
    return x**2 + y**2 <= radius**2


def test_dilation_is_ales_disk_of_radius_int_4_percent_of_the_side():
    from scipy.ndimage import binary_dilation

    assert [dilation_radius(s, s) for s in (768, 512, 128, 100, 24)] == [30, 20, 5, 4, 0]  # int(side * 0.04)
    assert dilation_radius(96, 128) == 3  # the short side
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 61, 83, generator=generator) > 0.995).float()
    masks[2] = 0  # an empty mask stays empty
    for radius in (1, 4, 9, 30):
        expected = np.stack([binary_dilation(m.numpy() > 0, structure=ale_structure(radius)) for m in masks])
        assert torch.equal(dilate(masks, radius), torch.from_numpy(expected).float()), radius


def test_layer_masks_are_the_top_left_pixel_of_each_cell_or_the_area_majority():
    masks = torch.zeros(1, 8, 8)
    masks[0, 0, 0] = 1  # the top-left pixel of the first 4x4 cell only
    masks[0, 4:8, 5:8] = 1  # 12 of the 16 pixels of the last cell, not its top-left one
    nearest, area = resize_masks(masks, 2, 2, "nearest"), resize_masks(masks, 2, 2, "area")
    assert nearest[0].tolist() == [[1, 0], [0, 0]]  # rgb_cam.py: torchvision Resize, NEAREST
    assert area[0].tolist() == [[0, 0], [0, 1]]
    odd = torch.zeros(1, 10, 14)
    odd[0, ::2, ::2] = 1
    assert resize_masks(odd, 5, 7, "nearest").all()  # nearest source index floor(i * 10 / 5) = 2i: every even pixel


def test_background_blend_mask_is_the_blocky_union_of_four_nearest_scales():
    """attention_control.py BackgroundBlend: foreground = OR over m in (1, 2, 4, 8) of nearest(nearest(union, s // m), s)."""
    union = torch.zeros(1, 128, 128)
    union[0, 60:71, 60:71] = 1  # 11 x 11 image pixels around pixel 64
    # Nearest from 128 to s samples pixel i * 128 / s: at 16, 8, 4, 2 pixel 64 is cell 8, 4, 2, 1, and back at 16 those
    # cells cover latent rows and columns 8, 8-9, 8-11 and 8-15: the blocky union is the whole 8 x 8 quarter.
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 8:, 8:] = 1
    assert torch.equal(multiscale_foreground(union, 16, 16), expected)
    small = torch.zeros(1, 128, 128)
    small[0, 40:48, 72:80] = 1  # on pixel (40, 72) = latent cell (5, 9) only, none of the coarse samples
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 5, 9] = 1
    assert torch.equal(multiscale_foreground(small, 16, 16), expected)
    assert multiscale_foreground(union.expand(3, -1, -1), 12, 20).shape == (3, 1, 12, 20)  # batches and non-square latents


def test_overlap_rules_background_and_inner():
    boy = torch.zeros(1, 6, 6)
    boy[0, 1:6, 1:5] = 1
    shirt = torch.zeros(1, 6, 6)
    shirt[0, 3:5, 2:4] = 1  # inside the boy
    masks = torch.cat([boy, shirt])
    ale = resolve_overlaps(masks, "background")
    assert torch.equal(ale, masks) and region_weights(ale)[:, 2].sum() == 0  # the shirt never gets its own term
    inner = resolve_overlaps(masks, "inner")
    assert torch.equal(inner[1], shirt[0]) and torch.equal(inner[0], boy[0] - shirt[0])  # the smaller one owns the shared pixels
    assert own_fraction(masks, ale).tolist() == pytest.approx([16 / 20, 0.0])
    assert own_fraction(masks, inner).tolist() == pytest.approx([16 / 20, 1.0])
    tie = resolve_overlaps(torch.cat([shirt, shirt.roll(1, dims=2)]), "inner")  # equal areas: the earlier line
    assert torch.equal(tie[0], shirt[0]) and tie[1].sum() == 2


def test_the_ale_workflow_uses_the_official_settings():
    import json

    graph = json.loads((ROOT / "workflows" / "api" / "edit_dual_branch_lcm_sd15.json").read_text())
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    assert by_class["BasicScheduler"]["scheduler"] == "simple" and by_class["BasicScheduler"]["steps"] == 15
    assert by_class["KSamplerSelect"]["sampler_name"] == "lcm" and by_class["ModelSamplingDiscrete"]["sampling"] == "lcm"
    guider = by_class["LeakFreeDualBranchGuider"]
    assert (guider["start"], guider["background_blend"], guider["source_cfg"], guider["target_cfg"]) == ("noise", "ale", 1.0, 2.0)
    assert by_class["LeakFreeRegionGuidedCrossAttention"]["mask_resize"] == "nearest"
    masks = by_class["LeakFreeObjectMasksGroundedSAM"]
    assert (masks["dilation_percent"], masks["box_threshold"], masks["text_threshold"], masks["overlap"]) == (4.0, 0.45, 0.4, "background")
