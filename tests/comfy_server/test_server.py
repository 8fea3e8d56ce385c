"""End to end on the real ComfyUI server: the pack loads, every API workflow runs over HTTP, errors read well.

The session's server (scratch base folder, random-weight model files in the real formats, the pack linked into
custom_nodes as users clone it) runs every API workflow but SDXL's, at 128 px with 2 steps, and frees its models
after each (``POST /free``): with them all kept loaded it reached 13 GB. The SDXL workflows load a full-shape SDXL
checkpoint (2.6 B UNet; held in fp32 on a CPU its server peaks at 18 GB): they get a server of their own, started once
the session's has freed its models, with ``--fp16-unet`` (the UNet's weights stay fp16 as in the file, ComfyUI casts
each layer to fp32 to compute), and stopped after them. Each server's peak memory is in the end-of-run report (the
servers' fixed glibc mmap threshold, harness/server.py, is what lets the idle one give its freed models back).
"""
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from harness import model_files, runner
from harness.server import ComfyServer, execution_error
from pipelines.comfyui import PACK_FOLDER, ROOT

API_WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*.json"))
SIZE, STEPS = 128, 2
SDXL_CHECKPOINT = Path(model_files.FILES["sdxl"]).name


def loads_sdxl(path: Path) -> bool:
    return any(node["inputs"].get("ckpt_name") == SDXL_CHECKPOINT for node in json.loads(path.read_text()).values())


SDXL_WORKFLOWS = [path for path in API_WORKFLOWS if loads_sdxl(path)]
SHARED_SERVER_WORKFLOWS = [path for path in API_WORKFLOWS if not loads_sdxl(path)]
GiB = 2**30


def small_graph(server: ComfyServer, path: Path, scratch: Path, **inputs) -> dict:
    """The workflow at SIZE px and STEPS steps, its input images resized and uploaded."""
    graph = runner.scale_inputs(json.loads(path.read_text()), SIZE, ROOT / "example_inputs", scratch)
    for image in scratch.iterdir():
        server.upload(image)
    graph = runner.set_inputs(graph, steps=STEPS, **inputs)
    for node in graph.values():
        if node["class_type"] == "DualCLIPLoader":
            # The random-weight T5 is thin: DualCLIPLoader's own load, plus the config override that says so
            # (tests/flux_text_encoders_node.py). ComfyUI would build the file into a 4.7 B-parameter T5-XXL.
            node["class_type"] = "TestThinDualCLIPLoader"
        if node["class_type"] == "LeakFreeObjectMasksGroundedSAM":
            # Random detector weights find boxes only by chance (hundreds of them, or none for an object):
            # decode one per object, and edit an object without a box unmasked instead of stopping.
            node["inputs"].update(instances="best", on_missing="unmasked")
        if node["class_type"] == "LeakFreeDynamicPromptLearning":
            node["inputs"].update(iterations=1)  # one learning pass a step: DPL's 21 forward + backward passes are minutes on this CPU
    return graph


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs")


