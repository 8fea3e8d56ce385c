"""Dynamic Prompt Learning's inner loop through ComfyUI's sampler and the Dual-Branch Edit Guider on a random-weight
UNet (the test UNet has levels 1x and 2x: the losses read 1/2)."""
import math
import re

import pytest
import torch

from harness.editing import EDITS, encode, object_masks
from leakfree_edit.attention import prompt_learning
from leakfree_edit.integration.errors import NodeInputError

HEIGHT, WIDTH = 12, 16  # a 96 x 128 px image
NODE = "Dynamic Prompt Learning (LeakFree)"


def source_latent(seed=3):
    return torch.randn(1, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def no_learned_rows_cached():
    """Each test learns afresh: the cache is per image, plan and seed, and these tests share all three."""
    prompt_learning._CACHE.clear()


@pytest.fixture(scope="module")
def prompts(models):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip()
    target, source, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    return {"clip": clip, "target": target, "source": source, "plan": plan, "negative": encode(clip, "")}


def learning(unet, prompts, **settings):
    from leakfree_edit.nodes.prompt_learning import DynamicPromptLearning
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    regional, = RegionGuidedCrossAttention.execute(unet, prompts["target"], object_masks())
    settings = {"attention_grid": "1/2", "object_masks": object_masks(), **settings}
    model, = DynamicPromptLearning.execute(regional, prompts["clip"], prompts["plan"], **settings)
    return model, model.model_options["model_function_wrapper"]


def edit(model, prompts, steps=2, seed=0, start="img2img"):
    """The edit_dpl_sd15 graph's sampling: the dual-branch guider (LCM) on ``model``, under ComfyUI's inference mode.
    From the noised source latent (img2img), so the first step learns too (from pure noise it learns nothing)."""
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch import DualBranchGuider

    latent = source_latent()
    with torch.inference_mode():
        guider, = DualBranchGuider.execute(model, prompts["source"], prompts["target"], prompts["negative"], {"samples": latent},
                                           source_cfg=1.0, target_cfg=2.0, self_attention_schedule="custom", custom_schedule=0.5,
                                           start=start)
        sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "sgm_uniform", steps)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        return guider.sample(noise, latent, comfy.samplers.ksampler("lcm"), sigmas, disable_pbar=True, seed=seed)


def snapshot(unet, clip) -> dict:
    """What must not change: both models' weights, the UNet's patches and options, the CLIP's embedding table."""
    return {
        "unet": {k: v.clone() for k, v in unet.model.state_dict().items()},
        "clip": {k: v.clone() for k, v in clip.cond_stage_model.state_dict().items()},
        "patches": dict(unet.patches), "options": repr(unet.model_options), "clip_patches": dict(clip.patcher.patches),
        "grad": [p.requires_grad for p in clip.cond_stage_model.parameters()],
    }


def assert_unchanged(before: dict, after: dict) -> None:
    for part in ("unet", "clip"):
        assert before[part].keys() == after[part].keys()
        for name, value in before[part].items():
            assert torch.equal(value, after[part][name]), f"{part}.{name} changed"
    assert before["patches"] == after["patches"] and before["clip_patches"] == after["clip_patches"]
    assert before["options"] == after["options"] and before["grad"] == after["grad"]


# --- through ComfyUI's sampler --------------------------------------------------------------

def test_disjointness_falls_over_the_inner_iterations_and_nothing_leaks(models, prompts):
    """Random weights give both objects nearly the same map (cosine ~ 1: a planted overlap). Learning the two words'
    rows drives their maps apart; the model and CLIP passed in are unchanged, no graph is left, and the second
    run of the same graph takes every step's rows from the cache."""
    unet, clip = models.unet(), prompts["clip"]
    before = snapshot(unet, clip)
    model, dpl = learning(unet, prompts, iterations=4, learning_rate=0.05, attend_weight=0.0, background_weight=0.0,
                          disjoint_weight=1.0, disjoint_beta=0.0)
    first = edit(model, prompts, steps=2)
    learned = [record for record in dpl.history if not record.cached]
    assert len(learned) == 2 and not any(record.stopped for record in learned)
    for record in learned:
        cosine = record.losses[:, 2]
        assert len(cosine) == 4 and float(cosine[0]) > 0.9
        assert (cosine[2:] < cosine[0]).all() and (cosine[2:].diff() < 0).all(), cosine  # after AdamW's first (sign) step, every update lowers it
        assert float(cosine[-1]) < float(cosine[0]) - 2e-3, cosine
    assert not first.requires_grad and first.grad_fn is None
    assert all(p.grad is None for p in model.model.diffusion_model.parameters())
    assert all(p.grad is None for p in clip.cond_stage_model.parameters())
    assert_unchanged(before, snapshot(unet, clip))

    again = edit(model, prompts, steps=2)
    assert [record.cached for record in list(dpl.history)[-2:]] == [True, True]
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert_unchanged(before, snapshot(unet, clip))

    plain, = learning(unet, prompts, iterations=0)[:1]
    assert (edit(plain, prompts, steps=2) - first).abs().max() > 1e-4  # the learned source prompt changed the edit


