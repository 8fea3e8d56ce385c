"""Leakage metrics: each one equals a direct re-computation from its definition with ALE's masking, joins and
resizing (ALE's evaluate/metrics_calculator.py), on random-weight models in the real file formats; a missing
model switches off only its metrics, with a message naming the file and folder."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.editing import LEAKAGE_EDITS, LEAKAGE_SIZE, clip_by_definition
from leakfree_edit.evaluation import ale_metrics
from leakfree_edit.evaluation import models as metric_models
from leakfree_edit.evaluation.ale_metrics import AleMetrics, merged_mask


@pytest.fixture(scope="module")
def loaded(metric_model_folder):
    found = metric_models.load_metric_models(metric_model_folder)
    assert not found.missing, found.missing
    return found


def test_merged_mask_is_the_pixelwise_maximum_of_the_grey_masks(leakage_case):
    _, _, masks = leakage_case
    merged = merged_mask(masks)
    assert merged.shape == (LEAKAGE_SIZE, LEAKAGE_SIZE, 3) and np.array_equal(merged[..., 0], merged[..., 2])
    assert merged[40, 35, 0] == 1.0 and merged[60, 80, 0] == 128 / 255 and merged[80, 10, 0] == 37 / 255 and merged[0, 95, 0] == 0


def test_every_metric_equals_its_definition_on_ales_masking(loaded, leakage_case):
    source, edited, masks = leakage_case
    scores = AleMetrics(loaded.clip, loaded.lpips, loaded.dino).score(source, edited, LEAKAGE_EDITS, masks)
    unedited = np.maximum.reduce(masks).astype(np.float64)[..., None].repeat(3, axis=2) / 255.0
    keep = torch.from_numpy(unedited.astype(np.float32)).permute(2, 0, 1)[None]
    pred = torch.from_numpy(edited).permute(2, 0, 1)[None].float() / 255 * (1 - keep)
    gt = torch.from_numpy(source).permute(2, 0, 1)[None].float() / 255 * (1 - keep)
    mse = ((pred - gt) ** 2).mean().item()
    values = scores.values
    assert values["mse_unedit_part"] == pytest.approx(mse, rel=1e-5)
    assert values["psnr_unedit_part"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    from torchmetrics.functional.image import structural_similarity_index_measure

    assert values["ssim_unedit_part"] == pytest.approx(structural_similarity_index_measure(pred, gt, data_range=1.0).item(), rel=1e-5)
    assert values["lpips_unedit_part"] == pytest.approx(loaded.lpips.net(pred * 2 - 1, gt * 2 - 1).item(), rel=1e-5)

    as_masked = lambda mask: np.uint8(edited * mask)  # ALE truncates to uint8 after masking
    targets = [t for _, t in LEAKAGE_EDITS]
    assert values["TELS"] == pytest.approx(clip_by_definition(loaded, as_masked(1 - unedited), " and ".join(targets)), rel=1e-4)
    rgb = [m[..., None].repeat(3, axis=2) / 255.0 for m in masks]
    own = [clip_by_definition(loaded, as_masked(rgb[i]), targets[i]) for i in range(3)]
    others = [clip_by_definition(loaded, as_masked(rgb[j]), targets[i]) for i in range(3) for j in range(3) if j != i]
    assert [s for _, s in scores.per_object] == pytest.approx(own, rel=1e-4)
    assert values["editing_performance"] == pytest.approx(np.mean(own), rel=1e-4)
    assert values["TILS"] == pytest.approx(np.mean(others), rel=1e-4)
    assert values["structure_distance"] == pytest.approx(structure_by_definition(loaded.dino.model, edited, source), rel=1e-4)


def structure_by_definition(model, pred: np.ndarray, gt: np.ndarray) -> float:
    """MSE of the cosine self-similarity of block 11's keys, computed layer by layer without hooks."""
    from torchvision.transforms import functional as TF

    def similarity(image):
        x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
        x = TF.resize(x, 224, max_size=480, antialias=True)
        x = TF.normalize(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))[None]
        with torch.no_grad():
            tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
            for block in model.blocks[:11]:
                tokens = block(tokens)
            width = tokens.shape[-1]
            keys = model.blocks[11].attn.qkv(model.blocks[11].norm1(tokens))[0, :, width : 2 * width]
        unit = keys / keys.norm(dim=1, keepdim=True)
        return unit @ unit.T

    return F.mse_loss(similarity(pred), similarity(gt)).item()


def test_one_object_has_no_tils_and_an_empty_background_no_background_scores(loaded, leakage_case):
    source, edited, masks = leakage_case
    metrics = AleMetrics(loaded.clip, loaded.lpips, None)
    one = metrics.score(source, edited, LEAKAGE_EDITS[:1], masks[:1]).values
    assert math.isnan(one["TILS"]) and not math.isnan(one["TELS"]) and one["structure_distance"] is None
    full = metrics.score(source, edited, LEAKAGE_EDITS[:1], [np.full((LEAKAGE_SIZE, LEAKAGE_SIZE), 255, np.uint8)]).values
    assert all(math.isnan(full[m]) for m in ("psnr_unedit_part", "ssim_unedit_part", "mse_unedit_part", "lpips_unedit_part"))


def test_a_missing_clip_switches_off_only_the_clip_metrics_and_names_the_file(metric_model_folder, leakage_case, tmp_path):
    for name in ("dino_deitsmall16_pretrain.pth", "squeezenet1_1-b8a52dc0.pth"):
        (tmp_path / name).symlink_to(metric_model_folder / name)
    found = metric_models.load_metric_models(tmp_path)
    assert set(found.missing) == {"clip"}
    message = found.missing["clip"]
    assert "clip-vit-large-patch14" in message and str(tmp_path) in message and "TELS, TILS" in message
    source, edited, masks = leakage_case
    values = AleMetrics(found.clip, found.lpips, found.dino).score(source, edited, LEAKAGE_EDITS, masks).values
    assert values["TELS"] is None and values["TILS"] is None and values["editing_performance"] is None
    assert all(isinstance(values[m], float) and not math.isnan(values[m]) for m in ("psnr_unedit_part", "ssim_unedit_part", "mse_unedit_part"))


def test_no_model_folder_leaves_psnr_ssim_mse(leakage_case):
    found = metric_models.load_metric_models(None)
    assert set(found.missing) == {"clip", "dino", "lpips"}
    source, edited, masks = leakage_case
    values = AleMetrics().score(source, edited, LEAKAGE_EDITS, masks).values
    assert [m for m, v in values.items() if v is not None] == ["psnr_unedit_part", "mse_unedit_part", "ssim_unedit_part"]
    assert ale_metrics.METRICS == tuple(values)
