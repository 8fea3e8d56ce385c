"""Help pages: one ``<WEB_DIRECTORY>/docs/<NodeClass>.md`` per node, as ComfyUI's frontend shows them in its node help panel.

The frontend (1.27+) fetches ``docs/<NodeClass>/<locale>.md`` and falls back to ``docs/<NodeClass>.md`` under the
pack's WEB_DIRECTORY. Every registered node needs a page that opens with its display name and lists every input
(required and optional, by its schema id) under ``## Inputs`` and every output (by RETURN_NAMES, or by type
when unnamed) under ``## Outputs``. Names are written as inline code, e.g. `` `edit_plan` ``. No server is needed.
"""
import re
from pathlib import Path

import pytest

from pipelines.comfyui import ROOT

DOCS = ROOT / "js" / "docs"  # WEB_DIRECTORY is ./js
HTML_TAG = re.compile(r"<(?:[A-Za-z][A-Za-z0-9-]*|/[A-Za-z][A-Za-z0-9-]*)(?:\s[^<>]*)?/?>")


@pytest.fixture(scope="module")
def docs() -> Path:
    return DOCS


def sections(text: str) -> dict[str, str]:
    """The body of every ``## `` section by its title (``### `` sub-headings stay inside their section)."""
    found, title, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("## "):
            if title is not None:
                found[title] = "\n".join(lines)
            title, lines = line[3:].strip(), []
        elif title is not None:
            lines.append(line)
    if title is not None:
        found[title] = "\n".join(lines)
    return found


def input_names(cls) -> list[str]:
    types = cls.INPUT_TYPES()
    return [name for group in ("required", "optional") for name in types.get(group, {})]


def output_names(cls) -> list[str]:
    return list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)


def named(name: str, text: str) -> bool:
    return f"`{name}`" in text


def test_every_node_has_a_help_page(pack_nodes, docs):
    missing = [key for key in pack_nodes if not (docs / f"{key}.md").is_file()]
    assert not missing, f"no help page in {docs} for: {', '.join(missing)}"


def test_help_pages_match_the_nodes(pack_nodes, docs):
    problems = []
    for key, cls in pack_nodes.items():
        page = docs / f"{key}.md"
        if not page.is_file():
            continue  # reported by test_every_node_has_a_help_page
        text = page.read_text(encoding="utf-8")
        title = "# " + cls.GET_SCHEMA().display_name
        first_line = text.splitlines()[0].rstrip() if text.strip() else ""
        if first_line != title:
            problems.append(f"{key}: the page must start with {title!r}")
        parts = sections(text)
        for needed in ("Inputs", "Outputs"):
            if needed not in parts:
                problems.append(f"{key}: no '## {needed}' section")
        if "Inputs" in parts and "Outputs" in parts and list(parts).index("Inputs") > list(parts).index("Outputs"):
            problems.append(f"{key}: '## Inputs' must come before '## Outputs'")
        problems += [f"{key}: input `{name}` is not in its Inputs section"
                     for name in input_names(cls) if not named(name, parts.get("Inputs", ""))]
        problems += [f"{key}: output `{name}` is not in its Outputs section"
                     for name in output_names(cls) if not named(name, parts.get("Outputs", ""))]
        if HTML_TAG.search(text) or "![" in text:
            problems.append(f"{key}: plain Markdown only (no HTML tags, no images)")
    assert not problems, "\n".join(problems)


def test_no_page_for_a_class_that_does_not_exist(pack_nodes, docs):
    assert docs.is_dir(), f"{docs} is missing"
    keys = set(pack_nodes)
    pages = [p.stem for p in docs.glob("*.md")] + [p.name for p in docs.iterdir() if p.is_dir()]  # docs/<NodeClass>/<locale>.md
    strays = sorted(set(pages) - keys)
    assert not strays, f"help pages for classes the pack does not register: {', '.join(strays)}"


PANEL_COLUMNS = 23  # characters of a code block that fit ComfyUI's node help panel (frontend 1.27.10: a 221 px <pre>, 14 px monospace)


def test_pages_are_written_for_the_narrow_help_panel(docs):
    """The help panel is about 220 px wide: a markdown table wraps there word by word and a code block scrolls
    sideways, so the pages use lists, and equations are inline code, which wraps at spaces (tests/browser checks that
    nothing scrolls sideways in the real panel)."""
    problems = []
    for page in sorted(docs.glob("*.md")):
        code = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            if line.startswith("```"):
                code = not code
            elif code and len(line) > PANEL_COLUMNS:
                problems.append(f"{page.name}:{number}: a code line of {len(line)} characters (at most {PANEL_COLUMNS})")
            elif not code and line.lstrip().startswith("|"):
                problems.append(f"{page.name}:{number}: a table row (write a list: the panel is too narrow for columns)")
    assert not problems, "\n".join(problems)
