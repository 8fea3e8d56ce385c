"""Example workflows: each UI graph is the drag-and-drop twin of its API graph, ComfyUI's own validation accepts every
API graph of the repo and of the previous release (0.1.0), and the headless runner runs one."""
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from harness import comfy_env, ui_workflow
from pipelines.comfyui import ROOT

API_WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*.json"))
RELEASE = Path(__file__).with_name("data") / "release_0.1.0"  # the workflows as the previous release shipped them
MODEL_FOLDERS = ("checkpoints", "loras", "grounding-dino", "sams", "bert-base-uncased", "diffusion_models", "text_encoders", "vae")


@pytest.fixture(scope="module")
def classes():
    return comfy_env.load_nodes()


@pytest.fixture(scope="module")
def validation(classes, server_base):
    """ComfyUI's prompt validation in this process, seeing the random-weight model files and the example inputs."""
    import execution
    import folder_paths

    for folder in MODEL_FOLDERS:
        folder_paths.add_model_folder_path(folder, str(server_base / "models" / folder))
    folder_paths.set_input_directory(str(ROOT / "example_inputs"))
    return lambda graph: asyncio.run(execution.validate_prompt("validation", graph, None))


@pytest.mark.parametrize("path", API_WORKFLOWS + sorted((RELEASE / "api").glob("*.json")), ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_comfyuis_validation_accepts_the_api_workflow(path, validation):
    valid, error, outputs, node_errors = validation(json.loads(path.read_text()))
    assert valid and outputs, json.dumps([error, node_errors], indent=1)


@pytest.mark.parametrize("path", sorted((RELEASE / "ui").glob("*.json")), ids=lambda p: p.stem)
def test_a_saved_workflow_of_the_previous_release_keeps_its_widgets(path, classes):
    """Written from today's node definitions, the previous release's API graph gives its saved UI graph: the same
    nodes, links, inputs and widget order, new widgets only appended after the saved ones (optional, at their
    defaults), so the saved file loads with every value in its place. Sizes and places may grow with the widgets."""
    api = json.loads((RELEASE / "api" / path.name).read_text())
    saved, today = json.loads(path.read_text()), ui_workflow.to_ui(api, classes)
    layout = ("size", "pos", "widgets_values")
    assert {k: v for k, v in saved.items() if k != "nodes"} == {k: v for k, v in today.items() if k != "nodes"}
    assert len(saved["nodes"]) == len(today["nodes"])
    for old, new in zip(saved["nodes"], today["nodes"]):
        assert {k: v for k, v in old.items() if k not in layout} == {k: v for k, v in new.items() if k not in layout}
        kept, added = new.get("widgets_values", [])[: len(old.get("widgets_values", []))], new.get("widgets_values", [])[len(old.get("widgets_values", [])):]
        assert kept == old.get("widgets_values", []), old["type"]
        optional = classes[old["type"]].INPUT_TYPES().get("optional", {})
        defaults = [spec[1].get("default") for spec in optional.values() if len(spec) > 1 and "default" in spec[1]]
        assert added == defaults[len(defaults) - len(added):], (old["type"], added)  # the newest optional widgets, at their defaults


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_twin_describes_the_same_graph(path, classes):
    """The UI file holds the API twin's nodes, links and widget values (read back as the frontend does), and is exactly
    what scripts/ui_workflow.py writes from the twin and its note (groups, note and opening view included)."""
    ui, api = json.loads(ui_workflow.ui_path(path).read_text()), json.loads(path.read_text())
    titles_only = {node_id: {**node, "_meta": {"title": node["_meta"]["title"]}} if "_meta" in node else node for node_id, node in api.items()}
    assert ui_workflow.api_view(ui, classes) == titles_only, f"workflows/{path.name} is not the graph of its API twin"
    assert ui == ui_workflow.to_ui(api, classes, ui_workflow.read_note(path)), f"regenerate: python3 -m scripts.ui_workflow {path}"


def test_every_leakfree_node_appears_in_a_template(pack_nodes):
    """A node no template uses is a node nobody finds: each registered LeakFree node is in some API twin (and so,
    by the test above, in its UI workflow)."""
    used = {node["class_type"] for path in API_WORKFLOWS for node in json.loads(path.read_text()).values()}
    missing = sorted(set(pack_nodes) - used)
    assert not missing, f"LeakFree nodes in no template of workflows/: {missing}"


def run_headless(tmp_path, *args):
    """scripts.run_workflow with its own temp folder, where it leaves nothing (the random checkpoint, resized inputs)
    but torch's compile cache."""
    temp = tmp_path / "temp"
    temp.mkdir()
    command = [sys.executable, "-m", "scripts.run_workflow", *args, "--output-dir", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ, "TMPDIR": str(temp)})
    left = [path.name for path in temp.iterdir() if not path.name.startswith("torchinductor_")]
    assert not left, left
    return done


def test_headless_runner_runs_the_example_with_comfyuis_executor(tmp_path):
    """The README's command as written, without --ckpt: on a machine without a GPU the random checkpoint runs at the
    quick size (128 px, 2 steps) unasked, and the last lines say where the edited image and the mask preview are."""
    import torch

    quick = [] if not torch.cuda.is_available() else ["--size", "128", "--steps", "2"]
    done = run_headless(tmp_path, *quick)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    saved = list((tmp_path / "out").glob("LeakFreeEdit_*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == (128, 128)
    if not quick:
        assert "the quick size, 128 px and 2 steps" in done.stdout
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines() if line.startswith(("Save edited image: ", "Mask preview: ")))
    assert Path(said["Save edited image"]) == saved[0].resolve()
    with Image.open(said["Mask preview"]) as preview:
        assert preview.size == (128, 128) and Path(said["Mask preview"]).is_relative_to((tmp_path / "out").resolve())


def test_headless_runner_says_there_is_no_checkpoint_file_at_a_placeholder_path():
    command = [sys.executable, "-m", "scripts.run_workflow", "--ckpt", "/path/to/v1-5-pruned-emaonly.safetensors"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "no file at /path/to/v1-5-pruned-emaonly.safetensors" in done.stderr and "not in []" not in done.stderr


def test_headless_runner_reports_a_node_error_as_the_app_does(tmp_path):
    done = run_headless(tmp_path, "--size", "128", "--steps", "1", "--edits", "wolf goat")
    assert done.returncode == 1
    assert "LeakFreeObjectRestrictedEncode" in done.stderr and "line 1" in done.stderr, done.stderr[-3000:]
