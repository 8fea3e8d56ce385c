"""The layout as the imports draw it (read from the source, nothing is imported): nodes/ stays thin, the math
(attention/, masking/, evaluation/) never reaches ComfyUI, pipelines/ is a client that imports neither torch nor
the pack, the pack never imports its test support (harness/), nothing imports tests/, the unit tier never imports
ComfyUI, and the one ``sys.path.insert`` is harness/comfy_env.py's (ComfyUI is a checkout, not a package)."""
import ast
from pathlib import Path

from harness.comfy_env import COMFY_MODULES
from pipelines.comfyui import ROOT, find_comfyui

PACK = ("attention", "masking", "integration", "nodes", "evaluation")  # the pack's own packages (imported as leakfree_edit.*)
TIERS = ("unit", "comfy_nodes", "comfy_server", "browser")


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports anywhere in it; relative imports resolved against the pack's root, and
    ``leakfree_edit.X`` written as ``X`` (the name the pack's own packages have inside it)."""
    package = path.relative_to(ROOT).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, node.module) if node.module else base)
            found |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
    return {name.removeprefix("leakfree_edit.") for name in found}


def reaching(path: Path, roots) -> set[str]:
    return {m for m in imports(path) if m.split(".")[0] in roots}


def test_nodes_stay_thin_and_the_math_pure():
    for path in sources("nodes"):
        if path.name != "__init__.py":  # the registry imports every node file
            assert not {m for m in imports(path) if m.startswith("nodes.") and m != "nodes.__init__"}, f"{path.name} imports another node file"
    for folder in ("attention", "masking", "evaluation"):
        for path in sources(folder):
            assert not reaching(path, COMFY_MODULES), f"{folder}/{path.name} imports ComfyUI"
            assert not reaching(path, ("integration", "nodes")), f"{folder}/{path.name} imports the ComfyUI side"
    for path in sources("masking"):
        assert not reaching(path, ("attention",)), f"masking/{path.name} imports attention/"
    for path in sources("evaluation"):
        assert not reaching(path, ("attention", "masking")), f"evaluation/{path.name} imports the editing code"


def test_pipelines_import_neither_torch_nor_comfyui_nor_the_pack():
    for path in sources("pipelines"):
        found = reaching(path, ("torch", *COMFY_MODULES, *PACK, "harness", "scripts", "tests"))
        assert not found, f"pipelines/{path.name} imports {sorted(found)}"


def test_the_pack_never_imports_its_test_support_and_nothing_imports_the_tests():
    pack_files = [ROOT / "__init__.py", *(p for folder in PACK for p in sources(folder))]
    for path in pack_files:
        assert not reaching(path, ("harness", "pipelines", "scripts", "bench", "tests")), f"{path.relative_to(ROOT)} imports test support or tools"
    for path in [*sources("harness"), *sources("pipelines"), *sources("scripts"), *sources("bench")]:
        assert not reaching(path, ("tests",)), f"{path.relative_to(ROOT)} imports the tests"
        assert not (path.is_relative_to(ROOT / "harness") and reaching(path, ("scripts", "bench"))), f"{path.relative_to(ROOT)} imports an entry point"


def test_unit_tests_never_import_comfyui_or_its_side_of_the_pack():
    for path in sources("tests/unit"):
        found = reaching(path, (*COMFY_MODULES, "integration", "nodes")) | {m for m in imports(path) if m == "harness.random_models"}
        assert not found, f"tests/unit/{path.name} imports {sorted(found)} (it belongs in tests/comfy_nodes/)"


def test_every_test_lives_in_a_tier_folder_not_named_like_a_comfyui_module():
    loose = [p.name for p in (ROOT / "tests").glob("test_*.py")]
    assert not loose, f"move {loose} into one of tests/{{{','.join(TIERS)}}}/"
    assert {p.parent.name for p in (ROOT / "tests").rglob("test_*.py")} <= set(TIERS)
    # pytest's importlib mode names tests/<tier>/x.py "<tier>.x": a tier called like a ComfyUI module would shadow it
    comfyui = find_comfyui(unpack=False)
    clashes = [t for t in TIERS if t in COMFY_MODULES or (comfyui / t).exists() or (comfyui / f"{t}.py").exists()]
    assert not clashes, f"tier folders named like a top-level module of ComfyUI: {clashes}"


def test_the_one_sys_path_insert_is_comfyuis():
    inserts = [path.relative_to(ROOT).as_posix() for path in ROOT.rglob("*.py")
               if ".git" not in path.parts and "sys.path.insert" in path.read_text() and path != Path(__file__)]
    assert inserts == ["harness/comfy_env.py"], inserts
