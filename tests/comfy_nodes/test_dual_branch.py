"""Dual-Branch Edit Guider through ComfyUI's real sampler on random-weight UNets (its math on tensors in tests/unit/)."""
import pytest
import torch

import leakfree_edit.attention.region_attention as region_attention
import leakfree_edit.attention.self_attention as self_attention
from harness.editing import EDITS, encode, object_masks
from leakfree_edit.attention.dual_branch import (
    SOURCE_COND,
    SOURCE_UNCOND,
    TARGET_COND,
    TARGET_UNCOND,
)
from leakfree_edit.masking.ops import latent_mask

HEIGHT, WIDTH = 12, 16


def source_latent(batch=1, seed=3):
    return torch.randn(batch, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def guider_for(model, source, target, negative, latent, **options):
    from leakfree_edit.nodes.dual_branch import DualBranchGuider

    settings = dict(source_cfg=1.0, target_cfg=2.0, self_attention_schedule="custom", custom_schedule=1.0)
    settings.update(options)
    guider, = DualBranchGuider.execute(model, source, target, negative, {"samples": latent}, **settings)
    return guider


def run(guider, latent, steps=4, sampler="lcm", seed=0):
    """What SamplerCustomAdvanced does with (noise, guider, sampler, sigmas, latent_image)."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "sgm_uniform", steps)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # the LCM sampler's fresh noise
    return guider.sample(noise, latent, comfy.samplers.ksampler(sampler), sigmas, disable_pbar=True, seed=seed)


@pytest.fixture(scope="module")
def prompts(models):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip()
    target, source, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    return {"target": target, "source": source, "plan": plan, "negative": encode(clip, ""), "plain": encode(clip, "a goat")}


# --- through ComfyUI's sampler ------------------------------------------------------------

@pytest.mark.parametrize("kind, cfg", [("sd15", 1.0), ("sd15", 2.5), ("sdxl", 2.5)])
def test_virtual_inversion_reconstructs_the_source(models, kind, cfg):
    """Target conditioning and CFG equal to the source's, no region nodes: the result is the source latent."""
    from leakfree_edit.integration.checks import ORE_KEY
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip(kind)
    target, source, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    same_as_source = [[source[0][0], dict(source[0][1], **{ORE_KEY: target[0][1][ORE_KEY]})]]
    latent, negative = source_latent(batch=2), encode(clip, "")
    guider = guider_for(models.unet(kind), source, same_as_source, negative, latent, source_cfg=cfg, target_cfg=cfg)
    torch.testing.assert_close(run(guider, latent), latent, rtol=1e-5, atol=1e-5)
    edited = run(guider_for(models.unet(kind), source, target, negative, latent, source_cfg=cfg, target_cfg=cfg), latent)
    assert (edited - latent).abs().max() > 1e-3  # a real edit moves it: the check above can fail


def ddcm_reference(model, prompts, latent, sigmas, noise, seed, eta=1, start="img2img", keep=None):
    """InfEdit's DDCM loop as ALE-Edit's pipeline_ead.py runs it, written out on VP latents with the unpatched model.

    ``start``: "img2img" (x_T = sqrt(alpha_T) x0 + sqrt(1 - alpha_T) n) or "noise" (x_T = n, ALE-Edit's start) for both
    branches. eta = 1: both re-noised with the same fresh z; eta = 0: along eps + eps_c. ``keep`` [1, 1, h, w]: ALE-Edit's
    background blend, x_t <- where(keep, x_s, x_t) after every step but the first; the result is the last x0_hat.
    """
    import comfy.sampler_helpers as helpers
    import comfy.samplers

    conds = {k: helpers.convert_cond(prompts[k]) for k in ("target", "source", "negative")}
    inner, conds, loaded = helpers.prepare_sampling(model, latent.shape, conds, model.model_options)
    model.pre_run()  # as CFGGuider.outer_sample does before the model is called
    conds = comfy.samplers.process_conds(inner, noise, conds, "cpu", latent, None, seed)

    def eps(x_vp, sigma, prompt, cfg):  # the unpatched model's CFG noise prediction at a VP latent
        x = x_vp * (1 + sigma**2) ** 0.5
        denoised = comfy.samplers.sampling_function(inner, x, torch.full((x.shape[0],), sigma), conds["negative"], conds[prompt], cfg,
                                                    model_options=model.model_options)
        return (x - denoised) / sigma

    x0 = inner.process_latent_in(latent)
    alphas = [1 / (1 + float(sigma) ** 2) for sigma in sigmas]
    x_t = x_s = noise if start == "noise" else alphas[0] ** 0.5 * (x0 + float(sigmas[0]) * noise)
    torch.manual_seed(seed)
    for step in range(len(sigmas) - 1):
        alpha, sigma = alphas[step], float(sigmas[step])
        eps_t, eps_s = eps(x_t, sigma, "target", 2.0), eps(x_s, sigma, "source", 1.0)
        x0_hat = x0 + ((x_t - x_s) - (1 - alpha) ** 0.5 * (eps_t - eps_s)) / alpha**0.5
        if sigmas[step + 1] > 0:
            eps_c = (x_s - alpha**0.5 * x0) / (1 - alpha) ** 0.5
            z = torch.randn(x_t.size()) if eta == 1 else (eps_t - eps_s) + eps_c
            alpha_next = alphas[step + 1]
            x_t = alpha_next**0.5 * x0_hat + (1 - alpha_next) ** 0.5 * z
            x_s = alpha_next**0.5 * x0 + (1 - alpha_next) ** 0.5 * z
            if keep is not None and step > 0:
                x_t = torch.where(keep > 0, x_s, x_t)
    helpers.cleanup_models(conds, loaded)
    return inner.process_latent_out(x0_hat)


@pytest.mark.parametrize("sampler, eta", [("lcm", 1), ("euler", 0)])
def test_guider_with_comfys_sampler_runs_infedits_ddcm_loop(models, prompts, sampler, eta):
    """The guider + ComfyUI's LCM sampler = InfEdit's DDCM loop written out on VP latents with eta = 1 (the same
    fresh z for both branches); with Euler, the loop with eta = 0 (both re-noised along eps + eps_c)."""
    import comfy.samplers

    model, latent, seed = models.unet(), source_latent(), 7
    guider = guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent, custom_schedule=0.0, start="img2img")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "sgm_uniform", 5)[1:]  # img2img start
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(seed)
    edited = guider.sample(noise, latent, comfy.samplers.ksampler(sampler), sigmas, disable_pbar=True, seed=seed)
    reference = ddcm_reference(model, prompts, latent, sigmas, noise, seed, eta)
    assert (reference - latent).abs().max() > 5e-3  # the edit moved the latent by far more than the tolerance
    torch.testing.assert_close(edited, reference, rtol=0, atol=2e-5)


