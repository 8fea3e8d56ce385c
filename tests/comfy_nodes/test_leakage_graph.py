"""The leakage nodes in a real graph on ComfyUI's executor: the painted-masks edit with Attention Map Recorder and
Preview around the sampler, Pixel Background Composite after VAE Decode and Leakage Metrics on the result."""
import json
from pathlib import Path

from PIL import Image

from harness import metric_model_files, runner
from pipelines.comfyui import ROOT

SIZE = 64

ADDED = {
    "20": {"class_type": "LeakFreeAttentionMapRecorder", "inputs": {"model": ["10", 1], "maps": "applied", "start_percent": 0.0, "end_percent": 1.0}},
    "21": {"class_type": "LeakFreeAttentionMapPreview", "inputs": {"attention_maps": ["20", 1], "image": ["13", 0], "edit_plan": ["5", 2]}},
    "22": {"class_type": "PreviewImage", "inputs": {"images": ["21", 0]}},
    "23": {"class_type": "LeakFreePixelBackgroundComposite", "inputs": {"edited": ["13", 0], "source": ["2", 0], "object_masks": ["7", 0], "feather": 4}},
    "24": {"class_type": "LeakFreeLeakageMetrics", "inputs": {"source": ["2", 0], "edited": ["23", 0], "object_masks": ["7", 0], "edit_plan": ["5", 2]}},
    "25": {"class_type": "PreviewImage", "inputs": {"images": ["24", 1]}},
}


def test_recorder_preview_composite_and_metrics_run_in_one_graph(server_base, tmp_path):
    import folder_paths

    graph = json.loads((ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json").read_text())
    graph = runner.set_inputs(runner.scale_inputs(graph, SIZE, ROOT / "example_inputs", tmp_path), steps=1)
    graph.update(json.loads(json.dumps(ADDED)))
    graph["11"]["inputs"]["model"] = ["20", 0]  # the sampler samples with the recording model
    metrics = metric_model_files.write_metric_models(tmp_path / "leakage_metrics")
    folder_paths.add_model_folder_path("checkpoints", str(server_base / "models" / "checkpoints"))
    folder_paths.add_model_folder_path("leakage_metrics", str(metrics), is_default=True)
    folder_paths.set_input_directory(str(tmp_path))
    folder_paths.set_output_directory(str(tmp_path / "output"))
    result = runner.Runner().run(graph)
    assert result.success, result.error
    temp = Path(folder_paths.get_temp_directory())
    preview = result.outputs["22"]["images"][0]
    with Image.open(temp / preview["subfolder"] / preview["filename"]) as panels:
        assert panels.size == (2 * SIZE, SIZE)  # one panel per object
    card = result.outputs["25"]["images"][0]
    with Image.open(temp / card["subfolder"] / card["filename"]) as picture:
        assert picture.width > 300  # the metrics table
