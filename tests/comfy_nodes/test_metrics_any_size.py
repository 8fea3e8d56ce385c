"""The Leakage Metrics node scores a 16:9 photo with every ALE column (the metrics on every shape, against their
definitions and DINO's own forward, are in tests/unit/test_metrics_any_size.py)."""

import numpy as np
import pytest
import torch

from harness import metric_model_files
from leakfree_edit.evaluation import models as metric_models
from leakfree_edit.evaluation.ale_metrics import ALL_METRICS, AleMetrics

RELEASE = "dino_deitsmall8_pretrain"  # patch 8, as ALE's ViT-B/8, at ViT-S width to stay cheap
# (height, width): 4:3, 16:9, 3:2, portrait 3:4 and odd sides (every metric), and for the structure distance alone a square
# photo (the trained grid, no interpolation) and a square grid from a non-square photo (DINO interpolates there too)
SIZES = {"4:3": (300, 400), "16:9": (180, 320), "3:2": (200, 300), "portrait": (400, 300), "odd": (77, 101),
         "square": (224, 224), "near square": (230, 224)}
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


def test_the_node_scores_a_16_9_photo_with_every_ale_column(pack_nodes, model_folder, loaded):
    import folder_paths

    from leakfree_edit.attention.plan import EditPlan, ObjectEdit

    source, edited, masks = photo(*SIZES["16:9"], seed=7)
    as_image = lambda a: torch.from_numpy(a.astype(np.float32) / 255)
    plan = EditPlan(tuple(ObjectEdit(s, t) for s, t in EDITS))
    folder_paths.add_model_folder_path("leakage_metrics", str(model_folder), is_default=True)
    try:
        table, _ = pack_nodes["LeakFreeLeakageMetrics"].execute(as_image(source)[None], as_image(edited)[None],
                                                              torch.stack([as_image(m) for m in masks]), plan, "all").result
    finally:
        folder_paths.folder_names_and_paths["leakage_metrics"][0].remove(str(model_folder))
    head, _, row = table.splitlines()[:3]
    columns = [c.strip() for c in head.strip("|").split("|")]
    assert columns[9:19] == list(ALL_METRICS[8:]) and columns[3] == "Structure Distance ↓"  # ALE's names for the others
    cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
    expected = AleMetrics(loaded.clip, loaded.lpips, loaded.dino).score(source, edited, EDITS, masks, ALL_METRICS).values
    assert cells["Structure Distance ↓"] == f"{expected['structure_distance']:.4f}" and float(cells["Structure Distance ↓"]) > 0
    assert cells["clip_similarity_source_image"] == f"{expected['clip_similarity_source_image']:.2f}"
