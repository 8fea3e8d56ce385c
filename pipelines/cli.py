"""Artist pipelines: batches of edits run on one or many ComfyUI servers, resumable, nothing lost.

    python3 -m scripts.batch_edit jobs.jsonl --server http://gpu1:8188 --server http://gpu2:8188 --out edits/
    python3 -m scripts.batch_edit ../shared/ale_bench --size 512 --only 'artificial_img03/*' --out ale/
    python3 -m scripts.batch_edit --image photo.jpg --mask wolf.png --mask moon.png \\
        --edits "wolf -> brown-colored goat; moon -> moon made of gold" --size 512 --seed 7 --steps 20
    python3 -m scripts.batch_edit jobs.jsonl --ray auto --out edits/     # on the Ray cluster of this machine's `ray start`

Jobs come from a JSONL or CSV manifest (see pipelines/jobs.py), a folder in ALE-Bench's layout, or the
command line (one job, the same path as a one-line manifest). The graph is any API-format workflow with the
pack's nodes (default: the repo's painted-masks graph for jobs with masks, its Grounded-SAM graph for jobs
without); where the image, masks, edit list and settings go is found by node class and input name
(pipelines/slots.py). Two ways to run them:
- ComfyUI servers (--server, one per GPU or machine): this command is a thin client of ComfyUI's HTTP + websocket
  API. With neither --server nor --ray it starts the ComfyUI the pack is installed in (or the one
  pipelines/comfyui.py finds) on a loopback port for the batch and stops it afterwards.
- Ray (--ray [ADDRESS]; needs requirements-ray.txt): edit workers on a Ray cluster's GPUs, each ComfyUI's executor in
  its own process; Ray places them, moves the files and restarts a worker whose process or node died
  (pipelines/ray_dispatch.py).

Results: <out>/<image stem>/<job id>.png, <job id>_masks.png (the mask preview) and <out>/results.jsonl, with the
pack's warnings for each job (--strict: a job with warnings fails). Rerunning the same command skips the jobs that
finished; Ctrl-C stops cleanly (rerun to resume).
"""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .comfyui import PACK_FOLDER, ROOT, LocalComfyUI, comfyui_version, find_comfyui, installed_in_comfyui
from .dispatch import Dispatcher, Prepared, ResultsLog, upload_name
from .ray_dispatch import NoRay, RayDispatcher
from .jobs import Job, ManifestError, check_defaults, make_job, read_manifest
from .slots import MASK_INPUTS, WorkflowError, describe, find_slots, load_workflow

