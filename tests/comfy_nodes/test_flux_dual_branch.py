"""Dual-Branch Edit Guider for Flux (FlowEdit) on ComfyUI's own Flux classes (random weights, tiny width, 2 double + 2
single blocks) and Flux's CLIP object, through ComfyUI's Euler sampler: FlowEdit's loop, the identity edit, isolation
bit for bit, the background, the structure lock, the plain model untouched, schnell, errors."""
import pytest
import torch

from harness.editing import EDITS, encode, object_masks, sample
from leakfree_edit.attention.self_attention import LAYOUT_KEY
from leakfree_edit.masking.ops import latent_mask
from leakfree_edit.masking.token_grid import token_regions

LATENT = (1, 16, 15, 17)  # odd: Flux pads to the 2x2 patch, 8x9 image tokens
MASKS = object_masks(8 * LATENT[2], 8 * LATENT[3])
TEXT = 256  # T5 tokens before the image tokens in every joint attention
CHANGED = {"wolf": "wolf -> a small white horse with wings\nmoon -> moon made of gold",
           "moon": "wolf -> brown-colored goat\nmoon -> moon made of green cheese"}
REGION = {"wolf": 1, "moon": 2}


def source_latent(seed=5):
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))


def encode_flux(models, edits=EDITS):
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux

    return ObjectRestrictedEncodeFlux.execute(models.flux_clip(), edits, "")


def routed(model, target):
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    return RegionGuidedJointAttention.execute(model, target, MASKS)[0]


def guider_for(model, source, target, latent=None, **options):
    from leakfree_edit.nodes.dual_branch_flux import DualBranchGuiderFlux

    settings = dict(lock_schedule="custom", custom_schedule=0.0)
    settings.update(options)
    latent = source_latent() if latent is None else latent
    return DualBranchGuiderFlux.execute(model, source, target, {"samples": latent}, **settings)[0]


def run(guider, steps=3, seed=0, sampler="euler", callback=None):
    """What SamplerCustomAdvanced does with (RandomNoise, the guider, KSamplerSelect, BasicScheduler simple, the latent)."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", steps)
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))
    return guider.sample(noise, guider.source_latent, comfy.samplers.ksampler(sampler), sigmas, callback=callback, disable_pbar=True, seed=seed)


def pixel_classes():
    """Each latent pixel's region: 0 background, 1 wolf, 2 moon (its token's, overlaps to the background)."""
    grid = token_regions(MASKS, 2, *LATENT[-2:], 2)[0].view(8, 9)
    return grid.repeat_interleave(2, 0).repeat_interleave(2, 1)[: LATENT[2], : LATENT[3]]


def kept_background():
    """Where the guider's blend mask keeps the source entirely (1 - bilinear union = 1)."""
    return (latent_mask(MASKS.amax(0, keepdim=True), *LATENT[-2:]) == 0)[0, 0]


def record_branches(model):
    """Keep (target input, target output, sigma) of every model call; outputs are denoised, v = (input - output) / sigma."""
    calls = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        slots = list(args["cond_or_uncond"])
        target = slots.index(0)
        calls.append((args["input"].chunk(len(slots))[target], out.chunk(len(slots))[target], args["timestep"]))
        return out

    model.set_model_unet_function_wrapper(wrapper)
    return calls


def flowedit_reference(model, source, target, latent, steps, n_max, n_min, n_avg, guidance, seed):
    """FlowEdit's loop for Flux written out as its official code runs it (fallenshock/FlowEdit, FlowEdit_utils.py,
    FlowEditFLUX, lines 322-400), on ComfyUI's Flux called directly (its output is the velocity), the schedule of
    ComfyUI's ``simple`` scheduler, and the noises drawn in the guider's documented order."""
    import comfy.samplers

    diffusion, ms = model.model.diffusion_model, model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", steps)
    generator = torch.Generator().manual_seed(seed)
    fresh = lambda: torch.randn(LATENT, generator=generator)

    def v(z, t, cond, g):
        return diffusion(z, t.view(1), cond[0][0], y=cond[0][1]["pooled_output"], guidance=torch.tensor([g]))

    x_src = model.model.process_latent_in(latent)
    z_edit, x_tar = x_src.clone(), None
    with torch.no_grad():
        for i in range(steps):
            if steps - i > n_max:
                continue
            t, t_next = sigmas[i], sigmas[i + 1]
            if steps - i > n_min:
                delta = torch.zeros_like(x_src)
                for _ in range(n_avg):
                    z_src = (1 - t) * x_src + t * fresh()
                    z_tar = z_edit + z_src - x_src
                    delta += (1 / n_avg) * (v(z_tar, t, target, guidance[1]) - v(z_src, t, source, guidance[0]))
                z_edit = z_edit + (t_next - t) * delta
            else:
                if i == steps - n_min:
                    x_tar = z_edit + (1 - t) * x_src + t * fresh() - x_src
                x_tar = x_tar + (t_next - t) * v(x_tar, t, target, guidance[1])
    return model.model.process_latent_out(z_edit if n_min == 0 else x_tar)


