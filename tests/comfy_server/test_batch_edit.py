"""The batch command (scripts/batch_edit.py, pipelines/): batches of edits over ComfyUI's HTTP + websocket API, on real servers.

The tests run the command as users do (a subprocess) against real ComfyUI 0.3.64 servers on loopback with random-weight SD1.5 files: the session's
server, a second one that is killed mid-batch, and the local one the command starts itself. Jobs run at
128 px, 1 step, CFG 1 (the cheapest real edit: no unconditional row).
"""
import json
import signal
from pathlib import Path

import pytest
import requests
from PIL import Image

from harness import model_files
from harness.batches import ale_layout, rows, run_batch, wait_for
from harness.server import ComfyServer
from pipelines.cli import batch_subfolder
from pipelines.comfyui import ROOT

PAINTED = ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json"
CHEAP = ["--size", "128", "--steps", "1", "--cfg", "1"]


def our_prompts(server: ComfyServer, out: Path, where: str = "history") -> list:
    """This batch's prompts on ``server``: /history entries, or /queue items (running and pending)."""
    batch = batch_subfolder(out)
    if where == "history":
        entries = server.get("/history").json().values()
        return [e for e in entries if e["prompt"][3].get("leakfree_batch", {}).get("batch") == batch]
    queue = server.get("/queue").json()
    return [item for item in queue["queue_running"] + queue["queue_pending"] if item[3].get("leakfree_batch", {}).get("batch") == batch]


@pytest.fixture(scope="module")
def second_server(tmp_path_factory, comfyui):
    """Another real server, with its own base folder; started here, waited for in the test (both start at once)."""
    base = tmp_path_factory.mktemp("second-base")
    model_files.write_model_files(base / "models", only=("checkpoints",))
    server = ComfyServer(comfyui, base, ROOT, name="second")
    yield server
    server.stop()


def test_a_batch_over_two_servers_loses_one_and_still_runs_every_job_once(second_server, comfy_server, tmp_path, example_inputs):
    second_server.wait_ready()
    jobs, out = ale_layout(tmp_path / "ale", example_inputs, 8), tmp_path / "out"
    command = [jobs, *CHEAP, "--server", comfy_server.url, "--server", second_server.url, "--out", out, "--heartbeat", "2"]
    batch = run_batch(*command, wait=False)
    try:
        wait_for(lambda: any(r["server"].endswith(f":{second_server.port}") for r in rows(out)), 600, "the second server finished a job", batch)
        wait_for(lambda: our_prompts(second_server, out, "queue"), 300, "the second server runs its next job", batch)
        (running,) = [item[3]["leakfree_batch"]["job"] for item in our_prompts(second_server, out, "queue")]
        second_server.process.kill()  # stops answering mid-job: connection refused, websocket closed
        _, log = batch.communicate(timeout=600)
    finally:
        batch.kill()
    assert batch.returncode == 0, log[-4000:]
    assert f"{second_server.url.split('://')[1]} lost" in log and f"{running} goes back to the queue" in log
    results = rows(out)
    keys = [f"artificial_img03/{n}obj-color-{i:02d}" for n in (1, 2) for i in range(4)]
    assert sorted(r["job"] for r in results) == keys and all(r["status"] == "ok" for r in results), results
    assert next(r for r in results if r["job"] == running)["server"] == comfy_server.url.split("://")[1]
    expected = {f"{key}{suffix}.png" for key in keys for suffix in ("", "_masks")}
    assert {str(p.relative_to(out)) for p in out.rglob("*.png")} == expected and not list(out.rglob("*.part"))
    assert all(Image.open(out / name).size == (128, 128) for name in expected)
    on_first = [e["prompt"][3]["leakfree_batch"]["job"] for e in our_prompts(comfy_server, out) if e["status"]["status_str"] == "success"]
    assert sorted(on_first) == sorted(r["job"] for r in results if r["server"] == comfy_server.url.split("://")[1])  # each once
    history = len(comfy_server.get("/history").json())
    again = run_batch(*command, timeout=120)
    assert again.returncode == 0 and "8 finished earlier" in again.stderr and "0 to run" in again.stderr, again.stderr
    assert len(comfy_server.get("/history").json()) == history and len(rows(out)) == 8  # nothing submitted, nothing written


