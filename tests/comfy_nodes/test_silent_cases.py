"""The last inputs that ran without a word: painted masks of another shape with no image wired, Pixel Background
Composite given a source of another shape or more sources than edited images, the SD dual-branch guider on a sampler
other than lcm. Each now refuses with the node's own message, or warns on the node and in the log."""
import logging

import pytest
import torch

from harness.editing import EDITS, encode, sample
from leakfree_edit.integration.errors import NodeInputError

LATENT = (1, 4, 12, 16)  # a 128 x 96 image


@pytest.fixture(scope="module")
def wide_masks(models):
    """Masks painted on a 4:1 picture, through Object Masks from Painted Masks with no image connected (nothing to check them against)."""
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.painted_masks import ObjectMasksPainted

    target, _, plan = ObjectRestrictedEncode.execute(models.clip(), EDITS, "object")
    drawn = torch.zeros(2, 64, 256)
    drawn[0, :, :100], drawn[1, :, 150:] = 1, 1
    masks, _, _ = ObjectMasksPainted.execute(plan, drawn[0:1], 4.0, mask_2=drawn[1:2])
    return target, masks


def test_painted_masks_of_another_shape_are_refused_by_the_first_node_that_sees_the_latent(models, wide_masks):
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    target, masks = wide_masks
    model, = RegionGuidedCrossAttention.execute(models.unet(), target, masks)  # no latent yet: nothing to compare
    latent = torch.randn(LATENT)
    with pytest.raises(NodeInputError, match=r"^Latent Background Blend \(LeakFree\): the object masks are 256x64 px but the source "
                                             r"latent is for a 128x96 px image \(another shape\)"):
        LatentBackgroundBlend.execute({"samples": latent}, masks, model)
    with pytest.raises(NodeInputError, match=r"^Region-Guided Cross-Attention \(LeakFree\): the object masks are 256x64 px but the "
                                             r"latent being sampled is for a 128x96 px image .*Object Masks node's image input"):
        sample(model, target, encode(models.clip(), ""), latent, 3.0, steps=1)


def composite(edited, source, masks):
    from leakfree_edit.nodes.pixel_composite import PixelBackgroundComposite

    return PixelBackgroundComposite.execute(edited, source, masks, feather=0)


def test_pixel_composite_refuses_a_source_of_another_shape_or_more_sources_than_edits():
    masks = torch.zeros(2, 32, 32)
    masks[0, 4:12, 4:12] = 1
    edited = torch.rand(1, 32, 32, 3)
    with pytest.raises(NodeInputError, match=r"^Pixel Background Composite \(LeakFree\): the edited image is 32x32 px but the source "
                                             r"is 64x16 px \(another shape\)"):
        composite(edited, torch.rand(1, 16, 64, 3), masks)
    with pytest.raises(NodeInputError, match=r"^Pixel Background Composite \(LeakFree\): the object masks are 48x12 px"):
        composite(edited, torch.rand(1, 32, 32, 3), torch.zeros(2, 12, 48))
    with pytest.raises(NodeInputError, match=r"^Pixel Background Composite \(LeakFree\): 3 source images for 1 edited image: give one, "
                                             r"or one per edited image"):
        composite(edited, torch.rand(3, 32, 32, 3), masks)
    image, _ = composite(torch.rand(3, 32, 32, 3), torch.rand(1, 32, 32, 3), masks)  # one source for a batch of edits: documented
    assert image.shape == (3, 32, 32, 3)


@pytest.mark.parametrize("sampler, warned", [("lcm", False), ("euler", True), ("dpmpp_2m", True)])
def test_the_dual_branch_guider_says_it_is_made_for_lcm(models, caplog, sampler, warned):
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip()
    target, source, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    guider, = DualBranchGuider.execute(models.unet(), source, target, encode(clip, ""), {"samples": latent})
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "sgm_uniform", 1)
    with caplog.at_level(logging.WARNING):
        guider.sample(torch.randn(LATENT), latent, comfy.samplers.ksampler(sampler), sigmas, disable_pbar=True, seed=0)
    messages = [r.getMessage() for r in caplog.records if "made for lcm" in r.getMessage()]
    assert bool(messages) == warned
    if warned:
        assert messages[0].startswith(f"Dual-Branch Edit Guider (LeakFree): the sampler is {sampler}, not lcm")
