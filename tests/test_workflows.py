"""Example workflows: every node and input is valid, the UI twin matches, and the main one runs headless."""
import json
from pathlib import Path

import pytest

import comfy_env
import run_workflow
import ui_workflow

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*_api.json"))
FILE_LISTS = {"ckpt_name", "image", "lora_name", "model_name", "vae_name", "control_net_name"}  # depend on the user's folders


@pytest.fixture(scope="module")
def classes():
    return comfy_env.node_classes()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_api_workflow_is_valid(path, classes):
    graph = json.loads(path.read_text())
    for node_id, node in graph.items():
        cls = classes.get(node["class_type"])
        assert cls is not None, f"{path.name} node {node_id}: unknown {node['class_type']}"
        required = cls.INPUT_TYPES()["required"]
        for name, kind, options in ui_workflow._inputs(cls):
            value = node["inputs"].get(name)
            if value is None:
                assert name not in required, f"{path.name} node {node_id}: missing required input {name}"
                continue
            if ui_workflow._is_link(value, graph):
                source = classes[graph[str(value[0])]["class_type"]]
                produced = source.RETURN_TYPES[value[1]]
                assert ui_workflow._is_widget(kind) or produced == kind or "*" in (produced, kind), f"{path.name} node {node_id}.{name}: {produced} into {kind}"
            elif isinstance(kind, (list, tuple)) and name not in FILE_LISTS:
                assert value in kind, f"{path.name} node {node_id}.{name}: {value!r} not one of the options"
            elif kind in ("INT", "FLOAT"):
                assert options.get("min", value) <= value <= options.get("max", value), f"{path.name} node {node_id}.{name} out of range"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_ui_twin_describes_the_same_graph(path, classes):
    ui = ui_workflow.ui_path(path)
    assert ui.exists(), f"no drag-and-drop twin for {path.name}: run scripts/ui_workflow.py {path}"
    assert json.loads(ui.read_text()) == ui_workflow.to_ui(json.loads(path.read_text()), classes)


def test_painted_masks_example_runs_end_to_end(tmp_path, capsys):
    assert run_workflow.main(["--output-dir", str(tmp_path), "--steps", "2"]) == 0
    saved = list(tmp_path.glob("LeakFreeEdit_*.png"))
    assert len(saved) == 1
    from PIL import Image

    assert Image.open(saved[0]).size == (512, 512)
