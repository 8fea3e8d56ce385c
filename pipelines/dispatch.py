"""Dispatch prepared edit jobs to ComfyUI servers: one job at a time on each, nothing lost, nothing done twice.

- Each server gets one of our prompts at a time; its inputs are uploaded once per server, under content-addressed
  names in the batch's own subfolder of the server's input folder.
- A graph that fails is recorded with ComfyUI's message and the batch goes on. A server that stops answering
  (connection refused, timeout, websocket closed) hands its job back to the others and is tried again later,
  with a growing pause; when it answers again our abandoned prompts are removed from its queue.
- Results are written as ``<out>/<image stem>/<job id>.png`` (+ ``_masks.png``, the mask preview), each file
  complete or absent, then one line in ``results.jsonl``, with the pack's warnings for the job; a job whose line says
  it finished is not run again.

What the Ray mode (ray_dispatch.py) shares with this one is here too: the prepared jobs, the results log, the result
rows and their files, the warnings and ``--strict``, the counts and the progress line (:class:`BatchRun`).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .client import ComfyClient, PromptRefused, ServerLost
from .comfyui import PACK_FOLDER
from .slots import node_order

MAX_LOSSES = 3  # a job that was on a lost server or worker this many times is recorded as failed (it may be what kills them)
RETRY_AFTER_S = (5, 10, 20, 40, 60)  # pauses before a lost server is tried again
NO_IMAGE = "the workflow saved no image (it needs a SaveImage node)"
WARNINGS = "leakfree_warnings"  # the UI output in which the pack's nodes send their warnings (integration/object_masks.py)


@dataclass
class Prepared:
    """A job ready to submit: its graph (input names content-addressed), the files to upload, its fingerprint."""

    job: object  # jobs.Job
    graph: dict
    previews: set  # ids of the nodes that preview its masks
    uploads: dict  # local path -> name in the server's input folder ("subfolder/<sha256>.png")
    fingerprint: str = ""

    def __post_init__(self):
        self.fingerprint = hashlib.sha256(json.dumps(self.graph, sort_keys=True).encode()).hexdigest()[:16]


def upload_name(path: Path, subfolder: str) -> str:
    return f"{subfolder}/{hashlib.sha256(path.read_bytes()).hexdigest()[:24]}{path.suffix.lower()}"


class ResultsLog:
    """``results.jsonl``: one line per finished job (job, status, server, seconds, outputs, error); the last line wins."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / "results.jsonl"
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash
                    continue
                self.rows[row["job"]] = row

    def finished(self, item: Prepared, retry_failed: bool = False) -> bool:
        """True when the same job (same fingerprint) succeeded with its files all there, or failed (unless retrying)."""
        row = self.rows.get(item.job.key)
        if not row or row.get("fingerprint") != item.fingerprint:
            return False
        if row["status"] == "ok":
            return all((self.out / name).is_file() for name in row["outputs"])
        return not retry_failed

    def append(self, row: dict) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(row) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self.rows[row["job"]] = row


def job_warnings(outputs: dict) -> list[str]:
    """The pack's warnings in a finished prompt's UI outputs (node id -> UI output, as /history and the executor keep
    them), in node order: an object that keeps 0 % of its area, a mask that covers the whole image, ..."""
    return [warning for _, ui in sorted(outputs.items(), key=lambda pair: node_order(pair[0])) for warning in (ui or {}).get(WARNINGS, [])]


