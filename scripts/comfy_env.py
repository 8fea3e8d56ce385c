"""Set-up shared by the headless runner, the benchmarks and the tests: ComfyUI on this machine and the pack as a package."""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "leakfree_edit"


def prepare_comfy() -> None:
    """Environment for importing ComfyUI outside its server: CPU when there is no GPU, scratch folders in /tmp."""
    import torch

    os.environ.setdefault("COMFYUI_CWD", tempfile.mkdtemp(prefix="leakfree-comfy-"))
    if not torch.cuda.is_available():
        os.environ.setdefault("COMFYUI_CPU", "1")
        os.environ.setdefault("COMFYUI_USE_PYTORCH_CROSS_ATTENTION", "1")  # ~2x faster than sub-quadratic on the CPU
    torch.set_flush_denormal(True)  # random weights make denormals: 10x slower on the CPU


def register_pack():
    """Make the checkout importable as ``leakfree_edit`` (ComfyUI imports it as a package by path)."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        sys.modules[PACK] = importlib.util.module_from_spec(spec)
    return sys.modules[PACK]


EXTRA_NODE_MODULES = ("nodes_custom_sampler", "nodes_model_advanced")  # SamplerCustomAdvanced, KSamplerSelect, ModelSamplingDiscrete, ...


def comfy_core():
    """(core node classes, folder_paths): a ComfyUI checkout on sys.path, else the PyPI ``comfyui`` package."""
    try:
        import folder_paths
        import nodes

        extras = "comfy_extras.{}"
    except ImportError:
        from comfy.cmd import folder_paths
        from comfy.nodes import base_nodes as nodes

        extras = "comfy_extras.nodes.{}"
    classes = dict(nodes.NODE_CLASS_MAPPINGS)
    for name in EXTRA_NODE_MODULES:
        classes.update(importlib.import_module(extras.format(name)).NODE_CLASS_MAPPINGS)
    return classes, folder_paths


def node_classes() -> dict:
    """Every node class a workflow of this pack uses: ComfyUI's core and sampler nodes, and the pack's."""
    prepare_comfy()
    register_pack()
    core, _ = comfy_core()
    pack = importlib.import_module(f"{PACK}.nodes")
    return {**core, **pack.NODE_CLASS_MAPPINGS}
