"""A real ComfyUI server for the end-to-end tests: ``main.py --cpu`` on a free loopback port, in a scratch base folder.

The base folder holds random-weight model files in the real formats (harness/model_files.py), the pack linked into
``custom_nodes/`` under the name users clone it as, the peer packs users run beside it (harness/peers.py) and the
test-only node files of harness/custom_nodes/. The
server runs with the pack's folder on ``PYTHONPATH`` so that those files import the harness. Nothing is written
into the ComfyUI checkout itself (the database is in memory). From ``wait_ready()`` to ``stop()`` the server's memory
is sampled (``peak_rss``, ``peak_anonymous``), and ``free()`` has it drop its models between workflows.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import psutil
import requests

from pipelines.comfyui import PACK_FOLDER, ROOT, LocalComfyUI

from .peers import peer_packs

TEST_NODES = Path(__file__).with_name("custom_nodes")
SAMPLE_S = 0.25  # how often the server's memory is read
# glibc raises its mmap threshold (up to 32 MB) each time a large block is freed, so after the first model is freed
# tensors land in the heap, whose freed pages it keeps: an idle server held 7.4 GB after POST /free. A fixed threshold
# puts every tensor above it in its own mapping, given back to the system when freed (glibc mallopt(3), M_MMAP_THRESHOLD).
SERVER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


class ComfyServer(LocalComfyUI):
    def __init__(self, comfyui: Path, base: Path, pack: Path, name: str = "server", port: int | None = None, args: tuple[str, ...] = ()):
        self.base = base
        custom_nodes = base / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        test_nodes = [(file.name, file) for file in sorted(TEST_NODES.glob("*_node.py"))]
        for link, target in [(PACK_FOLDER, pack), *peer_packs().items(), *test_nodes]:
            if not (custom_nodes / link).exists():
                (custom_nodes / link).symlink_to(target)
        super().__init__(comfyui, ["--cpu", "--use-pytorch-cross-attention", "--base-directory", str(base),
                                   "--database-url", "sqlite:///:memory:", *args], base / f"{name}.log", port,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                              **SERVER_MALLOC})
        self.peak_rss = self.peak_anonymous = 0  # bytes; anonymous = RSS less the mapped files' pages (model files)
        self.peak_since_mark = 0  # the peak RSS since mark()
        self._stopped, self._watcher = threading.Event(), None

    def wait_ready(self, timeout: float = 180) -> "ComfyServer":
        super().wait_ready(timeout)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name=f"rss of {self.log_path.stem}", daemon=True)
            self._watcher.start()
        return self

    def _watch(self) -> None:
        process = psutil.Process(self.process.pid)
        while not self._stopped.wait(SAMPLE_S):
            try:
                memory = process.memory_info()
            except psutil.Error:
                return
            self.peak_rss = max(self.peak_rss, memory.rss)
            self.peak_anonymous = max(self.peak_anonymous, memory.rss - memory.shared)
            self.peak_since_mark = max(self.peak_since_mark, memory.rss)

    def mark(self) -> None:
        """Start a new ``peak_since_mark`` (the peak of one workflow, say)."""
        self.peak_since_mark = 0

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def free(self, settle_s: float = 1.0, timeout: float = 30) -> int:
        """``POST /free`` (unload every model, clear the node cache): ComfyUI's prompt worker does it at once when idle.
        Returns the RSS once it has stopped falling for ``settle_s``."""
        requests.post(f"{self.url}/free", json={"unload_models": True, "free_memory": True}, timeout=60).raise_for_status()
        deadline, low, since = time.monotonic() + timeout, self.rss(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < settle_s:
            time.sleep(SAMPLE_S)
            now = self.rss()
            if now < low * 0.98:
                low, since = now, time.monotonic()
        return low

    def stop(self) -> None:
        self._stopped.set()
        super().stop()

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=60, **kwargs)

    def upload(self, path: Path, name: str | None = None, subfolder: str = "") -> dict:
        with open(path, "rb") as file:
            response = requests.post(f"{self.url}/upload/image", files={"image": (name or path.name, file)},
                                     data={"overwrite": "true", "subfolder": subfolder}, timeout=60)
        response.raise_for_status()
        return response.json()

    def queue(self, graph: dict) -> dict:
        """POST /prompt; returns the server's answer (prompt_id, or error and node_errors when validation fails)."""
        response = requests.post(f"{self.url}/prompt", json={"prompt": graph, "client_id": str(uuid.uuid4())}, timeout=60)
        return response.json()

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """The /history entry of ``prompt_id`` once it finished (status 'success' or 'error')."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str") in ("success", "error"):
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()[-3000:]}")

    def run(self, graph: dict, timeout: float = 600) -> dict:
        answer = self.queue(graph)
        if "prompt_id" not in answer:
            raise AssertionError(f"the server refused the graph: {json.dumps(answer, indent=1)[:3000]}")
        return self.wait(answer["prompt_id"], timeout)

    def image_bytes(self, entry: dict) -> list[bytes]:
        """The bytes of every saved output image of a finished prompt, through /view."""
        images = [image for output in entry["outputs"].values() for image in output.get("images", []) if image["type"] == "output"]
        return [self.get("/view", params=image).content for image in images]


def execution_error(entry: dict) -> dict | None:
    return next((data for event, data in entry["status"].get("messages", []) if event == "execution_error"), None)
