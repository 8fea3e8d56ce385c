"""The Leakage Metrics node: its table and card from the model folder, equal to the library's scores."""

import numpy as np
import torch

from harness.editing import LEAKAGE_EDITS
from leakfree_edit.evaluation import models as metric_models
from leakfree_edit.evaluation.ale_metrics import AleMetrics


def test_the_node_reports_a_table_and_a_card_from_the_model_folder(pack_nodes, metric_model_folder, leakage_case):
    import folder_paths

    from leakfree_edit.attention.plan import EditPlan, ObjectEdit

    source, edited, masks = leakage_case
    plan = EditPlan(tuple(ObjectEdit(s, t) for s, t in LEAKAGE_EDITS))
    as_image = lambda a: torch.from_numpy(a.astype(np.float32) / 255)
    node = pack_nodes["LeakFreeLeakageMetrics"]
    images = torch.stack([as_image(edited), as_image(source)])  # the second "edit" is the source itself
    mask_batch = torch.stack([as_image(m) for m in masks])
    folder_paths.add_model_folder_path("leakage_metrics", str(metric_model_folder), is_default=True)
    try:
        table, card = node.execute(as_image(source)[None], images, mask_batch, plan).result
    finally:
        folder_paths.folder_names_and_paths["leakage_metrics"][0].remove(str(metric_model_folder))
    expected = AleMetrics(*(metric_models.load_metric_models(metric_model_folder).__dict__[k] for k in ("clip", "lpips", "dino")))
    first = expected.score(source, edited, LEAKAGE_EDITS, masks).values
    lines = table.splitlines()
    assert lines[0].startswith("| image | TELS ↓ | TILS ↓") and "CLIP 'moon made of gold'" in lines[0]
    row = lines[2].split(" | ")
    assert row[1] == f"{first['TELS']:.2f}" and row[5] == f"{first['psnr_unedit_part']:.2f}"
    assert lines[3].split(" | ")[5] == "inf"  # the source against itself: no error, infinite PSNR (as ALE would have it)
    assert lines[4].startswith("| mean") and card.shape[0] == 1 and card.shape[-1] == 3
