"""ALE-Bench's metrics, computed as ALE-Edit's evaluation code computes them.

Source: github.com/ml-postech/ALE at b57e21e, ``evaluate/metrics_calculator.py`` (MC below) and
``evaluate/evaluate_ale.py`` (EV), with the same libraries (torchmetrics' CLIPScore, PSNR, SSIM, LPIPS, MSE).
For one edited image, with ``src``/``pred`` the source and edited images as uint8 H x W x 3 arrays (the
edited one resized to the source's size with PIL's default bicubic, EV:128), each object mask m_i the
mask PNG read as 8-bit grey (``convert("L")``, EV:107-110) divided by 255, and M the pixelwise maximum of
the edited objects' masks (``ImageChops.lighter``, EV:135-147):

- TELS  = CLIPScore(uint8(pred * (1 - M)), targets joined with " and ")                       (MC:98-104)
- TILS  = mean over objects i and every other edited object j of CLIPScore(uint8(pred * m_j), target_i);
          NaN for a single object                                                            (MC:106-124)
- edit CLIPScore of object i = CLIPScore(uint8(pred * m_i), target_i); editing performance is their
          mean (for one object, M and the joined prompt, the same thing)                     (MC:126-148)
- PSNR, SSIM, LPIPS, MSE on the unedited part: both images / 255 (float32), multiplied by 1 - M, then
          torchmetrics' PSNR(data_range=1), SSIM(data_range=1), LPIPS(squeeze) on 2x - 1, MSE;
          NaN when 1 - M is all zero                                                          (MC:40-69, 525-619)
- structure distance = MSE between the cosine self-similarity matrices of the last block's keys of
          DINO ViT-B/8 on the whole images (0-255 floats, Resize(224, max_size=480), ImageNet
          normalisation, DINO's own token preparation on any size: evaluation/structure.py)     (MC:446-459, 621-651)

EV's other metrics (``--metrics``, computed by MC:13-153 ``calculate_metric``), under its column names:

- ``psnr``, ``lpips``, ``mse``, ``ssim``, on the whole images (no mask)                                 (MC:26-33)
- ``psnr_edit_part``, ``lpips_edit_part``, ``mse_edit_part``, ``ssim_edit_part``: masked with M instead of 1 - M;
          NaN when M is all zero                                                                  (MC:72-95)
- ``structure_distance_unedit_part``: both images (0-255 floats) times 1 - M, then the structure distance;
          NaN when 1 - M is all zero                                                             (MC:64-69)
- ``clip_similarity_source_image`` = CLIPScore(source, the source objects joined with " and ")    (MC:148-151, EV:149)

CLIPScore is torchmetrics' 100 * max(cos(E_image, E_text), 0) with the CLIP processor's resize and crop.
``uint8(x)`` truncates, as ``np.uint8`` does. No ComfyUI imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

JOINER = " and "  # EV:149-152 and MC:100, as the edit plan's base prompts
# EV's default --metrics, in its column order (EV:23-33)
METRICS = ("TELS", "TILS", "structure_distance", "editing_performance",
           "psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")
# the other names EV's --metrics takes (MC:26-151), in calculate_metric's order
OTHER_METRICS = ("psnr", "lpips", "mse", "ssim", "structure_distance_unedit_part",
                 "psnr_edit_part", "lpips_edit_part", "mse_edit_part", "ssim_edit_part", "clip_similarity_source_image")
ALL_METRICS = METRICS + OTHER_METRICS
PARTS = {"_unedit_part": "unedited", "_edit_part": "edited"}  # column suffix -> the region a metric is masked to


def split_metric(metric: str) -> tuple[str, str | None]:
    """``"psnr_unedit_part"`` -> ("psnr", "unedited"); ``"ssim"`` -> ("ssim", None): the measure and the region."""
    for suffix, region in PARTS.items():
        if metric.endswith(suffix):
            return metric[: -len(suffix)], region
    return metric, None


def needs(metric: str) -> str | None:
    """The model a metric needs ("clip", "dino", "lpips"), or None for PSNR, SSIM and MSE."""
    measure, _ = split_metric(metric)
    if measure in ("TELS", "TILS", "editing_performance", "clip_similarity_source_image"):
        return "clip"
    return {"structure_distance": "dino", "lpips": "lpips"}.get(measure)


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` as a tuple, or a ValueError naming the unknown ones and the known names."""
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; ALE's names are: {', '.join(ALL_METRICS)}")
    return tuple(metrics)


