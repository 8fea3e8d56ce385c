"""Region-guided joint attention on ComfyUI's own Flux classes (random weights, tiny width, 2 double + 2 single blocks)
with Flux's CLIP object (T5-XXL and CLIP-L classes, thin, the tokenizer vocabularies that ship in ComfyUI), through
ComfyUI's real sampler: isolation bit for bit, the rows it must not touch, background blending for rectified flow."""
import pytest
import torch

from harness.editing import EDITS, by_row_kind, object_masks, record_model_calls, sample
from leakfree_edit.masking.token_grid import token_regions

LATENT = (1, 16, 15, 17)  # odd: Flux pads to the 2x2 patch, 8x9 image tokens
MASKS = object_masks(8 * LATENT[2], 8 * LATENT[3])
CHANGED = {  # object i's prompt changed, the other kept
    0: "wolf -> a small white horse with wings\nmoon -> moon made of gold",
    1: "wolf -> brown-colored goat\nmoon -> moon made of green cheese",
}
BOTH_CHANGED = "wolf -> a red fox\nmoon -> a blue planet with rings"


class AttentionRecorder:
    """Another pack's ``optimized_attention_override``: keeps every joint attention output and passes the call on."""

    def __init__(self):
        self.outputs = []

    def __deepcopy__(self, memo):  # model clones share it, as they share any pack's callable
        return self

    def __call__(self, func, *args, **kwargs):
        out = func(*args, **kwargs)
        self.outputs.append(out)
        return out


def encode_flux(models, edits, background=""):
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux

    return ObjectRestrictedEncodeFlux.execute(models.flux_clip(), edits, background)


def edit(models, edits, image_attention="region"):
    """2 steps with region-guided joint attention at CFG 1; returns (final latent, model calls, joint attention outputs)."""
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, _, _ = encode_flux(models, edits)
    model = models.flux()
    recorder = AttentionRecorder()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = recorder
    patched, = RegionGuidedJointAttention.execute(model, target, MASKS, image_attention)
    calls = record_model_calls(patched)
    out = sample(patched, target, target, torch.randn(LATENT, generator=torch.Generator().manual_seed(3)), 1.0)
    return out, calls, recorder.outputs


def token_classes():
    return token_regions(MASKS, 2, *LATENT[-2:], 2)[0]  # [72]: 0 background, 1 wolf, 2 moon


def pixel_classes():
    grid = token_classes().view(8, 9)
    return grid.repeat_interleave(2, 0).repeat_interleave(2, 1)[: LATENT[2], : LATENT[3]]


@pytest.fixture(scope="module")
def runs(models):
    return {name: edit(models, edits) for name, edits in (("base", EDITS), ("wolf", CHANGED[0]), ("moon", CHANGED[1]), ("both", BOTH_CHANGED))}


@pytest.mark.parametrize("changed, kept", [("wolf", 2), ("moon", 1)])
def test_a_region_is_bit_identical_when_another_objects_prompt_changes(runs, changed, kept):
    """Object j's prompt changes: in every double and single block, the joint attention output at region i's image
    tokens (and the background's) is bit-identical, and so are the model's outputs and the final latent there."""
    (out, calls, attention), (out_changed, calls_changed, attention_changed) = runs["base"], runs[changed]
    classes, pixels = token_classes(), pixel_classes()
    text = 256
    assert len(attention) == len(attention_changed) == 2 * 4  # 2 steps x (2 double + 2 single blocks)
    moved = 3 - kept
    for block, block_changed in zip(attention, attention_changed):
        image, image_changed = block[:, text:], block_changed[:, text:]
        for region in (kept, 0):
            assert torch.equal(image[:, classes == region], image_changed[:, classes == region])
    assert not torch.equal(attention[-1][:, text:][:, classes == moved], attention_changed[-1][:, text:][:, classes == moved])
    for region in (kept, 0):
        assert torch.equal(out[..., pixels == region], out_changed[..., pixels == region])
        for (_, chunks), (_, chunks_changed) in zip(calls, calls_changed):
            assert torch.equal(chunks[0][..., pixels == region], chunks_changed[0][..., pixels == region])
    assert not torch.equal(out[..., pixels == moved], out_changed[..., pixels == moved])


def test_the_background_is_unchanged_by_every_objects_text(runs):
    (out, _, attention), (out_changed, _, attention_changed) = runs["base"], runs["both"]
    background, pixels = token_classes() == 0, pixel_classes() == 0
    assert background.sum() > 20
    for block, block_changed in zip(attention, attention_changed):
        assert torch.equal(block[:, 256:][:, background], block_changed[:, 256:][:, background])
    assert torch.equal(out[..., pixels], out_changed[..., pixels])
    assert not torch.equal(out[..., ~pixels], out_changed[..., ~pixels])


def test_image_attention_all_lets_an_object_reach_another_region(models, runs):
    """The alternative mode routes only the text: object j's text reaches region i through object j's image tokens."""
    out, _, _ = edit(models, EDITS, "all")
    changed, _, _ = edit(models, CHANGED[1], "all")
    wolf = pixel_classes() == 1
    assert not torch.equal(out[..., wolf], changed[..., wolf])
    assert not torch.equal(out, runs["base"][0])


