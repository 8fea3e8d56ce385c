"""RGB-CAM and background blending through ComfyUI's real sampler on random-weight UNets."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import leakfree_edit.attention.region_attention as region_attention
from leakfree_edit.masking.ops import latent_mask

EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"


def encode(clip, text):
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def object_masks(height, width):
    masks = torch.zeros(2, height, width)
    masks[0, : height // 2, : width // 3] = 1
    masks[1, height // 2 :, width // 2 :] = 1
    return masks


def record_model_calls(model):
    """Wrap apply_model to keep (cond_or_uncond, output chunks) of every UNet call."""
    calls = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append((list(args["cond_or_uncond"]), out.chunk(len(args["cond_or_uncond"]))))
        return out

    model.set_model_unet_function_wrapper(wrapper)
    return calls


def sample(model, positive, negative, latent, cfg, steps=2, noise_mask=None, seed=0):
    import comfy.sample

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               denoise=1.0, noise_mask=noise_mask, seed=seed, disable_pbar=True)


CASES = [  # kind, latent (batch, h, w), cfg
    pytest.param("sd15", (2, 75, 43), 3.0, id="sd15-odd-75x43-batch2"),
    pytest.param("sd15", (1, 12, 16), 1.0, id="sd15-cfg1"),
    pytest.param("sdxl", (1, 12, 10), 3.0, id="sdxl"),
]


@pytest.mark.parametrize("kind, shape, cfg", CASES)
def test_region_attention_in_the_sampler(models, monkeypatch, kind, shape, cfg):
    from leakfree_edit.nodes.comfy_compat import attention_blocks
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip(kind)
    target, _, plan = ObjectRestrictedEncode().encode(clip, EDITS, "object")
    negative = encode(clip, "blurry, " * 30)  # 2 windows: the target's keys are lcm-repeated
    batch, height, width = shape
    latent = torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(3))
    plain = models.unet(kind)
    patched, = RegionGuidedCrossAttention().patch(plain, target, object_masks(8 * height, 8 * width))

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
    (order, plain_out), = plain_calls
    (_, patched_out), = patched_calls
    for chunk, kind_of_row in enumerate(order):
        if kind_of_row == 1:  # unconditional: identical to the unpatched model
            assert torch.equal(plain_out[chunk], patched_out[chunk])
        else:
            assert not torch.allclose(plain_out[chunk], patched_out[chunk])


def test_background_equals_source_after_blend_and_paste(models):
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend, LatentBackgroundPaste
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, _, _ = ObjectRestrictedEncode().encode(clip, EDITS, "object")
    source = {"samples": torch.randn(2, 4, 75, 43, generator=torch.Generator().manual_seed(4))}
    masks = object_masks(600, 344)
    model, = RegionGuidedCrossAttention().patch(models.unet(), target, masks)
    latent, model = LatentBackgroundBlend().blend(source, masks, model, end_percent=1.0, feather=0)
    sampled = dict(latent, samples=sample(model, target, encode(clip, ""), latent["samples"], 3.0, steps=3, noise_mask=latent["noise_mask"]))
    pasted, = LatentBackgroundPaste().paste(sampled, source)
    background = (latent_mask(latent["noise_mask"], 75, 43) == 0).expand_as(source["samples"])
    assert background.float().mean() > 0.3
    assert torch.equal(pasted["samples"][background], source["samples"][background])
    torch.testing.assert_close(sampled["samples"][background], source["samples"][background], rtol=1e-3, atol=1e-3)
    assert not torch.allclose(pasted["samples"][~background], source["samples"][~background])


PLAIN_RUN = textwrap.dedent("""
    import os, sys, torch
    os.environ.setdefault("COMFYUI_CPU", "1")
    torch.set_flush_denormal(True)
    sys.path.insert(0, {scripts!r})
    import random_models, comfy.sample
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
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend

    clip, model = models.clip(), models.unet()
    latent = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(5))
    target, _, _ = ObjectRestrictedEncode().encode(clip, EDITS, "object")
    edited, = RegionGuidedCrossAttention().patch(model, target, object_masks(96, 128))
    _, edited = LatentBackgroundBlend().blend({"samples": latent}, object_masks(96, 128), edited, end_percent=0.5)
    sample(edited, target, encode(clip, ""), latent, 3.0)
    after = sample(model, encode(clip, "a goat"), encode(clip, ""), latent, 3.0)
    assert "leakfree_edit" not in model.model_options.get("transformer_options", {})
    path = tmp_path / "fresh.pt"
    script = PLAIN_RUN.format(scripts=str(Path(__file__).resolve().parents[1] / "scripts"), path=str(path))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    assert torch.equal(after, torch.load(path))


def test_one_mask_set_per_image_of_a_batch(models):
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, _, plan = ObjectRestrictedEncode().encode(clip, EDITS, "object")
    first, second = object_masks(96, 128), object_masks(96, 128).flip(-1)
    latent = torch.randn(2, 4, 12, 16, generator=torch.Generator().manual_seed(6))
    negative = encode(clip, "")
    per_image, = RegionGuidedCrossAttention().patch(models.unet(), target, torch.cat([first, second]))
    calls = record_model_calls(per_image)
    sample(per_image, target, negative, latent, 3.0, steps=1)
    for masks, row in ((first, 0), (second, 1)):  # each image's rows equal a run with that image's masks alone
        alone, = RegionGuidedCrossAttention().patch(models.unet(), target, masks)
        alone_calls = record_model_calls(alone)
        sample(alone, target, negative, latent, 3.0, steps=1)
        (order, out), = calls
        (_, alone_out), = alone_calls
        cond = order.index(0)
        torch.testing.assert_close(out[cond][row], alone_out[cond][row], rtol=1e-4, atol=1e-4)
    latent_out, _ = LatentBackgroundBlend().blend({"samples": latent}, torch.cat([first, second]), models.unet(), edit_plan=plan)
    assert latent_out["noise_mask"].shape == (2, 96, 128)
    assert torch.equal(latent_out["noise_mask"][1], second.amax(0))
