"""Dual-Branch Edit Guider: DDCM math on tensors, then ComfyUI's real sampler on random-weight UNets."""
import pytest
import torch

import leakfree_edit.attention.region_attention as region_attention
import leakfree_edit.attention.self_attention as self_attention
from leakfree_edit.attention.dual_branch import (
    SOURCE_COND, SOURCE_UNCOND, TARGET_COND, TARGET_UNCOND, alpha_from_sigma, blend_background, branch_layout,
    ddcm_target_x0, lock_active, source_branch_latent, virtual_inversion_x0,
)
from leakfree_edit.masking.ops import latent_mask
from leakfree_edit.tests._editing import EDITS, encode, object_masks

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


# --- the equations on tensors -------------------------------------------------------------

def test_lcm_step_on_scaled_latents_is_infedits_ddcm_update():
    """ComfyUI's LCM step x' = D + sigma' z, with x_s from source_branch_latent, is InfEdit's eta = 1 update."""
    g = torch.Generator().manual_seed(0)
    x0, x_t, x_s, eps_t, eps_s, z = (torch.randn(2, 4, 3, 5, generator=g) for _ in range(6))
    sigma, sigma_next = torch.tensor([7.0, 7.0]), torch.tensor(2.5)
    alpha, alpha_next = alpha_from_sigma(sigma).view(-1, 1, 1, 1), alpha_from_sigma(sigma_next)
    vp = lambda x, a: a.sqrt() * x  # scaled latent -> VP latent
    expected_x0 = virtual_inversion_x0(x0, vp(x_t, alpha), vp(x_s, alpha), eps_t, eps_s, alpha)
    s = sigma.view(-1, 1, 1, 1)
    x0_hat = ddcm_target_x0(x0, x_t, x_s, x_t - s * eps_t, x_s - s * eps_s, sigma)  # from ComfyUI's denoised outputs
    torch.testing.assert_close(x0_hat, expected_x0)
    next_target = x0_hat + sigma_next * z  # what sample_lcm does with the returned x0_hat
    next_source = source_branch_latent(next_target, x0_hat, x0)
    torch.testing.assert_close(vp(next_target, alpha_next), alpha_next.sqrt() * expected_x0 + (1 - alpha_next).sqrt() * z)
    torch.testing.assert_close(vp(next_source, alpha_next), alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * z)


def test_schedule_layout_and_blend_rules():
    assert [lock_active(step, 15, 0.5) for step in range(15)] == [True] * 7 + [False] * 8
    assert [lock_active(step, 4, 1.0) for step in range(4)] == [True, True, True, False]
    assert not any(lock_active(step, 4, 0.0) for step in range(4))
    layout = branch_layout([SOURCE_UNCOND, TARGET_UNCOND, SOURCE_COND, TARGET_COND], rows=2)
    assert layout.target.tolist() == [6, 7, 2, 3] and layout.source.tolist() == [4, 5, 0, 1]
    assert branch_layout([TARGET_UNCOND, SOURCE_COND, TARGET_COND], rows=1).target.tolist() == [2]
    x0, x0_hat, background = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    blended = blend_background(x0_hat, x0, background)
    assert torch.equal(blended[..., 0, 0], x0[..., 0, 0]) and torch.equal(blended[..., 0, 1], x0_hat[..., 0, 1])


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


@pytest.mark.parametrize("sampler, eta", [("lcm", 1), ("euler", 0)])
def test_guider_with_comfys_sampler_runs_infedits_ddcm_loop(models, prompts, sampler, eta):
    """The guider + ComfyUI's LCM sampler = InfEdit's DDCM loop written out on VP latents with eta = 1 (the same
    fresh z for both branches); with Euler, the loop with eta = 0 (both re-noised along eps + eps_c)."""
    import comfy.sampler_helpers as helpers
    import comfy.samplers

    model, latent, seed = models.unet(), source_latent(), 7
    guider = guider_for(model, prompts["source"], prompts["target"], prompts["negative"], latent, custom_schedule=0.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "sgm_uniform", 5)[1:]  # img2img start
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(seed)
    edited = guider.sample(noise, latent, comfy.samplers.ksampler(sampler), sigmas, disable_pbar=True, seed=seed)

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
    x_t = x_s = alphas[0] ** 0.5 * (x0 + float(sigmas[0]) * noise)
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
    helpers.cleanup_models(conds, loaded)
    reference = inner.process_latent_out(x0_hat)
    assert (reference - latent).abs().max() > 5e-3  # the edit moved the latent by far more than the tolerance
    torch.testing.assert_close(edited, reference, rtol=0, atol=2e-5)


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


def test_background_is_the_source_at_the_end(models, prompts):
    latent, masks = source_latent(), object_masks()
    guider = guider_for(models.unet(), prompts["source"], prompts["target"], prompts["negative"], latent, object_masks=masks)
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
    assert resized.background.shape[-2:] == (HEIGHT, WIDTH)
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