def result_row(item: Prepared, status: str, where: str, seconds: float, run_id: str = "", outputs: list | None = None,
               error: str = "", warnings: list | None = None, strict: bool = False) -> dict:
    """One ``results.jsonl`` line. With ``strict`` a job that finished with warnings is a failure (its files are kept)."""
    warnings = list(warnings or [])
    if strict and warnings and status == "ok":
        status, error = "error", f"--strict: {len(warnings)} warning(s): " + " | ".join(warnings)
    return {"job": item.job.key, "status": status, "server": where, "seconds": round(seconds, 2), "outputs": outputs or [],
            "error": error, "warnings": warnings, "image": str(item.job.image), "edits": item.job.edit_text,
            "fingerprint": item.fingerprint, "prompt_id": run_id, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def output_images(item: Prepared, outputs: dict) -> tuple[list[dict], list[dict]]:
    """A finished prompt's images (ComfyUI's output entries, in node order): the saved ones, and the job's mask previews."""
    images = [(node, image) for node, output in sorted(outputs.items()) for image in output.get("images", [])]
    return [image for _, image in images if image.get("type") == "output"], [image for node, image in images if node in item.previews]


def write_outputs(out: Path, item: Prepared, saved: list[tuple[str, bytes]], previews: list[tuple[str, bytes]]) -> list[str]:
    """Write a job's saved images and mask previews (``(file name it had, bytes)``) as ``<image stem>/<job id>.png``,
    ``<job id>_masks.png`` (``_2``, ... when there are several), each whole or not at all; their paths below ``out``."""
    names = [f"{item.job.id}{'' if len(saved) == 1 else f'_{k}'}" for k in range(1, len(saved) + 1)]
    names += [f"{item.job.id}_masks{'' if len(previews) == 1 else f'_{k}'}" for k in range(1, len(previews) + 1)]
    folder = out / item.job.image.stem
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (filename, blob) in zip(names, saved + previews):
        path = folder / f"{name}{Path(filename).suffix or '.png'}"
        part = path.with_name(path.name + ".part")
        part.write_bytes(blob)
        os.replace(part, path)
        written.append(str(path.relative_to(out)))
    return written


class BatchRun:
    """What a batch's run keeps, however its jobs are executed: the jobs left, the results log, the counts, losses,
    ``--strict``, and the progress lines (one line per finished job; the bar, on a terminal, redrawn in place)."""

    def __init__(self, items: list[Prepared], results: ResultsLog, strict: bool = False, stream=sys.stderr):
        self.pending = deque(items)
        self.total = len(items)
        self.results = results
        self.strict = strict
        self.stream = stream
        self.tty = stream.isatty()
        self.in_flight = 0
        self.ok = self.failed = self.warned = 0
        self.losses: dict[str, int] = {}
        self.gave_up = ""

    def _finished(self) -> bool:
        return bool(self.gave_up) or (not self.pending and not self.in_flight)

    def _lost(self, item: Prepared, what: str, where: str, error) -> str:
        """A job whose ``what`` (server, worker) was lost goes back to the queue, or, the MAX_LOSSES-th time, is recorded
        as failed; says which."""
        key = item.job.key
        self.losses[key] = self.losses.get(key, 0) + 1
        if self.losses[key] < MAX_LOSSES:
            self.pending.appendleft(item)
            return f"{key} goes back to the queue"
        self._record(result_row(item, "error", where, 0.0, error=f"the {what} was lost {MAX_LOSSES} times while running it, last: {error}"))
        return f"{key} was on a lost {what} {MAX_LOSSES} times: recorded as failed"

    def _record(self, row: dict) -> None:
        self.results.append(row)
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self.warned += bool(row["warnings"])
        detail = f"{row['seconds']:.1f} s" if row["status"] == "ok" else row["error"]
        if row["warnings"] and row["status"] == "ok":
            detail += f", {len(row['warnings'])} warning(s): " + " | ".join(row["warnings"])
        self._say(f"[{self.ok + self.failed}/{self.total}] {row['status']:<5} {row['job']} on {row['server']}: {detail}")
        if not self.tty:
            self._say(self.status())

    def _bar(self, rate: float) -> str:
        """The batch's part of the progress line; ``rate``: jobs per minute of the servers or workers now running."""
        left = self.total - self.ok - self.failed
        eta = f"ETA {_duration(60 * left / rate)}" if rate and left else ("ETA -" if left else "done")
        done = self.ok + self.failed
        bar = "#" * (20 * done // max(self.total, 1))
        warned = f", {self.warned} with warnings" if self.warned else ""
        return f"[{bar:.<20}] {done}/{self.total} finished ({self.failed} failed{warned}), {self.in_flight} running, {rate:.1f} jobs/min, {eta}"

    def status(self) -> str:
        """The whole progress line: ``_bar`` and each server's or worker's part."""
        raise NotImplementedError

    def _say(self, line: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def _redraw(self) -> None:
        self.stream.write("\r\033[K" + self.status()[:200])
        self.stream.flush()


@dataclass
class Server:
    client: ComfyClient
    local: object = None  # the LocalComfyUI behind it, when we started it
    down_since: float | None = None
    retry_at: float = 0.0
    losses: int = 0
    done: int = 0
    busy_s: float = 0.0
    running: str = ""  # the key of the job it runs
    checked: bool = False  # it has every node class the graphs use
    excluded: str = ""  # why it gets no jobs (nodes missing)
    step: tuple = ()
    uploaded: set = field(default_factory=set)
    abandoned: list = field(default_factory=list)  # our prompt ids it may still hold after it was lost

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def gone(self) -> bool:
        """It will take no more jobs: it lacks nodes, or it is our own local server and it exited."""
        return bool(self.excluded) or (self.local is not None and self.local.process.poll() is not None)

    def on_event(self, event: str, data: dict) -> None:
        if event == "progress":
            self.step = (data.get("value"), data.get("max"))

    def status(self, now: float) -> str:
        rate = f"{60 * self.done / self.busy_s:.1f}/min" if self.busy_s else "-/min"
        if self.excluded:
            return f"{self.name} unused"
        if self.down_since is not None:
            return f"{self.name} down, {'gone' if self.gone else f'retry in {max(0, self.retry_at - now):.0f} s'}"
        step = f" step {self.step[0]}/{self.step[1]}" if self.running and self.step else ""
        return f"{self.name} {self.done} done {rate}{step}"


class Dispatcher(BatchRun):
    """Runs ``items`` on the servers at ``urls`` (``local``: the LocalComfyUI behind the only url, when we started it)."""

    def __init__(self, items: list[Prepared], urls: list[str], results: ResultsLog, subfolder: str, local=None,
                 timeout: float = 60, heartbeat: float = 10, give_up_s: float = 600, strict: bool = False, stream=sys.stderr):
        super().__init__(items, results, strict, stream)
        self.classes = {node["class_type"] for item in items for node in item.graph.values()}
        self.urls, self.local, self.timeout = urls, local, timeout
        self.servers: list[Server] = []
        self.subfolder = subfolder
        self.heartbeat = heartbeat
        self.give_up_s = give_up_s
        self.run_id = uuid.uuid4().hex

    # -- the loop ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every pending job; on cancellation (Ctrl-C) take our prompts off the servers and re-raise."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # stop as on Ctrl-C
        async with aiohttp.ClientSession() as session:
            client_id = uuid.uuid4().hex
            self.servers = [Server(ComfyClient(url, session, client_id, self.timeout), self.local) for url in self.urls]
            await self._run_workers()

    async def _run_workers(self) -> None:
        workers = [asyncio.create_task(self._worker(server)) for server in self.servers]
        ticker = asyncio.create_task(self._tick()) if self.tty else None
        try:
            await asyncio.gather(*workers)
            if self.pending and not self.gave_up:
                self.gave_up = "no server can take the jobs"
        except asyncio.CancelledError:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._take_back()
            raise
        finally:
            if ticker:
                ticker.cancel()
            for server in self.servers:
                await server.client.close()
            if self.tty:
                self.stream.write("\n")

    async def _worker(self, server: Server) -> None:
        while not self._finished() and not server.excluded:
            if server.down_since is not None:
                await self._retry(server)
                continue
            if not server.checked:
                await self._check(server)
                continue
            if not self.pending:
                await asyncio.sleep(0.5)  # a job may come back from a lost server
                continue
            item = self.pending.popleft()
            self.in_flight += 1
            row = None
            try:
                row = await self._run(server, item)
            except ServerLost as error:
                self._lost_on(server, item, error)
            finally:
                self.in_flight -= 1
            if row:
                self._record(row)

    async def _check(self, server: Server) -> None:
        """Before its first job (and after it comes back): a server without the graphs' nodes gets no jobs."""
        try:
            missing = await server.client.missing_nodes(self.classes)
        except ServerLost as error:
            self._down(server)
            self._say(f"{server.name} does not answer ({error}); retrying in {RETRY_AFTER_S[0]} s")
            return
        server.checked = True
        if missing:
            server.excluded = (f"lacks the node(s) {', '.join(missing)} (is the pack in its custom_nodes/{PACK_FOLDER}, "
                               "and every pack the workflow uses?)")
            self._say(f"{server.name} {server.excluded}: it gets no jobs")

    def _no_server_left(self, now: float) -> str:
        """Why the batch must stop, or '' while a server may still take jobs."""
        if any(s.down_since is None and not s.excluded for s in self.servers):
            return ""
        if all(s.gone for s in self.servers):
            return "no server can take the jobs"
        since = max(s.down_since for s in self.servers if s.down_since is not None)
        return f"no server answered for {self.give_up_s:.0f} s" if now - since > self.give_up_s else ""

    def _down(self, server: Server) -> None:
        server.down_since = time.monotonic()
        server.losses += 1
        server.retry_at = server.down_since + RETRY_AFTER_S[0]
        server.running, server.step = "", ()

    async def _retry(self, server: Server) -> None:
        now = time.monotonic()
        self.gave_up = self._no_server_left(now)
        if self.gave_up:
            return
        if server.gone or now < server.retry_at:
            await asyncio.sleep(0.5)
            return
        try:
            await server.client.system_stats()
            await server.client.cancel(server.abandoned)
        except ServerLost as error:
            server.losses += 1
            server.retry_at = time.monotonic() + RETRY_AFTER_S[min(server.losses, len(RETRY_AFTER_S)) - 1]
            self._say(f"{server.name} still not answering ({error})")
            return
        server.abandoned.clear()
        server.uploaded.clear()  # it may be another machine now, or its input folder was cleaned
        server.down_since, server.losses, server.checked = None, 0, False
        self._say(f"{server.name} answers again: it takes jobs again")

    def _lost_on(self, server: Server, item: Prepared, error: ServerLost) -> None:
        self._down(server)
        self._say(f"{server.name} lost ({error}): {self._lost(item, 'server', server.name, error)}; retrying {server.name} in {RETRY_AFTER_S[0]} s")

    async def _run(self, server: Server, item: Prepared) -> dict:
        client = server.client
        started = time.monotonic()
        await client.open()
        for path, name in item.uploads.items():
            if name not in server.uploaded:
                folder, _, file = name.rpartition("/")
                await client.upload(path.read_bytes(), file, folder)
                server.uploaded.add(name)
        prompt_id = str(uuid.uuid4())
        server.running, server.step = item.job.key, ()
        try:
            await client.submit(item.graph, prompt_id, {"leakfree_batch": {"batch": self.subfolder, "run": self.run_id, "job": item.job.key}})
            outcome = await client.wait(prompt_id, server.on_event, self.heartbeat)
            if outcome.status != "success":
                return result_row(item, "error", server.name, time.monotonic() - started, prompt_id, error=outcome.message)
            outputs = await self._fetch(client, item, outcome.entry)
        except PromptRefused as refused:
            return result_row(item, "error", server.name, time.monotonic() - started, prompt_id, error=str(refused))
        except (ServerLost, asyncio.CancelledError):  # lost, or Ctrl-C: the prompt may still be queued or running there
            server.abandoned.append(prompt_id)
            raise
        finally:
            server.running, server.step = "", ()
        seconds = time.monotonic() - started
        server.done += 1
        server.busy_s += seconds
        return result_row(item, "ok" if outputs else "error", server.name, seconds, prompt_id, outputs,
                          "" if outputs else NO_IMAGE, job_warnings(outcome.entry["outputs"]), self.strict)

    async def _fetch(self, client: ComfyClient, item: Prepared, entry: dict) -> list[str]:
        """Download the saved images and the mask preview; write them, each whole or not at all."""
        saved, previews = output_images(item, entry["outputs"])
        if not saved:
            return []
        blobs = [await client.view(image) for image in saved + previews]  # everything fetched before anything is written
        files = [(image["filename"], blob) for image, blob in zip(saved + previews, blobs)]
        return write_outputs(self.results.out, item, files[: len(saved)], files[len(saved):])

    async def _take_back(self) -> None:
        """After Ctrl-C: our running and queued prompts leave the servers (best effort, a few seconds at most)."""
        for server in self.servers:
            if server.abandoned:
                try:
                    await asyncio.wait_for(server.client.cancel(server.abandoned), 5)
                except (ServerLost, asyncio.TimeoutError):
                    pass

    # -- progress ------------------------------------------------------------------------------------------------

    def status(self) -> str:
        now = time.monotonic()
        rate = sum(60 * s.done / s.busy_s for s in self.servers if s.busy_s and s.down_since is None)
        return f"{self._bar(rate)} | " + " | ".join(s.status(now) for s in self.servers)

    async def _tick(self) -> None:
        while True:
            self._redraw()
            await asyncio.sleep(1)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"

