"""Jobs per minute of scripts/batch_edit.py on Ray with one and with two edit workers, against the ComfyUI-servers mode
with one and two servers on the same jobs, and what the driver (and the Ray it starts) costs.

    python3 -m bench.ray_throughput [--jobs 8] [--size 128] [--steps 2] [--workers 1 2] [--servers 1 2] [--rounds 1]

The jobs are bench/batch_throughput.py's: ALE-Bench edits of one image with painted masks, random-weight SD1.5 files.
The Ray runs use the one-node cluster the command starts (``--ray``; N workers share the node's cores: each gets
cores/N CPUs and as many torch threads); the servers runs are batch_throughput's (each server warmed up by one job
first). A Ray batch starts its workers itself, so its first N results include ComfyUI's start and the checkpoint's
load: ``jobs_per_min`` counts the jobs after them (from the N-th result to the last), ``wall_s`` everything. Sampled
every 0.5 s: the driver's CPU (user + system over the wall time, % of one core) and peak RSS, and the same for the
processes it started (Ray's services; the edit workers). On a 2-core machine every figure is bounded by the CPU, and
on a shared one by the others' load: ``--rounds`` repeats the modes in turn (each line says the load average before
it), and the medians close the output.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import psutil

from bench.batch_throughput import ALE_BENCH, batch, measure
from harness import model_files
from harness.ray_cluster import loopback_environment


def on_ray(workers: int, args, scratch: Path) -> dict:
    models = scratch / "models"
    model_files.write_model_files(models, only=("checkpoints",))
    timed = batch(["--ray", "--ray-workers", str(workers), "--models", str(models)], scratch / f"ray{workers}", args, "artificial_img03/*", args.jobs)
    arrivals = timed.pop("arrivals_s")
    steady = (len(arrivals) - workers) / (arrivals[-1] - arrivals[workers - 1]) * 60 if len(arrivals) > workers else 0.0
    return {"mode": "ray", "workers": workers, "jobs": args.jobs, "size": args.size, "steps": args.steps, "jobs_per_min": round(steady, 2),
            "first_result_s": round(arrivals[0], 1), **{k: round(v, 2) for k, v in timed.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--servers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--ale-bench", type=Path, default=ALE_BENCH)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    loopback_environment()  # the Ray the command starts: on loopback, no memory monitor (a shared machine's load would kill workers)
    scratch = Path(tempfile.mkdtemp(prefix="leakfree-ray-bench-"))
    rates: dict[str, list[float]] = {}
    try:
        for round_ in range(args.rounds):
            folder = scratch / f"round{round_}"  # each round's own outputs: a rerun would skip the jobs as finished
            runs = [(f"ray {n} worker(s)", lambda n=n: on_ray(n, args, folder)) for n in args.workers]
            runs += [(f"{n} server(s)", lambda n=n: {"mode": "servers", **measure(n, args, folder)}) for n in args.servers]
            for name, run in runs:
                load = psutil.getloadavg()[0]
                result = {**run(), "load_average_before": round(load, 2)}
                rates.setdefault(name, []).append(result["jobs_per_min"])
                print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("median jobs/min: " + ", ".join(f"{name} {statistics.median(values):.2f}" for name, values in rates.items()))
    print(f"load average after: {psutil.getloadavg()}")


if __name__ == "__main__":
    main()
