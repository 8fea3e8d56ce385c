"""The batch on a Ray cluster: one edit worker per GPU (one per node on a cluster without GPUs), each a ComfyUI
executor in its own Ray worker process with the pack loaded and the models kept loaded between jobs.

What Ray does here: it places the workers (``num_gpus=1`` each; CPU workers spread over the nodes), moves each job's
input files to the worker's node through its object store (put once per file, no shared filesystem), brings the
saved images back the same way, detects a worker process or a node that dies, and restarts the worker on any node
with room for it (up to ``MAX_RESTARTS`` times); its dashboard shows the workers, their logs and their nodes. What the
driver (this module) does: it gives each free worker the next job, hands a job whose worker died to the next free
worker (a job lost ``MAX_LOSSES`` times is recorded as failed: it may be what kills them), writes each job's files
whole and then its ``results.jsonl`` line (the same log, rows and rerun rules as the servers mode, dispatch.py), and
draws the progress line.

The driver imports neither torch, ComfyUI nor the pack: the worker is named by import path (``EDIT_WORKER``, in
harness/, which sets ComfyUI up) and imported in the Ray worker process only. The pack must be on every node at the
path it has here (as in a cluster's machine image), with ComfyUI and the models the workflow loads.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .comfyui import ROOT
from .dispatch import NO_IMAGE, BatchRun, Prepared, ResultsLog, job_warnings, output_images, result_row, write_outputs

REQUIREMENTS = ROOT / "requirements-ray.txt"
EDIT_WORKER = "harness.edit_worker:EditWorker"  # module:class, imported in the Ray worker processes only
MAX_RESTARTS = 3  # Ray restarts a worker whose process or node died this many times, on any node with room for it
PROBE_S = 2.0  # how often a restarting worker is asked whether it is back
# Ray turns a loopback address into this machine's network address; with this variable at 0 a local cluster stays on
# loopback (Ray's own switch for single-machine clusters): the cluster the command starts, and the tests' clusters.
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


SCRATCH_PREFIX = "leakfree-ray-worker-"  # + the worker's pid + "-": each edit worker's scratch folder in its node's temp folder


def sweep_scratch(grace_s: float = 0.0) -> None:
    """Remove the scratch folders of edit workers that are gone: a worker killed mid-job (by Ctrl-C, a lost node,
    Ray's memory monitor) cannot remove its own. Run by each worker as it starts (on its node) and by the driver after
    a cluster it started stopped; ``grace_s``: how long to wait for killed workers' processes to end."""
    deadline = time.monotonic() + grace_s
    for folder in sorted(Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*")):
        pid = folder.name[len(SCRATCH_PREFIX):].partition("-")[0]
        while pid.isdigit() and _running(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed child of this process is a zombie until it is reaped: gone all the same
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class NoRay(RuntimeError):
    pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise NoRay(f"--ray needs Ray, an optional dependency: pip install -r {REQUIREMENTS}") from None
    return ray


class WorkerHost:
    """The Ray actor. In its own process it builds the worker that ``path`` (``module:Class``) names and passes the
    calls on; the worker's module is imported there, never in the driver."""

    def __init__(self, path: str, *args):
        module, _, name = path.partition(":")
        self.worker = getattr(importlib.import_module(module), name)(*args)

    def describe(self) -> dict:
        return self.worker.describe()

    def run(self, graph: dict, names: list[str], *files: bytes) -> dict:
        return self.worker.run(graph, names, *files)

    def close(self) -> None:
        self.worker.close()


@dataclass
class Worker:
    """The driver's view of one actor: starting (its constructor runs), idle, busy, restarting (Ray restarts it after
    its process or node died; probed every PROBE_S), or dead (out of restarts, or its constructor failed)."""

    handle: object
    number: int
    state: str = "starting"
    probe: object = None  # the pending describe() call
    probe_at: float = 0.0
    ref: object = None  # the pending run() call
    item: Prepared | None = None
    started: float = 0.0
    where: str = ""  # host/node, process and device, once known
    done: int = 0
    busy_s: float = 0.0
    deaths: int = 0  # probes in a row answered with a cause of death
    why: str = ""  # why it died

    @property
    def name(self) -> str:
        return f"worker {self.number}" + (f" ({self.where})" if self.where else "")

    def status(self, now: float) -> str:
        if self.state == "busy":
            return f"{self.name}: {self.item.job.key} for {now - self.started:.0f} s, {self.done} done"
        rate = f", {60 * self.done / self.busy_s:.1f}/min" if self.busy_s else ""
        return f"{self.name}: {self.state}, {self.done} done{rate}"


class RayDispatcher(BatchRun):
    """Runs ``items`` on Ray: a cluster at ``address`` (``auto``: the one ``ray start`` runs on this machine), or, with
    ``address`` None, a one-node cluster started for the batch on loopback. ``workers``: how many (default one per
    GPU, or one per node when the cluster has no GPU); ``models``, ``custom_nodes``: paths on the worker nodes."""

    def __init__(self, items: list[Prepared], results: ResultsLog, address: str | None = None, workers: int | None = None,
                 models: str | None = None, custom_nodes: tuple = (), give_up_s: float = 600, strict: bool = False,
                 stream=sys.stderr):
        super().__init__(items, results, strict, stream)
        self.address, self.count = address, workers
        self.worker_args = (str(models) if models else None, tuple(str(path) for path in custom_nodes))
        self.give_up_s = give_up_s
        self.workers: list[Worker] = []
        self.files: dict[str, object] = {}  # upload name -> ObjectRef of its bytes in the object store
        self.uses = Counter(name for item in items for name in item.uploads.values())  # jobs still to finish that read it
        self.items = {item.job.key: item for item in items}
        self.ray = None

    def run(self) -> None:
        """Run every pending job; on Ctrl-C (KeyboardInterrupt) or SIGTERM the workers are killed and Ray is left."""
        if self.address is None:
            os.environ.setdefault(LOOPBACK, "0")  # before Ray is imported: it reads it then
        ray = self.ray = import_ray()
        on_sigterm = signal.getsignal(signal.SIGTERM)
        _check_reachable(self.address)
        try:
            context = ray.init(address=self.address or "local", runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
                               log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise NoRay(f"--ray {self.address or ''}: Ray could not start or be reached: {error}".replace("  ", " ")) from None
        signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C (after ray.init, which sets its own)
        try:
            self._start(context)
            self._loop()
        finally:
            self._stop()
            signal.signal(signal.SIGTERM, on_sigterm)
            if self.address is None:  # the workers of the cluster it started ran on this machine
                sweep_scratch(grace_s=10)

    # -- workers ---------------------------------------------------------------------------------------------------

    def _start(self, context) -> None:
        ray = self.ray
        resources = ray.cluster_resources()
        nodes = [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
        gpus = int(resources.get("GPU", 0))
        count = self.count or gpus or len(nodes) or 1
        if gpus:
            options = {"num_gpus": 1, "num_cpus": 1}
        else:  # each CPU worker gets its share of a node's cores (Ray sets its torch threads to it)
            fewest = min((int(node["Resources"]["CPU"]) for node in nodes), default=1)
            options = {"num_cpus": max(1, min(fewest, int(resources.get("CPU", 1)) // count))}
        dashboard = getattr(context, "dashboard_url", "")
        where = f"the Ray cluster at {ray.get_runtime_context().gcs_address}" if self.address else "a Ray cluster started on this machine"
        each = "1 GPU" if gpus else f"{options['num_cpus']} CPU(s)"
        self._say(f"{where}: {len(nodes)} node(s) with CPUs, {gpus} GPU(s); {count} edit worker(s), {each} each"
                  + (f"; dashboard: http://{dashboard}" if dashboard else ""))
        actor = ray.remote(WorkerHost).options(max_restarts=MAX_RESTARTS, max_task_retries=0, scheduling_strategy="SPREAD", **options)
        for number in range(1, count + 1):
            self.workers.append(Worker(actor.remote(EDIT_WORKER, *self.worker_args), number))

    def _stop(self) -> None:
        """Finished workers remove their scratch folders; then every worker is killed (a running job stops) and the
        driver leaves Ray (a cluster it started stops with it)."""
        ray = self.ray
        idle = [worker for worker in self.workers if worker.state == "idle"]
        if idle and self._finished():
            ray.wait([worker.handle.close.remote() for worker in idle], num_returns=len(idle), timeout=10)
        for worker in self.workers:
            ray.kill(worker.handle, no_restart=True)
        ray.shutdown()
        if self.tty:
            self.stream.write("\n")

    def _probe(self, worker: Worker, now: float) -> None:
        if worker.probe is None and now >= worker.probe_at:
            worker.probe = worker.handle.describe.remote()

    def _probed(self, worker: Worker) -> None:
        ray = self.ray
        try:
            info = ray.get(worker.probe)
        except ray.exceptions.RayError as error:
            worker.probe, worker.probe_at = None, time.monotonic() + PROBE_S
            if isinstance(error, ray.exceptions.ActorUnavailableError):  # restarting, or waiting for a node with room for it
                worker.state, worker.deaths = "restarting", 0
            elif worker.deaths:  # Ray answers a dead actor's calls with its cause of death: out of restarts, or its constructor failed
                worker.state, worker.why = "dead", _message(error)
                self._say(f"{worker.name} is gone: {worker.why}")
            else:  # the same answer once more means dead; the call may have raced a restart
                worker.deaths = 1
            return
        was, worker.probe, worker.deaths = worker.state, None, 0
        worker.where = f"{info['host']}/{info['node'][:6]} pid {info['pid']}, {info['device']}"
        worker.state = "idle"
        self._say(f"{worker.name} {'is back' if was == 'restarting' else 'ready'}")

    # -- jobs ------------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        ray = self.ray
        last_alive = time.monotonic()
        next_redraw = 0.0
        while not self._finished():
            now = time.monotonic()
            for worker in self.workers:
                if worker.state == "idle" and self.pending:
                    self._submit(worker, self.pending.popleft())
                elif worker.state in ("starting", "restarting"):
                    self._probe(worker, now)
            if any(worker.state in ("idle", "busy") for worker in self.workers):
                last_alive = now
            elif all(worker.state == "dead" for worker in self.workers):
                self.gave_up = "every worker is gone: " + self.workers[0].why
            elif now - last_alive > self.give_up_s:  # starting (no node has room for one?) or restarting for that long
                self.gave_up = f"no worker has run for {self.give_up_s:.0f} s"
            calls = {call: worker for worker in self.workers for call in (worker.ref, worker.probe) if call is not None}
            ready, _ = ray.wait(list(calls), num_returns=1, timeout=1.0) if calls else ([], [])
            if ready:
                ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
            for call in ready:
                worker = calls[call]
                if call is worker.probe:
                    self._probed(worker)
                else:
                    self._collect(worker)
            if self.tty and now >= next_redraw:
                self._redraw()
                next_redraw = now + 1

    def _submit(self, worker: Worker, item: Prepared) -> None:
        """The job's input files go into the object store once (by their content-addressed names) and reach the
        worker's node with the call; Ray passes them to the worker as bytes."""
        for path, name in item.uploads.items():
            if name not in self.files:
                self.files[name] = self.ray.put(path.read_bytes())
        names = list(item.uploads.values())
        worker.ref = worker.handle.run.remote(item.graph, names, *(self.files[name] for name in names))
        worker.item, worker.state, worker.started = item, "busy", time.monotonic()
        self.in_flight += 1

    def _collect(self, worker: Worker) -> None:
        ray = self.ray
        item, ref, seconds = worker.item, worker.ref, time.monotonic() - worker.started
        worker.item = worker.ref = None
        self.in_flight -= 1
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # an exception in the worker's own code (a graph's failure is an answer)
            worker.state = "idle"
            self._record(result_row(item, "error", worker.name, seconds, ref.task_id().hex(), error=_message(error)))
            return
        except ray.exceptions.RayError as error:  # its process or node died (or Ray killed it for memory): the job did not finish
            worker.state, worker.probe_at = "restarting", time.monotonic() + PROBE_S
            self._say(f"{worker.name} lost ({_message(error)}): {self._lost(item, 'worker', worker.name, _message(error))}")
            return
        worker.state = "idle"
        worker.done += 1
        worker.busy_s += seconds
        self._record(self._row(item, answer, worker, seconds, ref.task_id().hex()))

    def _row(self, item: Prepared, answer: dict, worker: Worker, seconds: float, task: str) -> dict:
        """The job's row, its files written first (each whole): the saved images and the mask previews."""
        if not answer["success"]:
            return result_row(item, "error", worker.name, seconds, task, error=answer["error"])
        def content(image: dict) -> tuple[str, bytes]:
            return image["filename"], answer["files"][(image.get("type", "output"), image.get("subfolder", ""), image["filename"])]

        saved, previews = ([content(image) for image in images] for images in output_images(item, answer["outputs"]))
        outputs = write_outputs(self.results.out, item, saved, previews) if saved else []
        return result_row(item, "ok" if outputs else "error", worker.name, seconds, task, outputs, "" if outputs else NO_IMAGE,
                          job_warnings(answer["outputs"]), self.strict)

    def _record(self, row: dict) -> None:
        """A job is finished: the files only it still needed leave the object store."""
        super()._record(row)
        for name in self.items[row["job"]].uploads.values():
            self.uses[name] -= 1
            if not self.uses[name]:
                self.files.pop(name, None)

    def status(self) -> str:
        now = time.monotonic()
        rate = sum(60 * w.done / w.busy_s for w in self.workers if w.busy_s and w.state in ("idle", "busy"))
        return f"{self._bar(rate)} | " + " | ".join(worker.status(now) for worker in self.workers)


def _message(error: Exception) -> str:
    """A Ray error in one line: the exception a worker raised (its constructor's too), else Ray's first sentence
    (a dead process, a dead node)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if any(line.startswith("File ") for line in lines):  # a traceback: its last line is the exception
        return f"{lines[0].split(',')[0]}: {lines[-1]}"
    return re.sub(r"^The actor [0-9a-f]+ is unavailable: ", "", lines[0]).split(". ")[0]


def _check_reachable(address: str | None) -> None:
    """A cluster's address that nothing answers at fails at once (Ray itself would retry for minutes)."""
    found = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address or "")
    if found:
        try:
            socket.create_connection((found[1], int(found[2])), timeout=10).close()
        except OSError as error:
            raise NoRay(f"--ray {address}: nothing answers there ({error.strerror or error}); is `ray start --head` running on that "
                        "machine, and is this its port?") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt
