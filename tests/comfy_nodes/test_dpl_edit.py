"""DPL as its paper edits, on ComfyUI's own classes with random weights: the learned source maps drive the target
(attention replacement, no masks), the learned rows shared with the target, carry-over, the background term, the
single-object rule, the NaN guard, SDXL's pooled output; each test fails when its mechanism is taken out. The tiny
SD1.5 UNet (levels 1x and 2x, so the losses read 1/2) has its cross-attention sharpened so the objects' maps are not
flat; a few learning passes."""
import logging
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from harness.editing import EDITS, encode, object_masks
from leakfree_edit.attention import prompt_learning
from leakfree_edit.attention.region_attention import LAYOUT_KEY, PROGRAM_KEY, layer_size
from leakfree_edit.integration.errors import NodeInputError

HEIGHT, WIDTH = 12, 16  # a 96 x 128 px image: the loss grid (1/2) is 6 x 8
LOSS_GRID = (6, 8)
ONLY_DISJOINT = dict(attend_weight=0.0, background_weight=0.0, disjoint_weight=1.0, disjoint_beta=0.0)


@pytest.fixture(scope="module")
def sharp_unet():
    """The tiny random SD1.5 UNet with its cross-attention queries and keys scaled 6x: at ComfyUI's random init the
    text-token softmax is nearly flat, so every word's map is the same (cosine ~ 1 between the objects' maps); sharpened,
    the two nouns' maps still nearly coincide at the start (cosine ~ 0.9), and learning can move them apart."""
    from harness import random_models

    unet = random_models.unet("sd15", seed=1)
    with torch.no_grad():
        for name, parameter in unet.model.diffusion_model.named_parameters():
            if "attn2.to_q" in name or "attn2.to_k" in name:
                parameter.mul_(6.0)
    return unet


def encoded(clip, edits=EDITS):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    target, source, plan = ObjectRestrictedEncode.execute(clip, edits, "object")
    return {"clip": clip, "target": target, "source": source, "plan": plan, "negative": encode(clip, "")}


@pytest.fixture(scope="module")
def prompts(models):
    return encoded(models.clip())


def source_latent(seed=3):
    return torch.randn(1, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def learning(model, prompts, **settings):
    from leakfree_edit.nodes.prompt_learning import DynamicPromptLearning

    settings = {"attention_grid": "1/2", "object_masks": object_masks(), **settings}
    model, = DynamicPromptLearning.execute(model, prompts["clip"], prompts["plan"], **settings)
    return model, model.model_options["model_function_wrapper"]


def edit(model, prompts, steps=2, start="noise", latent=None):
    """The guider of the DPL templates (LCM, target CFG 2, source CFG 1, no ALE lock), under ComfyUI's inference mode."""
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch import DualBranchGuider

    latent = source_latent() if latent is None else latent
    with torch.inference_mode():
        guider, = DualBranchGuider.execute(model, prompts["source"], prompts["target"], prompts["negative"], {"samples": latent},
                                           source_cfg=1.0, target_cfg=2.0, self_attention_schedule="custom", custom_schedule=0.0,
                                           start=start)
        sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "sgm_uniform", steps)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        return guider.sample(noise, latent, comfy.samplers.ksampler("lcm"), sigmas, disable_pbar=True, seed=0)