@pytest.fixture(scope="module")
def prompts(models):
    target, source, plan = encode_flux(models)
    return {"target": target, "source": source, "plan": plan}


@pytest.mark.parametrize("steps, n_max, n_min, n_avg", [(4, 3, 0, 1), (5, 4, 2, 2)], ids=["flowedit-defaults-form", "tail-and-two-noises"])
def test_the_guider_on_comfys_euler_sampler_is_flowedits_loop(models, prompts, steps, n_max, n_min, n_avg):
    """Plain Flux (no routing, no lock), T steps with the first skipped (n_max = T - 1), with and without a two-step
    n_min tail and noise averaging: ComfyUI's Euler steps on the guider's output give FlowEdit's edit path."""
    model, latent = models.flux(), source_latent()
    guider = guider_for(model, prompts["source"], prompts["target"], latent, source_guidance=1.5, target_guidance=5.5,
                        n_max=n_max, n_min=n_min, noise_samples=n_avg)
    out = run(guider, steps=steps, seed=7)
    reference = flowedit_reference(model, prompts["source"], prompts["target"], latent, steps, n_max, n_min, n_avg, (1.5, 5.5), seed=7)
    torch.testing.assert_close(out, reference, rtol=0, atol=2e-5)
    assert (out - latent).abs().max() > 100 * 2e-5  # it edited, by far more than the tolerance


def test_target_equal_to_source_returns_the_source_latent(models, prompts):
    """Same prompt and guidance in both branches: v_tar = v_src at every step, so the edit path stays at the source.
    Also routed and locked, with the routed target prompt as both branches' conditioning (both rows routed alike)."""
    latent = source_latent()
    plain = guider_for(models.flux(), prompts["source"], prompts["source"], latent, source_guidance=3.5, target_guidance=3.5)
    torch.testing.assert_close(run(plain), latent, rtol=0, atol=1e-5)
    target = prompts["target"]
    locked = guider_for(routed(models.flux(), target), target, target, latent, source_guidance=3.5, target_guidance=3.5,
                        lock_schedule="color")
    torch.testing.assert_close(run(locked), latent, rtol=0, atol=1e-5)
    other_guidance = guider_for(models.flux(), prompts["source"], prompts["source"], latent)  # 1.5 vs 5.5: an edit
    assert (run(other_guidance) - latent).abs().max() > 1e-3


@pytest.fixture(scope="module")
def edits(models, prompts):
    """The routed, locked, background-blended edit for EDITS and with each object's prompt changed:
    {name: (final latent, [(target input, target output, sigma)], [z_fe at each step])}."""
    results = {}
    for name, edit_list in (("base", EDITS), *CHANGED.items()):
        target, source, _ = encode_flux(models, edit_list)
        model = routed(models.flux(), target)
        calls = record_branches(model)
        path = []
        guider = guider_for(model, source, target, object_masks=MASKS, lock_schedule="object")  # 3 steps: the first locked
        results[name] = (run(guider, callback=lambda step, denoised, x, total: path.append(x.clone())), calls, path)
    return results


