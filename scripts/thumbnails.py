"""Pictures of the example workflows as ComfyUI's own frontend draws them.

    python3 -m scripts.thumbnails                           # every workflows/*.json
    python3 -m scripts.thumbnails edit_painted_masks_sd15   # only these (file stems)

Starts ComfyUI (harness/server.py: ``main.py --cpu`` on a free port, scratch base folder, the pack
linked into custom_nodes), uploads the example input images so Load Image shows them, opens the frontend
in headless Chromium, loads each UI workflow as drag-and-drop does (``app.loadGraphData``), fits the graph
to the view and writes

- ``workflows/<stem>.jpg``: 512x384, the thumbnail ComfyUI's template browser shows beside the
  workflow of the same name (``/api/workflow_templates/ComfyUI-LeakFreeEdit/<stem>.jpg``);
- ``docs/images/<stem>.png``: the whole graph at a readable zoom, for the README.

The browser is driven by harness/browser.py (needs ``playwright`` and a Chromium; nothing is downloaded).
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from harness.browser import HIDE_CHROME, PICTURE_SETTINGS, THUMBNAIL, canvas_png, fit_graph, graph_bounds, launch, load_workflow, open_frontend, readme_png, resize_canvas, thumbnail, wait_for_images
from harness.server import ComfyServer
from pipelines.comfyui import ROOT, find_comfyui

WORKFLOWS = ROOT / "workflows"
INPUTS = ROOT / "example_inputs"
DOCS_IMAGES = ROOT / "docs" / "images"
DOCS_ZOOM, DOCS_MAX_WIDTH = 0.8, 2600  # the README picture: canvas zoom, and the widest it may get


def render(url: str, workflows: list[Path], thumbnails_dir: Path = WORKFLOWS, docs_dir: Path = DOCS_IMAGES) -> list[Path]:
    from playwright.sync_api import sync_playwright

    thumbnails_dir.mkdir(parents=True, exist_ok=True)
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
            # The template browser's card: the whole graph, 4:3, drawn at 4x and scaled down (smooth lines).
            resize_canvas(page, THUMBNAIL[0] * 4, THUMBNAIL[1] * 4)
            fit_graph(page, margin=48)
            target = thumbnails_dir / f"{path.stem}.jpg"
            target.write_bytes(thumbnail(canvas_png(page)))
            written.append(target)
            # The README picture: the whole graph at a zoom where node titles and widget values read.
            _, _, width, height = graph_bounds(page)
            zoom = min(DOCS_ZOOM, (DOCS_MAX_WIDTH - 48) / width)
            resize_canvas(page, round(width * zoom + 48), round(height * zoom + 48))
            fit_graph(page, margin=24)
            target = docs_dir / f"{path.stem}.png"
            target.write_bytes(readme_png(canvas_png(page)))
            written.append(target)
        browser.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stems", nargs="*", help="workflow file stems (default: every workflows/*.json)")
    args = parser.parse_args(argv)
    workflows = [WORKFLOWS / f"{stem}.json" for stem in args.stems] or sorted(WORKFLOWS.glob("*.json"))
    for path in workflows:
        if not path.is_file():
            parser.error(f"no workflow {path}")

    base = Path(tempfile.mkdtemp(prefix="leakfree-thumbnails-"))
    server = ComfyServer(find_comfyui(), base, ROOT, name="thumbnails").wait_ready()
    try:
        for image in sorted(INPUTS.glob("*.[jp][pn]g")):
            server.upload(image)
        for target in render(server.url, workflows):
            print(target.relative_to(ROOT))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