def test_early_stop_thresholds_end_the_loop(models, prompts):
    """Thresholds above every loss: one forward pass a step, no update (DPL checks before it steps). A disjointness
    threshold between the third and the fourth pass's cosine: the same loop ends at the fourth pass."""
    model, dpl = learning(models.unet(), prompts, iterations=4, attend_beta=5.0, background_beta=5.0, disjoint_beta=5.0)
    edit(model, prompts, steps=2)
    records = list(dpl.history)
    assert len(records) == 2 and all(r.stopped and r.losses.shape == (1, 3) for r in records)
    assert records[1].thresholds == pytest.approx(tuple(5.0 * math.exp(-(1 * 50 / 2) / alpha) for alpha in (25, 50, 25)))  # DPL's scale

    settings = dict(iterations=4, learning_rate=0.05, attend_weight=0.0, background_weight=0.0, disjoint_weight=1.0)
    model, dpl = learning(models.unet(), prompts, disjoint_beta=0.0, **settings)
    edit(model, prompts, steps=1)
    full, = dpl.history
    cosine = full.losses[:, 2]
    assert not full.stopped and len(cosine) == 4 and (full.losses[:, :2] == 0).all()  # a term of weight 0 counts as 0
    assert float(cosine[3]) < float(cosine[:3].min())
    model, dpl = learning(models.unet(), prompts, disjoint_beta=float(cosine[3] + cosine[:3].min()) / 2, **settings)
    edit(model, prompts, steps=1)
    stopped, = dpl.history
    assert stopped.stopped and not stopped.cached and len(stopped.losses) == 4
    torch.testing.assert_close(stopped.losses, full.losses)


def test_background_without_masks_comes_from_clustered_self_attention(models, prompts):
    from leakfree_edit.nodes.prompt_learning import DynamicPromptLearning
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    regional, = RegionGuidedCrossAttention.execute(models.unet(), prompts["target"], object_masks())
    model, = DynamicPromptLearning.execute(regional, prompts["clip"], prompts["plan"], attention_grid="1/2", iterations=1,
                                           source_latent={"samples": source_latent()})
    dpl = model.model_options["model_function_wrapper"]
    assert dpl.background.shape == (1, HEIGHT, WIDTH) and set(dpl.background.unique().tolist()) <= {0.0, 1.0}
    edit(model, prompts, steps=1)  # DPL's three terms with their default weights, one update
    record, = dpl.history
    assert record.losses.shape == (1, 3) and torch.isfinite(record.losses).all() and (record.losses[0, [0, 2]] > 0).all()
    with pytest.raises(NodeInputError, match="source_latent"):
        DynamicPromptLearning.execute(regional, prompts["clip"], prompts["plan"], attention_grid="1/2")


def test_bad_inputs_name_the_node_and_the_fix(models, prompts):
    with pytest.raises(NodeInputError) as error:
        learning(models.unet(), prompts, nouns="wolf, sun")
    assert str(error.value).startswith(NODE) and "'sun' is not a word of object 2 ('moon'" in str(error.value)
    assert "Name a word of that object in nouns" in str(error.value)
    with pytest.raises(NodeInputError, match="nouns names 1 words for 2 objects"):
        learning(models.unet(), prompts, nouns="wolf")
    model, _ = learning(models.unet(), prompts, iterations=1, attention_grid="1/8")  # the test UNet has no 1/8 level
    with pytest.raises(NodeInputError, match=re.escape(f"{NODE}: no cross-attention layer 8x below the latent")):
        edit(model, prompts, steps=1)
