"""Other node packs users run beside this one, as test dependencies: their archives in ``../shared/peers/`` (or
``$LEAKFREE_PEERS``), unpacked once into the cache and linked into the test server's ``custom_nodes/`` as the pack is
(harness/server.py). Never copied into the repository. ``$LEAKFREE_REQUIRE_PEERS`` makes a missing archive an error
instead of a skipped test (CI)."""
from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from pipelines.comfyui import CACHE, ROOT

IPADAPTER_PLUS = "ComfyUI_IPAdapter_plus"


def peers_folder() -> Path:
    return Path(os.environ.get("LEAKFREE_PEERS") or ROOT.parent / "shared" / "peers")


def peer_packs() -> dict[str, Path]:
    """{pack folder name: its unpacked folder} for every ``<name>-<commit>.tar.gz`` in the peers folder."""
    packs = {}
    for archive in sorted(peers_folder().glob("*.tar.gz")) if peers_folder().is_dir() else ():
        unpacked = CACHE / "peers" / archive.name.removesuffix(".tar.gz")
        if not unpacked.is_dir():
            unpacked.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=unpacked.parent))
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
            staging.rename(unpacked)  # atomic: a half-unpacked pack is never linked
        for folder in unpacked.iterdir():
            if folder.is_dir():
                packs[folder.name] = folder
    return packs


def required() -> bool:
    return bool(os.environ.get("LEAKFREE_REQUIRE_PEERS"))
