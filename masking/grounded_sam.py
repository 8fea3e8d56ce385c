"""Grounded-SAM: Grounding-DINO boxes for the edit plan's object phrases, cut into masks by SAM.

Two backends behind one interface: the original checkpoints (``segment-anything``
``.pth`` and ``groundingdino-py`` ``.pth``) and transformers-format folders
(``SamModel`` / ``GroundingDinoForObjectDetection``). A detector has
``detect(image, phrases, box_threshold, text_threshold) -> Detections``; a
segmenter has ``segment(image, boxes) -> [K, H, W]`` bool masks and runs its
image encoder once per call. Both expose ``.model`` so the caller can move
them between devices. Nothing here reaches a network or imports ComfyUI.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from .ops import dilate

log = logging.getLogger(__name__)

SAM_VARIANTS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # image encoder width -> builder
DINO_CONFIGS = {96: "GroundingDINO_SwinT_OGC.py", 128: "GroundingDINO_SwinB_cfg.py"}  # Swin embed dim -> config
BERT_FOLDER = "bert-base-uncased"
BERT_CACHE_NAMES = ("models--bert-base-uncased", "models--google-bert--bert-base-uncased")
MAX_CAPTION_TOKENS = 256  # Grounding-DINO's max_text_len
DINO_SHORT_SIDE, DINO_LONG_SIDE = 800, 1333  # groundingdino-py's inference resize
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ON_MISSING = ("error", "unmasked")
INSTANCES = ("all", "best")


class ModelFileError(ValueError):
    """A checkpoint or support file that cannot be used; the message says what to do."""


class ObjectPhraseError(ValueError):
    """A plan object the detector cannot read or did not find; the message names it."""


# ----------------------------------------------------------------------------- files


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


def is_transformers_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


# ----------------------------------------------------------------------------- SAM


class SamSegmenter:
    """segment-anything's ``SamPredictor``: one image embedding, then the box prompts in batches.

    Batches of ``BOX_BATCH`` keep the decoder's full-resolution intermediates bounded: an image with
    hundreds of boxes (a flower field, or a loose threshold) would otherwise need tens of GiB at once.
    """

    BOX_BATCH = 32

    def __init__(self, model):
        from segment_anything import SamPredictor

        self.model = model
        self.predictor = SamPredictor(model)

    @torch.no_grad()
    def segment(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """``image`` uint8 ``[H, W, 3]`` RGB, ``boxes`` ``[K, 4]`` xyxy pixels -> bool ``[K, H, W]``."""
        height, width = image.shape[:2]
        if len(boxes) == 0:
            return torch.zeros(0, height, width, dtype=torch.bool)
        self.predictor.set_image(image)
        prompts = self.predictor.transform.apply_boxes_torch(boxes.float().to(self.predictor.device), (height, width))
        masks = [self.predictor.predict_torch(None, None, boxes=batch, multimask_output=False)[0][:, 0].cpu()
                 for batch in prompts.split(self.BOX_BATCH)]
        self.predictor.reset_image()
        return torch.cat(masks)


def load_sam(path: str | os.PathLike) -> SamSegmenter:
    """A segment-anything checkpoint; vit_b / vit_l / vit_h is read from the tensor shapes, not the name."""
    from segment_anything import sam_model_registry

    state = read_state_dict(path)
    embed = state.get("image_encoder.patch_embed.proj.weight")
    if embed is None or int(embed.shape[0]) not in SAM_VARIANTS:
        raise ModelFileError(
            f"'{Path(path).name}' is not a segment-anything SAM checkpoint (expected sam_vit_b_01ec64.pth, "
            "sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth from facebookresearch/segment-anything)."
        )
    model = sam_model_registry[SAM_VARIANTS[int(embed.shape[0])]]()
    load_weights(model, state, Path(path).name)
    return SamSegmenter(model.eval())


# ----------------------------------------------------------------------------- BERT (offline)


def bert_search_dirs(model_dirs: list[str | os.PathLike]) -> list[Path]:
    """Where a bert-base-uncased tokenizer may live: the given folders, then the local Hugging Face cache."""
    from huggingface_hub import constants

    cached = [
        snapshot
        for name in BERT_CACHE_NAMES
        for snapshot in sorted((Path(constants.HF_HUB_CACHE) / name / "snapshots").glob("*"))
    ]
    return [Path(d) for d in model_dirs] + cached


def find_bert_tokenizer(search_dirs: list[Path]) -> Path:
    """The first folder holding ``vocab.txt``; otherwise a ``ModelFileError`` saying where to put it."""
    for folder in search_dirs:
        if (folder / "vocab.txt").is_file():
            return folder
    where = ", ".join(str(d) for d in search_dirs) or "(no folder registered)"
    raise ModelFileError(
        "Grounding-DINO needs the bert-base-uncased tokenizer vocabulary and it is not on this machine "
        f"(looked in: {where}). Put 'vocab.txt' (and, optionally, 'tokenizer_config.json') from "
        f"https://huggingface.co/google-bert/bert-base-uncased into ComfyUI/models/{BERT_FOLDER}/. "
        "The BERT weights come from the Grounding-DINO checkpoint itself; nothing is downloaded."
    )


def load_bert_tokenizer(folder: Path):
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(folder), local_files_only=True)


def bert_config_from_state(state: dict, prefix: str = "bert."):
    """BERT's config read from the checkpoint's own tensor shapes (heads: BERT's 64 channels per head)."""
    from transformers import BertConfig

    words = state.get(f"{prefix}embeddings.word_embeddings.weight")
    if words is None:
        raise ModelFileError("the Grounding-DINO checkpoint holds no BERT text encoder (bert.embeddings.*).")
    hidden = int(words.shape[1])
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}encoder\.layer\.(\d+)\.", k))}
    return BertConfig(
        vocab_size=int(words.shape[0]),
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=int(state[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state[f"{prefix}embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state[f"{prefix}embeddings.token_type_embeddings.weight"].shape[0]),
    )


def _extended_attention_mask(self, attention_mask, input_shape=None, device=None, dtype=None):
    """Encoder-only form of the BertModel method groundingdino-py calls (removed in transformers 5)."""
    dtype = dtype or self.dtype
    mask = attention_mask[:, None, :, :] if attention_mask.dim() == 3 else attention_mask[:, None, None, :]
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


def _head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    if head_mask is not None:
        raise NotImplementedError("head masks are not used by Grounding-DINO")
    return [None] * num_hidden_layers


def ensure_bert_mask_helpers() -> None:
    """Give ``BertModel`` back the three helpers groundingdino-py needs when transformers dropped them."""
    from transformers import BertModel

    for name, helper in (
        ("get_extended_attention_mask", _extended_attention_mask),
        ("invert_attention_mask", _extended_attention_mask),
        ("get_head_mask", _head_mask),
    ):
        if not hasattr(BertModel, name):
            setattr(BertModel, name, helper)


# ----------------------------------------------------------------------------- phrases


def normalize_phrase(phrase: str) -> str:
    """Lower-case, no '.'/'?' (Grounding-DINO's phrase separators), single spaces."""
    return " ".join(re.sub(r"[.?]", " ", phrase.lower()).split())


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


@dataclass
class Detections:
    boxes: torch.Tensor  # [K, 4] xyxy in pixels of the input image
    labels: torch.Tensor  # [K] index into the phrases passed to detect()
    scores: torch.Tensor  # [K]


def _cxcywh_to_pixels(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
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


# ----------------------------------------------------------------------------- Grounding-DINO


class GroundingDinoDetector:
    """groundingdino-py's model with a local tokenizer; one forward per image for all phrases."""

    def __init__(self, model, tokenizer, short_side: int = DINO_SHORT_SIDE):
        self.model, self.tokenizer, self.short_side = model, tokenizer, short_side

    @torch.no_grad()
    def detect(self, image: torch.Tensor, phrases: list[str], box_threshold: float, text_threshold: float) -> Detections:
        caption, spans = caption_with_spans(self.tokenizer, phrases)
        device = next(self.model.parameters()).device
        pixels = dino_input(image, self.short_side).to(device)
        outputs = self.model(pixels[None], captions=[caption])
        scores = outputs["pred_logits"][0].float().sigmoid().cpu()
        index, labels, best = assign_boxes(scores, spans, box_threshold, text_threshold)
        boxes = _cxcywh_to_pixels(outputs["pred_boxes"][0].float().cpu()[index], *image.shape[:2])
        return Detections(boxes, labels, best)


@contextmanager
def _local_text_encoder(tokenizer, bert_config):
    """groundingdino-py builds its tokenizer and BERT from a hub name; give it the local ones instead."""
    from groundingdino.util import get_tokenlizer
    from transformers import BertModel

    with mock.patch.object(get_tokenlizer, "get_tokenlizer", lambda _: tokenizer), mock.patch.object(
        get_tokenlizer, "get_pretrained_language_model", lambda _: BertModel(bert_config)
    ):
        yield


def build_grounding_dino(config_name: str, tokenizer, bert_config, **overrides):
    """An untrained groundingdino-py model from the package's own config file (``overrides`` replace fields)."""
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    ensure_bert_mask_helpers()
    args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / config_name))
    args.device = "cpu"
    args.use_checkpoint = args.use_transformer_ckpt = False  # gradient checkpointing: training only
    for key, value in overrides.items():
        setattr(args, key, value)
    with _local_text_encoder(tokenizer, bert_config):
        return build_model(args).eval()


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
    state = read_state_dict(path)
    embed = state.get("backbone.0.patch_embed.proj.weight")
    if embed is None or int(embed.shape[0]) not in DINO_CONFIGS:
        raise ModelFileError(
            f"'{Path(path).name}' is not a groundingdino-py checkpoint (expected groundingdino_swint_ogc.pth "
            "or groundingdino_swinb_cogcoor.pth from IDEA-Research/GroundingDINO)."
        )
    tokenizer = load_bert_tokenizer(find_bert_tokenizer(bert_search_dirs(bert_dirs)))
    model = build_grounding_dino(DINO_CONFIGS[int(embed.shape[0])], tokenizer, bert_config_from_state(state), **dino_sizes(state))
    load_weights(model, state, Path(path).name, ignore_unexpected=True)
    return GroundingDinoDetector(model, tokenizer)


# ----------------------------------------------------------------------------- transformers backend


class TransformersGroundingDino:
    """``GroundingDinoForObjectDetection`` + its processor from a local folder."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    @torch.no_grad()
    def detect(self, image: torch.Tensor, phrases: list[str], box_threshold: float, text_threshold: float) -> Detections:
        caption, spans = caption_with_spans(self.processor.tokenizer, phrases)
        device = next(self.model.parameters()).device
        inputs = self.processor(images=_to_uint8(image), text=caption, return_tensors="pt").to(device)
        outputs = self.model(**inputs)
        scores = outputs.logits[0].float().sigmoid().cpu()
        index, labels, best = assign_boxes(scores, spans, box_threshold, text_threshold)
        boxes = _cxcywh_to_pixels(outputs.pred_boxes[0].float().cpu()[index], *image.shape[:2])
        return Detections(boxes, labels, best)


class TransformersSam:
    """``SamModel`` + ``SamProcessor``: image embeddings once, all boxes in one decoder call."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    @torch.no_grad()
    def segment(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[:2]
        if len(boxes) == 0:
            return torch.zeros(0, height, width, dtype=torch.bool)
        device = next(self.model.parameters()).device
        inputs = self.processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt").to(device)
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"])
        outputs = self.model(image_embeddings=embeddings, input_boxes=inputs["input_boxes"], multimask_output=False)
        masks = self.processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]
        return masks[:, 0].bool()


def load_transformers_folder(folder: str | os.PathLike, expected: str):
    """A transformers-format folder (``config.json``) holding ``expected`` ("sam" or "grounding-dino")."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel

    folder = Path(folder)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    classes = {"sam": (SamModel, TransformersSam), "grounding-dino": (GroundingDinoForObjectDetection, TransformersGroundingDino)}
    if model_type != expected:
        raise ModelFileError(f"'{folder.name}' is a transformers '{model_type}' folder, not a {expected} model.")
    model_class, wrapper = classes[expected]
    try:
        model = model_class.from_pretrained(str(folder), local_files_only=True).eval()
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"cannot load the transformers folder '{folder.name}': {str(error).splitlines()[0][:300]}") from None
    return wrapper(model, processor)


# ----------------------------------------------------------------------------- masks


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def boxes_to_segment(labels: torch.Tensor, scores: torch.Tensor, count: int, instances: str) -> torch.Tensor:
    """Indices of the boxes whose masks are used: every box of a phrase (``all``) or each phrase's best one (``best``).

    SAM decodes only these, so a loose threshold that lets hundreds of boxes through costs one decode per object with ``best``.
    """
    if instances == "all":
        return ((labels >= 0) & (labels < count)).nonzero(as_tuple=True)[0]
    best = [mine[scores[mine].argmax()] for phrase in range(count) if len(mine := (labels == phrase).nonzero(as_tuple=True)[0])]
    return torch.stack(best) if best else torch.zeros(0, dtype=torch.long)


def combine_instances(box_masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, count: int, instances: str):
    """One mask per phrase: OR of its boxes' masks (``all``) or its best-scoring box (``best``).

    Returns float ``[count, H, W]`` and a bool ``[count]`` saying which phrases were found.
    """
    masks = torch.zeros(count, *box_masks.shape[-2:])
    found = torch.zeros(count, dtype=torch.bool)
    for phrase in range(count):
        mine = (labels == phrase).nonzero(as_tuple=True)[0]
        if len(mine) == 0:
            continue
        found[phrase] = True
        chosen = mine[scores[mine].argmax()].view(1) if instances == "best" else mine
        masks[phrase] = box_masks[chosen].any(dim=0).float()
    return masks, found


def object_masks(image: torch.Tensor, objects: list[str], detector, segmenter, box_threshold: float = 0.45,
                 text_threshold: float = 0.4, instances: str = "all", on_missing: str = "error", dilation: int = 0):
    """Masks ``[N, H, W]`` for the plan's objects in plan order, from one image ``[H, W, 3]`` in [0, 1].

    Found masks are dilated by ``dilation`` pixels. Equal phrases share one
    detection. A missing object raises ``ObjectPhraseError``
    (``on_missing="error"``) or, with ``"unmasked"``, is edited without region
    masking: its mask is everything the found objects do not cover. (A
    full-image mask would overlap every other object, and overlapping pixels
    fall back to the background term, which would undo the other objects'
    isolation.) Returns the masks, the detections and the names of unmasked objects.
    """
    if instances not in INSTANCES or on_missing not in ON_MISSING:
        raise ValueError(f"instances must be one of {INSTANCES} and on_missing one of {ON_MISSING}")
    phrases = list(dict.fromkeys(normalize_phrase(o) for o in objects))
    detections = detector.detect(image, phrases, box_threshold, text_threshold)
    keep = boxes_to_segment(detections.labels, detections.scores, len(phrases), instances)
    box_masks = segmenter.segment(_to_uint8(image), detections.boxes[keep])
    per_phrase, found = combine_instances(box_masks, detections.labels[keep], detections.scores[keep], len(phrases), instances)
    order = [phrases.index(normalize_phrase(o)) for o in objects]
    missing = [o for o, p in zip(objects, order) if not found[p]]
    if missing and on_missing == "error":
        raise ObjectPhraseError(
            f"no box for {', '.join(repr(m) for m in missing)} (box_threshold {box_threshold}, text_threshold "
            f"{text_threshold}). Lower the thresholds, name the object as it looks in the image, or set "
            "on_missing to 'unmasked' to edit it without a region mask."
        )
    per_phrase = dilate(per_phrase, dilation)
    covered = per_phrase[found].amax(dim=0) if found.any() else torch.zeros(per_phrase.shape[-2:])
    per_phrase[~found] = 1.0 - covered
    return per_phrase[order], detections, missing
