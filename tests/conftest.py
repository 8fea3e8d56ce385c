"""Test set-up: load the pack as the package ``leakfree_edit`` and make random-weight models fast."""
import collections
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import comfy_env  # noqa: E402

ROOT = comfy_env.ROOT
COMFYUI = comfy_env.prepare_comfy(base_directory=tempfile.mkdtemp(prefix="leakfree-comfy-"))
comfy_env.register_pack()  # without running __init__: attention/ and masking/ import without ComfyUI


def pytest_report_header(config):
    return f"ComfyUI under test: {comfy_env.comfyui_version(COMFYUI)} at {COMFYUI}"


@pytest.fixture(scope="session")
def example_inputs() -> Path:
    """The ALE-Bench images and masks the pack ships for its example workflows."""
    return ROOT / "example_inputs"


@pytest.fixture(scope="session")
def shared_ale_bench() -> Path:
    """The shared ALE-Bench half (1,500 edits): ``$LEAKFREE_ALE_BENCH`` (CI sets it and then requires it), else beside the checkout."""
    required = os.environ.get("LEAKFREE_ALE_BENCH")
    folder = Path(required or ROOT.parent / "shared" / "ale_bench")
    if not folder.is_dir():
        if required:
            pytest.fail(f"LEAKFREE_ALE_BENCH={required} is not a folder")
        pytest.skip(f"no ALE-Bench copy at {folder} (set LEAKFREE_ALE_BENCH)")
    return folder


@pytest.fixture(scope="session")
def models():
    """Random-weight ComfyUI models, built once: ``models.unet("sd15")``, ``models.clip("sdxl")``."""
    import random_models

    cache = {}

    def built(kind, build):
        if kind not in cache:
            cache[kind] = build(kind[1])
        return cache[kind]

    class Models:
        def unet(self, kind="sd15"):
            return built(("unet", kind), random_models.unet).clone()

        def clip(self, kind="sd15"):
            return built(("clip", kind), random_models.clip)

        def flux(self, kind="tiny"):
            return built(("flux", kind), random_models.flux).clone()

        def flux_clip(self):
            return built(("flux clip", None), lambda _: random_models.flux_clip())

    return Models()


@pytest.fixture(scope="session")
def comfyui() -> Path:
    return COMFYUI


@pytest.fixture(scope="session")
def pack_nodes() -> dict:
    """The pack's node classes by key, as ComfyUI registers them from its ``comfy_entrypoint``."""
    from leakfree_edit.tests._editing import pack_node_classes

    return pack_node_classes()


@pytest.fixture(scope="session")
def server_base(tmp_path_factory) -> Path:
    """A ComfyUI base folder with random-weight model files in the real formats."""
    import model_files

    base = tmp_path_factory.mktemp("comfy-base")
    model_files.write_model_files(base / "models")
    return base


@pytest.fixture(scope="session")
def comfy_server(server_base):
    from leakfree_edit.tests.comfy_server import ComfyServer

    server = ComfyServer(COMFYUI, server_base, ROOT).wait_ready()
    yield server
    server.stop()


E2E_REPORT: "collections.Counter[str]" = collections.Counter()


@pytest.fixture(scope="session")
def e2e_report():
    """Counts of what the end-to-end tests checked, printed at the end of the run."""
    return E2E_REPORT


def pytest_terminal_summary(terminalreporter):
    if E2E_REPORT:
        terminalreporter.section("end to end, on ComfyUI " + comfy_env.comfyui_version(COMFYUI))
        for what, count in E2E_REPORT.items():
            terminalreporter.write_line(f"{count} {what}")
