"""Random-weight metric models in the formats users download, for the Leakage Metrics tests and a dry run of
the ALE-Bench runner (the numbers are meaningless; every loader and metric runs for real).

``python3 -m scripts.metric_model_files FOLDER`` writes into FOLDER (the pack reads ComfyUI/models/leakage_metrics/):

    clip-vit-large-patch14/          a CLIPModel (transformers' save_pretrained: config.json + model.safetensors), CLIP's
                                     BPE tokenizer from ComfyUI's sd1_tokenizer, OpenAI's image preprocessing; tiny widths
    dino_deitsmall16_pretrain.pth    a ViT-S/16 state dict in DINO's release layout: the keys and shapes of
                                     facebookresearch/dino's VisionTransformer(num_classes=0) (ViT-B/8 with --dino; slow on a CPU)
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


# DINO's release files: (width, heads, patch size) of its vit_small / vit_base (dino/hubconf.py, vision_transformer.py)
DINO_SHAPES = {"dino_deitsmall16_pretrain": (384, 6, 16), "dino_deitsmall8_pretrain": (384, 6, 8),
               "dino_vitbase16_pretrain": (768, 12, 16), "dino_vitbase8_pretrain": (768, 12, 8)}


def dino_release_state(release: str, seed: int = 0, position_std: float = 0.02, depth: int = 12, image: int = 224) -> dict:
    """Random weights under the keys and shapes of DINO's release file ``release``: facebookresearch/dino's
    ``VisionTransformer`` with ``num_classes=0`` (12 blocks of LayerNorm, fused qkv with bias, proj, MLP x4). Every
    tensor is random (layer norms and biases too, so none of them can be skipped unnoticed); ``position_std`` sets
    the position embedding's spread."""
    import torch

    width, _, patch = DINO_SHAPES[release]
    generator = torch.Generator().manual_seed(seed)
    noise = lambda *shape, std=0.02, mean=0.0: mean + std * torch.randn(*shape, generator=generator)
    state = {"cls_token": noise(1, 1, width), "pos_embed": noise(1, (image // patch) ** 2 + 1, width, std=position_std),
             "patch_embed.proj.weight": noise(width, 3, patch, patch), "patch_embed.proj.bias": noise(width)}
    for block in range(depth):
        layers = {"norm1": (width,), "attn.qkv": (3 * width, width), "attn.proj": (width, width), "norm2": (width,),
                  "mlp.fc1": (4 * width, width), "mlp.fc2": (width, 4 * width)}
        for name, shape in layers.items():
            norm = name.startswith("norm")
            state[f"blocks.{block}.{name}.weight"] = noise(*shape, std=0.1, mean=1.0) if norm else noise(*shape)
            state[f"blocks.{block}.{name}.bias"] = noise(shape[0])
    state["norm.weight"], state["norm.bias"] = noise(width, std=0.1, mean=1.0), noise(width)
    return state


def write_dino(file: Path, release: str, seed: int = 0, position_std: float = 0.02) -> Path:
    import torch

    torch.save(dino_release_state(release, seed, position_std), file)
    return file


def write_squeezenet(file: Path, seed: int = 0) -> Path:
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), file)
    return file


def write_metric_models(folder: Path, dino: str = "dino_deitsmall16_pretrain", only=("clip", "dino", "lpips")) -> Path:
    comfy_env.register_pack()
    from leakfree_edit.evaluation.models import CLIP_FOLDER, LPIPS_BACKBONE

    folder.mkdir(parents=True, exist_ok=True)
    if "clip" in only:
        write_clip(folder / CLIP_FOLDER)
    if "dino" in only:
        write_dino(folder / f"{dino}.pth", dino)
    if "lpips" in only:
        write_squeezenet(folder / LPIPS_BACKBONE)
    return folder
