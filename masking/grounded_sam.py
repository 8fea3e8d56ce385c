"""Grounded-SAM: one mask per edit-plan object, from Grounding-DINO boxes cut by SAM.

Works with any detector of :mod:`.grounding_dino` and any segmenter of :mod:`.sam`. Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torchvision.ops import nms

from .grounding_dino import Detections, ObjectPhraseError, image_to_uint8
from .ops import dilate

ON_MISSING = ("error", "unmasked")
INSTANCES = ("all", "best")


def normalize_phrase(phrase: str) -> str:
    """Lower-case, no '.'/'?' (Grounding-DINO's phrase separators), single spaces."""
    return " ".join(re.sub(r"[.?]", " ", phrase.lower()).split())


REPEAT_IOU = 0.5  # boxes of a repeated name overlapping more than this are one instance found twice


@dataclass
class GroundedMasks:
    masks: torch.Tensor  # [N, H, W] in plan order, dilated
    detections: Detections
    missing: list[str]  # the objects edited without a region mask
    notes: list[str]  # per object: which instance of a repeated name it got, "unmasked" when none ("" otherwise)


def choose_boxes(detections: Detections, lines: list[int], count: int, instances: str) -> tuple[list[list[int]], list[str]]:
    """Which detected boxes make each line's mask, and a note per line.

    ``lines[i]`` is the phrase (of ``count``) of plan line i. A phrase on one line takes all its boxes
    (``all``) or its best one (``best``). A phrase on k lines ("car -> red car", "car -> blue car") needs k
    instances: its k best boxes that are not the same instance twice (non-maximum suppression at
    ``REPEAT_IOU``), given to its lines in reading order, left to right and then top to bottom; lines
    left without an instance get no box.
    """
    chosen, notes = [[] for _ in lines], ["" for _ in lines]
    for phrase in range(count):
        mine = (detections.labels == phrase).nonzero(as_tuple=True)[0]
        its_lines = [line for line, p in enumerate(lines) if p == phrase]
        if not len(mine):
            continue
        if len(its_lines) == 1:
            best = mine[detections.scores[mine].argmax()].view(1)
            chosen[its_lines[0]] = (mine if instances == "all" else best).tolist()
            continue
        kept = mine[nms(detections.boxes[mine], detections.scores[mine], REPEAT_IOU)[: len(its_lines)]]
        boxes = detections.boxes[kept]
        centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1).tolist()
        reading = [int(kept[i]) for i in sorted(range(len(kept)), key=lambda i: (centres[i][0], centres[i][1]))]
        for rank, (line, box) in enumerate(zip(its_lines, reading), start=1):
            chosen[line] = [box]
            notes[line] = f"{rank} of {len(its_lines)}, left to right"
    return chosen, notes


def object_masks(image: torch.Tensor, objects: list[str], detector, segmenter, box_threshold: float = 0.45,
                 text_threshold: float = 0.4, instances: str = "all", on_missing: str = "error", dilation: int = 0) -> GroundedMasks:
    """Masks ``[N, H, W]`` for the plan's objects in plan order, from one image ``[H, W, 3]`` in [0, 1].

    Found masks are dilated by ``dilation`` pixels. A name on several lines gets one detected instance
    per line (:func:`choose_boxes`). A missing object raises ``ObjectPhraseError``
    (``on_missing="error"``) or, with ``"unmasked"``, is edited without region
    masking: its mask is everything the found objects do not cover. (A
    full-image mask would overlap every other object, and overlapping pixels
    fall back to the background term, which would undo the other objects'
    isolation.) SAM decodes only the boxes used, so a loose threshold that lets
    hundreds of boxes through costs one decode per object with ``best``.
    """
    if instances not in INSTANCES or on_missing not in ON_MISSING:
        raise ValueError(f"instances must be one of {INSTANCES} and on_missing one of {ON_MISSING}")
    phrases = list(dict.fromkeys(normalize_phrase(o) for o in objects))
    lines = [phrases.index(normalize_phrase(o)) for o in objects]
    detections = detector.detect(image, phrases, box_threshold, text_threshold)
    chosen, notes = choose_boxes(detections, lines, len(phrases), instances)
    used = sorted({box for boxes in chosen for box in boxes})
    box_masks = segmenter.segment(image_to_uint8(image), detections.boxes[used])
    where = {box: index for index, box in enumerate(used)}
    masks = torch.zeros(len(objects), *image.shape[:2])
    for line, boxes in enumerate(chosen):
        if boxes:
            masks[line] = box_masks[[where[box] for box in boxes]].any(dim=0).float()
    missing = [o for o, boxes in zip(objects, chosen) if not boxes]
    if missing and on_missing == "error":
        raise ObjectPhraseError(
            f"no box for {', '.join(repr(m) for m in missing)} (box_threshold {box_threshold}, text_threshold "
            f"{text_threshold}; a name on several lines needs one instance per line). Lower the thresholds, name the "
            "object as it looks in the image, or set on_missing to 'unmasked' to edit it without a region mask."
        )
    found = torch.tensor([bool(boxes) for boxes in chosen])
    notes = [note if boxes else ", ".join(filter(None, (note, "unmasked"))) for note, boxes in zip(notes, chosen)]
    masks = dilate(masks, dilation)
    covered = masks[found].amax(dim=0) if found.any() else torch.zeros(masks.shape[-2:])
    masks[~found] = 1.0 - covered
    return GroundedMasks(masks, detections, missing, notes)