def test_pack_imports_and_registers_every_node_with_tooltips(comfy_server, pack_nodes):
    log = comfy_server.log().splitlines()
    ours = [line for line in log if PACK_FOLDER in line]
    assert any("seconds:" in line for line in ours), "the import-times summary does not name the pack"
    assert not any("IMPORT FAILED" in line or "Cannot import" in line for line in ours), "\n".join(ours)
    info = comfy_server.get("/object_info").json()
    for key in pack_nodes:
        assert key in info, f"{key} missing from /object_info"
        node = info[key]
        assert node["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        assert len(node["description"]) > 40 and node["category"].startswith("LeakFreeEdit/")
        for group in ("required", "optional"):
            for name, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{key}.{name} has no tooltip"


WORKFLOW_PEAKS: dict[str, float] = {}  # stem -> the peak RSS of its server while it ran, GiB


def report_memory(e2e_report, server: ComfyServer, what: str, stems) -> None:
    peaks = {stem: WORKFLOW_PEAKS[stem] for stem in stems if stem in WORKFLOW_PEAKS}
    highest = max(peaks, key=peaks.get, default=None)
    e2e_report[f"GiB peak RSS of {what} ({server.peak_anonymous / GiB:.1f} GiB anonymous, the rest pages of mapped model files"
               + (f"; the highest while running {highest}, {peaks[highest]:.1f} GiB" if highest else "") + ")"] = round(server.peak_rss / GiB, 1)


@pytest.fixture(scope="module", autouse=True)
def shared_server_memory(comfy_server, e2e_report):
    yield
    report_memory(e2e_report, comfy_server, "the session's ComfyUI server (every API workflow but SDXL's, models freed after each)",
                  [p.stem for p in SHARED_SERVER_WORKFLOWS])


@pytest.fixture(scope="module")
def sdxl_server(comfyui, server_base, comfy_server, e2e_report):
    freed = comfy_server.free()
    server = ComfyServer(comfyui, server_base, ROOT, name="sdxl", args=("--fp16-unet",)).wait_ready()
    yield server
    server.stop()
    report_memory(e2e_report, server, f"the SDXL workflows' ComfyUI server (--fp16-unet; the session's server idle beside it at {freed / GiB:.1f} GiB)",
                  [p.stem for p in SDXL_WORKFLOWS])


def run_to_success(server: ComfyServer, path: Path, scratch: Path, e2e_report) -> None:
    server.mark()
    entry = server.run(small_graph(server, path, scratch))
    WORKFLOW_PEAKS[path.stem] = server.peak_since_mark / GiB
    assert entry["status"]["status_str"] == "success", json.dumps(execution_error(entry), indent=1)
    images = server.image_bytes(entry)
    assert images and all(Image.open(io.BytesIO(b)).size == (SIZE, SIZE) for b in images)
    e2e_report["API workflows run to success over HTTP"] += 1


@pytest.mark.parametrize("path", SHARED_SERVER_WORKFLOWS, ids=lambda p: p.stem)
def test_api_workflow_runs_to_success_over_http(comfy_server, scratch, path, e2e_report):
    try:
        run_to_success(comfy_server, path, scratch, e2e_report)
    finally:
        comfy_server.free()


def test_a_bad_edit_list_reports_the_packs_message_and_the_server_recovers(comfy_server, scratch):
    workflow = ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json"
    entry = comfy_server.run(small_graph(comfy_server, workflow, scratch, edits="wolf -> goat\nmoon made of gold"))
    assert entry["status"]["status_str"] == "error"
    error = execution_error(entry)
    assert error["node_type"] == "LeakFreeObjectRestrictedEncode"
    assert "Object-Restricted Encode" in error["exception_message"] and "line 2" in error["exception_message"]
    assert "->" in error["exception_message"]  # says what the line needs
    assert comfy_server.run(small_graph(comfy_server, workflow, scratch))["status"]["status_str"] == "success"


PLAIN_IMG2IMG = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "artificial_img03.jpg"}},
    "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a goat under a golden moon", "clip": ["1", 1]}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
    "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["3", 0],
                                                "seed": 3, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.7}},
    "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
    "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "plain"}},
}


def test_plain_img2img_after_the_edits_matches_a_fresh_server(comfy_server, server_base, scratch, comfyui):
    """Nothing of the pack's patches outlives its prompt: the same plain graph gives the same bytes as on a new server."""
    edit = comfy_server.run(small_graph(comfy_server, ROOT / "workflows" / "api" / "edit_rebalanced_sd15.json", scratch))
    assert edit["status"]["status_str"] == "success"
    after_edits = comfy_server.image_bytes(comfy_server.run(PLAIN_IMG2IMG))
    fresh = ComfyServer(comfyui, server_base, ROOT, name="fresh").wait_ready()
    try:
        assert fresh.image_bytes(fresh.run(PLAIN_IMG2IMG)) == after_edits
    finally:
        fresh.stop()


# Last in the module: the SDXL server, torn down with the module, never runs beside another workflow's graph.
@pytest.mark.parametrize("path", SDXL_WORKFLOWS, ids=lambda p: p.stem)
def test_sdxl_api_workflow_runs_to_success_on_its_own_server(sdxl_server, scratch, path, e2e_report):
    run_to_success(sdxl_server, path, scratch, e2e_report)
