"""The invariants with models as ComfyUI loads them for GPU users: weights and arithmetic in fp32, fp16 and bf16 (on CPU
tensors: the same kernels' dtypes), fp8 weights cast per layer (``comfy.ops.manual_cast``), and partial loading
(low-VRAM: weights moved per layer). Random-weight SD1.5 and Flux of ComfyUI's own classes, its real samplers.

Each dtype case costs one of the fp32 tests of tests/comfy_nodes/test_flux.py and test_sampling.py (tiny models, a few
steps): about 0.3-1 s; fp16 on the CPU is the slowest (no native fp16 matmul)."""
import pytest
import torch

from harness.editing import EDITS, by_row_kind, encode, encode_flux, object_masks, record_model_calls, sample
from leakfree_edit.masking.ops import latent_mask, region_weights, resize_masks
from leakfree_edit.masking.token_grid import token_regions

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MOON_CHANGED = "wolf -> brown-colored goat\nmoon -> moon made of green cheese"
FLUX_LATENT = (1, 16, 15, 17)
SD_LATENT = (1, 4, 12, 16)
FLUX_MASKS = object_masks(8 * FLUX_LATENT[2], 8 * FLUX_LATENT[3])
SD_MASKS = object_masks(8 * SD_LATENT[2], 8 * SD_LATENT[3])


class FiniteCheck:
    """Another pack's ``optimized_attention_override``: records whether every joint attention output was finite."""

    def __init__(self):
        self.finite = []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, *args, **kwargs):
        out = func(*args, **kwargs)
        self.finite.append(bool(torch.isfinite(out).all()))
        return out


def flux_pixels():
    grid = token_regions(FLUX_MASKS, 2, *FLUX_LATENT[-2:], 2)[0].view(8, 9)
    return grid.repeat_interleave(2, 0).repeat_interleave(2, 1)[: FLUX_LATENT[2], : FLUX_LATENT[3]]


def flux_edit(models, edits, dtype, compute_dtype=None):
    """Routing, CFG 3 with a negative (routed), Latent Background Blend and Paste, 3 steps: (pasted latent, finite check)."""
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend, LatentBackgroundPaste
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, _, _ = encode_flux(models, edits)
    model = models.flux(dtype=dtype, compute_dtype=compute_dtype)
    check = FiniteCheck()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = check
    model, = RegionGuidedJointAttention.execute(model, target, FLUX_MASKS)
    source = {"samples": torch.randn(FLUX_LATENT, generator=torch.Generator().manual_seed(5))}
    latent, model = LatentBackgroundBlend.execute(source, FLUX_MASKS, model)
    negative = encode(models.flux_clip(), "blurry, low quality")
    sampled = sample(model, target, negative, latent["samples"], 3.0, steps=3, noise_mask=latent["noise_mask"])
    pasted, = LatentBackgroundPaste.execute(dict(latent, samples=sampled), source)
    return pasted["samples"], check, source["samples"]


