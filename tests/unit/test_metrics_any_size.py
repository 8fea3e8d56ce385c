"""ALE-Bench's metrics on photos of any shape: structure distance as DINO's own code computes it (its position-embedding
interpolation, its patch convolution dropping the leftover pixels), checked against DINO's forward written out step by
step on random weights in DINO's release format; every metric of ALE's evaluation (its eight defaults and the others its
``--metrics`` takes) on 4:3, 16:9, 3:2, portrait and odd sizes, against its definition."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import metric_model_files
from harness.editing import clip_by_definition
from leakfree_edit.evaluation import models as metric_models
from leakfree_edit.evaluation.ale_metrics import ALL_METRICS, METRICS, AleMetrics

RELEASE = "dino_deitsmall8_pretrain"  # patch 8, as ALE's ViT-B/8, at ViT-S width to stay cheap
# (height, width): 4:3, 16:9, 3:2, portrait 3:4 and odd sides (every metric), and for the structure distance alone a square
# photo (the trained grid, no interpolation) and a square grid from a non-square photo (DINO interpolates there too)
SIZES = {"4:3": (300, 400), "16:9": (180, 320), "3:2": (200, 300), "portrait": (400, 300), "odd": (77, 101),
         "square": (224, 224), "near square": (230, 224)}
RATIOS = ("4:3", "16:9", "3:2", "portrait", "odd")
EDITS = [("wolf", "brown-colored goat"), ("moon", "moon made of gold")]


@pytest.fixture(scope="module")
def dino_file(tmp_path_factory):
    """DINO's release layout with random weights; a wide position embedding makes any resampling error show."""
    folder = tmp_path_factory.mktemp("dino")
    return metric_model_files.write_dino(folder / f"{RELEASE}.pth", RELEASE, seed=3, position_std=1.0)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, dino_file):
    folder = metric_model_files.write_metric_models(tmp_path_factory.mktemp("leakage_metrics"), only=("clip", "lpips"))
    (folder / dino_file.name).symlink_to(dino_file)
    return folder


@pytest.fixture(scope="module")
def loaded(model_folder, dino_file):
    found = metric_models.load_metric_models(model_folder)
    assert not found.missing and found.loaded["dino"].endswith(dino_file.name), found.missing
    return found


def dino_keys_reference(state: dict, image: torch.Tensor, heads: int, patch: int, layer: int = 11) -> torch.Tensor:
    """Block ``layer``'s keys [N, C] of DINO's forward (facebookresearch/dino vision_transformer.py: PatchEmbed, prepare_tokens,
    interpolate_pos_encoding, Block, Attention) on a normalised ``image`` [1, 3, h, w], written out on the release state dict."""
    _, _, w, h = image.shape  # DINO's own names: "w" is the height here, and it is passed on as such
    x = F.conv2d(image, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"], x], dim=1)
    position, trained = state["pos_embed"], state["pos_embed"].shape[1] - 1
    if not (x.shape[1] - 1 == trained and w == h):
        side = math.sqrt(trained)
        w0, h0 = w // patch + 0.1, h // patch + 0.1
        grid = position[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(w0 / side, h0 / side), mode="bicubic")
        assert grid.shape[-2:] == (int(w0), int(h0))
        position = torch.cat([position[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, grid.shape[1])], dim=1)
    x = x + position
    tokens, width = x.shape[1], x.shape[2]
    for index in range(layer + 1):
        weight = lambda name: (state[f"blocks.{index}.{name}.weight"], state[f"blocks.{index}.{name}.bias"])
        qkv = F.linear(F.layer_norm(x, (width,), *weight("norm1"), eps=1e-6), *weight("attn.qkv"))
        if index == layer:
            return qkv.reshape(tokens, 3, heads, width // heads).permute(1, 2, 0, 3)[1].transpose(0, 1).reshape(tokens, width)
        q, k, v = qkv.reshape(1, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
        x = x + F.linear((attention @ v).transpose(1, 2).reshape(1, tokens, width), *weight("attn.proj"))
        x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, (width,), *weight("norm2"), eps=1e-6), *weight("mlp.fc1"))), *weight("mlp.fc2"))


