"""Test set-up: load the pack as the package ``leakfree_edit`` and make random-weight models fast."""
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ALE_BENCH = SHARED / "ale_bench"

# The ComfyUI package writes input/ and models/ under its working directory.
os.environ.setdefault("COMFYUI_CWD", tempfile.mkdtemp(prefix="leakfree-comfy-"))
# No GPU in CI: ComfyUI must not probe CUDA (the installed torch is a CUDA build).
if not torch.cuda.is_available():
    os.environ.setdefault("COMFYUI_CPU", "1")
# Random weights produce denormal floats that make the CPU 10x slower.
torch.set_flush_denormal(True)


def _register_pack():
    """Make the checkout importable as ``leakfree_edit`` without running its ``__init__``.

    That keeps ``leakfree_edit.attention`` and ``leakfree_edit.masking`` importable
    without ComfyUI; tests of the registration import the root module themselves.
    """
    spec = importlib.util.spec_from_file_location(
        "leakfree_edit", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    sys.modules.setdefault("leakfree_edit", importlib.util.module_from_spec(spec))


sys.path.insert(0, str(ROOT / "scripts"))
_register_pack()


@pytest.fixture(scope="session")
def ale_bench() -> Path:
    if not ALE_BENCH.exists():
        pytest.skip("shared/ale_bench is not beside the checkout")
    return ALE_BENCH


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

    return Models()
