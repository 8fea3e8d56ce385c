"""Test material shared by the sampling tests: the example edit, prompt encoding, object masks."""
import torch

EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"


def encode(clip, text):
    """CLIPTextEncode's output, for negatives and plain prompts."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def object_masks(height=96, width=128):
    """Two objects for EDITS: the wolf top-left, the moon bottom-right, background in between."""
    masks = torch.zeros(2, height, width)
    masks[0, : height // 2, : width // 3] = 1
    masks[1, height // 2 :, width // 2 :] = 1
    return masks


def pack_node_classes() -> dict:
    """The pack's node classes by key, as ComfyUI registers them: run its ``__init__`` and its ``comfy_entrypoint``."""
    import asyncio
    import importlib

    pack = importlib.import_module("leakfree_edit")
    pack.__spec__.loader.exec_module(pack)
    extension = asyncio.run(pack.comfy_entrypoint())
    return {node.GET_SCHEMA().node_id: node for node in asyncio.run(extension.get_node_list())}