def keys_reference(state, image: np.ndarray) -> torch.Tensor:
    """ALE's metrics_calculator.py: Resize(224, max_size=480) + ImageNet normalisation of the 0-255 image, block 11's keys."""
    from torchvision import transforms

    _, heads, patch = metric_model_files.DINO_SHAPES[RELEASE]
    prepare = transforms.Compose([transforms.Resize(224, max_size=480), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        return dino_keys_reference(state, prepare(torch.from_numpy(np.transpose(image.astype(np.float32), (2, 0, 1))))[None], heads, patch)


def structure_distance_reference(pred_keys: torch.Tensor, gt_keys: torch.Tensor) -> float:
    """The keys' cosine self-similarity (norm products clamped at 1e-8), MSE of pred's against the source's."""

    def similarity(keys):
        norm = keys.norm(dim=1, keepdim=True)
        return (keys @ keys.T) / torch.clamp(norm @ norm.T, min=1e-8)

    return F.mse_loss(similarity(pred_keys), similarity(gt_keys)).item()


def assert_keys_are_dinos(loaded, reference: torch.Tensor, image: np.ndarray):
    keys = loaded.dino.keys(torch.from_numpy(np.transpose(image.astype(np.float32), (2, 0, 1)))[None])
    assert keys.shape == reference.shape and (keys - reference).abs().max() <= 1e-5 * reference.abs().max()


def photo(height, width, seed):
    """A smooth picture (a gradient plus a few blobs) and its edit (a colour shift inside one ellipse, noise elsewhere)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    source = np.stack([200 * x + 30, 180 * y + 40, 120 * (x + y) / 2 + 60], axis=-1)
    for _ in range(4):
        cy, cx, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
        source[(y - cy * height / max(height, width)) ** 2 + (x - cx * width / max(height, width)) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    source = np.clip(source, 0, 255).astype(np.uint8)
    edited = np.clip(source.astype(int) + rng.integers(-12, 12, source.shape), 0, 255)
    blob = (y - 0.3 * height / max(height, width)) ** 2 / 0.04 + (x - 0.35 * width / max(height, width)) ** 2 / 0.06 < 1
    edited[blob] = edited[blob][:, ::-1]
    masks = [np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)]
    masks[0][blob] = 255
    masks[1][height // 2 :, width // 2 :] = 140  # soft, as ALE-Bench's grey PNGs can be
    return source, edited.astype(np.uint8), masks


@pytest.mark.parametrize("shape", ["square", "near square"])
def test_structure_distance_is_dinos_forward_on_square_photos(loaded, dino_file, shape):
    """(The five aspect ratios: test_every_metric_on_every_aspect_ratio_equals_its_definition.)"""
    state = torch.load(dino_file, weights_only=True)
    source, edited, _ = photo(*SIZES[shape], seed=1)
    value = AleMetrics(dino=loaded.dino).score(source, edited, EDITS, [np.zeros(source.shape[:2], np.uint8)] * 2, ["structure_distance"])
    gt_keys = keys_reference(state, source)
    expected = structure_distance_reference(keys_reference(state, edited), gt_keys)
    assert expected > 0 and value.values["structure_distance"] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert_keys_are_dinos(loaded, gt_keys, source)


def test_the_leftover_pixels_are_dropped_and_the_grid_rounds_down(loaded):
    """A 300 x 400 photo becomes 224 x 298 (298 = 37 patches of 8 and 2 leftover pixels): 1 + 28 * 37 tokens, and
    changing only the two rightmost columns changes nothing."""
    source, edited, _ = photo(300, 400, seed=2)
    keys = loaded.dino.keys(torch.from_numpy(np.transpose(source.astype(np.float32), (2, 0, 1)))[None])
    assert keys.shape[0] == 1 + 28 * 37
    prepared = loaded.dino.transform(torch.from_numpy(np.transpose(source.astype(np.float32), (2, 0, 1))))[None]
    assert prepared.shape[-2:] == (224, 298)
    from leakfree_edit.evaluation.structure import dino_tokens

    changed = prepared.clone()
    changed[..., 296:] = 5.0
    with torch.no_grad():
        assert torch.equal(dino_tokens(loaded.dino.model, prepared), dino_tokens(loaded.dino.model, changed))


@pytest.mark.parametrize("shape", RATIOS)
def test_every_metric_on_every_aspect_ratio_equals_its_definition(loaded, dino_file, shape):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    source, edited, masks = photo(*SIZES[shape], seed=5)
    scores = AleMetrics(loaded.clip, loaded.lpips, loaded.dino).score(source, edited, EDITS, masks, ALL_METRICS)
    values = scores.values
    assert list(values) == list(ALL_METRICS)
    union = np.maximum.reduce(masks)[..., None].repeat(3, axis=2) / 255.0
    regions = {"": None, "_unedit_part": 1 - union, "_edit_part": union}
    as_tensor = lambda image, mask: torch.from_numpy(
        (image.astype(np.float32) / 255 * (1 if mask is None else mask.astype(np.float32))).transpose(2, 0, 1).copy())[None]
    for suffix, mask in regions.items():
        pred, gt = as_tensor(edited, mask), as_tensor(source, mask)
        assert values[f"mse{suffix}"] == pytest.approx(((pred - gt) ** 2).mean().item(), rel=1e-5)
        assert values[f"psnr{suffix}"] == pytest.approx(peak_signal_noise_ratio(pred, gt, data_range=1.0).item(), rel=1e-5)
        assert values[f"ssim{suffix}"] == pytest.approx(structural_similarity_index_measure(pred, gt, data_range=1.0).item(), rel=1e-5)
        assert values[f"lpips{suffix}"] == pytest.approx(loaded.lpips.net(pred * 2 - 1, gt * 2 - 1).item(), rel=1e-5)
    state = torch.load(dino_file, weights_only=True)
    keep = (1 - union).astype(np.float32)
    gt_keys = keys_reference(state, source)
    assert values["structure_distance"] == pytest.approx(structure_distance_reference(keys_reference(state, edited), gt_keys), rel=1e-4)
    assert_keys_are_dinos(loaded, gt_keys, source)  # the keys themselves: a resampling error would show here first
    masked = [keys_reference(state, image.astype(np.float32) * keep) for image in (edited, source)]
    assert values["structure_distance_unedit_part"] == pytest.approx(structure_distance_reference(*masked), rel=1e-4)
    targets = [t for _, t in EDITS]
    rgb = [m[..., None].repeat(3, axis=2) / 255.0 for m in masks]
    assert values["TELS"] == pytest.approx(clip_by_definition(loaded, np.uint8(edited * (1 - union)), " and ".join(targets)), rel=1e-4)
    assert values["TILS"] == pytest.approx(np.mean([clip_by_definition(loaded, np.uint8(edited * rgb[1 - i]), targets[i]) for i in (0, 1)]), rel=1e-4)
    assert values["editing_performance"] == pytest.approx(np.mean([clip_by_definition(loaded, np.uint8(edited * rgb[i]), targets[i]) for i in (0, 1)]), rel=1e-4)
    assert values["clip_similarity_source_image"] == pytest.approx(clip_by_definition(loaded, source, "wolf and moon"), rel=1e-4)


def test_an_empty_edited_region_gives_nan_edit_part_scores_as_ale(loaded):
    source, edited, _ = photo(90, 160, seed=6)
    empty = [np.zeros(source.shape[:2], np.uint8)] * 2
    values = AleMetrics(loaded.clip, loaded.lpips, None).score(source, edited, EDITS, empty, ALL_METRICS).values
    assert all(math.isnan(values[f"{m}_edit_part"]) for m in ("psnr", "lpips", "mse", "ssim"))
    assert values["structure_distance"] is None and values["structure_distance_unedit_part"] is None  # no DINO given
    assert math.isfinite(values["psnr_unedit_part"]) and math.isfinite(values["clip_similarity_source_image"])
    with pytest.raises(ValueError, match="unknown metric.*psnr_background.*clip_similarity_source_image"):
        AleMetrics().score(source, edited, EDITS, empty, ["psnr_background"])
    assert tuple(AleMetrics().score(source, edited, EDITS, empty).values) == METRICS  # EV's default columns by default
