"""Debian's Chromium driving ComfyUI's own frontend through Playwright: launch it offline, open the frontend as a
returning user, load a UI workflow as drag-and-drop does, frame the graph, take pictures of the canvas
(tests/browser/, and scripts/thumbnails.py for the README's pictures of the graphs).

Needs the Python package ``playwright`` and a Chromium (``$LEAKFREE_CHROMIUM``, ``chromium`` on the PATH, or a
browser installed with ``playwright install chromium``). Nothing is downloaded.
"""
from __future__ import annotations

import io
import json
import os
import shutil

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


def readme_png(png: bytes) -> bytes:
    """The README picture, quantised to 256 colours (a fifth of the size, the canvas is mostly flat colour)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
