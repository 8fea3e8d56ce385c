"""ComfyUI-LeakFreeEdit: multi-object image editing without attribute leakage (registration only)."""
from comfy_api.latest import ComfyExtension

from .nodes import NODES

WEB_DIRECTORY = "./js"


class LeakFreeEdit(ComfyExtension):
    async def get_node_list(self):
        return NODES


async def comfy_entrypoint() -> LeakFreeEdit:
    return LeakFreeEdit()
