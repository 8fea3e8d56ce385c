"""The ComfyUI the pack runs and is tested against, for setup.sh, the headless runner, the benchmarks and the tests.

    python3 scripts/comfy_env.py locate                 # print the ComfyUI checkout (unpacking the 0.3.64 source if needed)
    python3 scripts/comfy_env.py unmet FILE... [--skip NAME...]   # the requirement lines this Python does not satisfy

Found in this order: ``$COMFYUI_PATH``; the ComfyUI two folders up when the pack sits in
``ComfyUI/custom_nodes/`` (the normal install); the ComfyUI 0.3.64 source tarball from
``shared/comfyui/`` beside the checkout (or ``$COMFYUI_ARCHIVE``), unpacked once into a cache folder.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "leakfree_edit"
PACK_FOLDER = "ComfyUI-LeakFreeEdit"  # the folder name users clone the pack as, in ComfyUI/custom_nodes/
TESTED_VERSION = "0.3.64"
OLDEST_SUPPORTED = "0.3.64"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "comfyui-leakfreeedit"
ARCHIVE = f"ComfyUI-{TESTED_VERSION}.tar.gz"


class NoComfyUI(RuntimeError):
    pass


def is_comfyui(path: Path) -> bool:
    return all((path / name).exists() for name in ("main.py", "nodes.py", "folder_paths.py", "comfy"))


def find_comfyui(unpack: bool = True) -> Path:
    """The ComfyUI checkout to run against (see the module docstring for the order)."""
    if os.environ.get("COMFYUI_PATH"):
        path = Path(os.environ["COMFYUI_PATH"]).expanduser().resolve()
        if not is_comfyui(path):
            raise NoComfyUI(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no main.py, nodes.py, comfy/ there).")
        return path
    if ROOT.parent.name == "custom_nodes" and is_comfyui(ROOT.parent.parent):
        return ROOT.parent.parent
    cached = CACHE / f"ComfyUI-{TESTED_VERSION}" / "ComfyUI"
    if is_comfyui(cached):
        return cached
    archive = Path(os.environ.get("COMFYUI_ARCHIVE") or ROOT.parent / "shared" / "comfyui" / ARCHIVE)
    if not archive.is_file():
        raise NoComfyUI(
            "no ComfyUI found: set COMFYUI_PATH to your ComfyUI checkout, clone the pack into ComfyUI/custom_nodes/, "
            f"or put {ARCHIVE} at {archive} (or name it in COMFYUI_ARCHIVE)."
        )
    if not unpack:
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=CACHE))
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    staging.rename(cached.parent)  # atomic: a half-unpacked tree is never taken for a checkout
    return cached


def comfyui_version(path: Path) -> str:
    text = (path / "comfyui_version.py").read_text() if (path / "comfyui_version.py").exists() else ""
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


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


def installed_in_comfyui() -> bool:
    """True when the pack sits in the custom_nodes folder of the ComfyUI it runs on (ComfyUI loads it from there)."""
    return ROOT.parent.name == "custom_nodes" and ROOT.parent.parent.resolve() == find_comfyui().resolve()


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
