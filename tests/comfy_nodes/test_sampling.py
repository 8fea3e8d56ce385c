"""RGB-CAM and background blending through ComfyUI's real sampler on random-weight UNets."""
import subprocess
import sys
import textwrap

import pytest
import torch

import leakfree_edit.attention.region_attention as region_attention
from harness.editing import EDITS, by_row_kind, encode, object_masks, record_model_calls, sample
from leakfree_edit.masking.ops import latent_mask
from pipelines.comfyui import ROOT

CASES = [  # kind, latent (batch, h, w), cfg
    pytest.param("sd15", (2, 75, 43), 3.0, id="sd15-odd-75x43-batch2"),
    pytest.param("sd15", (1, 12, 16), 1.0, id="sd15-cfg1"),
    pytest.param("sdxl", (1, 12, 10), 3.0, id="sdxl"),
]


@pytest.mark.parametrize("kind, shape, cfg", CASES)
def test_region_attention_in_the_sampler(models, monkeypatch, kind, shape, cfg):
    from leakfree_edit.integration.patching import attention_blocks
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip(kind)
    target, _, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    negative = encode(clip, "blurry, " * 30)  # 2 windows: the target's keys are lcm-repeated
    batch, height, width = shape
    latent = torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(3))
    plain = models.unet(kind)
    patched, = RegionGuidedCrossAttention.execute(plain, target, object_masks(8 * height, 8 * width))

    ran, grids = [], []
    original_rgb_cam, original_bias = region_attention.rgb_cam, region_attention.region_bias
    monkeypatch.setattr(region_attention, "rgb_cam", lambda q, *a: ran.append(q.shape[0]) or original_rgb_cam(q, *a))
    monkeypatch.setattr(region_attention, "region_bias", lambda m, *a: grids.append(tuple(m.shape[-2:])) or original_bias(m, *a))
    plain_calls, patched_calls = record_model_calls(plain), record_model_calls(patched)
    sample(plain, target, negative, latent, cfg, steps=1)
    sample(patched, target, negative, latent, cfg, steps=1)

    layers = len(attention_blocks(plain.model.diffusion_model))
    assert len(ran) == layers and set(ran) == {batch}  # every cross-attention layer, target rows only
    assert len(grids) == len(set(grids))  # masks resized once per layer size
    plain_rows, patched_rows = by_row_kind(plain_calls), by_row_kind(patched_calls)
    if cfg > 1:
        assert torch.equal(plain_rows[1], patched_rows[1])  # unconditional: identical to the unpatched model
    assert not torch.allclose(plain_rows[0], patched_rows[0])


def test_background_equals_source_after_blend_and_paste(models):
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend, LatentBackgroundPaste
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    source = {"samples": torch.randn(2, 4, 75, 43, generator=torch.Generator().manual_seed(4))}
    masks = object_masks(600, 344)
    model, = RegionGuidedCrossAttention.execute(models.unet(), target, masks)
    latent, model = LatentBackgroundBlend.execute(source, masks, model, end_percent=1.0, feather=0)
    sampled = dict(latent, samples=sample(model, target, encode(clip, ""), latent["samples"], 3.0, steps=3, noise_mask=latent["noise_mask"]))
    pasted, = LatentBackgroundPaste.execute(sampled, source)
    background = (latent_mask(latent["noise_mask"], 75, 43) == 0).expand_as(source["samples"])
    assert background.float().mean() > 0.3
    assert torch.equal(pasted["samples"][background], source["samples"][background])
    torch.testing.assert_close(sampled["samples"][background], source["samples"][background], rtol=1e-3, atol=1e-3)
    assert not torch.allclose(pasted["samples"][~background], source["samples"][~background])


PLAIN_RUN = textwrap.dedent("""
    import torch
    from harness import comfy_env
    comfy_env.prepare_comfy()
    import comfy.sample
    from harness import random_models
    clip, model = random_models.clip("sd15"), random_models.unet("sd15")
    def enc(t):
        c, p = clip.encode_from_tokens(clip.tokenize(t), return_pooled=True)
        return [[c, {{"pooled_output": p}}]]
    latent = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    out = comfy.sample.sample(model, noise, 2, 3.0, "euler", "normal", enc("a goat"), enc(""), latent, denoise=1.0, seed=0, disable_pbar=True)
    torch.save(out, {path!r})
""")


