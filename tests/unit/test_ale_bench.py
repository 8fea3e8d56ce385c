"""The ALE-Bench runner without running it: the graph it fills for each edit, ALE's protocol on the dual-branch
workflow whatever the JSON says, and the report's like-for-like layout. The end-to-end run is
tests/comfy_nodes/test_ale_bench.py."""
import json

from harness import ale_bench
from leakfree_edit.evaluation import report as ale_report
from leakfree_edit.evaluation.ale_metrics import METRICS
from leakfree_edit.evaluation.bench import EDIT_TYPES, BenchEdit
from pipelines.comfyui import ROOT

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


def test_the_ale_protocol_graph_has_ales_settings():
    """ALE-Edit's edit.py / run_ale_bench.py settings on the dual-branch workflow, whatever the JSON says."""
    dual = json.loads((ROOT / "workflows" / "api" / "edit_dual_branch_lcm_sd15.json").read_text())
    for node in dual.values():  # a user's copy with other values everywhere
        node["inputs"].update({k: v for k, v in {"target_cfg": 5.0, "steps": 30, "sampler_name": "euler", "box_threshold": 0.3,
                                                  "mask_resize": "area", "start": "img2img"}.items() if k in node["inputs"]})
    graph = ale_bench.ale_protocol_graph(dual, "grounded-sam", detector="groundingdino_swinb_cogcoor.pth")
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    assert by_class["LeakFreeObjectRestrictedEncode"]["source_substitution"] == "ale_code"
    guider = by_class["LeakFreeDualBranchGuider"]
    assert (guider["source_cfg"], guider["target_cfg"], guider["start"], guider["background_blend"]) == (1.0, 2.0, "noise", "ale")
    assert (by_class["BasicScheduler"]["steps"], by_class["BasicScheduler"]["scheduler"], by_class["KSamplerSelect"]["sampler_name"]) == (15, "simple", "lcm")
    assert by_class["LeakFreeRegionGuidedCrossAttention"]["mask_resize"] == "nearest" and by_class["ModelSamplingDiscrete"]["sampling"] == "lcm"
    found = by_class["LeakFreeObjectMasksGroundedSAM"]
    assert (found["box_threshold"], found["text_threshold"], found["dilation_percent"], found["on_missing"]) == (0.45, 0.4, 4.0, "error")
    assert by_class["LeakFreeGroundingDinoLoader"]["model_name"] == "groundingdino_swinb_cogcoor.pth"
    assert by_class["ImageScale"]["upscale_method"] == "bicubic" and by_class["LoraLoaderModelOnly"]["lora_name"] == "lcm-lora-sdv1-5.safetensors"
    lcm_checkpoint = ale_bench.ale_protocol_graph(dual, "bench", lcm_lora="none")
    kinds = {node["class_type"] for node in lcm_checkpoint.values()}
    assert "LoraLoaderModelOnly" not in kinds and "LeakFreeGroundingDinoLoader" not in kinds and "LeakFreeSAMLoader" not in kinds
    checkpoint = next(k for k, n in lcm_checkpoint.items() if n["class_type"] == "CheckpointLoaderSimple")
    assert next(n for n in lcm_checkpoint.values() if n["class_type"] == "ModelSamplingDiscrete")["inputs"]["model"] == [checkpoint, 0]
    masks = next(k for k, n in lcm_checkpoint.items() if n["class_type"] == "LeakFreeObjectMasksPainted")
    assert masks == next(k for k, n in graph.items() if n["class_type"] == "LeakFreeObjectMasksGroundedSAM")  # in its place: links kept
    assert lcm_checkpoint[masks]["inputs"]["dilation_percent"] == 4.0
    # run_ale_bench.py's get_hyps: the schedule of the prompt's editing types, 1.0 for any other combination
    edit = lambda *types: BenchEdit(IMAGE, 2, "color+object", 0, (("wolf", "red goat"), ("moon", "gold moon")), types)
    schedule = lambda e: next(n for n in ale_bench.edit_graph(lcm_checkpoint, e, "i.png", ["a.png", "b.png"], 42, None, 64).values()
                              if n["class_type"] == "LeakFreeDualBranchGuider")["inputs"]
    assert schedule(edit("color", "object"))["self_attention_schedule"] == "color+object"
    weird = schedule(edit("object", "color"))
    assert (weird["self_attention_schedule"], weird["custom_schedule"]) == ("custom", 1.0)


def test_the_report_sets_the_paper_row_beside_the_runs_subset_like_for_like():
    row = lambda image, count, kind, index: {"file_id": f"{image}_edit_{index}.png", "target_count": count, "edit_type": kind,
                                            "half": image.split("_")[0], **{m: 1.0 for m in METRICS}}
    images = [f"{half}_img{i:02d}" for half in ("artificial", "natural") for i in range(1, 11)]
    everything = [row(image, count, kind, index) for image in images for count in (1, 2, 3) for kind in EDIT_TYPES for index in range(10)]
    whole = ale_report.report(everything, "this run")
    assert "Like for like: this run scored the 3,000 edits of the paper's row." in whole and "not reported" not in whole
    assert "| this run: both halves, 1–3 objects, all 5 edit types | 3,000 |" in whole
    half = ale_report.report([r for r in everything if r["half"] == "artificial" and r["target_count"] == 2], "this run")
    assert "| ALE (paper, Table 1): both halves, 1–3 objects, all 5 edit types | 3,000 | 16.03 | 15.28 | 0.0167 | 22.20 |" in half
    assert "| ALE (paper): artificial half, 2 objects, all 5 edit types | – | not reported | not reported |" in half
    assert "| this run: artificial half, 2 objects, all 5 edit types | 500 |" in half and "Not like for like" in half
    assert "ALE-Edit's paper gives no figure per half, object count or edit type" in half and "16.03" not in half.split("## Per group")[1]
