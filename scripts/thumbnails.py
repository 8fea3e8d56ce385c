"""Pictures of the example workflows as ComfyUI's own frontend draws them.

    python3 scripts/thumbnails.py                           # every example_workflows/*.json
    python3 scripts/thumbnails.py edit_painted_masks_sd15   # only these (file stems)

Starts ComfyUI (tests/comfy_server.py: ``main.py --cpu`` on a free port, scratch base folder, the pack
linked into custom_nodes), uploads the example input images so Load Image shows them, opens the frontend
in headless Chromium, loads each UI workflow as drag-and-drop does (``app.loadGraphData``), fits the graph
to the view and writes

- ``example_workflows/<stem>.jpg``: 512x384, the thumbnail ComfyUI's template browser shows beside the
  workflow of the same name (``/api/workflow_templates/ComfyUI-LeakFreeEdit/<stem>.jpg``);
- ``docs/images/<stem>.png``: the whole graph at a readable zoom, for the README.

Needs the Python package ``playwright`` and a Chromium (``$LEAKFREE_CHROMIUM``, ``chromium`` on the PATH,
or a browser installed with ``playwright install chromium``). Nothing is downloaded. tests/test_browser.py
drives the frontend with the helpers here.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-LeakFreeEdit"
WORKFLOWS = ROOT / "example_workflows"
INPUTS = ROOT / "example_inputs"
DOCS_IMAGES = ROOT / "docs" / "images"
THUMBNAIL = (512, 384)
DOCS_ZOOM, DOCS_MAX_WIDTH = 0.8, 2600  # the README picture: canvas zoom, and the widest it may get

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 # Other hosts (release notes, telemetry) fail at once: the machine may have no network. Cheaper
                 # than intercepting every request with page.route.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]
# Settings for pictures: full detail at any zoom (no level-of-detail boxes), no minimap, no FPS corner text.
PICTURE_SETTINGS = {"LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
# Everything drawn over the canvas (menus, side bar, zoom toolbar, minimap) hidden; DOM widgets stay.
HIDE_CHROME = """
#comfyui-body-top, #comfyui-body-left, #comfyui-body-right, #comfyui-body-bottom, .comfy-menu-hamburger,
#graph-canvas-container .p-splitter, .p-toast { visibility: hidden !important; }
"""


def find_chromium() -> str | None:
    """A Chromium to drive: ``$LEAKFREE_CHROMIUM``, else one on the PATH; None = Playwright's own, if installed."""
    named = os.environ.get("LEAKFREE_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright):
    executable = find_chromium()
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def open_frontend(page, url: str, settings: dict | None = None, timeout_ms: int = 90_000) -> None:
    """Load the frontend as a returning user and wait until it has restored its first graph with the pack's extension.

    ``settings`` are stored for the user first (POST /api/settings). Comfy.TutorialCompleted is always set:
    on a fresh user folder the frontend would otherwise open the template browser over the canvas.
    """
    answer = page.request.post(f"{url}/api/settings", data=json.dumps({"Comfy.TutorialCompleted": True, **(settings or {})}),
                               headers={"Content-Type": "application/json"})
    if not answer.ok:
        raise RuntimeError(f"POST /api/settings answered {answer.status}")
    page.goto(url)
    page.wait_for_function(
        """() => window.app?.graph && app.canvas && app.extensionManager?.workflow?.activeWorkflow
                 && app.graph.nodes.length > 0
                 && app.extensions?.some((e) => e.name === 'LeakFreeEdit.UI')
                 && 'LeakFreeObjectRestrictedEncode' in LiteGraph.registered_node_types""",
        timeout=timeout_ms,
    )
    # A probe: the node types the frontend found missing in the last graph it loaded (any way: file, template, paste).
    page.evaluate(
        """() => { window.__leakfreeMissing = { last: null };
                   app.registerExtension({ name: 'LeakFreeEdit.TestProbe',
                                           afterConfigureGraph(missing) { window.__leakfreeMissing.last = [...missing]; } }); }"""
    )


def next_frames(page, frames: int = 2) -> None:
    page.evaluate("(n) => new Promise((done) => { const step = (k) => k ? requestAnimationFrame(() => step(k - 1)) : done(); step(n); })", frames)


def load_workflow(page, workflow: dict) -> list:
    """``app.loadGraphData`` as drag-and-drop ends up; returns the node types the frontend reported missing."""
    missing = page.evaluate(
        """async (workflow) => {
            window.__leakfreeMissing.last = null;
            await app.loadGraphData(workflow);
            return window.__leakfreeMissing.last;
        }""",
        workflow,
    )
    next_frames(page)
    return missing


def wait_for_images(page, timeout_ms: int = 30_000) -> None:
    """Until every Load Image / Load Image (as Mask) preview has loaded."""
    page.wait_for_function(
        """() => app.graph.nodes.filter((n) => n.type === 'LoadImage' || n.type === 'LoadImageMask')
                 .every((n) => n.imgs?.length && n.imgs.every((i) => i.complete && i.naturalWidth > 0))""",
        timeout=timeout_ms,
    )


def graph_bounds(page) -> list[float]:
    """[x, y, width, height] of every node (title bar included) and group, in canvas units."""
    return page.evaluate(
        """() => {
            let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
            for (const item of [...app.graph.nodes, ...(app.graph.groups ?? [])]) {
                const [x, y, w, h] = item.boundingRect;
                x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
            }
            return [x0, y0, x1 - x0, y1 - y0];
        }"""
    )


def fit_graph(page, margin: float = 24) -> float:
    """Zoom and pan so the whole graph fills the canvas, ``margin`` screen pixels around it; returns the zoom."""
    scale = page.evaluate(
        """([x, y, w, h, margin]) => {
            const canvas = app.canvas, ds = canvas.ds;
            const cw = canvas.canvas.clientWidth, ch = canvas.canvas.clientHeight;
            const scale = Math.min((cw - 2 * margin) / w, (ch - 2 * margin) / h);
            ds.scale = scale;
            ds.offset = [cw / 2 / scale - (x + w / 2), ch / 2 / scale - (y + h / 2)];
            canvas.setDirty(true, true);
            return scale;
        }""",
        [*graph_bounds(page), margin],
    )
    next_frames(page, 3)
    return scale


def canvas_png(page) -> bytes:
    """A screenshot of the canvas area (with the DOM widgets over it)."""
    box = page.locator("#graph-canvas").bounding_box()
    return page.screenshot(clip=box, animations="disabled")


def resize_canvas(page, width: int, height: int) -> None:
    """Make the canvas area width x height CSS pixels (the viewport grows by what the menus take)."""
    box = page.locator("#graph-canvas").bounding_box()
    viewport = page.viewport_size
    page.set_viewport_size({"width": round(viewport["width"] - box["width"] + width),
                            "height": round(viewport["height"] - box["height"] + height)})
    next_frames(page, 3)


def thumbnail(png: bytes, size=THUMBNAIL) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88, optimize=True)
    return out.getvalue()


def readme_png(png: bytes) -> bytes:
    """The README picture, quantised to 256 colours (a fifth of the size, the canvas is mostly flat colour)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def comfy_server_class():
    """tests/comfy_server.py's ComfyServer, imported by path (the tests are not a package here)."""
    spec = importlib.util.spec_from_file_location("leakfree_comfy_server", ROOT / "tests" / "comfy_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ComfyServer


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
    parser.add_argument("stems", nargs="*", help="workflow file stems (default: every example_workflows/*.json)")
    args = parser.parse_args(argv)
    workflows = [WORKFLOWS / f"{stem}.json" for stem in args.stems] or sorted(WORKFLOWS.glob("*.json"))
    for path in workflows:
        if not path.is_file():
            parser.error(f"no workflow {path}")

    sys.path.insert(0, str(ROOT / "scripts"))
    import comfy_env

    base = Path(tempfile.mkdtemp(prefix="leakfree-thumbnails-"))
    server = comfy_server_class()(comfy_env.find_comfyui(), base, ROOT, name="thumbnails").wait_ready()
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
