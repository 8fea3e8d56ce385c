"""Random-weight metric models in the formats users download, for the Leakage Metrics tests and a dry run of
the ALE-Bench runner (the numbers are meaningless; every loader and metric runs for real).

``python3 -m scripts.metric_model_files FOLDER`` writes into FOLDER (the pack reads ComfyUI/models/leakage_metrics/):

    clip-vit-large-patch14/          a CLIPModel (transformers' save_pretrained: config.json + model.safetensors), CLIP's
                                     BPE tokenizer from ComfyUI's sd1_tokenizer, OpenAI's image preprocessing; tiny widths
    dino_deitsmall16_pretrain.pth    timm's ViT-S/16 state dict, DINO's release layout (ViT-B/8 with --dino; slow on a CPU)
    squeezenet1_1-b8a52dc0.pth       torchvision's SqueezeNet 1.1 state dict
"""
from __future__ import annotations

from pathlib import Path

from pipelines.comfyui import find_comfyui

from . import comfy_env

TINY_CLIP = dict(
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=224, patch_size=32),
    projection_dim=16,
)


def write_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(**TINY_CLIP)).save_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(find_comfyui() / "comfy" / "sd1_tokenizer"))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def write_dino(file: Path, architecture: str, seed: int = 0) -> Path:
    import timm
    import torch

    torch.manual_seed(seed)
    torch.save(timm.create_model(architecture, pretrained=False, num_classes=0).state_dict(), file)
    return file


def write_squeezenet(file: Path, seed: int = 0) -> Path:
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), file)
    return file


def write_metric_models(folder: Path, dino: str = "dino_deitsmall16_pretrain", only=("clip", "dino", "lpips")) -> Path:
    comfy_env.register_pack()
    from leakfree_edit.evaluation.models import CLIP_FOLDER, DINO_FILES, LPIPS_BACKBONE

    folder.mkdir(parents=True, exist_ok=True)
    if "clip" in only:
        write_clip(folder / CLIP_FOLDER)
    if "dino" in only:
        write_dino(folder / f"{dino}.pth", DINO_FILES[dino])
    if "lpips" in only:
        write_squeezenet(folder / LPIPS_BACKBONE)
    return folder
