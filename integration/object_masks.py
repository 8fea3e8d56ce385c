"""The end every object-mask node shares: the overlap rule, how much of each object's area is its own, the labelled
preview, and the warnings the user sees in the app (on the preview, on the node, in the log)."""
from __future__ import annotations

import logging
import textwrap

import torch

from ..attention.plan import EditPlan
from ..masking.ops import background_mask, binarize, dilate, dilation_radius, own_fraction, resolve_overlaps, stack_object_masks
from ..masking.preview import labelled_preview
from ..masking.quality import aspect_mismatch, mask_problems
from .errors import NodeInputError

log = logging.getLogger("LeakFreeEdit")
SMALL_OWN_SHARE = 0.25  # below this share of its own area an object is hardly edited
# The frontend shows a node's progress text with CSS ``break-all`` (frontend 1.27.10's TextPreviewWidget): a line wider
# than the node breaks inside a word. Lines of at most this many characters fit a node of the default width whole.
NODE_TEXT_COLUMNS = 34


def object_names(plan: EditPlan) -> list[str]:
    return [f"'{edit.source}' (line {edit.line})" if edit.line else f"'{edit.source}'" for edit in plan.edits]


def dilation_pixels(height: int, width: int, dilation_percent: float) -> int:
    return dilation_radius(height, width, dilation_percent / 100.0)


def finish_object_masks(dilated: torch.Tensor, plan: EditPlan, overlap: str, canvas: torch.Tensor, notes: list[str] = (),
                        warnings: list[str] = ()) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(masks after the overlap rule, labelled preview ``[H, W, 3]``, warnings) for one image's dilated masks ``[N, H, W]``.

    Each label says how much of the object's (dilated) area is its own; an object left with little
    of it gets a warning that names the overlap option.
    """
    masks = resolve_overlaps(dilated, overlap)
    own = own_fraction(dilated, masks)
    warnings = list(warnings)
    labels = []
    for name, source, share, note in zip(object_names(plan), plan.objects, own.tolist(), list(notes) or [""] * len(plan)):
        labels.append(f"{source}{f' [{note}]' if note else ''}: {share:.0%} own")
        if dilated[len(labels) - 1].any() and share < SMALL_OWN_SHARE:
            warnings.append(f"{name} keeps only {share:.0%} of its area: the rest is shared with another object and, with overlap "
                            f"'{overlap}', edited {'as background' if overlap == 'background' else 'as that object'}"
                            f"{'; a nested object is edited with overlap inner' if overlap == 'background' else ''}.")
    return masks, labelled_preview(canvas, masks, labels, warnings), warnings


def painted_object_masks(given: list[torch.Tensor], image: torch.Tensor | None, plan: EditPlan, dilation_percent: float,
                         overlap: str, node: str):
    """The user's masks, one per plan object: checked, binarised, dilated, the overlap rule applied.

    Returns (masks ``[N, H, W]``, background ``[1, H, W]``, preview ``[1, H, W, 3]``, warnings).
    """
    if image is not None:
        for number, mask in enumerate(given, start=1):
            if aspect_mismatch(mask.shape[-2:], image.shape[1:3]):
                raise NodeInputError(
                    f"{node}: mask_{number} is {mask.shape[-1]}x{mask.shape[-2]} px but the image is {image.shape[2]}x{image.shape[1]} "
                    "px (another shape): it would be stretched off the objects. Paint the masks on this image, or resize or "
                    "crop the masks as the image was.")
    masks = stack_object_masks(given, *(image.shape[1:3] if image is not None else (None, None)))
    if masks.shape[0] != len(plan):
        raise NodeInputError(
            f"{node}: got {masks.shape[0]} masks for {len(plan)} objects ({', '.join(plan.objects)}). "
            "Give exactly one mask per edit line, in the same order."
        )
    masks = binarize(masks)
    errors, warnings = mask_problems(masks, object_names(plan))
    if errors:
        raise NodeInputError(f"{node}: " + " Also, ".join(errors))
    dilated = dilate(masks, dilation_pixels(*masks.shape[-2:], dilation_percent))
    canvas = image[0] if image is not None else torch.zeros(*masks.shape[-2:], 3)
    masks, preview, warnings = finish_object_masks(dilated, plan, overlap, canvas, warnings=warnings)
    return masks, background_mask(masks), preview.unsqueeze(0), warnings


def node_text(warnings: list[str]) -> str:
    """The warnings as the node shows them: each one starting with "!", broken into lines at spaces (see NODE_TEXT_COLUMNS)."""
    return "\n".join(line for warning in warnings
                     for line in textwrap.wrap(f"! {warning}", NODE_TEXT_COLUMNS, break_long_words=False, break_on_hyphens=False))


def show_warnings(node: str, warnings: list[str], unique_id=None) -> dict:
    """Log ``warnings``, show them on the node in the app (ComfyUI's progress text) and return them as the node's UI
    output (kept in the prompt's history for API clients)."""
    for warning in warnings:
        log.warning("%s: %s", node, warning)
    if warnings and unique_id is not None:
        from server import PromptServer

        server = getattr(PromptServer, "instance", None)
        if server is not None:
            server.send_progress_text(node_text(warnings), unique_id)
    return {"leakfree_warnings": list(warnings)}
