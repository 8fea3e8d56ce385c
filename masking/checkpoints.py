"""Reading the user's detector and segmenter files safely: state dicts without pickled code, exact weight loading,
and transformers-format model folders. Nothing here reaches a network or imports ComfyUI."""
from __future__ import annotations

import argparse
import json
import logging
import os
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
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(
            f"cannot read '{path.name}' ({reason[:200]}). The file is damaged, truncated or not a checkpoint: "
            "download it again from its official source."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"'{path.name}' holds no state dict of tensors; it is not a model checkpoint.")
    return {k.removeprefix("module."): v for k, v in state.items()}


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
