"""Registration: V3 nodes with prefixed keys, one category tree, names that agree, tooltips on every input, the
root registering through ``comfy_entrypoint`` only. The import graph is checked in tests/unit/test_layout.py."""
import importlib

from comfy_api.latest import io

from pipelines.comfyui import ROOT


def test_every_node_is_v3_described_prefixed_and_named_alike(pack_nodes):
    assert len(pack_nodes) == 21
    for key, node in pack_nodes.items():
        schema = node.GET_SCHEMA()
        assert issubclass(node, io.ComfyNode) and schema.node_id == key
        assert key == "LeakFree" + node.__name__
        assert schema.display_name.endswith(" (LeakFree)") and schema.category.startswith("LeakFreeEdit/")
        assert 40 < len(schema.description) < 400, f"{key}: a short description (the equations live in js/docs/{key}.md)"
        for group in node.INPUT_TYPES(include_hidden=False).values():
            for name, (_, options) in group.items():
                assert options.get("tooltip"), f"{key}.{name} has no tooltip"
        assert all(output.tooltip for output in schema.outputs), key


def test_errors_are_titled_with_the_pack_not_its_folder():
    from leakfree_edit.integration.errors import NodeInputError

    assert f"{NodeInputError.__module__}.{NodeInputError.__qualname__}" == "LeakFreeEdit.NodeInputError"


def test_the_root_registers_through_comfy_entrypoint_only():
    pack = importlib.import_module("leakfree_edit")
    pack.__spec__.loader.exec_module(pack)
    assert callable(pack.comfy_entrypoint) and not hasattr(pack, "NODE_CLASS_MAPPINGS")
    assert list((ROOT / pack.WEB_DIRECTORY).glob("*.js"))