@dataclass
class EditScores:
    """One edited image's metrics (``None``: the model it needs is missing; NaN: undefined, as ALE's "nan")."""

    values: dict[str, float | None]
    per_object: list[tuple[str, float | None]] = field(default_factory=list)  # (target, edit CLIPScore)


def masked(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """MC:525-535: the image / 255 as float32, times the mask (also float32)."""
    out = np.asarray(image).astype(np.float32) / 255
    return out if mask is None else out * np.asarray(mask).astype(np.float32)


def to_batch(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 -> 1 x 3 x H x W."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)


def as_rgb_mask(mask: np.ndarray) -> np.ndarray:
    """An 8-bit grey mask as EV/MC use it: H x W x 3 floats in [0, 1] (EV:144-147, MC:115)."""
    return np.asarray(mask)[:, :, np.newaxis].repeat(3, axis=2) / 255.0


def merged_mask(masks: Sequence[np.ndarray]) -> np.ndarray:
    """EV:135-147: the pixelwise maximum of the edited objects' 8-bit masks, as H x W x 3 floats in [0, 1]."""
    return as_rgb_mask(np.maximum.reduce([np.asarray(m, dtype=np.uint8) for m in masks]))


class AleMetrics:
    """ALE's ``MetricsCalculator`` (MC:484-651) on the models given; a model left as None disables its metrics.

    ``clip``: torchmetrics ``CLIPScore``; ``lpips``: torchmetrics ``LearnedPerceptualImagePatchSimilarity``
    (squeeze); ``dino``: :class:`evaluation.structure.DinoKeys`. PSNR, SSIM and MSE need no weights.
    """

    def __init__(self, clip=None, lpips=None, dino=None, device="cpu"):
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
        from torchmetrics.regression import MeanSquaredError

        self.device = torch.device(device)
        self.clip = clip.to(self.device) if clip is not None else None
        self.lpips = lpips.to(self.device) if lpips is not None else None
        self.dino = dino
        self.psnr = PeakSignalNoiseRatio(data_range=1.0).to(self.device)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(self.device)
        self.mse = MeanSquaredError().to(self.device)

    def available(self, metric: str) -> bool:
        model = needs(metric)
        return model is None or getattr(self, model) is not None

    @staticmethod
    def _call(metric, *inputs) -> float:
        """One forward of a torchmetrics module (the batch's value, as MC gets it), state cleared after."""
        value = float(metric(*inputs).cpu().item())
        metric.reset()
        return value

    def clip_similarity(self, image: np.ndarray, text: str, mask: np.ndarray | None = None) -> float:
        """MC:512-523."""
        image = np.array(image)
        if mask is not None:
            image = np.uint8(image * np.array(mask))
        return self._call(self.clip, torch.tensor(image).permute(2, 0, 1).to(self.device), text)

    def psnr_value(self, pred, gt, mask) -> float:
        """MC:525-547."""
        return self._call(self.psnr, to_batch(masked(pred, mask)).to(self.device), to_batch(masked(gt, mask)).to(self.device))

    def ssim_value(self, pred, gt, mask) -> float:
        """MC:597-619."""
        return self._call(self.ssim, to_batch(masked(pred, mask)).to(self.device), to_batch(masked(gt, mask)).to(self.device))

    def lpips_value(self, pred, gt, mask) -> float:
        """MC:549-573: LPIPS on images mapped to [-1, 1]."""
        pred, gt = (to_batch(masked(x, mask)).to(self.device) for x in (pred, gt))
        return self._call(self.lpips, pred * 2 - 1, gt * 2 - 1)

    def mse_value(self, pred, gt, mask) -> float:
        """MC:575-595: on 3 x H x W tensors."""
        pred, gt = (to_batch(masked(x, mask))[0].contiguous().to(self.device) for x in (pred, gt))
        return self._call(self.mse, pred, gt)

    def structure_distance(self, pred, gt, mask=None) -> float:
        """MC:621-651 with MC:446-459: 0-255 floats, times ``mask`` if given."""
        def as_tensor(image):
            image = np.asarray(image).astype(np.float32)
            image = image if mask is None else image * np.asarray(mask).astype(np.float32)
            return torch.from_numpy(np.transpose(image, (2, 0, 1))).unsqueeze(0).to(self.dino.device)

        return self.dino.distance(as_tensor(gt), as_tensor(pred))

    def score(self, source: np.ndarray, edited: np.ndarray, edits: Sequence[tuple[str, str]], masks: Sequence[np.ndarray],
              metrics: Sequence[str] = METRICS) -> EditScores:
        """``metrics`` (ALE's names, default EV's eight) for one edited image, plus each object's edit CLIPScore.

        ``source``/``edited`` uint8 H x W x 3 of one size; ``edits`` (source object, target prompt) pairs and
        ``masks`` their 8-bit H x W masks, in the same order (ALE keys both by source object: EV:134).
        """
        metrics = check_metrics(metrics)
        if np.asarray(source).shape != np.asarray(edited).shape:
            raise ValueError(f"source {np.asarray(source).shape} and edited {np.asarray(edited).shape} images differ in size; "
                             "resize the edited image to the source's size first (ALE: PIL bicubic)")
        union = merged_mask(masks)
        regions = {None: None, "unedited": 1 - union, "edited": union}
        pixel_measures = {"psnr": self.psnr_value, "lpips": self.lpips_value, "mse": self.mse_value, "ssim": self.ssim_value,
                          "structure_distance": self.structure_distance}
        targets = [target for _, target in edits]
        per_object: list[tuple[str, float | None]] = [(target, None) for target in targets]
        if self.clip is not None:
            per_object = [(target, self.clip_similarity(edited, target, as_rgb_mask(mask))) for target, mask in zip(targets, masks)]
        values: dict[str, float | None] = {}
        for metric in metrics:
            measure, region = split_metric(metric)
            if not self.available(metric):
                values[metric] = None
            elif measure in pixel_measures:
                mask = regions[region]
                empty = mask is not None and mask.sum() == 0  # MC:41, 73
                values[metric] = math.nan if empty else pixel_measures[measure](edited, source, mask)
            elif metric == "TELS":
                values[metric] = self.clip_similarity(edited, JOINER.join(targets), regions["unedited"])
            elif metric == "TILS":
                leaks = [self.clip_similarity(edited, target, as_rgb_mask(other))
                         for i, target in enumerate(targets) for j, other in enumerate(masks) if j != i]
                values[metric] = float(np.mean(leaks)) if len(edits) > 1 else math.nan
            elif metric == "editing_performance":
                values[metric] = float(np.mean([score for _, score in per_object]))
            else:  # clip_similarity_source_image
                values[metric] = self.clip_similarity(source, JOINER.join(s for s, _ in edits))
        return EditScores(values, per_object)


def resized_to(image: np.ndarray, size: tuple[int, int], mask: bool = False) -> np.ndarray:
    """An 8-bit image (or mask) at ``size`` (w, h): PIL's default bicubic for images as EV:128, nearest for masks."""
    from PIL import Image

    if image.shape[1::-1] == tuple(size):
        return image
    resample = Image.Resampling.NEAREST if mask else Image.Resampling.BICUBIC
    return np.array(Image.fromarray(image).resize(tuple(size), resample))


def score_images(metrics: AleMetrics, sources, edited, masks, edits: Sequence[tuple[str, str]],
                 names: Sequence[str] = METRICS) -> list[EditScores]:
    """The metrics ``names`` of each edited image of a batch: ``sources`` one or one per edit (uint8 H x W x 3), ``edited``
    resized to its source's size, ``masks`` one list of 8-bit masks (in ``edits`` order) or one per image,
    resized to the source's size (nearest)."""
    out = []
    for index, image in enumerate(edited):
        source = sources[index if len(sources) > 1 else 0]
        size = source.shape[1::-1]
        image_masks = [resized_to(m, size, mask=True) for m in masks[index if len(masks) > 1 else 0]]
        out.append(metrics.score(source, resized_to(image, size), edits, image_masks, names))
    return out
