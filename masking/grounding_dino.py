"""Grounding-DINO detectors: boxes for the edit plan's object phrases, each box matched to the phrase whose own
tokens score highest. Two backends behind one interface: groundingdino-py checkpoints (``.pth``) and
transformers-format ``GroundingDinoForObjectDetection`` folders. A detector has ``detect(image, phrases,
box_threshold, text_threshold) -> Detections`` and ``.model``. Nothing here reaches a network or imports ComfyUI.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from .bert import GroundingDinoText, bert_config_from_state, bert_search_dirs, find_bert_tokenizer, load_bert_tokenizer
from .checkpoints import load_weights, read_transformers_folder, read_variant

DINO_CONFIGS = {96: "GroundingDINO_SwinT_OGC.py", 128: "GroundingDINO_SwinB_cfg.py"}  # Swin embed dim -> config
MAX_CAPTION_TOKENS = 256  # Grounding-DINO's max_text_len
DINO_SHORT_SIDE, DINO_LONG_SIDE = 800, 1333  # groundingdino-py's inference resize
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ObjectPhraseError(ValueError):
    """A plan object the detector cannot read or did not find; the message names it."""


@dataclass
class Detections:
    boxes: torch.Tensor  # [K, 4] xyxy in pixels of the input image
    labels: torch.Tensor  # [K] index into the phrases passed to detect()
    scores: torch.Tensor  # [K]


def caption_with_spans(tokenizer, phrases: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding-DINO caption ``"wolf . full moon ."`` and each phrase's token range [start, end) in it.

    WordPiece splits on spaces and punctuation, so the caption's tokens are the
    phrases' own tokens with one '.' after each, after the [CLS] at 0.
    """
    spans, start = [], 1
    for phrase in phrases:
        length = len(tokenizer.tokenize(phrase))
        if length == 0:
            raise ObjectPhraseError(f"the object {phrase!r} has no words the detector can read; name it in words")
        spans.append((start, start + length))
        start += length + 1
    if start >= MAX_CAPTION_TOKENS:
        raise ObjectPhraseError(
            f"the objects {phrases} need {start + 1} caption tokens; Grounding-DINO reads {MAX_CAPTION_TOKENS}. Use shorter names."
        )
    return " . ".join(phrases) + " .", spans


def assign_boxes(token_scores: torch.Tensor, spans: list[tuple[int, int]], box_threshold: float, text_threshold: float):
    """Match each query to the phrase it found: ``token_scores`` ``[Q, T]`` sigmoid scores.

    A query is a detection when its best caption token beats ``box_threshold``
    (Grounding-DINO's rule); it belongs to the phrase whose tokens score highest,
    if that score beats ``text_threshold``. Returns (query indices, phrase index, score).
    """
    per_phrase = torch.stack([token_scores[:, a:b].amax(dim=1) for a, b in spans], dim=1)  # [Q, P]
    score, label = per_phrase.max(dim=1)
    keep = (token_scores[:, : spans[-1][1]].amax(dim=1) > box_threshold) & (score > text_threshold)
    index = keep.nonzero(as_tuple=True)[0]
    return index, label[index], score[index]


