"""Test set-up for every tier: the pack importable as ``leakfree_edit`` (without running its ``__init__``), the shared
fixtures of harness/fixtures.py, denormals flushed, and each test marked with its tier (the folder it lives in).

Tiers: ``unit`` (pure torch and Python, no ComfyUI), ``comfy_nodes`` (nodes and graphs in this process),
``comfy_server`` (ComfyUI's real server over HTTP), ``browser`` (its frontend in Chromium). Nothing here imports
ComfyUI: the conftests of the tiers that need it set it up.
"""
from pathlib import Path

import torch

from harness.comfy_env import register_pack

pytest_plugins = ["harness.fixtures"]
TIERS = ("unit", "comfy_nodes", "comfy_server", "browser")

register_pack()
torch.set_flush_denormal(True)  # random weights make denormals: 10x slower on the CPU


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(here).parts[0]
        if tier not in TIERS:
            raise RuntimeError(f"{item.nodeid}: tests live in one of the tier folders {', '.join(f'tests/{t}/' for t in TIERS)}")
        item.add_marker(tier)