def calls_of(model):
    """Put a model wrapper on ``model`` that keeps the arguments of every model call it passes on (Dynamic Prompt
    Learning, put on after it, hands it the calls with the learned encodings)."""
    calls = []

    def wrapper(apply_model, args):
        calls.append(args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(wrapper)
    return calls


# --- Prompt-to-Prompt's word alignment and replacement, on plain tensors -------------------------------------


# --- the losses, planted ---------------------------------------------------------------------------------------


# --- the mechanisms, through ComfyUI's sampler -------------------------------------------------------------------

def probe_maps(model, log: list, size: tuple[int, int], tokens: int) -> None:
    """Read the maps each cross-attention call of the dual branch at layers of ``size`` applies to the first ``tokens``
    tokens, through the pack's own callable: one-hot values, ``d`` tokens at a time (ComfyUI's attention takes values as
    wide as the queries), averaged over heads. Keeps (step sigma, target conditional rows' maps, their source rows' maps)."""

    class Probe:
        def __init__(self, inner):
            self.inner = inner

        def __deepcopy__(self, memo):
            return self  # clones (the guider's) share the log

        def __call__(self, q, k, v, extra_options):
            out = self.inner(q, k, v, extra_options)
            layout = extra_options.get(LAYOUT_KEY)
            if layout is not None and layout.conditional.numel() and layer_size(extra_options) == size:
                heads, width = extra_options["n_heads"], v.shape[-1] // extra_options["n_heads"]
                parts = []
                for first in range(0, tokens, width):
                    chosen = torch.arange(first, min(first + width, tokens))
                    onehot = torch.zeros(k.shape[1], width, dtype=v.dtype)
                    onehot[chosen, chosen - first] = 1
                    part = self.inner(q, k, onehot.repeat(1, heads).expand(q.shape[0], -1, -1).contiguous(), extra_options)
                    parts.append(part.view(q.shape[0], q.shape[1], heads, width).mean(dim=2)[..., : len(chosen)])
                maps, pairs = torch.cat(parts, dim=-1).float(), layout.conditional_only()
                log.append((float(extra_options["sigmas"].max()), maps[pairs.target], maps[pairs.source]))
            return out

    replaced = model.model_options["transformer_options"]["patches_replace"]["attn2"]
    for key, inner in list(replaced.items()):
        model.set_model_patch_replace(Probe(inner), "attn2", *key)


def test_mask_free_learned_maps_become_disjoint_and_the_target_follows_them(sharp_unet, prompts, caplog):
    """Dynamic Prompt Learning (disjointness term) + Attention Replacement + the dual branch, no masks, 3 steps from noise,
    cross replacement 0.67 (steps 0 and 1). Step 0 is pure noise: nothing is learned. Steps 1 and 2 drive the nouns'
    maps apart (cosine ~ 0.9 -> < 0.3). In the replaced steps the target's maps of "brown-colored goat" and "moon" are
    the source's learned maps of "wolf" and "moon"; in step 2 the target draws with its own, which still coincide."""
    from leakfree_edit.nodes.attention_replacement import AttentionReplacement

    model, dpl = learning(sharp_unet.clone(), prompts, iterations=6, learning_rate=0.2, object_masks=None, **ONLY_DISJOINT)
    model, = AttentionReplacement.execute(model, prompts["clip"], prompts["plan"], cross_replace=0.67, self_replace=0.0)
    log = []
    probe_maps(model, log, LOSS_GRID, tokens=8)  # "brown - colored goat and moon" in the target, "wolf and moon" in the source
    with caplog.at_level(logging.INFO, logger="LeakFreeEdit"):
        edit(model, prompts, steps=3)
    first, *learned = dpl.history
    assert first.skipped and first.losses.numel() == 0 and "step 0 starts from pure noise" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(dpl.run.learned[0], dpl.source.initial))
    assert [r.step for r in learned] == [1, 2] and not any(r.skipped or r.stopped for r in learned)
    cosine = torch.cat([r.losses[:, 2] for r in learned])
    assert float(cosine[0]) > 0.8 and float(cosine[-1]) < 0.3, cosine

    term = model.model_options["transformer_options"][PROGRAM_KEY].replacement
    columns = [(term.alignment.mapper[list(tokens)].sum(dim=0) > 0).nonzero().flatten().tolist() for tokens in dpl.source.tokens]
    assert columns == [[1, 2, 3, 4], [6]]  # brown - colored goat; moon
    steps = sorted({sigma for sigma, *_ in log}, reverse=True)
    for sigma, target, source in log:
        source_maps = torch.stack([source[..., list(tokens)].sum(dim=-1) for tokens in dpl.source.tokens])
        target_maps = torch.stack([target[..., c].sum(dim=-1) for c in columns])
        step = steps.index(sigma)
        if step < 2:  # replaced: the target's object maps are the source's (learned, from step 1) maps
            torch.testing.assert_close(target_maps, source_maps, rtol=0, atol=1e-5)
        else:  # its own maps again: the nouns' maps of the target still overlap where the learned ones are apart
            assert (target_maps - source_maps).abs().max() > 0.05
            assert F.cosine_similarity(*target_maps.flatten(1), dim=0) > F.cosine_similarity(*source_maps.flatten(1), dim=0) + 0.3
        if step == 1:
            assert F.cosine_similarity(*source_maps.flatten(1), dim=0) < 0.3  # learned: apart, and the target's with them


