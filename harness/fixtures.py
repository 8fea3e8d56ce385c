"""The test suite's shared fixtures, a pytest plugin (tests/conftest.py loads it). Nothing here imports ComfyUI
when the plugin loads: the unit tier runs without it; the other tiers' conftests set ComfyUI up first
(:func:`harness.comfy_env.prepare_for_tests`) and the fixtures import it when a test asks for them."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from pipelines.comfyui import ROOT, comfyui_version, find_comfyui

E2E_REPORT: "collections.Counter[str]" = collections.Counter()


def pytest_report_header(config):
    comfyui = find_comfyui()
    return f"ComfyUI under test: {comfyui_version(comfyui)} at {comfyui}"


def pytest_terminal_summary(terminalreporter):
    if E2E_REPORT:
        terminalreporter.section("end to end, on ComfyUI " + comfyui_version(find_comfyui()))
        for what, count in E2E_REPORT.items():
            terminalreporter.write_line(f"{count} {what}")


@pytest.fixture(scope="session")
def e2e_report():
    """Counts of what the end-to-end tests checked, printed at the end of the run."""
    return E2E_REPORT


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
def comfyui() -> Path:
    """The ComfyUI checkout under test, set up in this process."""
    from .comfy_env import prepare_for_tests

    return prepare_for_tests()


@pytest.fixture(scope="session")
def models(comfyui):
    """Random-weight ComfyUI models, built once: ``models.unet("sd15")``, ``models.clip("sdxl")``."""
    from .random_models import RandomModels

    return RandomModels()


@pytest.fixture(scope="session")
def pack_nodes(comfyui) -> dict:
    """The pack's node classes by key, as ComfyUI registers them from its ``comfy_entrypoint``."""
    from .editing import pack_node_classes

    return pack_node_classes()


@pytest.fixture(scope="session")
def server_base(comfyui, tmp_path_factory) -> Path:
    """A ComfyUI base folder with random-weight model files in the real formats, the metric models among them."""
    from . import model_files
    from .metric_model_files import write_metric_models

    base = tmp_path_factory.mktemp("comfy-base")
    model_files.write_model_files(base / "models")
    write_metric_models(base / "models" / "leakage_metrics")
    return base


@pytest.fixture(scope="session")
def comfy_server(comfyui, server_base):
    from .server import ComfyServer

    server = ComfyServer(comfyui, server_base, ROOT).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def metric_model_folder(tmp_path_factory) -> Path:
    """Random-weight metric models (CLIP, DINO, SqueezeNet) in their release formats."""
    from .metric_model_files import write_metric_models

    return write_metric_models(tmp_path_factory.mktemp("leakage_metrics"))


@pytest.fixture(scope="session")
def leakage_case():
    from .editing import leakage_case

    return leakage_case()


@pytest.fixture(scope="session")
def bert_tokenizer():
    """bert-base-uncased's tokenizer from the vocabulary shipped in an installed package."""
    from leakfree_edit.masking.bert import load_bert_tokenizer

    from .gsam_models import shipped_vocab_dir

    return load_bert_tokenizer(shipped_vocab_dir())


@pytest.fixture(scope="session")
def small_detector(bert_tokenizer):
    """groundingdino-py's model at a small width (random weights) behind the pack's detector."""
    import torch

    from leakfree_edit.masking.grounding_dino import GroundingDinoDetector

    from .gsam_models import small_grounding_dino

    torch.manual_seed(0)
    return GroundingDinoDetector(small_grounding_dino(bert_tokenizer), bert_tokenizer, short_side=224)


@pytest.fixture(scope="session")
def tiny_segmenter():
    """segment-anything's SAM at a tiny width (random weights) behind the pack's segmenter."""
    import torch

    from leakfree_edit.masking.sam import SamSegmenter

    from .gsam_models import tiny_sam

    torch.manual_seed(0)
    return SamSegmenter(tiny_sam())


@pytest.fixture(scope="session")
def photo(example_inputs):
    """A real ALE-Bench photo, 160 x 240 (not square), [H, W, 3] in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    image = Image.open(example_inputs / "artificial_img01.jpg").convert("RGB").resize((240, 160))
    return torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0)
