"""Batches for the pipeline tests: a folder of example edits in ALE-Bench's layout, and the batch command run as users
run it (``python3 -m scripts.batch_edit`` in the pack's folder)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.comfyui import ROOT

COLOURS = ["red", "green", "cyan", "gray", "brown", "black", "pink", "gold"]


def ale_layout(folder: Path, example_inputs: Path, jobs: int) -> Path:
    """A folder in ALE-Bench's layout with ``jobs`` edits of the example image: half one object, half two."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks" / "artificial_img03").mkdir(parents=True)
    (folder / "images" / "artificial_img03.jpg").write_bytes((example_inputs / "artificial_img03.jpg").read_bytes())
    for name in ("wolf", "moon"):
        (folder / "masks" / "artificial_img03" / f"{name}_mask.png").write_bytes((example_inputs / f"{name}_mask.png").read_bytes())
    for count in (1, 2):
        edits = [[["wolf", f"{c}-colored wolf"]] + ([["moon", f"{COLOURS[-1 - i]}-colored moon"]] if count == 2 else [])
                 for i, c in enumerate(COLOURS[count - 1::2][: jobs // 2])]
        prompts = {"image": "artificial_img03", "prompts": [{"index": i, "editing_types": ["color"], "edits": e} for i, e in enumerate(edits)]}
        (folder / "prompts" / str(count) / "color").mkdir(parents=True)
        (folder / "prompts" / str(count) / "color" / "artificial_img03_prompts.json").write_text(json.dumps(prompts))
    return folder


def _ctrl_c_reaches_it():
    """SIGINT as a terminal's Ctrl-C finds it: a test run started in the background (``pytest ... &``, a CI step's
    background shell) inherits SIGINT ignored, and Python then leaves it ignored in the batch."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_batch(*args, wait=True, timeout=900):
    command = [sys.executable, "-m", "scripts.batch_edit", *map(str, args)]
    if not wait:  # the tests stop it with SIGINT, as Ctrl-C does
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=_ctrl_c_reaches_it)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def rows(out: Path) -> list[dict]:
    """The rows of a batch's results.jsonl in ``out`` (none before the first)."""
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, timeout: float, what: str, process=None):
    """Poll ``condition`` until it holds; fail when ``timeout`` passes or the batch ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the batch exited ({process.returncode}) before {what}:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting until {what}")
