"""The template browser's picture of a template (workflows/<stem>.jpg, 512 x 384, shown at about 0.45 on its card,
under which the card writes the template's title and description from js/templates.json): what the template does,
read off its API twin — the photo it edits with its painted masks tinted in the pack's preview colours, the edit
lines beside it in the same colours, the models it loads and where its masks come from.

Composed with Pillow from the example inputs, not from a run: without real weights (none are downloaded here) a run
gives noise, which would show the template doing nothing. Where a real result exists (``output``: a picture the
template made with real models), it fills the output panel under the edit lines.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .comfy_env import register_pack

register_pack()  # the pack as leakfree_edit, for its preview colours and font (ComfyUI is not needed)
from leakfree_edit.evaluation.fonts import font  # noqa: E402
from leakfree_edit.masking.ops import PREVIEW_COLORS, preview_overlay  # noqa: E402
from leakfree_edit.masking.preview import wrap  # noqa: E402

SIZE = (512, 384)
BACKGROUND, INK, MUTED = (24, 26, 32), (236, 236, 236), (160, 168, 180)
PHOTO, MARGIN, TEXT_FONT, SMALL_FONT = 288, 12, 23, 21  # the card shows the picture at about 0.45: text stays >= 9 px
MODEL_FILES = {"v1-5-pruned-emaonly.safetensors": "SD1.5", "sd_xl_base_1.0.safetensors": "SDXL", "flux1-dev.safetensors": "Flux dev",
               "flux1-schnell.safetensors": "Flux schnell"}
MASK_SOURCES = {"LeakFreeObjectMasksPainted": "painted masks", "LeakFreeObjectMasksGroundedSAM": "masks found by Grounded-SAM",
                "LeakFreeMasksFromAttention": "masks from the model's attention",
                "LeakFreeAttentionReplacement": "no masks: DPL's learned maps"}


def _linked_masks(graph: dict) -> list[str]:
    """The mask files of the painted-masks node, in edit-line order (mask_1, mask_2, ...)."""
    node = next((n for n in graph.values() if n["class_type"] == "LeakFreeObjectMasksPainted"), None)
    if node is None:
        return []
    names = sorted((k for k in node["inputs"] if k.startswith("mask_")), key=lambda k: int(k.split("_")[1]))
    return [graph[node["inputs"][k][0]]["inputs"]["image"] for k in names]


def _models(graph: dict) -> str:
    names = [MODEL_FILES.get(value) for node in graph.values() for value in node["inputs"].values() if isinstance(value, str)]
    family = next((n for n in names if n), "")
    lora = any(node["class_type"] == "LoraLoaderModelOnly" for node in graph.values())
    return family + (" + LCM LoRA" if lora else "")


def _photo(graph: dict, inputs: Path) -> Image.Image:
    """The first source image with its painted masks tinted in the preview colours, edit line by edit line."""
    source = next(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
    image = torch.from_numpy(np.asarray(Image.open(inputs / source).convert("RGB").resize((PHOTO, PHOTO), Image.Resampling.LANCZOS)) / 255.0)
    masks = [torch.from_numpy(np.asarray(Image.open(inputs / name).convert("L").resize((PHOTO, PHOTO), Image.Resampling.NEAREST)) / 255.0 > 0.5)
             for name in _linked_masks(graph)]
    if masks:
        image = preview_overlay(image, torch.stack(masks).float(), alpha=0.55)
    return Image.fromarray((image.numpy() * 255).round().astype(np.uint8))


def _edit_lines(graph: dict) -> list[tuple[str, str]]:
    text = next(n["inputs"]["edits"] for n in graph.values() if n["class_type"].startswith("LeakFree") and isinstance(n["inputs"].get("edits"), str))
    return [tuple(part.strip() for part in line.split("->", 1)) for line in text.splitlines() if "->" in line]


def _what(graph: dict) -> str:
    """The models and where the masks come from: "SD1.5 + LCM LoRA · painted masks"."""
    masks = [what for kind, what in MASK_SOURCES.items() if any(n["class_type"] == kind for n in graph.values())]
    return " · ".join(filter(None, [_models(graph), masks[0] if masks else ""]))


def template_card(api_path: Path, inputs: Path, output: Path | None = None) -> Image.Image:
    """The card of the template whose API twin is ``api_path`` (its title and description are the card's own text);
    ``output`` is a real result to show under the edit lines."""
    graph = json.loads(api_path.read_text())
    card = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    card.paste(_photo(graph, inputs), (MARGIN, MARGIN))
    x = MARGIN + PHOTO + MARGIN
    width, y = SIZE[0] - x - MARGIN, MARGIN
    for index, (source, target) in enumerate(_edit_lines(graph)):
        color = tuple(round(255 * c) for c in PREVIEW_COLORS[index % len(PREVIEW_COLORS)])
        draw.rectangle((x, y + 5, x + 8, y + TEXT_FONT), fill=color)
        for line in wrap(draw, f"{source} → {target}", font(TEXT_FONT), width - 14):
            draw.text((x + 14, y), line, fill=INK, font=font(TEXT_FONT))
            y += TEXT_FONT + 4
        y += 10
    if output is not None:  # the output panel: a real result, beside the photo, under the edit lines
        result = Image.open(output).convert("RGB")
        result.thumbnail((width, MARGIN + PHOTO - y))
        card.paste(result, (x, MARGIN + PHOTO - result.height))
    y = MARGIN + PHOTO + MARGIN
    for line in wrap(draw, _what(graph), font(SMALL_FONT), SIZE[0] - 2 * MARGIN)[:3]:
        draw.text((MARGIN, y), line, fill=MUTED, font=font(SMALL_FONT))
        y += SMALL_FONT + 4
    return card
