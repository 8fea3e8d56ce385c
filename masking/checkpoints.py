"""Reading the user's detector and segmenter files safely: state dicts without pickled code, exact weight loading,
and transformers-format model folders. Nothing here reaches a network or imports ComfyUI."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import zipfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class ModelFileError(ValueError):
    """A checkpoint or support file that cannot be used; the message says what to do."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth`` file, read safely (no pickled code). Unwraps ``{"model": ...}``."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # Training scripts may store their argparse options beside the weights: plain data, safe to allow.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated download, HTML error page, pickled code, ...
        raise ModelFileError(f"cannot read '{path.name}': {unreadable(path, error)}.") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"'{path.name}' holds no state dict of tensors; it is not a model checkpoint.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def unreadable(path: Path, error: Exception) -> str:
    """What is wrong with a file the readers refused, from its bytes (never the reader's own advice: torch's message
    suggests loading with ``weights_only=False``, which would run whatever code the file holds)."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(9)
    if size == 0:
        return "the file is empty (0 bytes)"
    if path.suffix == ".safetensors":
        if head[8:9] != b"{":  # a safetensors file: an 8-byte header length, then the header's JSON
            return "it is not a safetensors file (no header where one starts)"
        if 8 + int.from_bytes(head[:8], "little") > size or "not fully covered" in str(error) or "incomplete" in str(error):
            return f"it is truncated: it ends after {size:,} bytes, before the end of its tensors (an interrupted download)"
        return "its safetensors header does not parse (the file is damaged)"
    if head.startswith(b"PK\x03\x04"):  # torch's zip format
        if not zipfile.is_zipfile(path):
            return f"it is truncated: the archive ends after {size:,} bytes, before its table of contents (an interrupted download)"
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        code = f" ({found.group(1)})" if found else ""
        return f"besides tensors it holds pickled Python objects{code}, which the pack never loads: it reads weights only"
    if head.lstrip()[:1] == b"<":
        return "it is a web page, not a checkpoint (the download saved an error or sign-in page)"
    if head[:1] == b"\x80":  # a pickle of the format before torch 1.6
        return "it is an old-format pickle the pack cannot read as weights only (damaged, or holding pickled objects)"
    return "it is neither a PyTorch nor a safetensors checkpoint"


def load_weights(model: torch.nn.Module, state: dict, name: str, ignore_unexpected: bool = False) -> None:
    """Load ``state`` into ``model``; a missing or mis-shaped tensor is a ``ModelFileError`` naming it."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    unexpected = [k for k in state if k not in expected]
    if missing or wrong or (unexpected and not ignore_unexpected):
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("wrong shape", wrong), ("unexpected", unexpected))
            if keys
        )
        raise ModelFileError(f"'{name}' does not match the model it claims to be ({details}). Use an unmodified checkpoint.")
    if unexpected:
        log.info("%s: ignoring %d tensors the model does not use", name, len(unexpected))
    model.load_state_dict({k: state[k] for k in expected}, strict=True)


def read_variant(path: str | os.PathLike, key: str, variants: dict, what: str) -> tuple[dict, object]:
    """The state dict of ``path`` and the variant that the first dimension of its ``key`` tensor names in ``variants``;
    a file without such a tensor is a ``ModelFileError`` saying it is not ``what``."""
    state = read_state_dict(path)
    tensor = state.get(key)
    if tensor is None or int(tensor.shape[0]) not in variants:
        raise ModelFileError(f"'{Path(path).name}' is not {what}.")
    return state, variants[int(tensor.shape[0])]


def is_transformers_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


def read_transformers_folder(folder: str | os.PathLike, expected: str, model_class):
    """(model, processor) of a transformers-format folder whose config says ``model_type == expected``."""
    from transformers import AutoProcessor

    folder = Path(folder)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type != expected:
        raise ModelFileError(f"'{folder.name}' is a transformers '{model_type}' folder, not a {expected} model.")
    try:
        model = model_class.from_pretrained(str(folder), local_files_only=True).eval()
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"cannot load the transformers folder '{folder.name}': {str(error).splitlines()[0][:300]}") from None
    return model, processor
