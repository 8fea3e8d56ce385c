"""ALE's structure distance: DINO ViT keys self-similarity (MC = ALE's evaluate/metrics_calculator.py at b57e21e).

For an image x (3 x H x W floats in 0-255, as MC hands them over: MC:621-651), MC:377-383 and MC:446-459 compute
    x' = Normalize(ImageNet mean/std)(Resize(224, max_size=480)(x))
    K  = keys of the last block (layer 11) for every token, heads concatenated      [N, heads * d]  (MC:331-359)
    S  = cosine self-similarity of K's rows (norm products clamped at 1e-8)         [N, N]          (MC:361-367)
    distance(pred, source) = mean((S_pred - S_source)^2)                                            (MC:458)
MC reads the keys from a forward hook on block 11's fused ``qkv`` projection (``[N, 3, heads, d]``, index 1); here the
blocks before it run, then that projection. The tokens enter the blocks as DINO's own code makes them
(facebookresearch/dino ``vision_transformer.py`` at 7c446df, VT below), for any image size:

- the patch embedding is a convolution with stride = kernel = patch size and no padding (VT:116-131), so the pixels
  right of and below the last whole patch are dropped: an h x w image gives an (h // p) x (w // p) grid;
- the [CLS] token is prepended and the position embedding added, interpolated by VT:174-194: kept as it is when the
  grid has the trained number of patches and the image is square; otherwise the trained sqrt(N) x sqrt(N) grid is
  resized with ``F.interpolate(mode="bicubic", scale_factor=((h // p + 0.1) / sqrt(N), (w // p + 0.1) / sqrt(N)))``:
  the sampling step is the inverse of that scale factor (not sqrt(N) / (h // p)), align_corners False, no antialias.

The model is timm's ViT (its modules carry DINO's names, and it reads DINO's release files); only its blocks are used.
No ComfyUI imports.
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

LAYER = 11  # MC:453, 456
EPS = 1e-8  # MC:361
POSITION_OFFSET = 0.1  # VT:184-186: added to the grid size before the scale factor is taken


def transform():
    """MC:377-386: resize the short side to 224 (long side at most 480), then ImageNet normalisation."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(224, max_size=480),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def cosine_self_similarity(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """MC:361-367 on ``x`` [1, N, C]: (x x^T) / max(|x| |x|^T, eps)."""
    norm = x.norm(dim=2, keepdim=True)
    return (x @ x.permute(0, 2, 1)) / torch.clamp(norm @ norm.permute(0, 2, 1), min=eps)


def position_embedding(trained: torch.Tensor, grid: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """DINO's position embedding ``[1, 1 + rows * cols, C]`` for a ``grid`` of patches from an ``image_hw`` image (VT:174-194).

    ``trained`` ``[1, 1 + N, C]`` holds the [CLS] position, then the trained square grid row by row.
    """
    rows, cols = grid
    trained_count = trained.shape[1] - 1
    if rows * cols == trained_count and image_hw[0] == image_hw[1]:
        return trained
    side = int(math.sqrt(trained_count))
    patches = trained[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = ((rows + POSITION_OFFSET) / math.sqrt(trained_count), (cols + POSITION_OFFSET) / math.sqrt(trained_count))
    patches = F.interpolate(patches, scale_factor=scale, mode="bicubic")
    if patches.shape[-2:] != (rows, cols):
        raise ValueError(f"DINO position embedding: a {side}x{side} grid scaled by {scale} gives {tuple(patches.shape[-2:])}, "
                         f"not {rows}x{cols}")
    return torch.cat([trained[:, :1], patches.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)


def dino_tokens(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The tokens entering the first block, ``[B, 1 + rows * cols, C]``, for a normalised ``image`` [B, 3, h, w] of any size
    (VT:196-207): patch convolution (leftover pixels dropped), [CLS] prepended, DINO's position embedding added."""
    patches = model.patch_embed.proj(image)  # [B, C, h // p, w // p]
    grid = tuple(patches.shape[-2:])
    tokens = torch.cat([model.cls_token.expand(image.shape[0], -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
    return tokens + position_embedding(model.pos_embed, grid, tuple(image.shape[-2:]))


class DinoKeys:
    """The key self-similarity of a DINO ViT (timm's ``VisionTransformer`` with DINO's weights) at block :data:`LAYER`."""

    def __init__(self, model: torch.nn.Module, name: str = "DINO"):
        self.model = model.eval()
        self.name = name
        self.transform = transform()
        self._source: tuple[bytes, torch.Tensor] | None = None  # the last source's S: a benchmark scores many edits per image

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def keys(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` [1, 3, H, W] in 0-255 -> block :data:`LAYER`'s keys, heads concatenated, ``[N, C]`` (MC:331-359)."""
        tokens = dino_tokens(self.model, self.transform(image[0]).unsqueeze(0))
        for block in self.model.blocks[:LAYER]:
            tokens = block(tokens)
        block = self.model.blocks[LAYER]
        width = tokens.shape[-1]
        return block.attn.qkv(block.norm1(tokens))[0, :, width : 2 * width]  # [q | k | v], each heads x d

    def self_similarity(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` [1, 3, H, W] in 0-255 -> S [1, N, N]."""
        return cosine_self_similarity(self.keys(image)[None])

    def distance(self, source: torch.Tensor, pred: torch.Tensor) -> float:
        """MC:446-459 (``calculate_global_ssim_loss(img_gt, img_pred)``): MSE of pred's S against the source's."""
        key = hashlib.sha256(source.cpu().numpy().tobytes()).digest() + bytes(str(tuple(source.shape)), "ascii")
        if self._source is None or self._source[0] != key:
            self._source = (key, self.self_similarity(source))
        return float(F.mse_loss(self.self_similarity(pred), self._source[1]))
