"""Thin ComfyUI node classes; each module registers its own nodes."""
from importlib import import_module

NODE_MODULES = ("encode", "painted_masks", "loaders", "grounded_sam", "region_attention", "background_blend", "rebalance", "anchoring", "attention_masks", "dual_branch")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _name in NODE_MODULES:
    _module = import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