@pytest.mark.parametrize("negative_rows", ["plain", "routed"])
def test_unconditional_and_other_rows_equal_the_unpatched_model(models, negative_rows):
    """CFG 3 with another prompt batched beside the target: its rows are bit-identical to the unpatched model's, and so
    are the negative's with ``negative = plain``; the target's rows are not (nor the negative's when routed)."""
    from harness.editing import encode
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    clip = models.flux_clip()
    target, _, _ = encode_flux(models, EDITS)
    other, negative = encode(clip, "a goat under a golden moon"), encode(clip, "blurry")
    positive = target + other  # two conditionings in one positive: ComfyUI runs them in one batch
    latent = torch.randn(2, *LATENT[1:], generator=torch.Generator().manual_seed(4))  # batch 2, one mask set
    plain = models.flux()
    patched, = RegionGuidedJointAttention.execute(plain, target, MASKS, negative=negative_rows)
    plain_calls, patched_calls = record_model_calls(plain), record_model_calls(patched)
    sample(plain, positive, negative, latent, 3.0, steps=1)
    sample(patched, positive, negative, latent, 3.0, steps=1)
    assert [order for order, _ in plain_calls] == [order for order, _ in patched_calls]
    kinds = [kind for order, _ in plain_calls for kind in order]
    assert sorted(kinds) == [0, 0, 1]  # the target, the other prompt, the negative
    plain_chunks, patched_chunks = ([chunk for _, step in calls for chunk in step] for calls in (plain_calls, patched_calls))
    moved = [kind for kind, a, b in zip(kinds, plain_chunks, patched_chunks) if not torch.equal(a, b)]
    assert sorted(moved) == ([0] if negative_rows == "plain" else [0, 1])  # the target's rows (and the negative's when routed)
    assert by_row_kind(patched_calls)[1].shape[0] == 2  # both images of the batch


def test_another_packs_block_replace_still_runs_and_the_region_stays_isolated(models, runs):
    """A ``patches_replace["dit"]`` block replace (as PuLID-style packs install) on every block, set before the patch."""
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    ran = []

    def replace(args, extra):
        ran.append(1)
        return extra["original_block"](args)

    outputs = []
    for edits in (EDITS, CHANGED[1]):
        model = models.flux()
        for kind, count in (("double_block", 2), ("single_block", 2)):
            for index in range(count):
                model.set_model_patch_replace(replace, "dit", kind, index)
        target, _, _ = encode_flux(models, edits)
        patched, = RegionGuidedJointAttention.execute(model, target, MASKS)
        outputs.append(sample(patched, target, target, torch.randn(LATENT, generator=torch.Generator().manual_seed(3)), 1.0))
    assert len(ran) == 2 * 2 * 4  # two runs x two steps x four blocks
    wolf = pixel_classes() == 1
    assert torch.equal(outputs[0], runs["base"][0]) and torch.equal(outputs[0][..., wolf], outputs[1][..., wolf])


def test_the_final_latent_background_is_the_source_for_rectified_flow(models):
    """Latent Background Blend on Flux: every model call sees the background at x_t = (1 - t) x0 + t n (ComfyUI's
    sampler for CONST model sampling), the final latent's background equals the source, exactly after the paste."""
    from leakfree_edit.masking.ops import latent_mask
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend, LatentBackgroundPaste
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, _, _ = encode_flux(models, EDITS)
    source = {"samples": torch.randn(LATENT, generator=torch.Generator().manual_seed(5))}
    model, = RegionGuidedJointAttention.execute(models.flux(), target, MASKS)
    latent, model = LatentBackgroundBlend.execute(source, MASKS, model)
    inputs = []
    model.set_model_unet_function_wrapper(lambda apply, args: inputs.append((args["input"], args["timestep"])) or apply(args["input"], args["timestep"], **args["c"]))
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    sampled = dict(latent, samples=sample(model, target, target, latent["samples"], 1.0, steps=3, noise_mask=latent["noise_mask"]))
    pasted, = LatentBackgroundPaste.execute(sampled, source)

    background = (latent_mask(latent["noise_mask"], *LATENT[-2:]) == 0).expand(LATENT)
    assert background.float().mean() > 0.3
    clean = model.model.process_latent_in(source["samples"])
    assert len(inputs) == 3
    for x, sigma in inputs:
        blended = sigma.view(-1, 1, 1, 1) * noise + (1.0 - sigma.view(-1, 1, 1, 1)) * clean
        torch.testing.assert_close(x[background], blended[background], rtol=0, atol=1e-6)
    assert torch.equal(pasted["samples"][background], source["samples"][background])
    torch.testing.assert_close(sampled["samples"][background], source["samples"][background], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(pasted["samples"][~background], source["samples"][~background])


def test_the_patch_leaves_the_input_model_and_runs_outside_its_window_as_plain_flux(models):
    from leakfree_edit.attention.joint_attention import PROGRAM_KEY
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, _, _ = encode_flux(models, EDITS)
    plain = models.flux()
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(6))
    never, = RegionGuidedJointAttention.execute(plain, target, MASKS, "region", 1.0, 1.0)
    assert PROGRAM_KEY not in plain.model_options.get("transformer_options", {}) and not plain.wrappers
    assert torch.equal(sample(never, target, target, latent, 1.0), sample(plain, target, target, latent, 1.0))