def test_a_malformed_edit_list_fails_its_own_job_with_the_packs_message_and_warnings_reach_the_results(comfy_server, tmp_path, example_inputs):
    masks = [str(example_inputs / "wolf_mask.png"), str(example_inputs / "moon_mask.png")]
    image = str(example_inputs / "artificial_img03.jpg")
    Image.new("L", (512, 512), 255).save(tmp_path / "whole.png")  # the wolf's mask covers the moon's: the moon keeps 0 % of its area
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(job) + "\n" for job in (
        {"id": "malformed", "image": image, "edits": "wolf -> goat\nmoon made of gold", "masks": masks},
        {"id": "fine", "image": image, "edits": "wolf -> goat\nmoon -> moon made of gold", "masks": masks},
        {"id": "warned", "image": image, "edits": "wolf -> goat\nmoon -> moon made of gold", "masks": [str(tmp_path / "whole.png"), masks[1]]})))
    done = run_batch(manifest, *CHEAP, "--server", comfy_server.url, "--out", tmp_path / "out")
    assert done.returncode == 1, done.stderr[-3000:]
    results = {r["job"]: r for r in rows(tmp_path / "out")}
    bad, good, warned = (results[f"artificial_img03/{name}"] for name in ("malformed", "fine", "warned"))
    assert bad["status"] == "error" and bad["outputs"] == []
    assert bad["error"].startswith("LeakFreeObjectRestrictedEncode (node 5): Object-Restricted Encode") and "line 2" in bad["error"]
    assert good["status"] == "ok" and good["warnings"] == [] and (tmp_path / "out" / good["outputs"][0]).is_file()
    assert not (tmp_path / "out" / "artificial_img03" / "malformed.png").exists()
    assert warned["status"] == "ok" and any("'moon' (line 2) keeps only 0% of its area" in w for w in warned["warnings"])  # without --strict
    assert "2 done, 1 failed, 1 with warnings in" in done.stderr
    assert "ok    artificial_img03/warned" in done.stderr and "2 warning(s): " in done.stderr


def test_a_server_without_the_workflows_nodes_gets_no_jobs(comfy_server, tmp_path, example_inputs):
    workflow = json.loads(PAINTED.read_text())
    workflow["99"] = {"class_type": "OtherPackSaveImage", "inputs": {"images": ["13", 0]}}  # a pack this server lacks
    (tmp_path / "other.json").write_text(json.dumps(workflow))
    out = tmp_path / "out"
    done = run_batch("--image", example_inputs / "artificial_img03.jpg", "--mask", example_inputs / "wolf_mask.png", "--mask",
                     example_inputs / "moon_mask.png", "--edits", "wolf -> goat; moon -> gold moon", "--workflow", tmp_path / "other.json",
                     "--server", comfy_server.url, "--out", out, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "lacks the node(s) OtherPackSaveImage" in done.stderr and "no server can take the jobs; 1 job(s) not run" in done.stderr
    assert not our_prompts(comfy_server, out) and not rows(out)


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(comfy_server, tmp_path, example_inputs):
    jobs, out = ale_layout(tmp_path / "ale", example_inputs, 2), tmp_path / "out"
    command = [jobs, *CHEAP, "--seed", "5", "--server", comfy_server.url, "--out", out]
    batch = run_batch(*command, wait=False)
    try:
        wait_for(lambda: rows(out) and our_prompts(comfy_server, out, "queue"), 600, "the second job runs", batch)
        batch.send_signal(signal.SIGINT)
        _, log = batch.communicate(timeout=60)
    finally:
        batch.kill()
    assert batch.returncode == 130 and "stopped (Ctrl-C): 1 done, 0 failed, 1 not run" in log, log[-3000:]
    wait_for(lambda: not our_prompts(comfy_server, out, "queue"), 60, "our prompt left the server")
    (first,) = rows(out)
    interrupted = [e for e in our_prompts(comfy_server, out) if e["prompt"][3]["leakfree_batch"]["job"] != first["job"]]
    assert all(e["status"]["status_str"] == "error" for e in interrupted)  # interrupted there, not finished unseen
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"} == {"results.jsonl", *first["outputs"]}
    again = run_batch(*command)
    assert again.returncode == 0 and "1 finished earlier" in again.stderr and "1 to run" in again.stderr, again.stderr[-3000:]
    assert sorted(r["job"] for r in rows(out)) == ["artificial_img03/1obj-color-00", "artificial_img03/2obj-color-00"]


def test_one_edit_from_the_command_line_on_a_local_comfyui_it_starts(server_base, tmp_path, example_inputs):
    out = tmp_path / "out"
    done = run_batch("--image", example_inputs / "artificial_img03.jpg", "--mask", example_inputs / "wolf_mask.png",
                     "--mask", example_inputs / "moon_mask.png", "--edits", "wolf -> brown-colored goat; moon -> moon made of gold",
                     *CHEAP, "--seed", "7", "--models", server_base / "models",
                     "--custom-node", ROOT / "harness" / "custom_nodes" / "flush_denormals_node.py", "--out", out)
    assert done.returncode == 0, done.stderr[-4000:]
    (row,) = rows(out)
    name = row["outputs"][0]
    assert name.startswith("artificial_img03/brown-colored-goat_moon-made-of-gold-") and row["outputs"][1] == name.replace(".png", "_masks.png")
    assert Image.open(out / name).size == (128, 128) and Image.open(out / row["outputs"][1]).size == (128, 128)
    assert "starting ComfyUI" in done.stderr and "Starting server" in (out / "local-comfyui.log").read_text()
    port = row["server"].rsplit(":", 1)[1]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=5)  # stopped with the batch