def test_identity_and_refinement_lines_share_the_learned_rows(models):
    """"wolf -> wolf" and "moon -> moon made of gold": both targets keep the learned word, so the target rows of the
    model call are encoded with the learned rows too (DPL's edit prompt holds the same placeholder tokens); with
    Region-Guided Cross-Attention, its ORE embeddings of that call as well, and it still finds the target rows."""
    from leakfree_edit.integration.patching import install_region_program, region_program
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    prompts = encoded(models.clip(), "wolf -> wolf\nmoon -> moon made of gold")

    class Counter:
        calls = 0

        def observe(self, query, keys, bias, masks, extra_options):
            self.calls += 1

    for masked in (False, True):
        unet = models.unet()
        calls, counter = calls_of(unet), Counter()
        if masked:
            unet, = RegionGuidedCrossAttention.execute(unet, prompts["target"], object_masks())
            install_region_program(unet, region_program(unet).with_cross_observer(counter))
        model, dpl = learning(unet, prompts, iterations=1, learning_rate=0.05, **ONLY_DISJOINT)
        edit(model, prompts, steps=1, start="img2img")
        call, = calls
        layout, learned = call["c"]["transformer_options"][LAYOUT_KEY], dpl.run.learned[0]
        context = call["c"]["c_crossattn"]
        base, own, _, _ = dpl.target.encode(learned)
        target, original = context[layout.conditional][0], prompts["target"][0][0][0]
        torch.testing.assert_close(target, base)
        torch.testing.assert_close(context[layout.conditional_only().source][0], dpl.source.encode(learned)[0][0])
        first_kept = 1  # "wolf": CLIP is causal, so the positions before it are the plain target's
        assert torch.equal(target[:first_kept], original[:first_kept]) and (target[first_kept] - original[first_kept]).abs().max() > 1e-3
        if masked:
            ore = call["c"]["transformer_options"][PROGRAM_KEY].cross.embeddings
            torch.testing.assert_close(ore.keys, base)
            torch.testing.assert_close(ore.own, own)
            assert counter.calls > 0  # RGB-CAM found the target rows by their new context


def test_carry_over_starts_each_step_from_the_last_steps_rows(sharp_unet, prompts):
    """One AdamW pass a step (weight decay 0): its first step moves every coordinate by lr sign(g). Starting from the
    previous step's rows, the rows of step 1 are one such step away from those of step 0 (from the initial rows they
    would be 0 or 2 lr away)."""
    lr = 0.05
    model, dpl = learning(sharp_unet.clone(), prompts, iterations=1, learning_rate=lr, weight_decay=0.0, **ONLY_DISJOINT)
    edit(model, prompts, steps=2, start="img2img")
    for step0, step1 in zip(dpl.run.learned[0], dpl.run.learned[1]):
        one_step = ((step1 - step0).abs() - lr).abs() < 1e-5
        assert one_step.float().mean() > 0.95


def test_background_term_moves_the_maps_off_the_background(sharp_unet, prompts):
    """Only the background term (weight 1, no early stop), the masks' background: its cosine falls pass by pass."""
    model, dpl = learning(sharp_unet.clone(), prompts, iterations=3, learning_rate=0.05, attend_weight=0.0, disjoint_weight=0.0,
                          background_weight=1.0, background_beta=0.0)
    masks = object_masks()
    assert torch.equal(dpl.background[0], 1 - masks.amax(dim=0))  # 1 outside the objects
    edit(model, prompts, steps=1, start="img2img")
    record, = dpl.history
    background = record.losses[:, 1]
    assert (background.diff() < 0).all() and float(background[-1]) < float(background[0]) - 0.01, background


