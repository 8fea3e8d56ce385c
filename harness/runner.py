"""ComfyUI's own executor in this process, for graphs in API format: validation, caching, V1 and V3 nodes as in the
app, models kept loaded between graphs (the headless runner scripts/run_workflow.py, the ALE-Bench runner, the tests).
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.client import execution_message, validation_message
from pipelines.comfyui import ROOT
from pipelines.slots import PACK_PREFIX, WorkflowError, is_link

from . import comfy_env

IMAGE_INPUTS = {("LoadImage", "image"), ("LoadImageMask", "image")}
SIZE_INPUTS = {"ImageScale": ("width", "height"), "EmptyLatentImage": ("width", "height")}


@dataclass
class RunResult:
    success: bool
    error: str = ""  # the failing node's message, as the app's error dialog shows it
    outputs: dict = field(default_factory=dict)  # node id -> UI output (saved images, previews)
    seconds: float = 0.0


class HeadlessServer:
    """What ``execution.PromptExecutor`` asks of the server: no client is connected, progress goes to the log."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        if event == "executing" and data.get("node") is not None:
            logging.debug("executing node %s", data["node"])

    def queue_updated(self):
        pass


@contextlib.contextmanager
def quiet_logs():
    """Hold back ComfyUI's log records (yields them) while the block runs."""
    held: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = held.append
    root, level = logging.getLogger(), logging.getLogger().level
    saved, root.handlers = root.handlers, [handler]
    root.setLevel(logging.INFO)
    try:
        yield held
    finally:
        root.handlers = saved
        root.setLevel(level)


class Runner:
    """One ComfyUI executor for many graphs: models stay loaded and unchanged nodes stay cached between runs."""

    def __init__(self):
        import execution

        with quiet_logs() as held:  # ComfyUI's own notes while loading (e.g. its audio nodes without torchaudio)
            try:
                comfy_env.load_nodes(None if comfy_env.in_custom_nodes_folders() else ROOT)
            except RuntimeError:
                print("\n".join(record.getMessage() for record in held), file=sys.stderr)
                raise
        self._execution = execution
        self._executor = execution.PromptExecutor(HeadlessServer(), cache_type=execution.CacheType.CLASSIC)

    def run(self, graph: dict) -> RunResult:
        import asyncio

        started = time.perf_counter()
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self._execution.validate_prompt(prompt_id, graph, None))
        if not valid:
            return RunResult(False, validation_message(error, node_errors), seconds=time.perf_counter() - started)
        self._executor.execute(graph, prompt_id, {}, outputs)
        failure = next((data for event, data in self._executor.status_messages if event == "execution_error"), None)
        message = execution_message(failure) if failure else ""
        return RunResult(self._executor.success, message, self._executor.history_result.get("outputs", {}), time.perf_counter() - started)


def set_inputs(graph: dict, edits: str | None = None, steps: int | None = None, ckpt_name: str | None = None) -> dict:
    """A copy of ``graph`` with the edit list in the pack's encoder, the step count in every sampler and scheduler and
    the checkpoint in every checkpoint loader (the measuring template's two samplers, LeakFree and unpatched, stay
    alike). Raises WorkflowError when no node takes one of them, or two encoders could take the edit list."""
    graph = json.loads(json.dumps(graph))
    problems = []
    if edits is not None:
        encoders = [n for n, node in graph.items() if node["class_type"].startswith(PACK_PREFIX) and isinstance(node["inputs"].get("edits"), str)]
        if len(encoders) == 1:
            graph[encoders[0]]["inputs"]["edits"] = edits
        else:
            problems.append(f"{len(encoders) or 'no'} nodes of the pack take the edit list ('edits'){': ' + ', '.join(encoders) if encoders else ''}")
    for name, value in (("steps", steps), ("ckpt_name", ckpt_name)):
        if value is None:
            continue
        takers = [node for node in graph.values() if name in node["inputs"] and not is_link(node["inputs"][name])]
        if not takers:
            problems.append(f"no node takes '{name}'")
        for node in takers:
            node["inputs"][name] = value
    if problems:
        raise WorkflowError("the workflow", problems)
    return graph


def scale_inputs(graph: dict, size: int, input_dir: Path, scratch: Path) -> dict:
    """Run ``graph`` at ``size`` px: resized copies of its input images in ``scratch``, image-scale nodes set to ``size``."""
    from PIL import Image

    graph = json.loads(json.dumps(graph))
    for node in graph.values():
        inputs = node["inputs"]
        if any((node["class_type"], name) in IMAGE_INPUTS for name in inputs):
            name = inputs["image"]
            with Image.open(input_dir / name) as image:
                image.resize((size, size), Image.Resampling.NEAREST if name.endswith(".png") else Image.Resampling.LANCZOS).save(scratch / name)
        for name in SIZE_INPUTS.get(node["class_type"], ()):
            inputs[name] = size
    return graph
