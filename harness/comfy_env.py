"""ComfyUI set up in this process as its server would set itself up, and the pack registered beside it.

    python3 -m harness.comfy_env locate                        # the ComfyUI checkout (unpacking the 0.3.64 source if needed)
    python3 -m harness.comfy_env unmet FILE... [--skip NAME...]  # the requirement lines this Python does not satisfy

Where the checkout is found: :mod:`pipelines.comfyui`. ComfyUI is not a package: ``prepare_comfy`` puts its
checkout on ``sys.path``, the one place anything of the project changes it.
"""
from __future__ import annotations

import asyncio
import atexit
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from pipelines.comfyui import ROOT, NoComfyUI, find_comfyui

PACK = "leakfree_edit"  # the name the tests, benchmarks and scripts import the checkout as
# ComfyUI's top-level modules (its checkout on sys.path): what the pure code and the unit tier never import.
COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "execution", "server",
                 "node_helpers", "latent_preview")


def prepare_comfy(base_directory: str | None = None) -> Path:
    """Import ComfyUI as its server would, on the CPU when there is no GPU; returns the ComfyUI checkout.

    ``base_directory`` (ComfyUI's ``--base-directory``) holds models, input and output instead of the
    checkout's own folders. Call before importing anything of ComfyUI.
    """
    comfy_root = find_comfyui()
    if str(comfy_root) not in sys.path:
        sys.path.insert(0, str(comfy_root))
    import torch
    from comfy.cli_args import args

    if base_directory is not None and "folder_paths" not in sys.modules:
        args.base_directory = base_directory
    if not torch.cuda.is_available():
        args.cpu = True
        args.use_pytorch_cross_attention = True  # ~2x faster than sub-quadratic on the CPU
    torch.set_flush_denormal(True)  # random weights make denormals: 10x slower on the CPU
    import utils.extra_config  # noqa: F401  ComfyUI's own top-level utils package, before nodes.py puts comfy/ on sys.path
    return comfy_root


def prepare_for_tests() -> Path:
    """``prepare_comfy`` once per test process, with a scratch base folder: the tests never write into the checkout."""
    global _TEST_BASE
    if _TEST_BASE is None:
        _TEST_BASE = tempfile.mkdtemp(prefix="leakfree-comfy-")
        atexit.register(shutil.rmtree, _TEST_BASE, ignore_errors=True)
    return prepare_comfy(base_directory=_TEST_BASE)


_TEST_BASE: str | None = None


def in_custom_nodes_folders() -> bool:
    """True when this process's ComfyUI loads the pack from its own custom_nodes folders (not with a base directory elsewhere)."""
    import folder_paths

    return any(Path(folder).resolve() == ROOT.parent.resolve() for folder in folder_paths.get_folder_paths("custom_nodes"))


def register_pack():
    """Make the checkout importable as ``leakfree_edit`` without running its ``__init__`` (for the tests)."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        sys.modules[PACK] = importlib.util.module_from_spec(spec)
    return sys.modules[PACK]


def load_nodes(pack_path: Path | None = ROOT) -> dict:
    """ComfyUI's node registry as the server fills it: core nodes, comfy_extras, and the pack loaded by ComfyUI's own loader.

    ``pack_path=None`` loads the pack from the custom_nodes folders instead (it is installed there).
    """
    import nodes

    if len(nodes.NODE_CLASS_MAPPINGS) < 100 or "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=pack_path is None, init_api_nodes=False))
    if pack_path is not None and not any(k.startswith("LeakFree") for k in nodes.NODE_CLASS_MAPPINGS):
        asyncio.run(nodes.load_custom_node(str(pack_path)))
    if not any(k.startswith("LeakFree") for k in nodes.NODE_CLASS_MAPPINGS):
        raise RuntimeError(f"ComfyUI could not load the pack from {pack_path or 'its custom_nodes folders'}: see its log.")
    return nodes.NODE_CLASS_MAPPINGS


def unmet_requirements(files: list[str], skip: set[str] = frozenset()) -> list[str]:
    """Requirement lines of ``files`` (``-r`` includes followed) that the installed packages do not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # a bare Python: pip's own copy
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name

    unmet = []
    for file in map(Path, files):
        for line in file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r"):
                unmet += unmet_requirements([str(file.parent / line[2:].strip())], skip)
            if not line or line.startswith("-"):
                continue
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) in skip or (requirement.marker and not requirement.marker.evaluate()):
                continue
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                unmet.append(line)
                continue
            if not requirement.specifier.contains(installed, prereleases=True):
                unmet.append(line)
    return unmet


def main(argv: list[str]) -> int:
    command, *rest = argv or [""]
    if command == "locate":
        try:
            print(find_comfyui())
        except NoComfyUI as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if command == "unmet" and rest:
        files, _, skip = " ".join(rest).partition("--skip")
        print("\n".join(unmet_requirements(files.split(), set(skip.split()))))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