def test_ale_defaults_run_ale_edits_loop_pure_noise_start_and_blocky_background(models, prompts):
    """The guider's defaults (pure-noise start, ALE-Edit's background blend) with the LCM sampler on the simple schedule =
    pipeline_ead.py's loop: both branches from the same pure noise, x_t blended after every step but the first with the
    union of nearest resizes at 1, 1/2, 1/4, 1/8, the result the last step's x0_hat (its background not the source's)."""
    import comfy.samplers

    from leakfree_edit.masking.ops import multiscale_foreground

    model, latent, seed, masks = models.unet(), source_latent(), 7, object_masks()
    guider = guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent, custom_schedule=0.0, object_masks=masks)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(seed)
    edited = guider.sample(noise, latent, comfy.samplers.ksampler("lcm"), sigmas, disable_pbar=True, seed=seed)
    keep = 1 - multiscale_foreground(masks.amax(dim=0, keepdim=True), HEIGHT, WIDTH)
    reference = ddcm_reference(model, prompts, latent, sigmas, noise, seed, start="noise", keep=keep)
    torch.testing.assert_close(edited, reference, rtol=0, atol=5e-5)  # at sigma_max the scaled latent is ~15 n: its float rounding
    background = (keep > 0).expand_as(latent)
    assert 0.1 < background.float().mean() < 0.9
    assert (edited[background] - latent[background]).abs().max() > 1e-4  # the last x0_hat is not blended, as in ALE-Edit
    img2img = guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent, custom_schedule=0.0,
                         object_masks=masks, start="img2img")
    torch.manual_seed(seed)
    assert not torch.allclose(img2img.sample(noise, latent, comfy.samplers.ksampler("lcm"), sigmas, disable_pbar=True, seed=seed), edited)


def record_locks(monkeypatch):
    """Every self-attention call of the guided UNet: its rows, and the Q and K it attended with (locked or not)."""
    calls, locked = [], []
    lock, attend = self_attention.lock_queries_and_keys, self_attention.RegionSelfAttention.__call__

    def recorder(q, k, layout):
        locked.append(lock(q, k, layout))
        return locked[-1]

    def spy(self, q, k, v, extra_options):
        locked.clear()
        out = attend(self, q, k, v, extra_options)
        used_q, used_k = locked[0] if locked else (q, k)
        t, s = extra_options[self_attention.LAYOUT_KEY].target, extra_options[self_attention.LAYOUT_KEY].source
        calls.append({
            "rows": q.shape[0], "pairs": len(t),
            "used_source": bool(len(t)) and torch.equal(used_q[t], q[s]) and torch.equal(used_k[t], k[s]),
            "untouched": torch.equal(used_q, q) and torch.equal(used_k, k),
            "target_differs": bool(len(t)) and not torch.equal(q[t], q[s]),
        })
        return out

    monkeypatch.setattr(self_attention, "lock_queries_and_keys", recorder)
    monkeypatch.setattr(self_attention.RegionSelfAttention, "__call__", spy)
    return calls


