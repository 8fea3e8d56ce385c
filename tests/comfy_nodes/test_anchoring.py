"""Region Anchoring through ComfyUI's sampler on a random-weight UNet."""
import pytest
import torch

from harness.editing import EDITS, encode, object_masks
from leakfree_edit.attention.anchoring import anchoring_loss
from leakfree_edit.integration.errors import NodeInputError
from leakfree_edit.nodes.anchoring import RegionAnchoring
from leakfree_edit.nodes.encode import ObjectRestrictedEncode
from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

LATENT = (1, 4, 12, 16)


def sample(model, positive, negative, steps=4, cfg=3.0):
    import comfy.sample

    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               denoise=1.0, seed=0, disable_pbar=True)


@pytest.fixture(scope="module")
def edit(models):
    clip = models.clip()
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    return target, encode(clip, "")


def anchored(models, edit, **settings):
    model, = RegionGuidedCrossAttention.execute(models.unet(), edit[0], object_masks())
    model, = RegionAnchoring.execute(model, **settings)
    return model, model.model_options["model_function_wrapper"]


def test_anchoring_loss_decreases_over_the_guided_steps(models, edit):
    model, anchoring = anchored(models, edit, strength=0.2, steps_fraction=0.6, iterations=2)
    sample(model, *edit, steps=4)
    assert len(anchoring.losses) >= 2  # the early steps are guided, the late ones are not
    assert len(anchoring.losses) < 4
    for sigma, before, after in anchoring.losses:
        assert after < before, (sigma, before, after)


def test_guidance_changes_the_result_and_leaves_no_graph(models, edit):
    plain, _ = anchored(models, edit, strength=0.0)
    model, _ = anchored(models, edit, strength=0.2, steps_fraction=0.6)
    out_plain, out = sample(plain, *edit, steps=2), sample(model, *edit, steps=2)
    assert not out.requires_grad and out.grad_fn is None
    assert not torch.allclose(out, out_plain)
    assert all(p.grad is None for p in model.model.diffusion_model.parameters())


def test_anchoring_works_under_comfyuis_inference_mode(models, edit):
    """ComfyUI runs nodes in torch.inference_mode(): weights and inputs are inference tensors there."""
    from harness import random_models

    with torch.inference_mode():
        unet = random_models.unet("sd15")
        assert next(unet.model.parameters()).is_inference()
        model, = RegionGuidedCrossAttention.execute(unet, edit[0], object_masks())
        model, = RegionAnchoring.execute(model, strength=0.2, steps_fraction=0.6)
        sample(model, *edit, steps=2)
    anchoring = model.model_options["model_function_wrapper"]
    assert anchoring.losses and all(after < before for _, before, after in anchoring.losses)
    assert next(unet.model.parameters()).is_inference()  # the copies were only lent for the step


def test_an_existing_model_wrapper_keeps_running(models, edit):
    calls = []
    model, = RegionGuidedCrossAttention.execute(models.unet(), edit[0], object_masks())
    model.set_model_unet_function_wrapper(lambda apply, args: calls.append(1) or apply(args["input"], args["timestep"], **args["c"]))
    model, = RegionAnchoring.execute(model, strength=0.1, steps_fraction=1.0, iterations=1)
    sample(model, *edit, steps=1)
    assert len(calls) == 2  # the guided forward and the model call


def test_loss_is_zero_for_attention_spread_evenly_inside_the_region():
    regions = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])  # [mask sets, objects, pixels]
    assert float(anchoring_loss([(torch.tensor([[[0.3, 0.3, 0.0, 0.0]]]), regions)])) == pytest.approx(0.0, abs=1e-6)
    assert float(anchoring_loss([(torch.tensor([[[0.3, 0.0, 0.3, 0.0]]]), regions)])) == pytest.approx(1.0, abs=1e-6)


def test_bad_input_gives_clear_errors(models, edit):
    with pytest.raises(NodeInputError, match=r"Region Anchoring \(LeakFree\): .*Connect Region-Guided Cross-Attention first"):
        RegionAnchoring.execute(models.unet())
    model, = RegionGuidedCrossAttention.execute(models.unet(), edit[0], object_masks())
    with pytest.raises(NodeInputError, match="strength is 2"):
        RegionAnchoring.execute(model, strength=2.0)
    with pytest.raises(NodeInputError, match="iterations is 0"):
        RegionAnchoring.execute(model, iterations=0)