def test_an_edit_leaves_nothing_behind(models, tmp_path):
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip, model = models.clip(), models.unet()
    latent = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(5))
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    edited, = RegionGuidedCrossAttention.execute(model, target, object_masks(96, 128))
    _, edited = LatentBackgroundBlend.execute({"samples": latent}, object_masks(96, 128), edited, end_percent=0.5)
    sample(edited, target, encode(clip, ""), latent, 3.0)
    after = sample(model, encode(clip, "a goat"), encode(clip, ""), latent, 3.0)
    assert "leakfree_edit" not in model.model_options.get("transformer_options", {})
    path = tmp_path / "fresh.pt"
    subprocess.run([sys.executable, "-c", PLAIN_RUN.format(path=str(path))], check=True, capture_output=True, timeout=300, cwd=ROOT)
    assert torch.equal(after, torch.load(path))


def test_one_mask_set_per_image_of_a_batch(models):
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, _, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    first, second = object_masks(96, 128), object_masks(96, 128).flip(-1)
    latent = torch.randn(2, 4, 12, 16, generator=torch.Generator().manual_seed(6))
    negative = encode(clip, "")
    per_image, = RegionGuidedCrossAttention.execute(models.unet(), target, torch.cat([first, second]))
    calls = record_model_calls(per_image)
    sample(per_image, target, negative, latent, 3.0, steps=1)
    for masks, row in ((first, 0), (second, 1)):  # each image's rows equal a run with that image's masks alone
        alone, = RegionGuidedCrossAttention.execute(models.unet(), target, masks)
        alone_calls = record_model_calls(alone)
        sample(alone, target, negative, latent, 3.0, steps=1)
        torch.testing.assert_close(by_row_kind(calls)[0][row], by_row_kind(alone_calls)[0][row], rtol=1e-4, atol=1e-4)
    latent_out, _ = LatentBackgroundBlend.execute({"samples": latent}, torch.cat([first, second]), models.unet(), edit_plan=plan)
    assert latent_out["noise_mask"].shape == (2, 96, 128)
    assert torch.equal(latent_out["noise_mask"][1], second.amax(0))


def first_layer_outputs(monkeypatch):
    """Record each RGB-CAM layer's conditional rows and layer size (the first layer's queries do not depend on the text)."""
    from leakfree_edit.attention.region_attention import RegionCrossAttention, layer_size

    records = []
    original = RegionCrossAttention.__call__

    def spy(self, q, k, v, extra_options):
        out = original(self, q, k, v, extra_options)
        order = extra_options["cond_or_uncond"]
        chunk = q.shape[0] // len(order)
        cond_rows = [row for index, kind in enumerate(order) if kind == 0 for row in range(index * chunk, (index + 1) * chunk)]
        if cond_rows:  # ComfyUI may run cond and uncond as separate calls when memory is short
            records.append((out[cond_rows], layer_size(extra_options)))
        return out

    monkeypatch.setattr(RegionCrossAttention, "__call__", spy)
    return records


@pytest.mark.parametrize("kind, shape, cfg", CASES)
@pytest.mark.parametrize("isolation", ["ale", "strict"])
def test_region_content_is_isolated_in_the_unet(models, monkeypatch, kind, shape, cfg, isolation):
    """ale: object 0's ORE values change, region 1 of the first cross-attention layer is bit-identical.
    strict: object 0's whole text changes (another length too), region 1 is still bit-identical."""
    from dataclasses import replace

    from leakfree_edit.integration.checks import ore_payload
    from leakfree_edit.masking.ops import region_weights, resize_masks
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip(kind)
    batch, height, width = shape
    latent = torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(3))
    masks = object_masks(8 * height, 8 * width)
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    if isolation == "ale":
        payload = ore_payload(target, "test")
        objects = payload.embeddings.objects.clone()
        objects[0] = torch.randn_like(objects[0])
        changed_payload = replace(payload, embeddings=replace(payload.embeddings, objects=objects))
        changed = [[target[0][0], dict(target[0][1], leakfree_ore=changed_payload)]]
        positive = changed_positive = target
    else:
        changed, _, _ = ObjectRestrictedEncode.execute(clip, "wolf -> a small white horse with wings\nmoon -> moon made of gold", "object")
        # SDXL's pooled text vector enters every ResBlock through the time embedding: keep it, so the
        # first layer's queries are held fixed and only the cross-attention text differs.
        changed = [[changed[0][0], dict(changed[0][1], pooled_output=target[0][1]["pooled_output"])]]
        positive, changed_positive = target, changed
    outputs = []
    for conditioning, prompt in ((target, positive), (changed, changed_positive)):
        records = first_layer_outputs(monkeypatch)
        model, = RegionGuidedCrossAttention.execute(models.unet(kind), conditioning, masks, isolation)
        sample(model, prompt, encode(clip, ""), latent, cfg, steps=1)
        outputs.append(records[0])
        monkeypatch.undo()
    (before, (h, w)), (after, _) = outputs
    region_1 = region_weights(resize_masks(masks, h, w))[:, 2] == 1
    assert region_1.any()
    assert torch.equal(before[:, region_1], after[:, region_1])
    assert not torch.equal(before, after)