def cxcywh_to_pixels(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    return (xyxy * torch.tensor([width, height, width, height], dtype=xyxy.dtype)).clamp(min=0)


def dino_input(image: torch.Tensor, short_side: int = DINO_SHORT_SIDE, long_side: int = DINO_LONG_SIDE) -> torch.Tensor:
    """``[H, W, 3]`` float image -> normalised ``[3, h, w]`` at groundingdino-py's inference size."""
    height, width = image.shape[:2]
    scale = min(short_side / min(height, width), long_side / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = F.interpolate(image.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (pixels.clamp(0, 1) - mean) / std


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[H, W, 3]`` float in [0, 1] -> uint8 RGB array, as the image processors and SAM take it."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class PhraseDetector:
    """One forward per image for all phrases; subclasses give each query's token logits and normalised boxes."""

    model: torch.nn.Module
    tokenizer = None

    @torch.no_grad()
    def detect(self, image: torch.Tensor, phrases: list[str], box_threshold: float, text_threshold: float) -> Detections:
        caption, spans = caption_with_spans(self.tokenizer, phrases)
        logits, boxes = self.forward(image, caption, next(self.model.parameters()).device)
        index, labels, best = assign_boxes(logits.float().sigmoid().cpu(), spans, box_threshold, text_threshold)
        return Detections(cxcywh_to_pixels(boxes.float().cpu()[index], *image.shape[:2]), labels, best)

    def forward(self, image: torch.Tensor, caption: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(token logits [Q, T], boxes [Q, 4] as cx, cy, w, h in [0, 1]) of one image."""
        raise NotImplementedError


class GroundingDinoDetector(PhraseDetector):
    """groundingdino-py's model with a local tokenizer."""

    def __init__(self, model, tokenizer, short_side: int = DINO_SHORT_SIDE):
        self.model, self.tokenizer, self.short_side = model, tokenizer, short_side

    def forward(self, image, caption, device):
        outputs = self.model(dino_input(image, self.short_side).to(device)[None], captions=[caption])
        return outputs["pred_logits"][0], outputs["pred_boxes"][0]


class TransformersGroundingDino(PhraseDetector):
    """``GroundingDinoForObjectDetection`` + its processor from a local folder."""

    def __init__(self, model, processor):
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer

    def forward(self, image, caption, device):
        inputs = self.processor(images=image_to_uint8(image), text=caption, return_tensors="pt").to(device)
        outputs = self.model(**inputs)
        return outputs.logits[0], outputs.pred_boxes[0]


_BUILD_LOCK = threading.Lock()


@contextmanager
def _local_text_encoder(tokenizer, bert):
    """groundingdino-py's constructor fetches its tokenizer and BERT by hub name through two functions of its own
    ``get_tokenlizer`` module: for the length of one build (one at a time) they hand out the local ones instead."""
    from groundingdino.util import get_tokenlizer

    factories = ("get_tokenlizer", "get_pretrained_language_model")
    with _BUILD_LOCK:
        saved = [getattr(get_tokenlizer, name) for name in factories]
        get_tokenlizer.get_tokenlizer = lambda _: tokenizer
        get_tokenlizer.get_pretrained_language_model = lambda _: bert
        try:
            yield
        finally:
            for name, factory in zip(factories, saved):
                setattr(get_tokenlizer, name, factory)


def build_grounding_dino(config_name: str, tokenizer, bert_config, **overrides):
    """An untrained groundingdino-py model from the package's own config file (``overrides`` replace fields), its text
    encoder a :class:`GroundingDinoText` (transformers' BERT unchanged; groundingdino-py's wrapper is replaced)."""
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertModel

    args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / config_name))
    args.device = "cpu"
    args.use_checkpoint = args.use_transformer_ckpt = False  # gradient checkpointing: training only
    for key, value in overrides.items():
        setattr(args, key, value)
    text = GroundingDinoText(BertModel(bert_config))
    # What groundingdino-py's BERT wrapper reads in its constructor; its three mask helpers (gone from transformers 5)
    # are never called, because model.bert is replaced right after the build.
    parts = SimpleNamespace(config=text.config, embeddings=text.embeddings, encoder=text.encoder, pooler=text.pooler,
                            get_extended_attention_mask=None, invert_attention_mask=None, get_head_mask=None)
    with _local_text_encoder(tokenizer, parts):
        model = build_model(args)
    model.bert = text
    return model.eval()


def dino_sizes(state: dict) -> dict:
    """Layer and query counts read from the checkpoint (the released files: 6, 6 and 900)."""

    def count(prefix: str) -> int:
        return 1 + max((int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))), default=-1)

    queries = state.get("transformer.tgt_embed.weight")
    return {
        "enc_layers": count(r"transformer\.encoder\.layers"),
        "dec_layers": count(r"transformer\.decoder\.layers"),
        **({"num_queries": int(queries.shape[0])} if queries is not None else {}),
    }


def load_grounding_dino(path: str | os.PathLike, bert_dirs: list[str | os.PathLike]) -> GroundingDinoDetector:
    """A groundingdino-py checkpoint (Swin-T or Swin-B, told apart by tensor shapes) with a local tokenizer.

    The package's own config is used: a checkpoint's ``.cfg.py`` is Python code
    and is never executed.
    """
    state, config = read_variant(path, "backbone.0.patch_embed.proj.weight", DINO_CONFIGS,
                                 "a groundingdino-py checkpoint (expected groundingdino_swint_ogc.pth or "
                                 "groundingdino_swinb_cogcoor.pth from IDEA-Research/GroundingDINO)")
    tokenizer = load_bert_tokenizer(find_bert_tokenizer(bert_search_dirs(bert_dirs)))
    model = build_grounding_dino(config, tokenizer, bert_config_from_state(state), **dino_sizes(state))
    load_weights(model, state, Path(path).name, ignore_unexpected=True)
    return GroundingDinoDetector(model, tokenizer)


def load_transformers_grounding_dino(folder: str | os.PathLike) -> TransformersGroundingDino:
    from transformers import GroundingDinoForObjectDetection

    return TransformersGroundingDino(*read_transformers_folder(folder, "grounding-dino", GroundingDinoForObjectDetection))
