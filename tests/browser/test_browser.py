"""The pack in ComfyUI's real frontend (comfyui-frontend-package, served by the ``comfy_server`` fixture), in headless Chromium.

- every UI workflow in workflows/ loads as drag-and-drop does, every node type registered, and the frontend's
  own API conversion of it is its twin in workflows/api/;
- the web extension: the edit-list status line of Object-Restricted Encode (read back from what the canvas draws,
  in full at the node's default size) and the mask inputs of Object Masks from Painted Masks that grow as masks
  are connected;
- the template browser: the server lists and serves each example workflow and its thumbnail, and the frontend's
  template dialog opens each one;
- the node help panel shows each node's page from js/docs/.

One browser and one page for the module. A screenshot of each loaded workflow is written to ``$LEAKFREE_ARTIFACTS``
(default: a pytest temporary folder), named in the end-of-run report. Without Playwright or Chromium the browser
tests are skipped, or fail when ``LEAKFREE_REQUIRE_BROWSER=1`` (CI). The web extension's JS unit tests run in
tests/unit/test_js.py.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from harness import browser as chromium  # launching Chromium, opening the frontend, loading a workflow
from harness.template_cards import SIZE as CARD_SIZE
from pipelines.comfyui import ROOT

PACK_FOLDER = "ComfyUI-LeakFreeEdit"
UI_WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
STEMS = [path.stem for path in UI_WORKFLOWS]
TEMPLATES = json.loads((ROOT / "js" / "templates.json").read_text())  # the template browser's order and card texts
REQUIRE = os.environ.get("LEAKFREE_REQUIRE_BROWSER") == "1"

# Thrown by frontend 1.27.10 itself on every page load, with or without custom nodes.
KNOWN_PAGE_ERROR = "Cannot read properties of undefined (reading 'id')"
# Local requests that fail by design: a fresh user folder has no user.css, saved workflows, subgraphs or
# saved templates; Chromium asks for a favicon the server has none of; the help panel asks for a page in the
# user's language (docs/<Node>/en.md) before the pack's one page (docs/<Node>.md).
EXPECTED_MISSING = re.compile(
    r"^/(?:user\.css|favicon\.ico|api/userdata/(?:user\.css|comfy\.templates\.json)"
    r"|api/userdata\?dir=(?:workflows|subgraphs%2F)&.*"
    rf"|extensions/{PACK_FOLDER}/docs/LeakFree\w+/en\.md)$"
)

ENCODE, PAINTED_MASKS = "LeakFreeObjectRestrictedEncode", "LeakFreeObjectMasksPainted"
MALFORMED, MALFORMED_SAYS = "wolf -> goat\nmoon is gold", "⚠ line 2: no '->' (write 'source -> target')"
CORRECT, CORRECT_SAYS = "wolf -> brown-colored goat\nmoon -> moon made of gold", "2 objects: wolf, moon"


def unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (LEAKFREE_REQUIRE_BROWSER=1 needs it)", pytrace=False)
    pytest.skip(reason)


class PageLog:
    """What went wrong in the page: console errors, uncaught exceptions, failed local requests."""

    def __init__(self, page, base_url: str):
        self.base, self.entries = base_url, []
        page.on("console", self._console)
        page.on("pageerror", lambda error: error.message != KNOWN_PAGE_ERROR and self.entries.append(f"page error: {error.message}"))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _local_path(self, url: str) -> str | None:
        return url[len(self.base):] if url.startswith(self.base) else None

    def _console(self, message):
        if message.type != "error":
            return
        if message.text.startswith("Failed to load resource"):
            return  # judged by its response (or its failure) below, where the URL is known
        self.entries.append(f"console error: {message.text} (at {message.location.get('url')})")

    def _response(self, response):
        path = self._local_path(response.url)
        if path is not None and response.status >= 400 and not EXPECTED_MISSING.match(path):
            self.entries.append(f"HTTP {response.status}: {path}")

    def _failed(self, request):
        path = self._local_path(request.url)
        if path is not None and request.failure != "net::ERR_ABORTED":  # aborted = the page let go of it (or a 404 above)
            self.entries.append(f"request failed ({request.failure}): {path}")

    def mark(self) -> int:
        return len(self.entries)

    def since(self, mark: int) -> list[str]:
        return self.entries[mark:]


class Frontend:
    def __init__(self, page, log: PageLog, server, artifacts: Path):
        self.page, self.log, self.server, self.artifacts = page, log, server, artifacts

    def load(self, workflow: dict) -> list:
        return chromium.load_workflow(self.page, workflow)

    def show(self, x: float, y: float, scale: float = 1.0) -> None:
        """Put canvas point (x, y) at the canvas' top left + 40 px, at ``scale``."""
        self.page.evaluate("([x, y, s]) => { const ds = app.canvas.ds; ds.scale = s; ds.offset = [40 / s - x, 40 / s - y]; app.canvas.setDirty(true, true); }",
                           [x, y, scale])
        chromium.next_frames(self.page, 2)

    def drawn_text(self) -> list[dict]:
        """Every string the canvas draws in one full redraw (fillText), with where: ``x0``..``x1`` and ``y`` in canvas pixels."""
        return self.page.evaluate(
            """() => {
                const proto = CanvasRenderingContext2D.prototype, fillText = proto.fillText, drawn = [];
                proto.fillText = function (text, x, y, ...rest) {
                    const width = this.measureText(text).width, align = this.textAlign;
                    const start = align === 'right' || align === 'end' ? x - width : align === 'center' ? x - width / 2 : x;
                    const m = this.getTransform(), a = m.transformPoint({ x: start, y }), b = m.transformPoint({ x: start + width, y });
                    drawn.push({ text: String(text), x0: a.x, x1: b.x, y: a.y });
                    return fillText.call(this, text, x, y, ...rest);
                };
                try { app.canvas.setDirty(true, true); app.canvas.draw(true, true); } finally { proto.fillText = fillText; }
                return drawn;
            }"""
        )

    def screenshot(self, name: str, clip=None) -> Path:
        path = self.artifacts / name
        self.page.screenshot(path=str(path), clip=clip)
        return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the Python package playwright is not installed (pip install playwright)")
    playwright = sync_playwright().start()
    try:
        browser = chromium.launch(playwright)
    except Exception as error:  # no executable, or one that does not start
        playwright.stop()
        unavailable(f"no Chromium to drive (set LEAKFREE_CHROMIUM, or install chromium): {str(error).splitlines()[0]}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ["LEAKFREE_ARTIFACTS"]) if os.environ.get("LEAKFREE_ARTIFACTS") else tmp_path_factory.mktemp("browser-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\nbrowser screenshots: {folder}")


@pytest.fixture(scope="module")
def frontend(browser, comfy_server, artifacts, example_inputs):
    for image in sorted(example_inputs.glob("*.[jp][pn]g")):
        comfy_server.upload(image)  # Load Image nodes show the example pictures
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(30_000)
    log = PageLog(page, comfy_server.url)
    chromium.open_frontend(page, comfy_server.url, {"LiteGraph.Canvas.MinFontSizeForLOD": 0})  # full detail in screenshots
    assert not log.entries, "the frontend did not start cleanly:\n" + "\n".join(log.entries)
    yield Frontend(page, log, comfy_server, artifacts)
    page.close()


def no_dialog(page) -> None:
    dialogs = page.locator(".p-dialog")
    assert dialogs.count() == 0, "a dialog is open: " + " | ".join(dialogs.all_inner_texts())[:2000]


def leakfree_nodes(server) -> dict:
    info = server.get("/object_info").json()
    return {key: node for key, node in info.items() if node.get("python_module") == f"custom_nodes.{PACK_FOLDER}"}


def first_heading(markdown: str) -> str:
    heading = next(line for line in markdown.splitlines() if re.match(r"#{1,6} ", line))
    return re.sub(r"[`*_]", "", heading.lstrip("#")).strip()


def same(a, b) -> bool:
    """JSON equality where 4 and 4.0 are one number (JSON has one number type) but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def prompt_difference(expected: dict, got: dict) -> list[str]:
    """How the frontend's API prompt differs from the API twin (node ids, class types, inputs, titles).

    The frontend gives every node ``_meta.title`` (its graphToPrompt: "Ignored by the backend"): compared
    only where the twin has a ``_meta``.
    """
    problems = []
    if set(expected) != set(got):
        problems.append(f"node ids: twin only {sorted(set(expected) - set(got))}, frontend only {sorted(set(got) - set(expected))}")
    for node_id in sorted(set(expected) & set(got), key=int):
        want, have = expected[node_id], got[node_id]
        if want["class_type"] != have["class_type"]:
            problems.append(f"node {node_id}: class {have['class_type']}, twin {want['class_type']}")
        for name in sorted(set(want["inputs"]) | set(have["inputs"])):
            if not same(want["inputs"].get(name, "<absent>"), have["inputs"].get(name, "<absent>")):
                problems.append(f"node {node_id} ({want['class_type']}).{name}: frontend {have['inputs'].get(name, '<absent>')!r}, "
                                f"twin {want['inputs'].get(name, '<absent>')!r}")
        if "_meta" in want and want["_meta"].get("title") != have.get("_meta", {}).get("title"):
            problems.append(f"node {node_id}: title {have.get('_meta', {}).get('title')!r}, twin {want['_meta'].get('title')!r}")
    return problems


# --- 1. every UI workflow loads, every node registered, and converts to its API twin -----------------------------

@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=STEMS)
def test_ui_workflow_loads_with_every_node_registered_and_converts_to_its_api_twin(frontend, path, e2e_report):
    page, mark = frontend.page, frontend.log.mark()
    workflow = json.loads(path.read_text())
    missing = frontend.load(workflow)
    assert missing == [], f"the frontend reports missing node types: {missing}"
    nodes = page.evaluate(
        """() => app.graph.nodes.map((n) => ({ id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
                                               defined: n.constructor.nodeData?.name === n.type || n.isVirtualNode === true,
                                               has_errors: !!n.has_errors }))"""
    )
    assert sorted(n["id"] for n in nodes) == sorted(n["id"] for n in workflow["nodes"])
    # A type the frontend does not know becomes a bare LGraphNode placeholder with has_errors (LGraph.configure). The
    # template's note is the frontend's own MarkdownNote: a virtual node, with no server definition.
    broken = [n for n in nodes if not (n["registered"] and n["defined"]) or n["has_errors"]]
    assert not broken, f"nodes the frontend could not build: {broken}"
    assert page.evaluate("app.graph.links.size ?? Object.keys(app.graph.links).length") == len(workflow["links"])
    no_dialog(page)  # no missing-nodes (or missing-models) warning
    chromium.wait_for_images(page)
    shot = frontend.screenshot(f"{path.stem}.png")
    e2e_report[f"workflow screenshots saved in {shot.parent}"] += 1

    output = page.evaluate("async () => (await app.graphToPrompt()).output")
    twin = json.loads((ROOT / "workflows" / "api" / path.name).read_text())
    difference = prompt_difference(twin, output)
    assert not difference, f"app.graphToPrompt() of {path.name} is not workflows/api/{path.name}:\n" + "\n".join(difference)
    assert not frontend.log.since(mark), "\n".join(frontend.log.since(mark))
    e2e_report["UI workflows loaded in Chromium with every node registered"] += 1
    e2e_report["UI workflows whose frontend API conversion equals their API twin"] += 1


# --- 2. the web extension ------------------------------------------------------------------------------------------

def status_of(page, node_id: int) -> dict:
    """The status line's value, and the node's size and box on the canvas (canvas pixels, title bar included)."""
    return page.evaluate(
        """(id) => { const n = app.graph.getNodeById(id), w = n.widgets.find((w) => w.name === 'edit_summary');
                     const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
                     const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
                     return { value: w?.value, size: [...n.size], title: n.title, box: [x0, y0, x1, y1] }; }""",
        node_id,
    )


def assert_shown_in_full(frontend, node_id: int, says: str) -> dict:
    """The canvas draws ``says`` whole (not cut with "…"), inside the node's box, at the node's current size."""
    drawn = frontend.drawn_text()
    status = status_of(frontend.page, node_id)
    cut = [d["text"] for d in drawn if d["text"].endswith("…") and says.startswith(d["text"][:-1])]
    assert not cut, f"drawn cut short at node size {status['size']}: {cut}"
    shown = [d for d in drawn if d["text"] == says]
    assert shown, f"the canvas does not draw {says!r} (node size {status['size']}); it draws {[d['text'] for d in drawn if d['text'][:3] == says[:3]]}"
    x0, y0, x1, y1 = status["box"]
    assert any(x0 <= d["x0"] and d["x1"] <= x1 and y0 <= d["y"] <= y1 for d in shown), \
        f"{says!r} is drawn at {shown}, not inside the node's box {status['box']}"
    assert status["value"] == says
    return status


def test_edit_list_feedback_is_shown_in_full_while_typing(frontend, e2e_report):
    page, mark = frontend.page, frontend.log.mark()
    workflow = json.loads((ROOT / "workflows" / "edit_painted_masks_sd15.json").read_text())
    assert frontend.load(workflow) == []
    shipped = next(n for n in workflow["nodes"] if n["type"] == ENCODE)
    node_id = shipped["id"]
    frontend.show(*shipped["pos"])
    assert status_of(page, node_id)["size"] == shipped["size"]  # the size the workflow ships with
    assert_shown_in_full(frontend, node_id, CORRECT_SAYS)

    box = page.evaluate_handle("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'edits').inputEl", node_id).as_element()
    box.fill(MALFORMED)  # an input event, as when pasting
    assert_shown_in_full(frontend, node_id, MALFORMED_SAYS)
    frontend.screenshot("edit_list_malformed.png", clip={"x": 0, "y": 0, "width": 1000, "height": 560})
    box.fill("")
    box.focus()
    page.keyboard.type(CORRECT)  # key by key, Enter included
    assert page.evaluate("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'edits').value", node_id) == CORRECT
    assert_shown_in_full(frontend, node_id, CORRECT_SAYS)
    frontend.screenshot("edit_list_correct.png", clip={"x": 0, "y": 0, "width": 1000, "height": 560})

    # A node made from the node library: the frontend's default size for it.
    fresh = page.evaluate(
        """(text) => { const n = LiteGraph.createNode('LeakFreeObjectRestrictedEncode'); n.pos = [5000, 5000]; app.graph.add(n);
                       const edits = n.widgets.find((w) => w.name === 'edits'); edits.value = text; edits.callback(text);
                       return n.id; }""",
        MALFORMED,
    )
    frontend.show(5000, 5000)
    status = assert_shown_in_full(frontend, fresh, MALFORMED_SAYS)
    assert status["title"] == "Object-Restricted Encode (LeakFree)"  # the long display name, as the library names it
    # The status line is not a value of the node: not in the saved workflow, not in the prompt.
    saved = page.evaluate("(id) => app.graph.getNodeById(id).serialize().widgets_values", node_id)
    assert saved == [CORRECT, "object", "pack"]
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    assert set(prompt[str(node_id)]["inputs"]) == {"clip", "edits", "eos_mode", "source_substitution"}
    assert not frontend.log.since(mark), "\n".join(frontend.log.since(mark))
    e2e_report["edit-list messages read back in full from the canvas"] += 4


def mask_inputs(page, node_id: int) -> list[str]:
    """The node's mask inputs, a trailing * on connected ones."""
    return page.evaluate(
        """(id) => app.graph.getNodeById(id).inputs.filter((i) => /^mask_\\d+$/.test(i.name))
                   .map((i) => i.name + (i.link == null ? '' : '*'))""",
        node_id,
    )


def drag_link(frontend, source: int, target: int, input_name: str) -> None:
    """Drag with the mouse from output 0 of ``source`` to input ``input_name`` of ``target``."""
    start, end = frontend.page.evaluate(
        """([a, b, name]) => {
            const A = app.graph.getNodeById(a), B = app.graph.getNodeById(b), rect = app.canvas.canvas.getBoundingClientRect();
            const screen = ([x, y]) => { const [sx, sy] = app.canvas.ds.convertOffsetToCanvas([x, y]); return [sx + rect.left, sy + rect.top]; };
            return [screen(A.getOutputPos(0)), screen(B.getInputPos(B.inputs.findIndex((i) => i.name === name)))];
        }""",
        [source, target, input_name],
    )
    mouse = frontend.page.mouse
    mouse.move(*start)
    mouse.down()
    mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    mouse.move(*end, steps=4)
    mouse.up()
    chromium.next_frames(frontend.page)


def test_mask_inputs_grow_as_masks_are_connected(frontend, e2e_report):
    page, mark = frontend.page, frontend.log.mark()
    workflow = json.loads((ROOT / "workflows" / "edit_painted_masks_sd15.json").read_text())
    assert frontend.load(workflow) == []
    shipped = next(n for n in workflow["nodes"] if n["type"] == PAINTED_MASKS)
    assert mask_inputs(page, shipped["id"]) == ["mask_1*", "mask_2*", "mask_3"]  # as loaded: one free input

    ids = page.evaluate(
        """() => { app.clean();  // graph.clear() alone leaves the old graph's image previews to nodes that reuse its ids
                   const add = (type, x, y) => { const n = LiteGraph.createNode(type); n.pos = [x, y]; app.graph.add(n); return n.id; };
                   return { masks: add('LeakFreeObjectMasksPainted', 500, 0), sources: [0, 1, 2].map((k) => add('SolidMask', 0, k * 150)) }; }"""
    )
    frontend.show(-20, -40)
    node = ids["masks"]
    assert mask_inputs(page, node) == ["mask_1", "mask_2"]
    for k, source in enumerate(ids["sources"], start=1):
        drag_link(frontend, source, node, f"mask_{k}")
        masks = mask_inputs(page, node)
        assert masks == [f"mask_{i}*" for i in range(1, k + 1)] + [f"mask_{k + 1}"], f"after connecting mask_{k}: {masks}"
    frontend.screenshot("mask_inputs.png", clip={"x": 0, "y": 0, "width": 1000, "height": 600})
    page.evaluate("(id) => { const n = app.graph.getNodeById(id); n.disconnectInput(n.inputs.findIndex((i) => i.name === 'mask_3')); }", node)
    assert mask_inputs(page, node) == ["mask_1*", "mask_2*", "mask_3"]
    assert not frontend.log.since(mark), "\n".join(frontend.log.since(mark))
    e2e_report["mask inputs added by dragging a MASK link in Chromium"] += len(ids["sources"])


def progress_texts(page) -> list[dict]:
    """Every node progress text the frontend shows (its TextPreviewWidget: a span in a CSS break-all box): its words,
    the words the browser broke across two lines, and its width."""
    return page.evaluate(
        r"""() => [...document.querySelectorAll('.break-all > span')].map((span) => {
            const split = [], words = [];
            const walker = document.createTreeWalker(span, NodeFilter.SHOW_TEXT);
            for (let text = walker.nextNode(); text; text = walker.nextNode()) {
                for (const match of text.data.matchAll(/\S+/g)) {
                    const range = document.createRange();
                    range.setStart(text, match.index);
                    range.setEnd(text, match.index + match[0].length);
                    const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
                    words.push(match[0]);
                    if (tops.size > 1) split.push(match[0]);
                }
            }
            return { words, split, width: span.getBoundingClientRect().width };
        })"""
    )


def test_mask_warnings_on_the_node_break_between_words(frontend, e2e_report):
    """The frontend shows a node's progress text with CSS break-all: the pack sends its warnings in lines short enough
    that no word is broken, on the template's node and on one made from the node library at its default size."""
    import torch
    from leakfree_edit.integration.object_masks import node_text
    from leakfree_edit.masking.quality import mask_problems

    page, mark = frontend.page, frontend.log.mark()
    _, warnings = mask_problems(torch.ones(2, 64, 64), ["'wolf' (line 1)", "'moon' (line 2)"])  # two masks over the whole image
    assert warnings
    workflow = json.loads((ROOT / "workflows" / "edit_painted_masks_sd15.json").read_text())
    assert frontend.load(workflow) == []
    shipped = next(n["id"] for n in workflow["nodes"] if n["type"] == PAINTED_MASKS)
    fresh = page.evaluate("() => { const n = LiteGraph.createNode('LeakFreeObjectMasksPainted'); n.pos = [0, 3000]; app.graph.add(n); return n.id; }")
    for node_id in (shipped, fresh):
        page.evaluate("([id, text]) => app.api.dispatchCustomEvent('progress_text', { nodeId: String(id), text })", [node_id, node_text(warnings)])
    chromium.next_frames(page, 3)
    shown = progress_texts(page)
    assert len(shown) == 2, f"the nodes show {len(shown)} progress texts, not 2"
    for text in shown:
        assert text["words"] == " ".join(f"! {w}" for w in warnings).split()
        assert not text["split"], f"words broken across lines at {text['width']:.0f} px: {text['split']}"
        e2e_report["warning texts shown on a node without a broken word"] += 1
    assert not frontend.log.since(mark), "\n".join(frontend.log.since(mark))


# --- 3. the template browser ---------------------------------------------------------------------------------------

def test_template_index_lists_exactly_the_ui_workflows(comfy_server, e2e_report):
    answer = comfy_server.get("/workflow_templates")
    assert answer.status_code == 200
    assert sorted(answer.json().get(PACK_FOLDER, [])) == STEMS, answer.json()
    e2e_report["template index entries checked"] += len(STEMS)


@pytest.mark.parametrize("stem", STEMS)
def test_template_routes_serve_the_workflow_and_its_thumbnail(comfy_server, stem, e2e_report):
    from PIL import Image

    workflow = comfy_server.get(f"/api/workflow_templates/{PACK_FOLDER}/{stem}.json")
    assert workflow.status_code == 200, f"{workflow.request.url} answered {workflow.status_code}"
    assert workflow.json() == json.loads((ROOT / "workflows" / f"{stem}.json").read_text())
    thumbnail = comfy_server.get(f"/api/workflow_templates/{PACK_FOLDER}/{stem}.jpg")
    assert thumbnail.status_code == 200, f"{thumbnail.request.url} answered {thumbnail.status_code} (run scripts/thumbnails.py)"
    assert thumbnail.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.content)) as image:
        assert image.format == "JPEG" and image.size == CARD_SIZE
    e2e_report["template fetches answered 200"] += 2


