"""A ComfyUI on this machine: where its checkout is, and its ``main.py`` started as a child process.

The batch command starts such a server when it is given none; the harness starts them for the tests, the
thumbnails and the benchmarks. The checkout is found in this order: ``$COMFYUI_PATH``; the ComfyUI two folders
up when the pack sits in ``ComfyUI/custom_nodes/`` (the normal install); the ComfyUI 0.3.64 source tarball from
``shared/comfyui/`` beside the checkout (or ``$COMFYUI_ARCHIVE``), unpacked once into a cache folder.
Standard library only: nothing here imports torch or ComfyUI.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the pack's checkout
PACK_FOLDER = "ComfyUI-LeakFreeEdit"  # the folder name users clone the pack as, in ComfyUI/custom_nodes/
TESTED_VERSION = "0.3.64"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "comfyui-leakfreeedit"
ARCHIVE = f"ComfyUI-{TESTED_VERSION}.tar.gz"


class NoComfyUI(RuntimeError):
    pass


def is_comfyui(path: Path) -> bool:
    return all((path / name).exists() for name in ("main.py", "nodes.py", "folder_paths.py", "comfy"))


def find_comfyui(unpack: bool = True) -> Path:
    """The ComfyUI checkout to run against (see the module docstring for the order)."""
    if os.environ.get("COMFYUI_PATH"):
        path = Path(os.environ["COMFYUI_PATH"]).expanduser().resolve()
        if not is_comfyui(path):
            raise NoComfyUI(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no main.py, nodes.py, comfy/ there).")
        return path
    if ROOT.parent.name == "custom_nodes" and is_comfyui(ROOT.parent.parent):
        return ROOT.parent.parent
    cached = CACHE / f"ComfyUI-{TESTED_VERSION}" / "ComfyUI"
    if is_comfyui(cached):
        return cached
    archive = Path(os.environ.get("COMFYUI_ARCHIVE") or ROOT.parent / "shared" / "comfyui" / ARCHIVE)
    if not archive.is_file():
        raise NoComfyUI(
            "no ComfyUI found: set COMFYUI_PATH to your ComfyUI checkout, clone the pack into ComfyUI/custom_nodes/, "
            f"or put {ARCHIVE} at {archive} (or name it in COMFYUI_ARCHIVE)."
        )
    if not unpack:
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=CACHE))
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    staging.rename(cached.parent)  # atomic: a half-unpacked tree is never taken for a checkout
    return cached


def comfyui_version(path: Path) -> str:
    text = (path / "comfyui_version.py").read_text() if (path / "comfyui_version.py").exists() else ""
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def installed_in_comfyui() -> bool:
    """True when the pack sits in the custom_nodes folder of the ComfyUI it runs on (ComfyUI loads it from there)."""
    return ROOT.parent.name == "custom_nodes" and ROOT.parent.parent.resolve() == find_comfyui().resolve()


def _die_with_parent() -> None:
    """In the child, before ComfyUI starts: SIGTERM when the process that started it dies, even when it is killed."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalComfyUI:
    """ComfyUI's own ``main.py`` as a child process, listening on a free loopback port."""

    def __init__(self, comfyui: Path, args: list[str], log_path: Path, port: int | None = None, env: dict | None = None):
        self.comfyui = comfyui
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        command = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                   "--log-stdout", *args]
        self.process = subprocess.Popen(command, cwd=comfyui, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def wait_ready(self, timeout: float = 180) -> "LocalComfyUI":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/system_stats", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer in {timeout} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
