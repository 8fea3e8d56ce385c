"""The batch command's Ray mode and warnings without a cluster: the install line when Ray is missing, the command line's
mistakes, and the rows both modes write (warnings, --strict). The runs on a Ray cluster are in
tests/comfy_server/test_batch_ray.py."""
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from pipelines.comfyui import ROOT
from pipelines.dispatch import Prepared, job_warnings, result_row
from pipelines.jobs import make_job
from pipelines.ray_dispatch import EDIT_WORKER


def batch_command(*args, env=None):
    return subprocess.run([sys.executable, "-m", "scripts.batch_edit", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


def test_without_ray_the_ray_mode_names_the_install_line(tmp_path, example_inputs):
    shadow = tmp_path / "no_ray" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")  # as if Ray were not installed
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(shadow.parent)}
    done = batch_command("--image", example_inputs / "artificial_img03.jpg", "--edits", "wolf -> goat", "--mask",
                         example_inputs / "wolf_mask.png", "--out", tmp_path / "out", "--ray", env=env)
    assert done.returncode == 2, done.stderr
    assert f"--ray needs Ray, an optional dependency: pip install -r {ROOT / 'requirements-ray.txt'}" in done.stderr
    assert (ROOT / "requirements-ray.txt").read_text().count("ray==") == 1
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_the_command_line_refuses_ray_with_servers_and_a_manifest_taken_for_an_address(tmp_path, example_inputs):
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"image": str(example_inputs / "artificial_img03.jpg"), "edits": "wolf -> goat"}) + "\n")
    both = batch_command(manifest, "--ray", "--server", "http://127.0.0.1:9")
    assert both.returncode == 2 and "--ray and --server are two ways to run the batch: give one" in both.stderr
    swapped = batch_command("--ray", manifest)
    assert swapped.returncode == 2 and f"--ray took {manifest} for its address: put the manifest before --ray" in swapped.stderr


def test_a_cluster_address_nothing_answers_at_fails_at_once(tmp_path, example_inputs):
    started = time.monotonic()
    done = batch_command("--image", example_inputs / "artificial_img03.jpg", "--edits", "wolf -> goat", "--mask",
                         example_inputs / "wolf_mask.png", "--out", tmp_path / "out", "--ray", "127.0.0.1:9")  # nothing listens on port 9
    assert done.returncode == 2 and time.monotonic() - started < 60, done.stderr
    assert "--ray 127.0.0.1:9: nothing answers there (Connection refused); is `ray start --head` running" in done.stderr


def test_rows_carry_the_packs_warnings_and_strict_makes_them_failures(example_inputs):
    job, problems = make_job({"image": "artificial_img03.jpg", "edits": "wolf -> goat; moon -> gold moon",
                              "masks": ["wolf_mask.png", "moon_mask.png"], "id": "j"}, example_inputs, "test")
    assert not problems
    item = Prepared(job, {"1": {"class_type": "LoadImage", "inputs": {}}}, set(), {})
    outputs = {"15": {"images": []}, "7": {"leakfree_warnings": ["'moon' (line 2) keeps only 0% of its area"]},
               "leakfree_batch_mask_preview": {"images": []}, "10": {"leakfree_warnings": ["second"]}}
    warnings = job_warnings(outputs)
    assert warnings == ["'moon' (line 2) keeps only 0% of its area", "second"]  # in node order, 7 before 10
    kept = result_row(item, "ok", "s", 1.0, outputs=["a.png"], warnings=warnings)
    assert kept["status"] == "ok" and kept["warnings"] == warnings and kept["error"] == ""
    strict = result_row(item, "ok", "s", 1.0, outputs=["a.png"], warnings=warnings, strict=True)
    assert strict["status"] == "error" and strict["outputs"] == ["a.png"]
    assert strict["error"] == "--strict: 2 warning(s): 'moon' (line 2) keeps only 0% of its area | second"
    assert result_row(item, "ok", "s", 1.0, warnings=[], strict=True)["status"] == "ok"
    failed = result_row(item, "error", "s", 1.0, error="KSampler (node 11): boom", warnings=warnings, strict=True)
    assert failed["error"] == "KSampler (node 11): boom"  # a graph's own failure keeps its message


def test_the_ray_worker_is_named_by_import_path_and_lives_in_harness():
    module, _, name = EDIT_WORKER.partition(":")
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    assert module.startswith("harness.") and path.is_file()
    classes = {node.name: node for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}
    methods = {item.name for item in classes[name].body if isinstance(item, ast.FunctionDef)}
    assert {"__init__", "describe", "run", "close"} <= methods