def test_structure_lock_follows_the_schedule(models, prompts, monkeypatch):
    from leakfree_edit.integration.patching import attention_blocks

    model, latent, steps = models.unet(), source_latent(batch=2), 4
    layers = len(attention_blocks(model.model.diffusion_model, "attn1"))
    calls = record_locks(monkeypatch)
    locked = run(guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent, custom_schedule=1.0), latent, steps)
    assert len(calls) == steps * layers  # one batched UNet call per step
    locked_steps = steps - 1  # (step + 1) / steps < 1.0
    for call in calls[: locked_steps * layers]:  # target cond + uncond, source cond + uncond (same CFG half)
        assert call["rows"] == 4 * 2 and call["pairs"] == 2 * 2 and call["used_source"]
    assert any(call["target_differs"] for call in calls[: locked_steps * layers])
    for call in calls[locked_steps * layers :]:  # source CFG 1: no source uncond row once the lock is off
        assert call["rows"] == 3 * 2 and call["untouched"]

    calls.clear()
    free = run(guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent, custom_schedule=0.0), latent, steps)
    assert len(calls) == steps * layers and all(call["untouched"] and call["rows"] == 3 * 2 for call in calls)
    assert any(call["target_differs"] for call in calls)  # so an untouched Q is not the source's Q
    assert not torch.allclose(locked, free)


def test_exact_blend_background_is_the_source_at_the_end(models, prompts):
    latent, masks = source_latent(), object_masks()
    guider = guider_for(models.unet(), prompts["source"], prompts["target"], prompts["negative"], latent, object_masks=masks,
                        background_blend="exact")
    edited = run(guider, latent)
    background = (latent_mask(masks.amax(dim=0, keepdim=True), HEIGHT, WIDTH) == 0).expand_as(latent)
    assert background.float().mean() > 0.3
    assert torch.equal(edited[background], latent[background])
    assert not torch.allclose(edited[~background], latent[~background], atol=1e-3)


def test_region_attention_acts_on_target_rows_only(models, prompts, monkeypatch):
    from leakfree_edit.integration.patching import attention_blocks
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    latent, masks = source_latent(), object_masks()
    chunks_by_model = []

    def guided_first_call(model):
        outputs = {}

        def wrapper(apply_model, args):
            out = apply_model(args["input"], args["timestep"], **args["c"])
            if not outputs:
                outputs.update(zip(args["cond_or_uncond"], out.chunk(len(args["cond_or_uncond"]))))
            return out

        model.set_model_unet_function_wrapper(wrapper)
        run(guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent), latent, steps=2)
        chunks_by_model.append(outputs)

    rows = []
    original = region_attention.rgb_cam
    monkeypatch.setattr(region_attention, "rgb_cam", lambda q, *a: rows.append(q.shape[0]) or original(q, *a))
    plain = models.unet()
    guided_first_call(plain)
    assert rows == []
    regional, = RegionGuidedCrossAttention.execute(plain, prompts["target"], masks)
    guided_first_call(regional)
    assert len(rows) == 2 * len(attention_blocks(plain.model.diffusion_model)) and set(rows) == {1}  # target cond rows only
    before, after = chunks_by_model
    assert set(before) == {TARGET_COND, SOURCE_COND, TARGET_UNCOND, SOURCE_UNCOND}
    for slot in (SOURCE_COND, TARGET_UNCOND, SOURCE_UNCOND):
        assert torch.equal(before[slot], after[slot])
    assert not torch.allclose(before[TARGET_COND], after[TARGET_COND])


