"""The batch command without a server (pipelines/): jobs from manifests, where a job goes in a workflow, and every
problem of a batch reported before anything is submitted. The end-to-end cases are in tests/comfy_server/test_batch_edit.py."""
import copy
import json
from pathlib import Path

import pytest

from harness.batches import ale_layout, run_batch
from pipelines.comfyui import ROOT
from pipelines.jobs import read_manifest
from pipelines.slots import WorkflowError, find_slots

PAINTED = ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json"


# -- without a server ----------------------------------------------------------------------------------------


class OneJob:
    image = Path("photo.jpg")
    edits = ("wolf -> goat", "moon -> gold moon")
    edit_text = "wolf -> goat\nmoon -> gold moon"
    masks = (Path("wolf.png"), Path("moon.png"))
    settings = {"seed": 7, "steps": 3, "cfg": 4.5, "size": (96, 64)}
    inputs = {"10.feather": 2}


NAMES = {Path("photo.jpg"): "b/photo.png", Path("wolf.png"): "b/wolf.png", Path("moon.png"): "b/moon.png"}


def test_the_repos_workflows_take_a_job_where_their_nodes_are():
    slots = find_slots(json.loads(PAINTED.read_text()), PAINTED.name)
    assert (slots.image, slots.edits, slots.painted) == ("2", "5", "7")
    graph, previews = slots.fill(OneJob, NAMES, "b/photo/job")
    assert graph["2"]["inputs"]["image"] == "b/photo.png" and graph["5"]["inputs"]["edits"] == OneJob.edit_text
    masks = graph["7"]["inputs"]
    assert [graph[masks[f"mask_{i}"][0]]["inputs"]["image"] for i in (1, 2)] == ["b/wolf.png", "b/moon.png"]
    assert "3" not in graph and "4" not in graph  # the example's own mask loaders are gone
    assert {k: graph["11"]["inputs"][k] for k in ("seed", "steps", "cfg")} == {"seed": 7, "steps": 3, "cfg": 4.5}
    scale = [n for n, node in graph.items() if node["class_type"] == "ImageScale"]
    assert len(scale) == 1 and (graph[scale[0]]["inputs"]["width"], graph[scale[0]]["inputs"]["height"]) == (96, 64)
    assert graph["7"]["inputs"]["image"] == graph["9"]["inputs"]["pixels"] == [scale[0], 0]  # both read the resized image
    assert graph["10"]["inputs"]["feather"] == 2 and graph["14"]["inputs"]["filename_prefix"] == "b/photo/job"
    assert previews == {"15"}
    for path in sorted((ROOT / "workflows" / "api").glob("*.json")):
        if path.stem == "measure_leakage_sd15":  # a comparison, not a batch graph: two samplers and two mask sets
            with pytest.raises(WorkflowError, match="2 nodes could take the masks.*--bind masks="):
                find_slots(json.loads(path.read_text()), path.name)
            continue
        found = find_slots(json.loads(path.read_text()), path.name)
        assert not found.problems({"seed", "steps"}, True, set()), path.name
    dual = find_slots(json.loads((ROOT / "workflows" / "api" / "edit_dual_branch_lcm_sd15.json").read_text()), "dual")
    assert (dual.settings["seed"], dual.settings["steps"], dual.scalers()) == (["17"], ["16"], ["5"])


