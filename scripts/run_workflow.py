"""Run an API-format workflow headless with ComfyUI's own executor: validation, caching, V1 and V3 nodes as in the app.

    python3 scripts/run_workflow.py                       # the painted-masks example on a random-weight SD1.5 checkpoint
    python3 scripts/run_workflow.py --ckpt ~/models/checkpoints/dreamshaper_8.safetensors
    python3 scripts/run_workflow.py api_workflows/edit_grounded_sam_sd15.json --edits "tree -> tree with golden leaves" --steps 20

The graph runs in this process on the ComfyUI found by scripts/comfy_env.py (the one the pack
is installed in, or the cached ComfyUI 0.3.64), with the pack loaded by ComfyUI's own loader
and models from that ComfyUI's model folders. With no --ckpt, the checkpoint is a random-weight
SD1.5 file in the original single-file layout, written once into a cache folder (the image is
noise, but every loader and node runs for real). Input files are looked up in --input-dir
(default: example_inputs/), images are saved to --output-dir.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import comfy_client
import comfy_env
import workflow_slots

DEFAULT_WORKFLOW = comfy_env.ROOT / "api_workflows" / "edit_painted_masks_sd15.json"
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
                comfy_env.load_nodes(None if comfy_env.in_custom_nodes_folders() else comfy_env.ROOT)
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
            return RunResult(False, comfy_client.validation_message(error, node_errors), seconds=time.perf_counter() - started)
        self._executor.execute(graph, prompt_id, {}, outputs)
        failure = next((data for event, data in self._executor.status_messages if event == "execution_error"), None)
        message = comfy_client.execution_message(failure) if failure else ""
        return RunResult(self._executor.success, message, self._executor.history_result.get("outputs", {}), time.perf_counter() - started)


def set_inputs(graph: dict, edits: str | None = None, steps: int | None = None, ckpt_name: str | None = None) -> dict:
    """A copy of ``graph`` with the edit list, step count and checkpoint put where scripts/workflow_slots.py finds them."""
    slots = workflow_slots.find_slots(graph, "the workflow")
    settings = {name: value for name, value in (("steps", steps), ("ckpt", ckpt_name)) if value is not None}
    problems = slots.problems(set(settings), False, set())
    if problems:
        raise workflow_slots.WorkflowError("the workflow", problems)
    graph = json.loads(json.dumps(graph))
    slots.apply(graph, edits, settings)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow JSON")
    parser.add_argument("--ckpt", type=Path, help="an SD1.5/SDXL checkpoint file; none = a random-weight SD1.5 checkpoint")
    parser.add_argument("--input-dir", type=Path, default=comfy_env.ROOT / "example_inputs", help="where LoadImage/LoadImageMask files are")
    parser.add_argument("--output-dir", type=Path, default=Path("output"), help="where SaveImage writes")
    parser.add_argument("--edits", help="replace the edit list (one 'source -> target' per line; '\\n' separates lines)")
    parser.add_argument("--steps", type=int, help="replace the sampler's step count")
    parser.add_argument("--size", type=int, help="run at this square size: input images resized, image-scale nodes set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    comfy_env.prepare_comfy(base_directory=None)
    import folder_paths

    if args.ckpt:
        folder_paths.add_model_folder_path("checkpoints", str(args.ckpt.resolve().parent), is_default=True)
    else:
        import model_files

        random_checkpoint = model_files.write_model_files(Path(tempfile.mkdtemp(prefix="leakfree-models-")), only=("checkpoints",))["checkpoints"]
        folder_paths.add_model_folder_path("checkpoints", str(random_checkpoint.parent), is_default=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(args.output_dir.resolve()))
    try:
        graph = set_inputs(json.loads(args.workflow.read_text()), args.edits.replace("\\n", "\n") if args.edits else None, args.steps,
                           args.ckpt.name if args.ckpt else None)
    except workflow_slots.WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    input_dir = args.input_dir.resolve()
    if args.size:
        scratch = Path(tempfile.mkdtemp(prefix="leakfree-inputs-"))
        graph = scale_inputs(graph, args.size, input_dir, scratch)
        input_dir = scratch
    folder_paths.set_input_directory(str(input_dir))

    print(f"running {args.workflow.name} on {'checkpoint ' + str(args.ckpt) if args.ckpt else 'a random-weight SD1.5 checkpoint'}", flush=True)
    result = Runner().run(graph)
    if not result.success:
        print(f"failed after {result.seconds:.1f} s: {result.error}", file=sys.stderr)
        return 1
    saved = [image["filename"] for output in result.outputs.values() for image in output.get("images", []) if image.get("type") == "output"]
    print(f"done in {result.seconds:.1f} s: {len(saved)} image(s) in {args.output_dir}/: {', '.join(saved)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
