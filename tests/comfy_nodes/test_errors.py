"""Bad input gets a clear error that names the node and the fix; resizable input is resized."""
import pytest
import torch

from harness.editing import EDITS


@pytest.fixture(scope="module")
def encoded(models):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    return ObjectRestrictedEncode.execute(models.clip(), EDITS, "object")


def node_error():
    from leakfree_edit.integration.errors import NodeInputError

    return NodeInputError


def test_mask_count_must_match_the_plan(models, encoded):
    from leakfree_edit.nodes.painted_masks import ObjectMasksPainted
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    target, _, plan = encoded
    with pytest.raises(node_error(), match=r"Region-Guided Cross-Attention \(LeakFree\): got 3 object masks for 2 objects \(wolf, moon\)"):
        RegionGuidedCrossAttention.execute(models.unet(), target, torch.ones(3, 64, 64))
    with pytest.raises(node_error(), match=r"Object Masks from Painted Masks \(LeakFree\): got 1 masks for 2 objects"):
        ObjectMasksPainted.execute(plan, torch.ones(1, 64, 64), 4.0)


@pytest.mark.parametrize("edits, message", [("", "the edit list is empty"), ("wolf goat", "line 1 .* has no '->'"),
                                            ("wolf -> goat\nmoon -> ", "line 2")])
def test_edit_list_errors_name_the_line(models, edits, message):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    with pytest.raises(node_error(), match=rf"Object-Restricted Encode \(LeakFree\): {message}"):
        ObjectRestrictedEncode.execute(models.clip(), edits, "object")


def test_conditioning_without_ore_payload(models):
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    plain = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]
    with pytest.raises(node_error(), match="did not come from Object-Restricted Encode"):
        RegionGuidedCrossAttention.execute(models.unet(), plain, torch.ones(2, 64, 64))


def test_sd15_plan_on_an_sdxl_model(models, encoded):
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    target, _, _ = encoded
    with pytest.raises(node_error(), match="encoded for a SD1.5 model .* this model takes 2048-d"):
        RegionGuidedCrossAttention.execute(models.unet("sdxl"), target, torch.ones(2, 64, 64))


def test_masks_of_another_size_are_resized(encoded):
    from leakfree_edit.nodes.painted_masks import ObjectMasksPainted

    _, _, plan = encoded
    image = torch.rand(1, 96, 128, 3)
    first, second = torch.zeros(1, 48, 64), torch.zeros(1, 300, 400)
    first[:, :24, :32] = 1
    second[:, 150:, 200:] = 1
    masks, background, preview = ObjectMasksPainted.execute(plan, first, 0.0, image=image, mask_2=second)
    assert masks.shape == (2, 96, 128) and background.shape == (1, 96, 128) and preview.shape == (1, 96, 128, 3)
    assert masks[0, :48, :64].all() and not masks[0, 48:, :].any()
    assert masks[1, 48:, 64:].all() and not masks[1, :48, :].any()
    assert torch.equal(background[0], 1 - (masks[0] + masks[1]).clamp(max=1))


def test_dilation_grows_by_a_disk_of_the_requested_percent(encoded):
    from leakfree_edit.nodes.painted_masks import ObjectMasksPainted

    _, _, plan = encoded
    masks = torch.zeros(2, 100, 200)
    masks[0, 50, 50] = 1
    masks[1, 20, 150] = 1
    dilated, _, _ = ObjectMasksPainted.execute(plan, masks, 4.0)
    assert dilated[0].sum() == 49  # radius 4 px = 4% of the 100 px short side: the lattice points with x² + y² <= 16
    assert dilated[0, 48:53, 48:53].all() and dilated[0, 46, 50] and not dilated[0, 46, 46]


def test_start_after_end_is_refused(models, encoded):
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    target, _, _ = encoded
    with pytest.raises(node_error(), match="start_percent .* is after end_percent"):
        RegionGuidedCrossAttention.execute(models.unet(), target, torch.ones(2, 64, 64), "ale", 0.8, 0.2)


def test_paste_needs_the_blend_noise_mask():
    from leakfree_edit.nodes.background_blend import LatentBackgroundPaste

    with pytest.raises(node_error(), match=r"Latent Background Paste \(LeakFree\): 'samples' has no noise mask"):
        LatentBackgroundPaste.execute({"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.zeros(1, 4, 8, 8)})
