"""Registration and structure: V3 nodes with prefixed keys, one category tree, names that agree, tooltips on every
input, and an import graph in which nodes/ stays thin and the math (attention/, masking/, evaluation/) never reaches ComfyUI."""
import ast
import importlib
from pathlib import Path

from comfy_api.latest import io

ROOT = Path(__file__).resolve().parents[1]
PURE = ("attention", "masking", "evaluation")
COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "execution", "server", "node_helpers")


def test_every_node_is_v3_described_prefixed_and_named_alike(pack_nodes):
    assert len(pack_nodes) == 20
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


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against the pack's root)."""
    package = path.relative_to(ROOT).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, node.module) if node.module else base)
            found |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
    return found


def test_import_graph_keeps_nodes_thin_and_the_math_pure():
    for path in (ROOT / "nodes").glob("*.py"):
        if path.name != "__init__.py":
            assert not any(m.startswith("nodes.") for m in imports(path)), f"{path.name} imports another node file"
    for folder in PURE:
        for path in (ROOT / folder).glob("*.py"):
            found = imports(path)
            assert not {m for m in found if m.split(".")[0] in COMFY_MODULES}, f"{folder}/{path.name} imports ComfyUI"
            assert not {m for m in found if m.split(".")[0] in ("integration", "nodes")}, f"{folder}/{path.name} imports the ComfyUI side"
    for path in (ROOT / "masking").glob("*.py"):
        assert not any(m.startswith("attention") for m in imports(path)), f"masking/{path.name} imports attention/"
    for path in (ROOT / "evaluation").glob("*.py"):
        assert not any(m.split(".")[0] in ("attention", "masking") for m in imports(path)), f"evaluation/{path.name} imports the editing code"