WORKFLOWS = ROOT / "workflows" / "api"
PAINTED_WORKFLOW = WORKFLOWS / "edit_painted_masks_sd15.json"
DETECT_WORKFLOW = WORKFLOWS / "edit_grounded_sam_sd15.json"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", nargs="?", type=Path, help="a .jsonl or .csv manifest, or a folder in ALE-Bench's layout")
    one = parser.add_argument_group("one edit from the command line (instead of a manifest)")
    one.add_argument("--image", type=Path, help="the source image")
    one.add_argument("--mask", action="append", default=[], help="one mask file per edit line, in order; 'detect' (or none): Grounded-SAM")
    one.add_argument("--edits", help="'source -> target' lines, separated by ';' or newlines")
    one.add_argument("--id", help="the job's name (default: the targets and a short hash)")
    graph = parser.add_argument_group("graph")
    graph.add_argument("--workflow", type=Path, help="an API-format workflow with the pack's nodes (default: the repo's painted-masks "
                                                     "graph for jobs with masks, its Grounded-SAM graph for jobs without)")
    graph.add_argument("--bind", action="append", default=[], metavar="SLOT=NODE",
                       help="the node that takes a slot two nodes offer (image, edits, masks, seed, steps, cfg, denoise, sampler_name, "
                            "scheduler, ckpt, size)")
    graph.add_argument("--mask-channel", default="red", choices=("red", "green", "blue", "alpha"), help="the mask files' channel (LoadImageMask)")
    settings = parser.add_argument_group("settings for every job (a manifest's own columns win)")
    settings.add_argument("--seed", type=int)
    settings.add_argument("--steps", type=int)
    settings.add_argument("--cfg", type=float)
    settings.add_argument("--denoise", type=float)
    settings.add_argument("--size", help="run at this size: 512 (square) or 768x512; images resized by the graph")
    settings.add_argument("--ckpt", help="checkpoint name on the servers (ckpt_name)")
    settings.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="any input of the workflow, e.g. 14.target_cfg=2")
    servers = parser.add_argument_group("servers")
    servers.add_argument("--server", action="append", default=[], metavar="URL", help="a ComfyUI server (repeat: one per GPU or machine)")
    servers.add_argument("--models", type=Path, help="with no --server: a ComfyUI models/ folder for the local server (or the Ray workers) "
                                                     "to use as well")
    servers.add_argument("--custom-node", action="append", default=[], type=Path, metavar="PATH",
                         help="with no --server: another custom node (folder or .py file) the local server (or the Ray workers) loads")
    servers.add_argument("--timeout", type=float, default=60, help="seconds without an answer before a server counts as lost")
    servers.add_argument("--heartbeat", type=float, default=10, help="seconds without an event before the server is asked about its job")
    servers.add_argument("--give-up", type=float, default=600, help="stop when no server has answered (no Ray worker has run) for this "
                                                                      "many seconds")
    cluster = parser.add_argument_group("Ray (instead of servers)")
    cluster.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                         help="run on Ray: alone, a Ray cluster started on this machine for the batch; 'auto', the one `ray start` "
                              "runs here; or a cluster's address (host:6379, ray://host:10001). --models and --custom-node name "
                              "paths on the worker nodes")
    cluster.add_argument("--ray-workers", type=int, metavar="N", help="edit workers (default: one per GPU, or one per node without GPUs)")
    run = parser.add_argument_group("batch")
    run.add_argument("--out", type=Path, default=Path("output"), help="results: <out>/<image stem>/<job id>.png and <out>/results.jsonl")
    run.add_argument("--only", action="append", default=[], metavar="GLOB", help="run only jobs whose '<image stem>/<job id>' matches")
    run.add_argument("--limit", type=int, help="run at most this many jobs (after --only)")
    run.add_argument("--retry-failed", action="store_true", help="run again the jobs recorded as failed")
    run.add_argument("--strict", action="store_true", help="a job the pack warns about (e.g. an object that keeps 0%% of its area) is "
                                                           "recorded as failed (its images are written all the same)")
    run.add_argument("--dry-run", action="store_true", help="check the jobs and the graph, print what would run, submit nothing")
    args = parser.parse_args(argv)
    if args.jobs is None and args.image is None and args.ray and Path(args.ray).exists():
        parser.error(f"--ray took {args.ray} for its address: put the manifest before --ray, or write --ray=ADDRESS")
    if (args.jobs is None) == (args.image is None):
        parser.error("give a manifest (or ALE-Bench folder), or --image with --edits, not both")
    if args.image and not args.edits:
        parser.error("--image needs --edits")
    if args.ray is not None and args.server:
        parser.error("--ray and --server are two ways to run the batch: give one")
    return args


def defaults_of(args) -> dict:
    """The command line's settings as manifest fields, for every job."""
    fields = {name: getattr(args, name) for name in ("seed", "steps", "cfg", "denoise", "size", "ckpt") if getattr(args, name) is not None}
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        fields[key.strip()] = value
    return fields


def read_jobs(args) -> list[Job]:
    defaults = defaults_of(args)
    if args.jobs is not None:
        jobs = read_manifest(args.jobs, defaults)
    else:
        check_defaults(defaults)
        row = {"image": str(args.image), "edits": args.edits, "masks": args.mask, "id": args.id}
        job, problems = make_job(row, Path.cwd(), "the command line", defaults)
        if problems:
            raise ManifestError(problems)
        jobs = [job]
    if args.only:
        jobs = [job for job in jobs if any(fnmatch.fnmatchcase(job.key, pattern) for pattern in args.only)]
    return jobs[: args.limit] if args.limit is not None else jobs