@pytest.mark.parametrize("changed", ["wolf", "moon"])
def test_a_region_is_bit_identical_when_another_objects_prompt_changes(edits, changed):
    """Object j's prompt changes: in object i's region and the background, the target's velocity at every step and
    the final latent are bit-identical; in region j they are not."""
    (out, calls, _), (out_changed, calls_changed, _) = edits["base"], edits[changed]
    pixels, moved = pixel_classes(), REGION[changed]
    kept = 3 - moved
    assert len(calls) == len(calls_changed) == 3
    for (z, d, sigma), (z_changed, d_changed, _) in zip(calls, calls_changed):
        v, v_changed = (z - d) / sigma[0], (z_changed - d_changed) / sigma[0]
        for region in (kept, 0):
            assert torch.equal(v[..., pixels == region], v_changed[..., pixels == region])
        assert not torch.equal(v[..., pixels == moved], v_changed[..., pixels == moved])
    for region in (kept, 0):
        assert torch.equal(out[..., pixels == region], out_changed[..., pixels == region])
    assert not torch.equal(out[..., pixels == moved], out_changed[..., pixels == moved])


def test_the_background_is_the_source(edits):
    """Outside the objects the edit path z_fe is the source latent at every step (to the rounding of ComfyUI's start
    t x + (1 - t) x), and the final latent is the source bit for bit."""
    out, _, path = edits["base"]
    background = kept_background().expand(LATENT)
    assert background.float().mean() > 0.3
    latent = source_latent()
    assert torch.equal(out[background], latent[background])
    assert (out[~background] - latent[~background]).abs().max() > 0.05
    import comfy.latent_formats

    clean = comfy.latent_formats.Flux().process_in(latent)
    assert len(path) == 3
    for x in path:
        torch.testing.assert_close(x[background], clean[background], rtol=0, atol=1e-6)


class QueryKeyRecorder:
    """Another pack's ``optimized_attention_override``: keeps (q, k, v, target rows, source rows) of every joint attention
    call as the attention receives it, and passes the call on."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):  # model clones share it, as they share any pack's callable
        return self

    def __call__(self, func, q, k, v, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        self.calls.append((q, k, v, kwargs.get("mask") is not None, options.get(LAYOUT_KEY), float(options["sigmas"].max())))
        return func(q, k, v, *args, **kwargs)


@pytest.mark.parametrize("routing", [True, False], ids=["routed", "plain-flowedit"])
def test_the_lock_gives_the_target_the_sources_image_queries_and_keys_in_locked_steps_only(models, prompts, routing):
    """Lock preset color (1.0) over 2 steps: step 1 locked ((0 + 1) / 2 < 1), step 2 not. In every double and single block
    the target's image-token Q and K equal the source's in the locked step and differ after; the text tokens' Q and
    K and all values stay the target's own."""
    model = models.flux()
    recorder = QueryKeyRecorder()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = recorder
    target = prompts["target"]
    if routing:
        model = routed(model, target)
    run(guider_for(model, prompts["source"], target, lock_schedule="color", n_max=2), steps=2)
    pairs = []
    for q, k, v, biased, layout, sigma in recorder.calls:
        if routing:  # the routing override attends the target rows (with the bias) first, then the other rows
            if biased:
                pairs.append([(q[0], k[0], v[0]), None, sigma])
            else:
                pairs[-1][1] = (q[0], k[0], v[0])
        else:
            rows = lambda index: (q[index][0], k[index][0], v[index][0])
            pairs.append([rows(layout.target), rows(layout.source), sigma])
    sigmas = sorted({sigma for *_, sigma in pairs}, reverse=True)
    assert len(pairs) == 2 * 4 and len(sigmas) == 2  # 2 steps x (2 double + 2 single blocks), one model call a step
    for (q_t, k_t, v_t), (q_s, k_s, v_s), sigma in pairs:
        locked = sigma == sigmas[0]
        assert torch.equal(q_t[:, TEXT:], q_s[:, TEXT:]) == locked and torch.equal(k_t[:, TEXT:], k_s[:, TEXT:]) == locked
        assert not torch.equal(q_t[:, :TEXT], q_s[:, :TEXT]) and not torch.equal(k_t[:, :TEXT], k_s[:, :TEXT])
        assert not torch.equal(v_t[:, TEXT:], v_s[:, TEXT:])


