"""The ALE-Bench runner's filling of a workflow for each edit (image, masks, edit list, schedule), without running it.
The end-to-end run is tests/comfy_nodes/test_ale_bench.py."""
import json

from leakfree_edit.evaluation.bench import BenchEdit
from pipelines.comfyui import ROOT
from scripts import ale_bench

IMAGE = "artificial_img03"


def test_the_runner_fills_the_workflow_for_each_edit():
    painted = json.loads((ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json").read_text())
    edit = BenchEdit(IMAGE, 3, "color", 4, (("wolf", "red wolf"), ("moon", "blue moon"), ("mountain", "gold mountain")))
    graph = ale_bench.edit_graph(painted, edit, "img.png", ["a.png", "b.png", "c.png"], seed=42, steps=3, size=128)
    masks = {k: v for k, v in graph.items() if v["class_type"] == "LoadImageMask"}
    node = next(v for v in graph.values() if v["class_type"] == "LeakFreeObjectMasksPainted")["inputs"]
    assert sorted(v["inputs"]["image"] for v in masks.values()) == ["a.png", "b.png", "c.png"]
    assert [node[f"mask_{i}"][0] for i in (1, 2, 3)] == ["bench_mask_1", "bench_mask_2", "bench_mask_3"]
    assert next(v for v in graph.values() if v["class_type"] == "LeakFreeObjectRestrictedEncode")["inputs"]["edits"] == \
        "wolf -> red wolf\nmoon -> blue moon\nmountain -> gold mountain"
    sampler = next(v for v in graph.values() if v["class_type"] == "KSampler")["inputs"]
    assert (sampler["seed"], sampler["steps"]) == (42, 3)
    dual = json.loads((ROOT / "workflows" / "api" / "edit_dual_branch_lcm_sd15.json").read_text())
    guider = next(v for v in ale_bench.edit_graph(dual, edit, "img.png", [], 42, None, 128).values() if v["class_type"] == "LeakFreeDualBranchGuider")
    assert guider["inputs"]["self_attention_schedule"] == "color"  # ALE's get_hyps per edit type
    composited = ale_bench.with_pixel_composite(dual, 8)
    node = composited["pixel_composite"]["inputs"]
    assert node["edited"] == ["19", 0] and node["source"] == ["5", 0] and node["object_masks"] == ["11", 0]  # decode, scaled image, masks
    assert composited["20"]["inputs"]["images"] == ["pixel_composite", 0]
