"""Test set-up: load the pack as the package ``leakfree_edit`` and make random-weight models fast."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import comfy_env  # noqa: E402

ROOT = comfy_env.ROOT
ALE_BENCH = ROOT.parent / "shared" / "ale_bench"
comfy_env.prepare_comfy()
comfy_env.register_pack()  # without running __init__: attention/ and masking/ import without ComfyUI


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