def test_bad_inputs_get_clear_errors(models, prompts):
    import comfy.model_sampling

    from leakfree_edit.integration.errors import NodeInputError
    from leakfree_edit.integration.guider import BranchBatch

    model, latent = models.unet(), source_latent()
    source, target, negative = prompts["source"], prompts["target"], prompts["negative"]

    def build(model=model, source=source, target=target, latent=latent, **options):
        return guider_for(model, source, target, negative, latent, **options)

    class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    flow = models.unet()
    flow.add_object_patch("model_sampling", FlowSampling(flow.model.model_config))
    cases = [
        (dict(target=prompts["plain"]), "did not come from Object-Restricted Encode"),
        (dict(source=[]), "source conditioning is empty"),
        (dict(source=None), "source conditioning is empty"),
        (dict(source=target), "got the target conditioning"),
        (dict(object_masks=object_masks(96, 256)), "another shape"),
        (dict(object_masks=object_masks()[:1]), "got 1 object masks for 2 objects"),
        (dict(latent=torch.zeros_like(latent)), "empty"),
        (dict(model=flow), "flow-matching"),
    ]
    for change, message in cases:
        with pytest.raises(NodeInputError, match=message) as error:
            build(**change)
        assert "Dual-Branch Edit Guider" in str(error.value)

    resized = build(object_masks=object_masks(48, 64))  # the same picture at another size: resized
    assert resized.background.mask.shape[-2:] == (HEIGHT, WIDTH)
    guider = build()
    with pytest.raises(NodeInputError, match="Connect the same source LATENT"):
        run(guider, source_latent()[..., :8, :])
    with pytest.raises(NodeInputError, match="noise mask"):
        guider.sample(torch.zeros_like(latent), latent, None, torch.ones(3), denoise_mask=torch.ones(1, 1, HEIGHT, WIDTH))
    split = {"input": torch.zeros(2, 4, HEIGHT, WIDTH), "cond_or_uncond": [TARGET_UNCOND, TARGET_COND]}
    with pytest.raises(NodeInputError, match="split the batch"):  # a target chunk without its source chunk while locked
        BranchBatch(latent, latent, lock=True, node="Dual-Branch Edit Guider (LeakFree)")(None, split)
    with pytest.raises(NodeInputError, match="area"):
        BranchBatch(latent, latent, lock=False, node="Dual-Branch Edit Guider (LeakFree)")(None, dict(split, input=torch.zeros(2, 4, HEIGHT // 2, WIDTH)))


def test_each_image_of_a_batch_keeps_its_own_background(models, prompts):
    """One mask set per image: each image's background is blended with its own union, not the union over the batch."""
    latent = source_latent(batch=2)
    first = object_masks()
    masks = torch.cat([first, first.flip(-1)])  # image 2's objects on the other side
    guider = guider_for(models.unet(), prompts["source"], prompts["target"], prompts["negative"], latent, object_masks=masks,
                        background_blend="exact")
    keep = guider.background.mask
    assert keep.shape == (2, 1, HEIGHT, WIDTH) and not torch.equal(keep[0], keep[1])
    edited = run(guider, latent)
    for image in range(2):
        own = (keep[image] == 1).expand_as(latent[image])
        assert torch.equal(edited[image][own], latent[image][own])
    only_the_other = (keep[0] == 1) & (keep[1] == 0)  # image 1's background where image 2 has an object
    assert only_the_other.any()
    ale = guider_for(models.unet(), prompts["source"], prompts["target"], prompts["negative"], latent, object_masks=masks)
    from leakfree_edit.masking.ops import image_unions, multiscale_foreground

    torch.testing.assert_close(ale.background.mask, 1 - multiscale_foreground(image_unions(masks, 2), HEIGHT, WIDTH))


def test_region_anchoring_acts_inside_the_guider(models, prompts, monkeypatch):
    """Anchoring moves only the target branch's chunks, so DDCM's x0_hat carries the step (a step shared with the source
    branch would cancel in x0_hat exactly)."""
    from leakfree_edit.attention import anchoring
    from leakfree_edit.nodes.anchoring import RegionAnchoring
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    latent, masks = source_latent(), object_masks()
    regional, = RegionGuidedCrossAttention.execute(models.unet(), prompts["target"], masks)
    anchored, = RegionAnchoring.execute(regional, strength=0.2, steps_fraction=1.0, iterations=1)
    steps = []
    original = anchoring.LatentAnchoring.anchor

    def spy(self, run_model, args, sigma, program, model):
        latent_out, before = original(self, run_model, args, sigma, program, model)
        steps.append((args["input"], latent_out, list(args["cond_or_uncond"])))
        return latent_out, before

    monkeypatch.setattr(anchoring.LatentAnchoring, "anchor", spy)
    plain = run(guider_for(regional, prompts["source"], prompts["target"], prompts["negative"], latent, object_masks=masks), latent, 3)
    guided = run(guider_for(anchored, prompts["source"], prompts["target"], prompts["negative"], latent, object_masks=masks), latent, 3)
    assert steps and (guided - plain).abs().max() > 1e-4
    for before, after, slots in steps:
        for chunk, (old, new) in enumerate(zip(before.chunk(len(slots)), after.chunk(len(slots)))):
            moved = not torch.equal(old, new)
            assert moved == (slots[chunk] in (TARGET_COND, TARGET_UNCOND)), slots