def slots_for(jobs: list, args) -> tuple[dict, list[str]]:
    """The workflow slots each job goes into (by job key), and every problem found, all at once."""
    bind = dict(b.split("=", 1) for b in args.bind if "=" in b)
    problems = [f"--bind {b}: write SLOT=NODE" for b in args.bind if "=" not in b]
    loaded, chosen = {}, {}
    for job in jobs:
        path = args.workflow or (PAINTED_WORKFLOW if job.masks else DETECT_WORKFLOW)
        if path not in loaded:
            try:
                loaded[path] = find_slots(load_workflow(path), path.name, bind)
            except WorkflowError as error:
                loaded[path] = None
                problems += error.problems
            except (OSError, json.JSONDecodeError) as error:
                loaded[path] = None
                problems.append(f"{path}: {error}")
        chosen[job.key] = loaded[path]
    for slots in {id(s): s for s in chosen.values() if s}.values():
        mine = [job for job in jobs if chosen[job.key] is slots]
        problems += [f"{slots.name}: {p}" for p in slots.problems({k for j in mine for k in j.settings if k != "size"},
                                                                   any("size" in j.settings for j in mine),
                                                                   {k for j in mine for k in j.inputs})]
        mask_node = describe(slots.graph, slots.mask_node) if slots.mask_node else None
        for job in mine:
            if job.masks and not mask_node:
                problems.append(f"{job.origin}: gives mask files, but {slots.name} edits without masks: leave the masks out")
            elif job.masks and not slots.painted:
                problems.append(f"{job.origin}: gives mask files, but {slots.name} finds its masks itself (node {mask_node}): "
                                "leave the masks out, or use a workflow with Object Masks from Painted Masks")
            elif not job.masks and slots.painted:
                problems.append(f"{job.origin}: gives no masks, but {slots.name} takes painted masks (node {mask_node}): "
                                "give one mask file per edit line, or use a Grounded-SAM workflow")
            elif job.masks and len(job.masks) > MASK_INPUTS:
                problems.append(f"{job.origin}: {len(job.masks)} masks; Object Masks from Painted Masks takes {MASK_INPUTS} at most")
    return chosen, problems


def prepare(jobs: list, chosen: dict, subfolder: str, mask_channel: str) -> list[Prepared]:
    names: dict[Path, str] = {}
    items = []
    for job in jobs:
        files = [job.image, *(job.masks or ())]
        for path in files:
            if path not in names:
                names[path] = upload_name(path, subfolder)
        graph, previews = chosen[job.key].fill(job, names, f"{subfolder}/{job.key}", mask_channel)
        items.append(Prepared(job, graph, previews, {path: names[path] for path in files}))
    return items


def start_local(args, scratch: Path, log_path: Path) -> LocalComfyUI:
    """The ComfyUI the pack runs on, started for this batch: its own model folders (+ --models), the pack loaded."""
    comfyui = find_comfyui()
    custom_nodes = scratch / "custom_nodes"
    custom_nodes.mkdir(parents=True)
    links = ([] if installed_in_comfyui() else [ROOT]) + args.custom_node
    for path in links:
        (custom_nodes / (PACK_FOLDER if path == ROOT else path.name)).symlink_to(path.resolve())
    paths = {"custom_nodes": str(custom_nodes)}
    if args.models:
        paths.update({folder.name: str(folder.resolve()) for folder in sorted(args.models.iterdir()) if folder.is_dir()})
    (scratch / "extra_model_paths.yaml").write_text(json.dumps({"leakfree_batch": paths}, indent=1))  # JSON is YAML
    command = ["--extra-model-paths-config", str(scratch / "extra_model_paths.yaml"), "--database-url", "sqlite:///:memory:"]
    for folder in ("input", "output", "temp"):
        (scratch / folder).mkdir()
        command += [f"--{folder}-directory", str(scratch / folder)]
    has_gpu = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(not torch.cuda.is_available())"], cwd=scratch).returncode == 0
    if not has_gpu:
        command += ["--cpu", "--use-pytorch-cross-attention"]
    print(f"starting ComfyUI {comfyui_version(comfyui)} from {comfyui} on {'the GPU' if has_gpu else 'the CPU'} "
          f"(log: {log_path})", file=sys.stderr, flush=True)
    return LocalComfyUI(comfyui, command, log_path).wait_ready(timeout=600)


