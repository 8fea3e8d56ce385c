"""ALE's structure distance: DINO ViT keys self-similarity (MC = ALE's evaluate/metrics_calculator.py at b57e21e).

For an image x (3 x H x W floats in 0-255, as MC hands them over: MC:621-651), MC:377-383 and MC:446-459 compute
    x' = Normalize(ImageNet mean/std)(Resize(224, max_size=480)(x))
    K  = keys of the last block (layer 11) for every token, heads concatenated      [N, heads * d]  (MC:331-359)
    S  = cosine self-similarity of K's rows (norm products clamped at 1e-8)         [N, N]          (MC:361-367)
    distance(pred, source) = mean((S_pred - S_source)^2)                                            (MC:458)
The keys are read, as MC reads them, from a forward hook on the block's fused ``qkv`` projection
(``[N, 3, heads, d]``, index 1). The model is timm's ViT, whose modules carry DINO's own names.
No ComfyUI imports.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

LAYER = 11  # MC:453, 456
EPS = 1e-8  # MC:361


def transform():
    """MC:377-386: resize the short side to 224 (long side at most 480), then ImageNet normalisation."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(224, max_size=480),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def cosine_self_similarity(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """MC:361-367 on ``x`` [1, N, C]: (x x^T) / max(|x| |x|^T, eps)."""
    norm = x.norm(dim=2, keepdim=True)
    return (x @ x.permute(0, 2, 1)) / torch.clamp(norm @ norm.permute(0, 2, 1), min=eps)


class DinoKeys:
    """The key self-similarity of a timm ``VisionTransformer`` (DINO weights) at block :data:`LAYER`."""

    def __init__(self, model: torch.nn.Module, name: str = "DINO"):
        self.model = model.eval()
        self.name = name
        self.heads = model.blocks[LAYER].attn.num_heads
        self.transform = transform()
        self._source: tuple[bytes, torch.Tensor] | None = None  # the last source's S: a benchmark scores many edits per image

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def self_similarity(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` [1, 3, H, W] in 0-255 -> S [1, N, N] (MC:349-359)."""
        captured = []
        hook = self.model.blocks[LAYER].attn.qkv.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            self.model(self.transform(image[0]).unsqueeze(0))
        finally:
            hook.remove()
        qkv = captured[0][0]  # [N, 3 C]
        tokens, width = qkv.shape[0], qkv.shape[1] // 3
        keys = qkv.reshape(tokens, 3, self.heads, width // self.heads).permute(1, 2, 0, 3)[1]  # [heads, N, d]
        return cosine_self_similarity(keys.transpose(0, 1).reshape(tokens, width)[None])

    def distance(self, source: torch.Tensor, pred: torch.Tensor) -> float:
        """MC:446-459 (``calculate_global_ssim_loss(img_gt, img_pred)``): MSE of pred's S against the source's."""
        key = hashlib.sha256(source.cpu().numpy().tobytes()).digest()
        if self._source is None or self._source[0] != key:
            self._source = (key, self.self_similarity(source))
        return float(F.mse_loss(self.self_similarity(pred), self._source[1]))