def assert_flux_invariants(base, changed):
    (out, check, source), (out_changed, check_changed, _) = base, changed
    assert check.finite and all(check.finite) and all(check_changed.finite)
    pixels = flux_pixels()
    for region in (0, 1):
        assert torch.equal(out[..., pixels == region], out_changed[..., pixels == region])
    assert not torch.equal(out[..., pixels == 2], out_changed[..., pixels == 2])
    background = (latent_mask(FLUX_MASKS.amax(0, keepdim=True), *FLUX_LATENT[-2:]) == 0).expand(FLUX_LATENT)
    assert background.float().mean() > 0.3 and torch.equal(out[background], source[background])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_flux_isolation_and_background_in_every_dtype(models, dtype):
    assert_flux_invariants(flux_edit(models, EDITS, dtype), flux_edit(models, MOON_CHANGED, dtype))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_flux_dual_branch_isolation_and_background_in_every_dtype(models, dtype):
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch_flux import DualBranchGuiderFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    source_latent = torch.randn(FLUX_LATENT, generator=torch.Generator().manual_seed(5))
    outs = []
    for edits in (EDITS, MOON_CHANGED):
        target, source, _ = encode_flux(models, edits)
        model, = RegionGuidedJointAttention.execute(models.flux(dtype=dtype), target, FLUX_MASKS)
        guider, = DualBranchGuiderFlux.execute(model, source, target, {"samples": source_latent}, lock_schedule="object",
                                               object_masks=FLUX_MASKS)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 3)
        outs.append(guider.sample(torch.randn(FLUX_LATENT, generator=torch.Generator().manual_seed(0)), source_latent,
                                  comfy.samplers.ksampler("euler"), sigmas, disable_pbar=True, seed=0))
    pixels = flux_pixels()
    for region in (0, 1):
        assert torch.equal(outs[0][..., pixels == region], outs[1][..., pixels == region])
    kept = (latent_mask(FLUX_MASKS.amax(0, keepdim=True), *FLUX_LATENT[-2:]) == 0).expand(FLUX_LATENT)
    assert torch.isfinite(outs[0]).all() and torch.equal(outs[0][kept], source_latent[kept])


def first_cross_attention(model):
    """Keep the output of the first cross-attention layer of every model call (input block 1), all rows."""
    outputs = []

    def keep(out, extra_options):
        if tuple(extra_options["block"]) == ("input", 1):
            outputs.append(out.float())
        return out

    model.set_model_attn2_output_patch(keep)
    return outputs


def sd_edit(models, edits, dtype, compute_dtype=None):
    """Strict RGB-CAM + rebalance (cross- and self-attention terms), CFG 3, background blend and paste, 2 steps."""
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend, LatentBackgroundPaste
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.rebalance import SourceDominanceRebalance
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, _, _ = ObjectRestrictedEncode.execute(clip, edits, "object")
    plain = models.unet(dtype=dtype, compute_dtype=compute_dtype)
    model, = RegionGuidedCrossAttention.execute(plain, target, SD_MASKS, "strict")
    model, = SourceDominanceRebalance.execute(model, boost=2.0, binding=2.0, surroundings=0.5)
    source = {"samples": torch.randn(SD_LATENT, generator=torch.Generator().manual_seed(5))}
    latent, model = LatentBackgroundBlend.execute(source, SD_MASKS, model)
    layers, calls = first_cross_attention(model), record_model_calls(model)
    negative = encode(clip, "blurry")
    sampled = sample(model, target, negative, latent["samples"], 3.0, steps=2, noise_mask=latent["noise_mask"])
    pasted, = LatentBackgroundPaste.execute(dict(latent, samples=sampled), source)
    plain_calls = record_model_calls(plain)
    sample(plain, target, negative, latent["samples"], 3.0, steps=2, noise_mask=latent["noise_mask"])
    return {"out": pasted["samples"], "source": source["samples"], "layer": layers[0], "calls": calls, "plain": plain_calls}


