"""The metric models, from local files only (nothing is downloaded), in the formats their authors publish.

A folder (the pack's is ``ComfyUI/models/leakage_metrics/``) holds:

    clip-vit-large-patch14/        openai/clip-vit-large-patch14 in transformers' format: config.json, model.safetensors
                                   (or pytorch_model.bin), the tokenizer and preprocessor_config.json  -> TELS, TILS, edit CLIPScore
    dino_vitbase8_pretrain.pth     DINO ViT-B/8, facebookresearch/dino's release file (or timm's vit_base_patch8_224.dino
                                   weights saved as dino_vitbase8_pretrain.safetensors)                -> structure distance
    squeezenet1_1-b8a52dc0.pth     torchvision's ImageNet SqueezeNet 1.1, LPIPS's backbone (LPIPS's own linear
                                   layers ship inside torchmetrics)                                  -> LPIPS

A missing model disables only the metrics that need it; :class:`MetricModels` says which, naming the file and
folder. Other DINO sizes (``dino_deitsmall16_pretrain.pth`` ...) are read when ViT-B/8 is absent, and named in the
results, since ALE's figures are for ViT-B/8. No ComfyUI imports.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

CLIP_FOLDER = "clip-vit-large-patch14"
LPIPS_BACKBONE = "squeezenet1_1-b8a52dc0.pth"
# DINO's release files (facebookresearch/dino) -> timm's architecture; the first is ALE's (MC:491-495: dino_vitb8)
DINO_FILES = {
    "dino_vitbase8_pretrain": "vit_base_patch8_224",
    "dino_vitbase16_pretrain": "vit_base_patch16_224",
    "dino_deitsmall8_pretrain": "vit_small_patch8_224",
    "dino_deitsmall16_pretrain": "vit_small_patch16_224",
}
DINO_SUFFIXES = (".pth", ".safetensors")


@dataclass
class MetricModels:
    """The loaded models (None where missing) and, per missing model, the message saying what to put where."""

    clip: object | None = None
    lpips: object | None = None
    dino: object | None = None
    missing: dict[str, str] = field(default_factory=dict)  # "clip" / "lpips" / "dino" -> message
    loaded: dict[str, str] = field(default_factory=dict)  # "clip" / "lpips" / "dino" -> the file or folder read


class ClipFeatures(torch.nn.Module):
    """A ``CLIPModel`` whose ``get_image_features``/``get_text_features`` return the projected embeddings as tensors:
    what torchmetrics' CLIPScore expects, and what transformers 4.x returns (5.x wraps them in a model output)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _embeddings(output):
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, *args, **kwargs):
        return self._embeddings(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return self._embeddings(self.model.get_text_features(*args, **kwargs))


def clip_score(folder: Path):
    """torchmetrics' ``CLIPScore`` on a transformers-format CLIP folder (slow, PIL-based processor, as transformers 4.51
    gave ALE), in float32."""
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    model = ClipFeatures(CLIPModel.from_pretrained(str(folder), local_files_only=True).float().eval())
    import transformers

    # the PIL image processor: the one transformers 4.x picks by default (use_fast=False), "backend" from 5.0 on
    pil = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True, **pil)
    return CLIPScore(model_name_or_path=lambda: (model, processor))


def lpips_squeeze(backbone: Path):
    """torchmetrics' LPIPS(net_type="squeeze") with its SqueezeNet read from ``backbone``, a torchvision state dict.

    torchvision loads pretrained weights from its hub cache when the file is there (and downloads otherwise):
    the metric is built with a hub folder that holds only ``backbone``, under the name torchvision looks for.
    """
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    from torchvision.models import SqueezeNet1_1_Weights

    expected = Path(urlparse(SqueezeNet1_1_Weights.DEFAULT.url).path).name
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="leakfree-hub-") as hub:
        (Path(hub) / "checkpoints").mkdir()
        os.symlink(Path(backbone).resolve(), Path(hub) / "checkpoints" / expected)
        torch.hub.set_dir(hub)
        try:
            return LearnedPerceptualImagePatchSimilarity(net_type="squeeze")
        finally:
            torch.hub.set_dir(previous)


def dino_keys(file: Path, architecture: str):
    """:class:`evaluation.structure.DinoKeys` on timm's ``architecture`` with the weights of ``file`` (DINO's
    ``.pth`` or timm's ``.safetensors``; timm's own checkpoint filter reads both)."""
    import timm

    from .structure import DinoKeys

    model = timm.create_model(architecture, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(file)})
    return DinoKeys(model, name=f"{architecture} ({Path(file).name})")


def find_dino(folder: Path) -> tuple[Path, str] | None:
    for stem, architecture in DINO_FILES.items():
        for suffix in DINO_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}", architecture
    return None


def load_metric_models(folder: Path | None, device="cpu") -> MetricModels:
    """Every metric model ``folder`` holds; for each one missing (or unreadable), the message naming what to put where."""
    folder = Path(folder) if folder is not None else None
    models = MetricModels()
    where = f"in {folder}" if folder is not None else "(no model folder given)"

    def attempt(role: str, path: Path | None, load, missing_message: str, needs: str):
        if path is None or not path.exists():
            models.missing[role] = f"{missing_message} {where}: {needs} off."
            return
        try:
            setattr(models, role, load(path))
            models.loaded[role] = str(path)
        except ImportError as error:
            models.missing[role] = f"{error.name or error} is not installed (pip install {error.name or 'it'}): {needs} off."
        except Exception as error:  # a corrupt or foreign file: say which, keep the other metrics
            models.missing[role] = f"could not read {path} ({type(error).__name__}: {error}): {needs} off."

    attempt("clip", folder / CLIP_FOLDER if folder else None, clip_score,
            f"no CLIP ViT-L/14: put the transformers folder of openai/clip-vit-large-patch14 (config.json, model.safetensors, "
            f"tokenizer and preprocessor files) as '{CLIP_FOLDER}/'", "TELS, TILS and the edit CLIPScores are")
    dino = find_dino(folder) if folder else None
    attempt("dino", dino[0] if dino else None, lambda path: dino_keys(path, dino[1]),
            "no DINO ViT-B/8: put DINO's 'dino_vitbase8_pretrain.pth'", "structure distance is")
    attempt("lpips", folder / LPIPS_BACKBONE if folder else None, lpips_squeeze,
            f"no LPIPS backbone: put torchvision's SqueezeNet 1.1 weights '{LPIPS_BACKBONE}'", "LPIPS is")
    if models.dino is not None:
        models.dino.model.to(device)
    return models
