"""Attention Map Preview: the recorded maps are attention (per pixel they sum to 1 over the prompt's tokens), they
come from the sampler's own pass through the region attention program, and a planted leak shows in the numbers."""
import pytest
import torch

from harness.editing import EDITS, encode, object_masks
from leakfree_edit.attention.attention_maps import TargetMapRecorder, outside_share
from leakfree_edit.attention.region_attention import SigmaWindow, region_bias
from leakfree_edit.nodes.attention_preview import AttentionMapPreview, AttentionMapRecorder
from leakfree_edit.nodes.encode import ObjectRestrictedEncode
from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

LATENT = (1, 4, 12, 16)
TOKENS, HEADS, DIM, H, W = 8, 2, 4, 6, 8


def synthetic_call(seed=0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(1, HEADS, H * W, DIM, generator=generator)
    keys = torch.randn(1, HEADS, TOKENS, DIM, generator=generator)
    masks = torch.zeros(2, H, W)
    masks[0, :3, :4], masks[1, 3:, 4:] = 1, 1
    return query, keys, masks, {"original_shape": (1, 4, 2 * H, 2 * W), "activations_shape": (1, 320, H, W), "sigmas": torch.tensor([1.0])}


def record(spans, mode="model", query=None, keys=None, masks=None, options=None, bias=None):
    recorder = TargetMapRecorder(spans, TOKENS, strict=False, window=SigmaWindow(), mode=mode)
    recorder.observe(query, keys, bias, masks[None], options)
    return recorder.averaged()


def test_maps_are_attention_shares_that_sum_to_one_over_all_tokens():
    query, keys, masks, options = synthetic_call()
    everything = record(((0, TOKENS),), query=query, keys=keys, masks=masks, options=options)
    assert torch.allclose(everything, torch.ones_like(everything))
    parts = record(((0, 1), (1, 5), (5, TOKENS)), query=query, keys=keys, masks=masks, options=options)
    assert parts.min() >= 0 and torch.allclose(parts.sum(dim=1), torch.ones(1, H, W))
    direct = (query @ keys.transpose(-1, -2) / DIM**0.5).softmax(-1).mean(1)[..., 1:5].sum(-1).view(H, W)
    assert torch.allclose(parts[0, 1], direct)
    spans = ((1, 3), (3, 5))
    bias = region_bias(masks, spans, TOKENS, False, torch.float32)
    applied = record(spans, "applied", query, keys, masks, options, bias)
    assert applied[0][masks == 0].abs().max() == 0  # RGB-CAM's bias: no attention to object j outside region j
    assert outside_share(applied, masks[None]).abs().max() < 1e-6


def test_a_token_forced_to_attend_outside_its_region_shows_as_leak():
    query, keys, masks, options = synthetic_call()
    spans = ((1, 3), (3, 5))
    honest = outside_share(record(spans, query=query, keys=keys, masks=masks, options=options), masks[None])
    planted = keys.clone()
    planted[0, :, 1] = 0
    outside = (masks[0] == 0).flatten()
    query = query.clone()
    query[0, :, outside, :] = 0
    query[0, :, outside, 0] = 30.0  # pixels outside region 0 point at token 1 ...
    planted[0, :, 1, 0] = 30.0  # ... which belongs to object 0
    maps = record(spans, query=query, keys=planted, masks=masks, options=options)
    assert maps[0, 0].flatten()[outside].min() > 0.99  # nearly all attention of those pixels goes to object 0
    leaked = outside_share(maps, masks[None])
    assert leaked[0, 0] > honest[0, 0] + 0.1
    assert abs(leaked[0, 1] - honest[0, 1]) < 0.5  # object 1 is not the one forced


@pytest.fixture(scope="module")
def edit(models):
    clip = models.clip()
    target, _, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    return target, encode(clip, ""), plan


def sample(model, positive, negative, steps=3):
    import comfy.sample

    latent = torch.zeros(LATENT)
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    return comfy.sample.sample(model, noise, steps, 3.0, "euler", "normal", positive, negative, latent, denoise=1.0, seed=0, disable_pbar=True)


def preview(models, edit, region_masks, maps, steps=3, runs=1):
    target, negative, plan = edit
    model, = RegionGuidedCrossAttention.execute(models.unet(), target, region_masks)
    model, recording = AttentionMapRecorder.execute(model, maps=maps)
    for _ in range(runs):
        sample(model, target, negative, steps)
    image = torch.rand(1, 96, 128, 3)
    return recording, AttentionMapPreview.execute(recording, image, object_masks(), plan).result


def leaks_of(text):
    return [float(line.split("leak ")[1].split()[0]) for line in text.splitlines() if "leak " in line]


def test_recorded_through_the_sampling_pass_with_region_outlines_and_leaks(models, edit):
    recording, (panels, text) = preview(models, edit, object_masks(), "applied", runs=2)
    assert panels.shape == (1, 96, 2 * 128, 3)
    assert len(recording.recorder.sigmas) == 3  # the second run restarted the recording: 3 steps, not 6
    assert "brown-colored goat" in text and leaks_of(text) == pytest.approx([0, 0], abs=1e-6)  # RGB-CAM holds it in
    _, (_, model_text) = preview(models, edit, object_masks(), "model")
    assert all(leak > 0.05 for leak in leaks_of(model_text))  # the random model's own attention spreads everywhere


def test_a_planted_leak_through_the_program_shows_in_the_numbers(models, edit):
    """RGB-CAM given the two regions swapped forces each target's tokens into the other's region."""
    _, (_, text) = preview(models, edit, object_masks().flip(0), "applied")
    assert leaks_of(text) == pytest.approx([1, 1], abs=1e-6)


def test_the_dual_branch_source_rows_give_the_source_objects_maps(models, edit):
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch import DualBranchGuider

    target, negative, plan = edit
    clip = models.clip()
    model, = RegionGuidedCrossAttention.execute(models.unet(), target, object_masks())
    model, recording = AttentionMapRecorder.execute(model, maps="model", clip=clip, edit_plan=plan)
    source_prompt = encode(clip, plan.source_prompt)
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    guider, = DualBranchGuider.execute(model, source_prompt, target, negative, {"samples": latent}, source_cfg=1.0, target_cfg=2.0,
                                       self_attention_schedule="custom", custom_schedule=0.5)
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "sgm_uniform", 2)
    guider.sample(torch.randn(LATENT, generator=torch.Generator().manual_seed(0)), latent, comfy.samplers.ksampler("lcm"), sigmas,
                  disable_pbar=True, seed=0)
    source = recording.source.averaged()
    assert source.shape == (1, 2, 6, 8) and source.min() >= 0 and source.sum(dim=1).max() <= 1 + 1e-5
    assert not torch.allclose(source, recording.recorder.averaged())  # another prompt, another branch's rows
    panels, text = AttentionMapPreview.execute(recording, torch.rand(1, 96, 128, 3), None, plan).result
    assert panels.shape == (1, 2 * 96, 2 * 128, 3)  # a row of target panels, a row of source panels
    assert "source 1 (source wolf)" in text and "source branch recorded" in text