def test_template_browser_opens_each_pack_template(frontend, e2e_report):
    """Every card in js/templates.json's order (the recommended first template first) with its title and description,
    its thumbnail shown; clicked, the template opens with no missing node, at its opening view with the note in sight."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page, mark = frontend.page, frontend.log.mark()
    texts = {t["name"]: t for t in TEMPLATES}
    for stem, path in zip(STEMS, UI_WORKFLOWS):
        page.evaluate("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        content = page.locator('[data-testid="template-workflows-content"]')
        # The dialog selects its first category once its index has loaded: pick the pack's after that.
        content.locator('[role="option"][aria-selected="true"]').wait_for()
        option = content.get_by_role("option", name=PACK_FOLDER, exact=True)
        option.click()
        assert option.get_attribute("aria-selected") == "true"
        card = content.locator(f'[data-testid="template-workflow-{stem}"]')
        card.wait_for()
        card.scroll_into_view_if_needed()  # cards load their thumbnails lazily, once in view (a third row from 7 templates on)
        shown = content.locator('[data-testid^="template-workflow-"]').evaluate_all(
            "(cards) => cards.map((c) => c.dataset.testid.slice('template-workflow-'.length))")
        assert shown == [t["name"] for t in TEMPLATES], "the cards are not in js/templates.json's order"
        page.wait_for_function(
            """([stem, title]) => document.querySelector(`[data-testid="template-workflow-${stem}"] h3`)?.textContent === title""",
            arg=[stem, texts[stem]["title"]], timeout=5_000)
        assert card.locator("p").inner_text() == texts[stem]["description"]
        # The thumbnail: fetched, cached as a blob and decoded by the card's <img>.
        try:
            page.wait_for_function(
                """(stem) => { const img = document.querySelector(`[data-testid="template-workflow-${stem}"] img`);
                               return img?.src.startsWith('blob:') && img.complete && img.naturalWidth > 0; }""",
                arg=stem, timeout=10_000)
        except PlaywrightTimeout:
            pytest.fail(f"the template card of {stem} shows no thumbnail:\n" + "\n".join(frontend.log.since(mark)), pytrace=False)
        if stem == STEMS[0]:
            frontend.screenshot("template_browser.png")
        page.evaluate("window.__leakfreeMissing.last = null")
        card.click()
        content.wait_for(state="detached")
        page.wait_for_function("window.__leakfreeMissing?.last !== null")
        assert page.evaluate("window.__leakfreeMissing.last") == []
        chromium.next_frames(page)
        no_dialog(page)
        workflow = json.loads(path.read_text())
        assert page.evaluate("app.graph.nodes.length") == len(workflow["nodes"])
        assert page.evaluate("app.graph.nodes.every((n) => !n.has_errors && n.type in LiteGraph.registered_node_types)")
        view = page.evaluate("[app.canvas.ds.scale, [...app.canvas.ds.offset]]")
        assert view == [workflow["extra"]["ds"]["scale"], workflow["extra"]["ds"]["offset"]], "the template did not open at its view"
        note = page.evaluate(
            """() => { const n = app.graph.nodes.find((n) => n.type === 'MarkdownNote'), c = app.canvas.canvas;
                       const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1]]);
                       const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
                       return { box: [x0, y0, x1, y1], canvas: [c.clientWidth, c.clientHeight] }; }""")
        (x0, y0, x1, _), (width, height) = note["box"], note["canvas"]
        assert 0 <= x0 and x1 <= width and 0 <= y0 < height / 3, f"the note is not in the opening view: {note}"
        if stem == STEMS[0]:
            frontend.screenshot("template_opened.png")
        e2e_report["templates opened from the frontend's template browser"] += 1
    assert not frontend.log.since(mark), "\n".join(frontend.log.since(mark))


# --- 4. the node help panel ----------------------------------------------------------------------------------------

def test_every_node_has_a_help_page_served(comfy_server, e2e_report):
    nodes = leakfree_nodes(comfy_server)
    assert len(nodes) >= 10, sorted(nodes)
    missing = []
    for key in nodes:
        answer = comfy_server.get(f"/extensions/{PACK_FOLDER}/docs/{key}.md")
        if answer.status_code != 200 or not answer.text.lstrip().startswith("#"):
            missing.append(f"{key} ({answer.status_code})")
        else:
            e2e_report["node help pages served"] += 1
    assert not missing, "no help page (js/docs/<NodeClass>.md) served for: " + ", ".join(missing)


def test_help_panel_shows_each_nodes_page(frontend, e2e_report):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page, mark = frontend.page, frontend.log.mark()
    nodes = sorted(leakfree_nodes(frontend.server))
    frontend.show(0, 0)
    for key in nodes:
        heading = first_heading((ROOT / "js" / "docs" / f"{key}.md").read_text())
        page.evaluate(
            """(type) => { app.clean(); const n = LiteGraph.createNode(type); n.pos = [100, 100]; app.graph.add(n);
                          app.canvas.deselectAll(); app.canvas.selectNode(n); app.canvas.setDirty(true, true); }""",
            key,
        )
        page.locator('[data-testid="info-button"]').click()  # the selection toolbox's (i): useSelectionState().showNodeHelp
        try:
            page.wait_for_function(
                """(heading) => document.querySelector('.node-help-content')
                                  ?.querySelector('h1, h2, h3, h4, h5, h6')?.textContent.trim() === heading""",
                arg=heading,
                timeout=15_000,
            )
        except PlaywrightTimeout:
            shown = page.evaluate("document.querySelector('.node-help-content')?.innerText.slice(0, 300) ?? '<no help panel>'")
            pytest.fail(f"the help panel of {key} does not open with {heading!r}; it shows: {shown!r}\n"
                        + "\n".join(frontend.log.since(mark)), pytrace=False)
        wide = page.evaluate(
            """() => [...document.querySelectorAll('.node-help-content, .node-help-content *')]
                     .filter((e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
                     .map((e) => `${e.tagName} ${e.scrollWidth} > ${e.clientWidth} px: ${e.textContent.slice(0, 60)}`)""")
        assert not wide, f"the help page of {key} scrolls sideways in the panel: {wide}"
        if key == ENCODE:
            frontend.screenshot("help_panel.png")
        e2e_report["node help pages shown in the help panel, none scrolling sideways"] += 1
    assert not frontend.log.since(mark), "\n".join(frontend.log.since(mark))
