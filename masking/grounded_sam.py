"""Grounded-SAM: one mask per edit-plan object, from Grounding-DINO boxes cut by SAM.

Works with any detector of :mod:`.grounding_dino` and any segmenter of :mod:`.sam`. Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import re

import torch

from .grounding_dino import ObjectPhraseError, image_to_uint8
from .ops import dilate

ON_MISSING = ("error", "unmasked")
INSTANCES = ("all", "best")


def normalize_phrase(phrase: str) -> str:
    """Lower-case, no '.'/'?' (Grounding-DINO's phrase separators), single spaces."""
    return " ".join(re.sub(r"[.?]", " ", phrase.lower()).split())


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
    box_masks = segmenter.segment(image_to_uint8(image), detections.boxes[keep])
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