def node_error():
    from leakfree_edit.integration.errors import NodeInputError

    return NodeInputError


def test_a_flux_plan_on_an_sd_model_and_the_reverse_are_refused_with_the_route(models):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    flux_target, _, _ = encode_flux(models, EDITS)
    sd_target, _, _ = ObjectRestrictedEncode.execute(models.clip(), EDITS, "object")
    masks = torch.ones(2, 64, 64)
    route = r"On a Flux model use Object-Restricted Encode for Flux \(LeakFree\) with Region-Guided Joint Attention"
    with pytest.raises(node_error(), match=r"^Region-Guided Cross-Attention \(LeakFree\): this conditioning was encoded for Flux .*" + route):
        RegionGuidedCrossAttention.execute(models.unet(), flux_target, masks)
    with pytest.raises(node_error(), match=r"^Region-Guided Cross-Attention \(LeakFree\): this is a Flux model .*" + route):
        RegionGuidedCrossAttention.execute(models.flux(), sd_target, masks)
    with pytest.raises(node_error(), match=r"^Region-Guided Joint Attention \(LeakFree\): this conditioning was encoded for SD1.5/SDXL .*Object-Restricted Encode for Flux"):
        RegionGuidedJointAttention.execute(models.flux(), sd_target, masks)
    with pytest.raises(node_error(), match=r"^Region-Guided Joint Attention \(LeakFree\): this is an SD1.5 model .*Use Region-Guided Cross-Attention"):
        RegionGuidedJointAttention.execute(models.unet(), flux_target, masks)
    with pytest.raises(node_error(), match=r"^Region-Guided Joint Attention \(LeakFree\): this conditioning did not come from Object-Restricted Encode for Flux"):
        RegionGuidedJointAttention.execute(models.flux(), [[torch.zeros(1, 256, 64), {}]], masks)


def test_the_sd_only_leakage_controls_refuse_a_flux_model(models):
    from leakfree_edit.nodes.rebalance import SourceDominanceRebalance

    with pytest.raises(node_error(), match=r"^Source-Dominance Rebalance \(LeakFree\): this is a Flux model; .*Region-Guided Joint Attention"):
        SourceDominanceRebalance.execute(models.flux())


def test_the_wrong_clip_is_refused_by_either_encoder(models):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux

    with pytest.raises(node_error(), match=r"^Object-Restricted Encode for Flux \(LeakFree\): this is SD1.5/SDXL's CLIP, not Flux's .*DualCLIPLoader"):
        ObjectRestrictedEncodeFlux.execute(models.clip(), EDITS, "")
    with pytest.raises(node_error(), match=r"^Object-Restricted Encode \(LeakFree\): this CLIP has a T5-XXL text encoder .*Object-Restricted Encode for Flux"):
        ObjectRestrictedEncode.execute(models.flux_clip(), EDITS, "object")


def test_masks_that_do_not_match_are_refused(models):
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, _, _ = encode_flux(models, EDITS)
    with pytest.raises(node_error(), match=r"^Region-Guided Joint Attention \(LeakFree\): got 3 object masks for 2 objects \(wolf, moon\)"):
        RegionGuidedJointAttention.execute(models.flux(), target, torch.ones(3, 64, 64))
    latent = torch.randn(LATENT)
    wide, = RegionGuidedJointAttention.execute(models.flux(), target, object_masks(64, 256))
    with pytest.raises(node_error(), match=r"^Region-Guided Joint Attention \(LeakFree\): the object masks are 256x64 px but the latent .* 136x120 px"):
        sample(wide, target, target, latent, 1.0, steps=1)
    three_sets, = RegionGuidedJointAttention.execute(models.flux(), target, torch.cat([MASKS] * 3))
    with pytest.raises(node_error(), match=r"masks for 3 images but 2 target rows"):
        sample(three_sets, target, target, torch.randn(2, *LATENT[1:]), 1.0, steps=1)


def test_prompts_too_long_for_their_slot_name_the_prompt(models):
    long_target = "wolf -> " + "a very fluffy brown-colored goat " * 12 + "\nmoon -> moon made of gold"
    with pytest.raises(node_error(), match=r"the target prompt 'a very fluffy .*' is \d+ tokens with its end token; with 2 objects each gets 85 of the 256-token window"):
        encode_flux(models, long_target)
    with pytest.raises(node_error(), match=r"the background prompt is \d+ tokens; with 2 objects 86 are left for it"):
        encode_flux(models, EDITS, background="a quiet night sky over a dark pine forest, " * 8)
