"""The batch command's Ray mode (--ray, pipelines/ray_dispatch.py) on a real multi-node Ray cluster on loopback: a head
node and two worker nodes of one CPU each (harness/ray_cluster.py), each edit worker ComfyUI's executor in its own Ray
worker process with the pack loaded, on random-weight SD1.5 files; and on the one-node cluster the command starts
itself. The command runs as users run it (a subprocess). Jobs run at 128 px, 1 step, CFG 1, as the servers-mode tests.
"""
import json
import re
import signal
import tempfile
from pathlib import Path

import psutil
import pytest
from PIL import Image

from harness.batches import ale_layout, rows, run_batch, wait_for
from pipelines.ray_dispatch import SCRATCH_PREFIX

CHEAP = ["--size", "128", "--steps", "1", "--cfg", "1"]


@pytest.fixture(scope="module")
def cluster():
    from harness.ray_cluster import LoopbackCluster

    cluster = LoopbackCluster(nodes=2)
    yield cluster
    cluster.shutdown()


def test_eight_jobs_on_two_nodes_survive_a_killed_worker_and_a_lost_node_each_once(cluster, server_base, tmp_path, example_inputs):
    jobs, out = ale_layout(tmp_path / "ale", example_inputs, 8), tmp_path / "out"
    command = [jobs, *CHEAP, "--models", server_base / "models", "--out", out, "--ray", cluster.address]
    batch = run_batch(*command, wait=False)
    first, second = cluster.nodes
    try:
        wait_for(lambda: rows(out) and cluster.workers(first, "run"), 600, "the first node's worker runs a job after the first result", batch)
        (process,) = cluster.workers(first, "run")
        process.kill()  # its Ray worker process dies mid-job: Ray restarts it (its node has room again)
        wait_for(lambda: len(rows(out)) >= 4 and cluster.workers(second, "run"), 600, "the second node's worker runs a job after 4 results", batch)
        cluster.remove(second)  # the node fails mid-job: raylet, object store and worker gone; no node has room for its worker
        _, log = batch.communicate(timeout=600)
    finally:
        batch.kill()
    assert batch.returncode == 0, log[-4000:]
    assert log.count(" lost (") == 2 and log.count("goes back to the queue") == 2, log[-4000:]
    assert "is back" in log  # the killed worker came back on its node
    results = rows(out)
    keys = [f"artificial_img03/{n}obj-color-{i:02d}" for n in (1, 2) for i in range(4)]
    assert sorted(r["job"] for r in results) == keys and all(r["status"] == "ok" and r["warnings"] == [] for r in results), results
    assert len({r["server"].split(" pid")[0] for r in results}) == 2  # both nodes did work
    expected = {f"{key}{suffix}.png" for key in keys for suffix in ("", "_masks")}
    assert {str(p.relative_to(out)) for p in out.rglob("*.png")} == expected and not list(out.rglob("*.part"))
    assert all(Image.open(out / name).size == (128, 128) for name in expected)
    again = run_batch(*command, timeout=120)
    assert again.returncode == 0 and "8 finished earlier" in again.stderr and "0 to run" in again.stderr, again.stderr
    assert "Ray cluster" not in again.stderr and len(rows(out)) == 8  # nothing submitted, nothing written


