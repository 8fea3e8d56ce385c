"""Jobs per minute of scripts/batch_edit.py with one and with two ComfyUI servers, and the client's own cost.

    python3 -m bench.batch_throughput [--jobs 8] [--size 128] [--steps 2] [--servers 1 2]

Real ComfyUI servers on loopback (the test servers' set-up: random-weight SD1.5 in the real file format),
edits from ALE-Bench (``../shared/ale_bench``, image artificial_img03, painted masks). Each server first runs
one warm-up job (checkpoint loading is not counted); then the batch runs as a user runs it, and the client
process is sampled every 0.5 s for CPU (its user + system time over the wall time, in % of one core) and
memory (peak RSS). Two servers on one 2-core CPU share the same cores: expect little gain there.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from harness import model_files
from harness.server import ComfyServer  # the test servers' set-up: base folder, pack, denormals flushed
from pipelines.comfyui import ROOT, find_comfyui

ALE_BENCH = ROOT.parent / "shared" / "ale_bench"


def batch(mode: list[str], out: Path, args, only: str, limit: int) -> dict:
    """Run one batch_edit.py process to the end (``mode``: its --server or --ray arguments); its wall time, its CPU and
    memory as sampled, and when each result arrived (seconds from the start)."""
    command = [sys.executable, "-m", "scripts.batch_edit", str(args.ale_bench), "--only", only, "--limit", str(limit),
               "--size", str(args.size), "--steps", str(args.steps), "--out", str(out), *mode]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    client, peak_rss, samples, arrivals = psutil.Process(process.pid), 0, [], []
    spent, peaks = {}, {}  # the processes the client started (a local Ray's services and workers): CPU s by pid, peak RSS by group
    while process.poll() is None:
        try:
            times = client.cpu_times()
            samples.append((time.monotonic(), times.user + times.system))
            peak_rss = max(peak_rss, client.memory_info().rss)
            children = client.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        rss = {}
        for child in children:
            try:
                group = "edit workers" if child.name().startswith("ray::WorkerHost") else "started services"
                times, memory = child.cpu_times(), child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            spent[child.pid] = (group, times.user + times.system)
            rss[group] = rss.get(group, 0) + memory
        peaks.update({group: max(peaks.get(group, 0), total) for group, total in rss.items()})
        results = out / "results.jsonl"
        count = len(results.read_text().splitlines()) if results.exists() else 0
        arrivals += [time.monotonic() - started] * (count - len(arrivals))
        time.sleep(0.5)
    wall = time.monotonic() - started
    log = process.communicate()[1]
    if process.returncode != 0:
        raise RuntimeError(f"batch_edit.py exited with {process.returncode}:\n{log[-3000:]}")
    dispatching = [s for s in samples if s[0] - started > 3]  # after start-up (imports, reading and hashing the jobs)
    (t0, c0), (t1, c1) = dispatching[0], dispatching[-1]
    return {"wall_s": wall, "client_cpu_percent_total": 100 * samples[-1][1] / wall,
            "client_cpu_percent_dispatching": 100 * (c1 - c0) / (t1 - t0), "client_peak_rss_mb": peak_rss / 2**20,
            "arrivals_s": arrivals, **{f"{group}_cpu_percent": 100 * sum(cpu for g, cpu in spent.values() if g == group) / wall for group in peaks},
            **{f"{group}_peak_rss_mb": peak / 2**20 for group, peak in peaks.items()}}


def measure(count: int, args, scratch: Path) -> dict:
    servers = []
    for index in range(count):
        base = scratch / f"server{count}-{index}"
        model_files.write_model_files(base / "models", only=("checkpoints",))
        servers.append(ComfyServer(find_comfyui(), base, ROOT, name="server"))
    try:
        for server in servers:
            server.wait_ready()
        urls = [a for server in servers for a in ("--server", server.url)]
        batch(urls, scratch / f"warm{count}", args, "artificial_img01/*", count)  # one job per server: models loaded
        timed = batch(urls, scratch / f"out{count}", args, "artificial_img03/*", args.jobs)
        timed.pop("arrivals_s")
        server_rss = [psutil.Process(s.process.pid).memory_info().rss / 2**30 for s in servers]
    finally:
        for server in servers:
            server.stop()
    jobs_per_min = 60 * args.jobs / timed["wall_s"]
    return {"servers": count, "jobs": args.jobs, "size": args.size, "steps": args.steps, "jobs_per_min": round(jobs_per_min, 2),
            **{k: round(v, 2) for k, v in timed.items()}, "server_rss_gib": [round(r, 2) for r in server_rss]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ale-bench", type=Path, default=ALE_BENCH)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="leakfree-batch-bench-"))
    try:
        for count in args.servers:
            print(json.dumps(measure(count, args, scratch)), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average after: {psutil.getloadavg()}")


if __name__ == "__main__":
    main()