def test_the_plain_model_is_untouched_after_a_run(models, prompts):
    """The guider and the routing patch clone: the input Flux keeps its options, and a plain sample after edits (the
    guider on the model itself, and on its routed clone) equals the one before them and a freshly built model's."""
    from harness import random_models

    plain = models.flux()
    options = repr(plain.model_options)
    cond = encode(models.flux_clip(), "a goat under a golden moon")
    latent = source_latent(seed=9)
    before = sample(plain, cond, cond, latent, 1.0)
    for model in (plain, routed(plain, prompts["target"])):
        edited = run(guider_for(model, prompts["source"], prompts["target"], object_masks=MASKS, lock_schedule="color"))
        assert (edited - source_latent()).abs().max() > 1e-3
    assert repr(plain.model_options) == options and not plain.wrappers
    after = sample(plain, cond, cond, latent, 1.0)
    assert torch.equal(after, before) and torch.equal(after, sample(random_models.flux(), cond, cond, latent, 1.0))


def test_schnell_has_no_guidance_input_and_runs_the_same_loop(models, prompts):
    """Flux-schnell (no guidance embedding): the guidance values change nothing, the prompts still edit; on dev they do."""
    from harness import random_models

    schnell = random_models.flux("tiny", guidance=False)
    outs = [run(guider_for(schnell, prompts["source"], prompts["target"], source_guidance=g, target_guidance=g + 4)) for g in (1.0, 3.0)]
    assert torch.equal(outs[0], outs[1]) and (outs[0] - source_latent()).abs().max() > 1e-3
    dev = [run(guider_for(models.flux(), prompts["source"], prompts["target"], source_guidance=g, target_guidance=g + 4)) for g in (1.0, 3.0)]
    assert not torch.equal(dev[0], dev[1])


def test_bad_inputs_get_clear_errors(models, prompts):
    import comfy.samplers

    from leakfree_edit.integration.errors import NodeInputError
    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.dual_branch_flux import DualBranchGuiderFlux
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    flux, source, target = models.flux(), prompts["source"], prompts["target"]
    plain_target = encode(models.flux_clip(), "a goat under a golden moon")
    sd_target, _, _ = ObjectRestrictedEncode.execute(models.clip(), EDITS, "object")
    long_source = encode(models.flux_clip(), "a wolf under the moon, " * 60)
    cases = [
        (dict(model=models.unet()), r"this is an SD1.5 model"),
        (dict(target=sd_target), r"encoded for SD1.5/SDXL .*Object-Restricted Encode for Flux"),
        (dict(source=target, target=plain_target), r"'source' input got the target conditioning"),
        (dict(source=[]), r"source conditioning is empty"),
        (dict(source=long_source, lock_schedule="object"), r"256 and \d+ T5 tokens long; the structure lock needs both branches"),
        (dict(object_masks=MASKS[:1]), r"got 1 object masks for 2 objects"),
        (dict(n_max=2, n_min=3), r"n_min \(3\) is above n_max \(2\)"),
        (dict(latent=torch.zeros(LATENT)), r"empty"),
    ]
    for change, message in cases:
        arguments = dict(model=flux, source=source, target=target)
        arguments.update(change)
        with pytest.raises(NodeInputError, match=r"^Dual-Branch Edit Guider for Flux \(LeakFree\): .*" + message):
            guider_for(arguments.pop("model"), arguments.pop("source"), arguments.pop("target"), **arguments)
    assert DualBranchGuiderFlux.validate_inputs(n_max=2, n_min=3) != True  # shown before the run
    unlocked = run(guider_for(flux, long_source, target))  # without the lock the branches may run in two model calls
    assert unlocked.shape == LATENT
    guider = guider_for(flux, source, target)
    with pytest.raises(NodeInputError, match=r"needs the euler sampler\. Connect KSamplerSelect"):
        run(guider, sampler="dpmpp_2m")
    with pytest.raises(NodeInputError, match="noise mask"):
        guider.sample(torch.zeros(LATENT), source_latent(), comfy.samplers.ksampler("euler"), torch.ones(3),
                      denoise_mask=torch.ones(1, 1, *LATENT[-2:]))
    with pytest.raises(NodeInputError, match=r"^Dual-Branch Edit Guider \(LeakFree\): .*On Flux use Dual-Branch Edit Guider for Flux"):
        DualBranchGuider.execute(flux, source, sd_target, source, {"samples": source_latent()})
