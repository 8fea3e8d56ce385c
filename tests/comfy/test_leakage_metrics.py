"""Leakage metrics: each one equals a direct re-computation from its definition with ALE's masking, joins and
resizing (ALE's evaluate/metrics_calculator.py), on random-weight models in the real file formats; a missing
model switches off only its metrics, with a message naming the file and folder."""

import numpy as np
import pytest
import torch

from harness import metric_model_files
from leakfree_edit.evaluation import models as metric_models
from leakfree_edit.evaluation.ale_metrics import AleMetrics

SIZE = 96
EDITS = [("wolf", "brown-colored goat"), ("moon", "moon made of gold"), ("mountain", "crimson-colored mountain")]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return metric_model_files.write_metric_models(tmp_path_factory.mktemp("leakage_metrics"))


@pytest.fixture(scope="module")
def case():
    """A source, an edited image and three soft, overlapping 8-bit masks (as ALE-Bench's grey PNGs are)."""
    rng = np.random.default_rng(7)
    source = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    edited = np.clip(source.astype(int) + rng.integers(-60, 60, source.shape), 0, 255).astype(np.uint8)
    masks = [np.zeros((SIZE, SIZE), np.uint8) for _ in EDITS]
    masks[0][10:50, 10:40] = 255
    masks[1][30:70, 30:90] = 128  # soft, and overlapping the first
    masks[2][60:90, 5:60] = 37
    return source, edited, masks


def test_the_node_reports_a_table_and_a_card_from_the_model_folder(pack_nodes, model_folder, case):
    import folder_paths

    from leakfree_edit.attention.plan import EditPlan, ObjectEdit

    source, edited, masks = case
    plan = EditPlan(tuple(ObjectEdit(s, t) for s, t in EDITS))
    as_image = lambda a: torch.from_numpy(a.astype(np.float32) / 255)
    node = pack_nodes["LeakFreeLeakageMetrics"]
    images = torch.stack([as_image(edited), as_image(source)])  # the second "edit" is the source itself
    mask_batch = torch.stack([as_image(m) for m in masks])
    folder_paths.add_model_folder_path("leakage_metrics", str(model_folder), is_default=True)
    try:
        table, card = node.execute(as_image(source)[None], images, mask_batch, plan).result
    finally:
        folder_paths.folder_names_and_paths["leakage_metrics"][0].remove(str(model_folder))
    expected = AleMetrics(*(metric_models.load_metric_models(model_folder).__dict__[k] for k in ("clip", "lpips", "dino")))
    first = expected.score(source, edited, EDITS, masks).values
    lines = table.splitlines()
    assert lines[0].startswith("| image | TELS ↓ | TILS ↓") and "CLIP 'moon made of gold'" in lines[0]
    row = lines[2].split(" | ")
    assert row[1] == f"{first['TELS']:.2f}" and row[5] == f"{first['psnr_unedit_part']:.2f}"
    assert lines[3].split(" | ")[5] == "inf"  # the source against itself: no error, infinite PSNR (as ALE would have it)
    assert lines[4].startswith("| mean") and card.shape[0] == 1 and card.shape[-1] == 3
