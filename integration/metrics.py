"""Leakage Metrics in ComfyUI: the metric models' folder (``models/leakage_metrics``, or where
``extra_model_paths.yaml`` puts it), the models loaded once per folder state, and IMAGE/MASK tensors turned
into the 8-bit arrays ALE scores (as SaveImage writes them)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

import comfy.model_management as model_management
import folder_paths

from ..evaluation.ale_metrics import AleMetrics
from ..evaluation.models import MetricModels, load_metric_models
from .detection import register_model_folder
from .errors import NodeInputError

METRICS_FOLDER = "leakage_metrics"
register_model_folder(METRICS_FOLDER, {".pth", ".safetensors", ".json"})

_loaded: dict[str, tuple[tuple, MetricModels, AleMetrics]] = {}


def metrics_folder() -> Path:
    """The first ``leakage_metrics`` folder that exists (else the default one, named in the messages)."""
    paths = [Path(p) for p in folder_paths.get_folder_paths(METRICS_FOLDER)]
    return next((p for p in paths if p.is_dir()), paths[0])


def folder_state() -> tuple:
    """What is in the metrics folder now (names and times): a change makes Leakage Metrics run again."""
    folder = metrics_folder()
    return str(folder), _state(folder)


def _state(folder: Path) -> tuple:
    if not folder.is_dir():
        return ()
    return tuple(sorted((entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(folder)))


def ale_metrics(node: str) -> tuple[MetricModels, AleMetrics]:
    """The metric models of :func:`metrics_folder` on ComfyUI's device, loaded again only when the folder changed."""
    folder = metrics_folder()
    key, state = str(folder), _state(folder)
    if key not in _loaded or _loaded[key][0] != state:
        device = model_management.get_torch_device()
        models = load_metric_models(folder, device)
        _loaded.clear()
        try:
            metrics = AleMetrics(models.clip, models.lpips, models.dino, device)
        except ModuleNotFoundError as error:
            raise NodeInputError(f"{node}: {error.name} is not installed; the metrics are computed with it. Install the pack's "
                                 "requirements: pip install -r requirements.txt (in the pack's folder).") from None
        _loaded[key] = (state, models, metrics)
    return _loaded[key][1], _loaded[key][2]


def as_uint8(tensor: torch.Tensor) -> np.ndarray:
    """An IMAGE [H, W, 3] or MASK [H, W] in [0, 1] as the 8-bit array SaveImage would write (clip, then truncate)."""
    return np.clip(255.0 * tensor.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
