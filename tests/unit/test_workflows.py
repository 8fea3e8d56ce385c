"""The templates as files: each UI graph in workflows/ has its API twin in workflows/api/ and nothing else is a template;
each one teaches (titled groups around every node, a note, an opening view where the nodes read); the template
browser's order and card texts (js/templates.json) and the README's table name exactly the templates, in one order."""
import json
import re

import pytest

from pipelines.comfyui import ROOT

WORKFLOWS = ROOT / "workflows"
API_WORKFLOWS = sorted((WORKFLOWS / "api").glob("*.json"))
UI_WORKFLOWS = sorted(WORKFLOWS.glob("*.json"))
NODE_TITLE = 30  # LiteGraph draws a node's title bar above its pos
VIEW = (1280, 720)  # a small laptop's canvas, in screen pixels


def test_every_ui_workflow_has_an_api_twin_and_nothing_else_is_a_template():
    ui = {p.stem for p in UI_WORKFLOWS}
    assert ui and ui == {p.stem for p in API_WORKFLOWS}
    assert {p.name for p in WORKFLOWS.iterdir() if p.is_file()} == {f"{stem}.{ext}" for stem in ui for ext in ("json", "jpg")}
    for folder in ("example_workflows", "example", "examples", "workflow"):  # ComfyUI would list or serve these as templates too
        assert not (ROOT / folder).exists(), f"{folder}/ would shadow or add to workflows/ in the template browser"


def inside(box, bounding) -> bool:
    x, y, w, h = box
    gx, gy, gw, gh = bounding
    return gx <= x and gy <= y and x + w <= gx + gw and y + h <= gy + gh


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_every_template_teaches(path):
    """Titled groups hold every node; a MarkdownNote says what to load, how to write the edit lines and what to try
    first; the graph opens at a zoom where node titles read, with the note in view."""
    workflow = json.loads(path.read_text())
    notes = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1, f"{path.name}: one MarkdownNote (workflows/api/{path.stem}.md)"
    text = notes[0]["widgets_values"][0]
    assert "->" in text and "**Load**" in text and "**Try first**" in text, text
    groups = workflow["groups"]
    assert len(groups) >= 3 and all(g["title"].strip() for g in groups)
    for node in workflow["nodes"]:
        if node is notes[0]:
            continue
        box = [node["pos"][0], node["pos"][1] - NODE_TITLE, *node["size"]]
        assert sum(inside(box, g["bounding"]) for g in groups) == 1, f"{path.name}: node {node['id']} ({node['type']}) is not in exactly one group"
    view = workflow["extra"]["ds"]
    scale, (dx, dy) = view["scale"], view["offset"]
    assert scale >= 0.75, f"{path.name} opens at {scale:.0%}: too small to read node titles"
    x, y = notes[0]["pos"]
    w, h = notes[0]["size"]
    left, top, right = (x + dx) * scale, (y - NODE_TITLE + dy) * scale, (x + w + dx) * scale
    assert 0 <= left and 0 <= top and right <= VIEW[0] and top < VIEW[1] / 4, f"{path.name}: the note is not in the opening view"


def template_index() -> list[dict]:
    return json.loads((ROOT / "js" / "templates.json").read_text())


def test_the_template_browser_describes_and_orders_exactly_the_templates():
    index = template_index()
    assert sorted(t["name"] for t in index) == sorted(p.stem for p in UI_WORKFLOWS), "js/templates.json must list every template once"
    assert index[0]["name"] == "edit_painted_masks_sd15"  # the recommended first template
    for template in index:
        assert template["title"] != template["name"] and len(template["title"]) <= 48, template  # two lines of the card
        assert 20 <= len(template["description"]) <= 60, template  # two lines of the card, no "…"


def test_the_readme_table_lists_the_templates_in_the_browsers_order():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| template |"):].split("\n\n", 1)[0].splitlines()[2:]
    rows = [re.match(r"\| `(\w+)` \|", line).group(1) for line in table]
    assert rows == [t["name"] for t in template_index()]