def test_a_malformed_edit_list_fails_its_own_row_and_strict_fails_a_job_with_warnings(cluster, server_base, tmp_path, example_inputs):
    masks = [str(example_inputs / "wolf_mask.png"), str(example_inputs / "moon_mask.png")]
    image = str(example_inputs / "artificial_img03.jpg")
    whole = tmp_path / "whole.png"
    Image.new("L", (512, 512), 255).save(whole)  # the wolf's mask covers the moon's: the moon keeps 0 % of its area
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(job) + "\n" for job in (
        {"id": "malformed", "image": image, "edits": "wolf -> goat\nmoon made of gold", "masks": masks},
        {"id": "fine", "image": image, "edits": "wolf -> goat\nmoon -> moon made of gold", "masks": masks},
        {"id": "warned", "image": image, "edits": "wolf -> goat\nmoon -> moon made of gold", "masks": [str(whole), masks[1]]})))
    out = tmp_path / "out"
    done = run_batch(manifest, *CHEAP, "--models", server_base / "models", "--out", out, "--ray", cluster.address, "--ray-workers", "1",
                     "--strict", timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    results = {r["job"]: r for r in rows(out)}
    bad, good, warned = (results[f"artificial_img03/{name}"] for name in ("malformed", "fine", "warned"))
    assert bad["status"] == "error" and bad["outputs"] == []
    assert bad["error"].startswith("LeakFreeObjectRestrictedEncode (node 5): Object-Restricted Encode") and "line 2" in bad["error"]
    assert good["status"] == "ok" and good["warnings"] == [] and (out / good["outputs"][0]).is_file()
    assert warned["status"] == "error" and warned["error"].startswith("--strict: 2 warning(s)")
    assert any("'wolf' (line 1) covers the whole image" in w for w in warned["warnings"])
    assert any("'moon' (line 2) keeps only 0% of its area" in w and "edited as background" in w for w in warned["warnings"])
    assert all((out / name).is_file() for name in warned["outputs"])  # written all the same, to look at
    assert "2 failed, 1 with warnings" in done.stderr


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def named(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def test_ctrl_c_and_sigterm_stop_the_ray_jobs_and_leave_no_process_behind(cluster, server_base, tmp_path, example_inputs):
    jobs, out = ale_layout(tmp_path / "ale", example_inputs, 8), tmp_path / "out"
    cheap = [jobs, *CHEAP, "--only", "*/1obj-*", "--models", server_base / "models", "--out", out]  # 4 jobs
    # Ctrl-C on the driver of a cluster's batch: its worker, running a job after the first, is killed on its node
    batch = run_batch(*cheap, "--ray", cluster.address, "--ray-workers", "1", wait=False)
    try:
        wait_for(lambda: rows(out) and any(cluster.workers(node, "run") for node in cluster.nodes), 600, "a second job runs", batch)
        (worker,) = [p for node in cluster.nodes for p in cluster.workers(node)]
        batch.send_signal(signal.SIGINT)
        _, log = batch.communicate(timeout=60)
    finally:
        batch.kill()
    stopped = re.search(r"stopped \(Ctrl-C\): (\d) done, 0 failed, (\d) not run", log)
    assert batch.returncode == 130 and stopped, log[-3000:]
    done, left = map(int, stopped.groups())
    assert done >= 1 and left >= 1 and done + left == 4 and len(rows(out)) == done, log[-3000:]
    wait_for(lambda: not worker.is_running(), 30, "the worker process ends")
    assert not any(cluster.workers(node) for node in cluster.nodes)
    finished = rows(out)
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix != ".lock"} == {
        "results.jsonl", *(name for row in finished for name in row["outputs"])}
    # SIGTERM on a batch that started its own Ray: Ray's processes and the worker all end with it
    batch = run_batch(*cheap, "--ray", wait=False)
    seen: dict[int, tuple[psutil.Process, str]] = {}  # every process the batch started, with its name then
    try:
        def a_job_runs():
            try:
                children = psutil.Process(batch.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            seen.update({p.pid: (p, named(p)) for p in children if p.pid not in seen})
            return any(named(p) == "ray::WorkerHost.run" for p, _ in seen.values())

        wait_for(a_job_runs, 600, "a job runs on the batch's own Ray", batch)
        batch.send_signal(signal.SIGTERM)
        _, log = batch.communicate(timeout=60)
    finally:
        batch.kill()
    stopped = re.search(r"stopped \(Ctrl-C\): (\d) done, 0 failed, (\d) not run", log)
    assert batch.returncode == 130 and f"{done} finished earlier" in log and stopped, log[-3000:]
    again, left_now = map(int, stopped.groups())
    assert left_now >= 1 and again + left_now == left and len(rows(out)) == done + again, log[-3000:]
    assert {"gcs_server", "raylet"} <= {name for _, name in seen.values()}, seen
    wait_for(lambda: not any(alive(p) for p, _ in seen.values()), 30, "every process it started ends")
    scratch = [f for f in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*") if int(f.name[len(SCRATCH_PREFIX):].split("-")[0]) in seen]
    assert not scratch  # the killed worker's scratch folder (its inputs and outputs) went with the batch's Ray


def test_workers_that_cannot_start_stop_the_batch_with_their_reason(cluster, server_base, tmp_path, example_inputs):
    jobs, out = ale_layout(tmp_path / "ale", example_inputs, 2), tmp_path / "out"
    done = run_batch(jobs, *CHEAP, "--models", server_base / "models", "--custom-node", tmp_path / "missing_pack", "--out", out,
                     "--ray", cluster.address, timeout=300)
    assert done.returncode == 1 and not rows(out), done.stderr[-3000:]
    reason = f"RuntimeError: ComfyUI could not load the custom node {tmp_path / 'missing_pack'}"
    assert f"stopped: every worker is gone: The actor died because of an error raised in its creation task: {reason}" in done.stderr
    assert "2 job(s) not run" in done.stderr
