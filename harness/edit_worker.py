"""One edit worker of the batch command's Ray mode: ComfyUI's executor in this process (harness/runner.py), with the
pack loaded and the models kept loaded between jobs; jobs come in as a graph plus the bytes of its input files, and go
back as the bytes of the images the graph saved and previewed, its error or warnings. Nothing is shared with the
driver but what travels through Ray: no shared filesystem.

The Ray actor (pipelines/ray_dispatch.py) builds it in its own worker process by import path, so the driver never
imports this module, torch or ComfyUI. ComfyUI is the one this node's copy of the pack finds (pipelines/comfyui.py:
``$COMFYUI_PATH``, the ComfyUI whose custom_nodes/ holds the pack, or the cached 0.3.64), with that ComfyUI's model
folders and its ``extra_model_paths.yaml`` as its server would read them, plus ``models`` (a models/ folder on the
node) and the ``custom_nodes`` (more packs, folders or .py files on the node).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from pathlib import Path

from pipelines.ray_dispatch import SCRATCH_PREFIX, sweep_scratch

from . import comfy_env


class EditWorker:
    def __init__(self, models: str | None = None, custom_nodes: tuple[str, ...] = ()):
        comfy_root = comfy_env.prepare_comfy()
        import folder_paths
        import utils.extra_config

        sweep_scratch()  # those of workers killed on this node before
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        for kind, setter in (("input", folder_paths.set_input_directory), ("output", folder_paths.set_output_directory),
                             ("temp", folder_paths.set_temp_directory)):
            (self.scratch / kind).mkdir()
            setter(str(self.scratch / kind))
        if (comfy_root / "extra_model_paths.yaml").is_file():  # as ComfyUI's main.py reads it
            utils.extra_config.load_extra_path_config(str(comfy_root / "extra_model_paths.yaml"))
        for folder in sorted(Path(models).iterdir()) if models else ():
            if folder.is_dir():
                folder_paths.add_model_folder_path(folder.name, str(folder), is_default=True)
        from .runner import Runner

        self.runner = Runner()
        if custom_nodes:
            import nodes

            for path in custom_nodes:
                if not asyncio.run(nodes.load_custom_node(str(path))):
                    raise RuntimeError(f"ComfyUI could not load the custom node {path} on {socket.gethostname()}")
        self.folder_paths = folder_paths

    def describe(self) -> dict:
        """Where this worker runs: its Ray node, host, process and device."""
        import ray
        import torch

        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}

    def run(self, graph: dict, names: list[str], *files: bytes) -> dict:
        """Run ``graph`` with its input files (``names[i]``, the name its loaders use, holds ``files[i]``).

        Returns ``success``, ``error`` (ComfyUI's message), ``seconds`` and ``outputs`` (node id -> UI output, as the
        prompt's history has them), and ``files``: ``(type, subfolder, filename)`` -> bytes of every image they list.
        """
        inputs = Path(self.folder_paths.get_input_directory())
        for name, data in zip(names, files):
            path = inputs / name
            if not path.is_file():  # content-addressed: a name already written holds these bytes
                path.parent.mkdir(parents=True, exist_ok=True)
                part = path.with_name(path.name + ".part")
                part.write_bytes(data)
                os.replace(part, path)
        result = self.runner.run(graph)
        images = {(image.get("type", "output"), image.get("subfolder", ""), image["filename"])
                  for output in result.outputs.values() for image in output.get("images", [])}
        # the files stay in the scratch folder until close(), as in a server's output folder: the executor's cache
        # lists the same files again when a graph it ran before runs again
        read = {(kind, subfolder, filename): (Path(self.folder_paths.get_directory_by_type(kind)) / subfolder / filename).read_bytes()
                for kind, subfolder, filename in images}
        return {"success": result.success, "error": result.error, "seconds": result.seconds, "outputs": result.outputs,
                "files": read}

    def close(self) -> None:
        """The end of the batch: the scratch folder (inputs, saved images, previews) goes."""
        shutil.rmtree(self.scratch, ignore_errors=True)