def test_an_ambiguous_workflow_is_refused_with_the_node_ids_to_pick_from():
    graph = json.loads(PAINTED.read_text())
    graph["20"] = copy.deepcopy(graph["11"])  # a second sampler pass
    graph["21"] = {"class_type": "LoadImage", "inputs": {"image": "style.png"}}
    graph["8"]["inputs"]["style"] = ["21", 0]  # a second image reaching the pack's nodes
    with pytest.raises(WorkflowError) as refused:
        find_slots(graph, "two.json")
    assert "2 nodes could take the image" in str(refused.value) and "2 (LoadImage" in str(refused.value) and "21 (LoadImage" in str(refused.value)
    assert "--bind image=" in str(refused.value)
    slots = find_slots(graph, "two.json", {"image": "2"})
    problems = slots.problems({"steps", "seed"}, False, set())
    assert len(problems) == 2 and all("11 (KSampler" in p and "20 (KSampler" in p and "--bind" in p for p in problems)
    assert not slots.problems(set(), False, set()), "a slot no job uses is not a problem"
    chosen = find_slots(graph, "two.json", {"image": "2", "steps": "20", "seed": "20"})
    assert not chosen.problems({"steps", "seed"}, False, set())
    filled, _ = chosen.fill(OneJob, NAMES, "p")
    assert filled["20"]["inputs"]["steps"] == 3 and filled["11"]["inputs"]["steps"] == 25


def test_a_bad_batch_is_reported_all_at_once_and_nothing_is_submitted(tmp_path, example_inputs):
    (tmp_path / "ok.jpg").write_bytes((example_inputs / "artificial_img03.jpg").read_bytes())
    (tmp_path / "wolf.png").write_bytes((example_inputs / "wolf_mask.png").read_bytes())
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("image,edits,masks,steps,colour\n"
                        "missing.jpg,wolf -> goat,wolf.png,2,\n"
                        "ok.jpg,wolf -> goat; moon -> gold moon,wolf.png,2,\n"
                        "ok.jpg,wolf -> goat,nowhere.png,two,blue\n")
    done = run_batch(manifest, "--server", "http://127.0.0.1:9", "--out", tmp_path / "out")  # nothing listens on port 9
    assert done.returncode == 2, done.stderr
    for problem in ("row 2: image", "missing.jpg does not exist", "row 3: 1 mask(s) for 2 edit line(s)", "row 4: unknown field(s) 'colour'",
                    "nowhere.png does not exist", "steps 'two' is not an integer"):
        assert problem in done.stderr, done.stderr
    assert "nothing submitted: 5 problem(s)" in done.stderr and not (tmp_path / "out").exists()


def test_manifests_read_jobs_from_csv_jsonl_and_the_ale_bench_layout(tmp_path, example_inputs):
    folder = ale_layout(tmp_path / "ale", example_inputs, 4)
    jobs = read_manifest(folder, {"steps": 1})
    assert [j.key for j in jobs] == [f"artificial_img03/{n}obj-color-{i:02d}" for n in (1, 2) for i in (0, 1)]
    assert jobs[2].edits == ("wolf -> green-colored wolf", "moon -> gold-colored moon") and jobs[2].settings == {"steps": 1}
    assert [m.name for m in jobs[2].masks] == ["wolf_mask.png", "moon_mask.png"]
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"image": "ale/images/artificial_img03.jpg", "edits": ["wolf -> goat"], "seed": 3,
                                                     "masks": "detect", "inputs": {"12.denoise": 0.5}}) + "\n")
    (job,) = read_manifest(tmp_path / "jobs.jsonl")
    assert job.masks is None and job.settings == {"seed": 3} and job.inputs == {"12.denoise": 0.5} and job.id.startswith("goat-")
    (tmp_path / "jobs.csv").write_text('id,image,edits,masks,size,11.cfg\nfirst,ale/images/artificial_img03.jpg,"wolf -> goat\nmoon -> gold",'
                                       "ale/masks/artificial_img03/wolf_mask.png;ale/masks/artificial_img03/moon_mask.png,512x384,6.5\n")
    (job,) = read_manifest(tmp_path / "jobs.csv")
    assert (job.key, job.edits, job.settings, job.inputs) == ("artificial_img03/first", ("wolf -> goat", "moon -> gold"), {"size": (512, 384)}, {"11.cfg": 6.5})


def test_the_shared_ale_bench_half_reads_as_1500_jobs(shared_ale_bench):
    assert len(read_manifest(shared_ale_bench)) == 1500


# -- on real servers -----------------------------------------------------------------------------------------
