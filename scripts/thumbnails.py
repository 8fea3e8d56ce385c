"""Pictures of the templates: the template browser's cards, and the README's view of each graph.

    python3 -m scripts.thumbnails                           # every workflows/*.json
    python3 -m scripts.thumbnails edit_painted_masks_sd15   # only these (file stems)
    python3 -m scripts.thumbnails --cards-only              # the cards alone (no server, no browser: a second)
    python3 -m scripts.thumbnails --results DIR             # a real result DIR/<stem>.png in each card's output panel

- ``workflows/<stem>.jpg``: 512x384, the picture ComfyUI's template browser shows on the template's card
  (``/api/workflow_templates/ComfyUI-LeakFreeEdit/<stem>.jpg``): what the template does, composed by
  harness/template_cards.py from its API twin and the example inputs (why not from a run: there);
- ``docs/images/<stem>.png``: the whole graph as ComfyUI's own frontend draws it, at a zoom where node titles and
  widget values read. Starts ComfyUI (harness/server.py), uploads the example inputs so Load Image shows them, loads
  each UI workflow in headless Chromium as drag-and-drop does (harness/browser.py; needs ``playwright`` and a
  Chromium, nothing is downloaded) and frames the graph.
"""
import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

from harness.browser import HIDE_CHROME, PICTURE_SETTINGS, canvas_png, fit_graph, graph_bounds, launch, load_workflow, next_frames, open_frontend, readme_png, resize_canvas, wait_for_images
from harness.server import ComfyServer
from harness.template_cards import template_card
from pipelines.comfyui import ROOT, find_comfyui

WORKFLOWS = ROOT / "workflows"
INPUTS = ROOT / "example_inputs"
DOCS_IMAGES = ROOT / "docs" / "images"
DOCS_ZOOM, DOCS_MAX_WIDTH = 0.8, 2600  # the README picture: canvas zoom, and the widest it may get


def cards(workflows: list[Path], results: Path | None) -> list[Path]:
    written = []
    for path in workflows:
        output = results / f"{path.stem}.png" if results and (results / f"{path.stem}.png").is_file() else None
        card = template_card(WORKFLOWS / "api" / path.name, INPUTS, output)
        target = WORKFLOWS / f"{path.stem}.jpg"
        card.save(target, "JPEG", quality=90, optimize=True)
        written.append(target)
    return written


def show_whole_canvas(page) -> None:
    """Grow the viewport until the canvas ends inside it: the frontend keeps the canvas at a minimum height, and a
    screenshot stops at the viewport's edge, so a short graph fitted to the whole canvas was cut off at the bottom."""
    box, viewport = page.locator("#graph-canvas").bounding_box(), page.viewport_size
    overflow = math.ceil(box["y"] + box["height"] - viewport["height"])
    if overflow > 0:
        page.set_viewport_size({"width": viewport["width"], "height": viewport["height"] + overflow})
        next_frames(page, 3)


def frame_graph(page, tries: int = 5) -> None:
    """Size the canvas to the graph at DOCS_ZOOM and fit the graph in it, measuring again after each fit until the
    bounds hold: a node the frontend has not drawn yet may still grow to fit its widgets when the fit draws it."""
    bounds = graph_bounds(page)
    for _ in range(tries):
        _, _, width, height = bounds
        zoom = min(DOCS_ZOOM, (DOCS_MAX_WIDTH - 48) / width)
        resize_canvas(page, round(width * zoom + 48), round(height * zoom + 48))
        show_whole_canvas(page)
        fit_graph(page, margin=24)
        bounds, before = graph_bounds(page), bounds
        if bounds == before:
            return


def graph_pictures(url: str, workflows: list[Path], docs_dir: Path = DOCS_IMAGES) -> list[Path]:
    from playwright.sync_api import sync_playwright

    docs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        open_frontend(page, url, PICTURE_SETTINGS)
        page.add_style_tag(content=HIDE_CHROME)
        for path in workflows:
            missing = load_workflow(page, json.loads(path.read_text()))
            if missing:
                raise RuntimeError(f"{path.name}: the frontend has no node type {missing}")
            wait_for_images(page)
            frame_graph(page)
            target = docs_dir / f"{path.stem}.png"
            target.write_bytes(readme_png(canvas_png(page)))
            written.append(target)
        browser.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stems", nargs="*", help="workflow file stems (default: every workflows/*.json)")
    parser.add_argument("--cards-only", action="store_true", help="only the template browser's cards (no server, no browser)")
    parser.add_argument("--results", type=Path, help="a folder of real results, <stem>.png, for the cards' output panels")
    args = parser.parse_args(argv)
    workflows = [WORKFLOWS / f"{stem}.json" for stem in args.stems] or sorted(WORKFLOWS.glob("*.json"))
    for path in workflows:
        if not path.is_file():
            parser.error(f"no workflow {path}")
    written = cards(workflows, args.results)
    if not args.cards_only:
        base = Path(tempfile.mkdtemp(prefix="leakfree-thumbnails-"))
        server = ComfyServer(find_comfyui(), base, ROOT, name="thumbnails").wait_ready()
        try:
            for image in sorted(INPUTS.glob("*.[jp][pn]g")):
                server.upload(image)
            written += graph_pictures(server.url, workflows)
        finally:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)
    for target in written:
        print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
