"""The Leakage Metrics node scores a 16:9 photo with every ALE column (the metrics on every shape, against their
definitions and DINO's own forward, are in tests/unit/test_metrics_any_size.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from harness import metric_model_files
from harness.editing import two_object_photo
from leakfree_edit.evaluation.ale_metrics import ALL_METRICS, AleMetrics

RELEASE = "dino_deitsmall8_pretrain"  # patch 8, as ALE's ViT-B/8, at ViT-S width to stay cheap
EDITS = [("wolf", "brown-colored goat"), ("moon", "moon made of gold")]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return metric_model_files.load_random_metric_models(tmp_path_factory.mktemp("leakage_metrics"), RELEASE)


def test_the_node_scores_a_16_9_photo_with_every_ale_column(pack_nodes, loaded):
    import folder_paths

    from leakfree_edit.attention.plan import EditPlan, ObjectEdit

    source, edited, masks = two_object_photo(180, 320, seed=7)
    as_image = lambda a: torch.from_numpy(a.astype(np.float32) / 255)
    plan = EditPlan(tuple(ObjectEdit(s, t) for s, t in EDITS))
    model_folder = Path(loaded.loaded["dino"]).parent
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