def test_one_object_learns_with_the_background_term_alone(models):
    """DPL's single-object rule: the attend term (weight 1 at the node) does not apply to a lone object."""
    prompts = encoded(models.clip(), "wolf -> brown-colored goat")
    model, dpl = learning(models.unet(), prompts, iterations=1, object_masks=object_masks()[:1])
    assert dpl.settings.attend.weight == 0.0 and dpl.settings.background.weight == 0.05
    edit(model, prompts, steps=1, start="img2img")
    record, = dpl.history
    assert (record.losses[:, 0] == 0).all() and (record.losses[:, 1] > 0).all()


def test_a_loss_that_is_not_finite_stops_the_steps_learning(models, prompts, caplog):
    """From the third pass on the encoder gives NaN: learning stops with a warning and keeps the rows of the second pass
    (one update, as a one-pass run gives them), and the call runs with finite rows."""
    model, dpl = learning(models.unet(), prompts, iterations=4, learning_rate=0.05, **ONLY_DISJOINT)
    encode_rows, passes = dpl.source.encode, []

    def failing(rows):
        context, pooled = encode_rows(rows)
        passes.append(torch.is_grad_enabled())
        return (context * float("nan"), pooled) if sum(passes) >= 3 else (context, pooled)

    dpl.source = replace(dpl.source, encode=failing)
    with caplog.at_level(logging.WARNING, logger="LeakFreeEdit"):
        edit(model, prompts, steps=1, start="img2img")
    record, = dpl.history
    assert record.diverged and len(record.losses) == 3 and torch.isfinite(record.losses[:2]).all()
    assert "not finite" in caplog.text
    kept = dpl.run.learned[0]
    assert all(torch.isfinite(t).all() for t in kept)

    prompt_learning._CACHE.clear()
    one, reference = learning(models.unet(), prompts, iterations=1, learning_rate=0.05, **ONLY_DISJOINT)
    edit(one, prompts, steps=1, start="img2img")
    for a, b in zip(kept, reference.run.learned[0]):
        torch.testing.assert_close(a, b)


def test_sdxl_pooled_output_is_encoded_with_the_learned_rows(models):
    """SDXL's y starts with the pooled text output: the source rows' is the learned prompt's, not the original's."""
    prompts = encoded(models.clip("sdxl"))
    unet = models.unet("sdxl")
    calls = calls_of(unet)
    model, dpl = learning(unet, prompts, iterations=1, learning_rate=0.05, **ONLY_DISJOINT)
    edit(model, prompts, steps=1, start="img2img")
    call, = calls
    source_rows = call["c"]["transformer_options"][LAYOUT_KEY].conditional_only().source
    pooled = dpl.source.encode(dpl.run.learned[0])[1]
    original = prompts["source"][0][1]["pooled_output"]
    y = call["c"]["y"][source_rows]
    torch.testing.assert_close(y[:, : pooled.shape[-1]], pooled.expand(len(y), -1))
    assert (pooled - original).abs().max() > 1e-4


def test_replacement_refuses_what_it_cannot_do(models, prompts):
    from harness.editing import sample
    from leakfree_edit.nodes.attention_replacement import AttentionReplacement
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    node = "Attention Replacement (LeakFree)"
    regional, = RegionGuidedCrossAttention.execute(models.unet(), prompts["target"], object_masks())
    with pytest.raises(NodeInputError, match=f"^{re.escape(node)}: this model has Region-Guided Cross-Attention"):
        AttentionReplacement.execute(regional, prompts["clip"], prompts["plan"])
    replaced, = AttentionReplacement.execute(models.unet(), prompts["clip"], prompts["plan"])
    with pytest.raises(NodeInputError, match="^Region-Guided Cross-Attention .LeakFree.: this model has Attention Replacement"):
        RegionGuidedCrossAttention.execute(replaced, prompts["target"], object_masks())
    with pytest.raises(NodeInputError, match=f"^{re.escape(node)}: this model was sampled without the Dual-Branch Edit Guider"):
        sample(replaced, prompts["target"], prompts["negative"], source_latent(), cfg=2.0, steps=2)