def batch_subfolder(out: Path) -> str:
    """The batch's folder on the servers (inputs, saved images): one per output folder, apart from the users' files."""
    return f"leakfree-batch-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10]}"


def lock(out: Path):
    """One batch at a time per output folder (two would run the same jobs)."""
    handle = open(out / ".batch_edit.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another batch_edit.py is writing to {out}: wait for it, or use another --out") from None
    return handle


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        jobs = read_jobs(args)
        chosen, problems = slots_for(jobs, args)
    except ManifestError as error:
        problems = error.problems
    if problems:
        print(f"nothing submitted: {len(problems)} problem(s) with the jobs or the workflow:", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2
    out = args.out.resolve()
    subfolder = batch_subfolder(out)
    items = prepare(jobs, chosen, subfolder, args.mask_channel)
    results = ResultsLog(out)
    todo = [item for item in items if not results.finished(item, args.retry_failed)]
    print(f"{len(items)} job(s): {len(items) - len(todo)} finished earlier ({results.path}), {len(todo)} to run", file=sys.stderr)
    if args.dry_run:
        for item in todo:
            print(f"  {item.job.key}  {item.job.edit_text!r}  ({chosen[item.job.key].name})")
        return 0
    if not todo:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    held = lock(out)
    started = time.monotonic()
    try:
        if args.ray is not None:
            dispatcher = RayDispatcher(todo, results, args.ray or None, args.ray_workers, args.models, args.custom_node, args.give_up, args.strict)
            stopped = run_on_ray(dispatcher)
        else:
            dispatcher = Dispatcher(todo, args.server, results, subfolder, None, args.timeout, args.heartbeat, args.give_up, args.strict)
            stopped = run_on_servers(dispatcher, args)
    except NoRay as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        held.close()
    if stopped:
        print(f"stopped (Ctrl-C): {dispatcher.ok} done, {dispatcher.failed} failed, "
              f"{len(todo) - dispatcher.ok - dispatcher.failed} not run; rerun the same command to resume", file=sys.stderr)
        return 130
    took = time.monotonic() - started
    warned = f", {dispatcher.warned} with warnings" if dispatcher.warned else ""
    print(f"{dispatcher.ok} done, {dispatcher.failed} failed{warned} in {took:.0f} s; results: {results.path}", file=sys.stderr)
    if dispatcher.gave_up:
        print(f"stopped: {dispatcher.gave_up}; {len(dispatcher.pending)} job(s) not run (rerun the same command to resume)", file=sys.stderr)
    return 0 if not dispatcher.failed and not dispatcher.gave_up else 1


def run_on_servers(dispatcher: Dispatcher, args) -> bool:
    """The batch on ComfyUI servers (a local one started for it when none is given); True when Ctrl-C stopped it."""
    scratch = local = None
    try:
        if not dispatcher.urls:
            scratch = Path(tempfile.mkdtemp(prefix="leakfree-batch-"))
            local = start_local(args, scratch, dispatcher.results.out / "local-comfyui.log")
            dispatcher.urls, dispatcher.local = [local.url], local
        try:
            asyncio.run(dispatcher.run())
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
            return True
        if local and local.process.poll() is not None:
            print(f"the local ComfyUI exited with {local.process.returncode}:\n{local.log()[-3000:]}", file=sys.stderr)
    finally:
        if local:
            local.stop()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return False


def run_on_ray(dispatcher: RayDispatcher) -> bool:
    """The batch on Ray; True when Ctrl-C or SIGTERM stopped it (its workers are killed, Ray left)."""
    try:
        dispatcher.run()
    except KeyboardInterrupt:
        return True
    return False