def assert_sd_invariants(base, changed):
    assert torch.isfinite(base["out"]).all() and all(torch.isfinite(c).all() for _, chunks in base["calls"] for c in chunks)
    height, width = SD_LATENT[-2:]
    wolf = region_weights(resize_masks(SD_MASKS, height, width))[:, 1] == 1
    cond = 1  # the layer's rows: [uncond, cond] in ComfyUI's batch order
    assert torch.equal(base["layer"][cond, wolf], changed["layer"][cond, wolf])  # strict: object 2's text never reaches region 1
    assert not torch.equal(base["layer"][cond, ~wolf], changed["layer"][cond, ~wolf])
    assert torch.equal(by_row_kind(base["calls"])[1], by_row_kind(base["plain"])[1])  # unconditional rows: the unpatched model's
    background = (latent_mask(SD_MASKS.amax(0, keepdim=True), height, width) == 0).expand(SD_LATENT)
    assert torch.equal(base["out"][background], base["source"][background])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_sd_isolation_unconditional_rows_and_background_in_every_dtype(models, dtype):
    assert_sd_invariants(sd_edit(models, EDITS, dtype), sd_edit(models, MOON_CHANGED, dtype))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_sd_dual_branch_background_and_virtual_inversion_in_every_dtype(models, dtype):
    """The exact blend keeps the source latent bit for bit; target = source conditioning returns the source (to the
    dtype's precision: the two branches run the same rows through the same half-precision arithmetic)."""
    import comfy.samplers

    from leakfree_edit.integration.checks import ORE_KEY
    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, source, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    same_as_source = [[source[0][0], dict(source[0][1], **{ORE_KEY: target[0][1][ORE_KEY]})]]
    latent = torch.randn(SD_LATENT, generator=torch.Generator().manual_seed(3))

    def run(model, positive, **options):
        guider, = DualBranchGuider.execute(model, source, positive, encode(clip, ""), {"samples": latent}, source_cfg=2.0, target_cfg=2.0,
                                           self_attention_schedule="object", **options)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "sgm_uniform", 3)
        torch.manual_seed(0)
        return guider.sample(torch.randn(SD_LATENT, generator=torch.Generator().manual_seed(0)), latent, comfy.samplers.ksampler("lcm"),
                             sigmas, disable_pbar=True, seed=0)

    regional, = RegionGuidedCrossAttention.execute(models.unet(dtype=dtype), target, SD_MASKS)
    edited = run(regional, target, object_masks=SD_MASKS, background_blend="exact")
    background = (latent_mask(SD_MASKS.amax(0, keepdim=True), *SD_LATENT[-2:]) == 0).expand(SD_LATENT)
    assert torch.isfinite(edited).all() and torch.equal(edited[background], latent[background])
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    torch.testing.assert_close(run(models.unet(dtype=dtype), same_as_source), latent, rtol=tolerance, atol=tolerance)


def test_fp8_weights_cast_per_layer_keep_the_patches(models):
    """UNETLoader's weight_dtype fp8_e4m3fn: weights stored in fp8, cast per layer to the compute dtype (bf16 here, as
    on a GPU; ComfyUI picks fp32 on a CPU). The patches live in the model options, not the weights: they hold."""
    import comfy.ops

    fp8 = dict(dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    assert isinstance(models.flux(**fp8).model.diffusion_model.img_in, comfy.ops.manual_cast.Linear)
    assert models.flux(**fp8).model.diffusion_model.img_in.weight.dtype == torch.float8_e4m3fn
    assert_flux_invariants(flux_edit(models, EDITS, **fp8), flux_edit(models, MOON_CHANGED, **fp8))
    assert_sd_invariants(sd_edit(models, EDITS, **fp8), sd_edit(models, MOON_CHANGED, **fp8))


def test_partial_loading_keeps_the_patches(models, monkeypatch):
    """ComfyUI's low-VRAM partial loading (what load_models_gpu does when a model does not fit): every layer's weights
    stay on the offload device and are moved per layer in its forward (``comfy_cast_weights``)."""
    import comfy.model_management

    load = comfy.model_management.LoadedModel.model_load
    partial = []

    def low_vram(self, lowvram_model_memory=0, force_patch_weights=False):
        out = load(self, lowvram_model_memory=1, force_patch_weights=force_patch_weights)
        partial.append(self.model.model.model_lowvram)
        return out

    monkeypatch.setattr(comfy.model_management.LoadedModel, "model_load", low_vram)
    comfy.model_management.unload_all_models()  # the models other tests loaded whole load again, partially
    try:
        assert_flux_invariants(flux_edit(models, EDITS, torch.float32), flux_edit(models, MOON_CHANGED, torch.float32))
        assert_sd_invariants(sd_edit(models, EDITS, torch.float32), sd_edit(models, MOON_CHANGED, torch.float32))
    finally:
        comfy.model_management.unload_all_models()
    assert partial and all(partial)
