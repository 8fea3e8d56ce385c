"""Write the drag-and-drop (UI format) twin of an API-format workflow, from the nodes' own INPUT_TYPES.

``python3 -m scripts.ui_workflow workflows/api/NAME.json`` writes workflows/NAME.json.

The UI file is derived, never hand-edited, so the two formats always describe the same graph (a test regenerates
every UI file and compares, and reads the API graph back out of it). What only the UI file has comes from the API
twin and one file beside it:

- titled groups: each node's ``_meta.group`` in the API twin (ComfyUI ignores ``_meta`` but its ``title``), the groups
  laid out left to right in the order they first appear, each node in a column by its depth in the graph;
- a MarkdownNote at the left: ``workflows/api/NAME.md``, what to load where, what to paint, how to write the edit
  lines and which widget to try first;
- the view the graph opens at (``extra.ds``): the note and the first group at a zoom where the nodes read.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from pipelines.comfyui import ROOT

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_INPUTS = {"seed", "noise_seed"}  # the frontend adds a 'control after generate' widget after these
NODE_WIDTH, COLUMN_WIDTH, ROW_HEIGHT = 360, 400, 40
# Groups as ComfyUI's own templates draw them (comfyui-workflow-templates): blue, 24 px titles.
GROUP_COLOR, GROUP_FONT, GROUP_TITLE, GROUP_PAD, GROUP_GAP = "#3f789e", 24, 50, 20, 60
NODE_TITLE = 30  # LiteGraph draws a node's title bar above its pos
NOTE_TYPE, NOTE_WIDTH, NOTE_COLORS = "MarkdownNote", 440, {"color": "#432", "bgcolor": "#653"}
NOTE_CHARS_PER_LINE, NOTE_LINE_HEIGHT = 80, 15  # the note's markdown at the frontend's default 10 px text, wrapped in NOTE_WIDTH
OPENING_SCALE = 0.8  # ComfyUI's own templates open at 0.78-0.8: titles and widget values read at that zoom
LEFT, TOP = 40, 40
MAX_COLUMN_HEIGHT, MAX_ROW_WIDTH = 1100, 5200  # canvas px: past them a group's column continues beside it, groups in a new row


def _inputs(cls) -> list[tuple[str, object, dict]]:
    spec = cls.INPUT_TYPES()
    return [(name, entry[0], entry[1] if len(entry) > 1 else {}) for group in ("required", "optional") for name, entry in spec.get(group, {}).items()]


def _is_widget(kind) -> bool:
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def _widget_extra(cls) -> int:
    """Room for what the frontend draws beyond one line per widget: text boxes and image previews."""
    extra = 0
    for _, kind, options in _inputs(cls):
        extra += 140 if kind == "STRING" and options.get("multiline") else 0
        extra += 260 if options.get("image_upload") else 0
    return extra


def _is_link(value, graph) -> bool:
    return isinstance(value, list) and len(value) == 2 and str(value[0]) in graph


def _depths(graph: dict) -> dict:
    depth: dict = {}

    def visit(node_id):
        if node_id not in depth:
            links = [str(v[0]) for v in graph[node_id]["inputs"].values() if _is_link(v, graph)]
            depth[node_id] = 1 + max((visit(i) for i in links), default=-1)
        return depth[node_id]

    for node_id in graph:
        visit(node_id)
    return depth


def group_of(node: dict) -> str | None:
    return node.get("_meta", {}).get("group")


def _note_height(text: str) -> int:
    lines = sum(max(1, len(textwrap.wrap(line, NOTE_CHARS_PER_LINE))) for line in text.splitlines())
    return 40 + NOTE_LINE_HEIGHT * lines


def _layout(graph: dict, depth: dict, heights: dict, left: int) -> tuple[dict, list[dict]]:
    """Node positions and group boxes. Groups in the order they first appear, left to right, a new row of groups past
    MAX_ROW_WIDTH; in a group a column per depth the group spans, a column taller than MAX_COLUMN_HEIGHT continuing
    in the next one."""
    names = list(dict.fromkeys(group_of(graph[i]) for i in sorted(graph, key=int)))
    positions, groups, x, top, row_bottom = {}, [], left, TOP, TOP
    for name in names:
        members = sorted((i for i in graph if group_of(graph[i]) == name), key=lambda i: (depth[i], int(i)))
        columns: list[list[str]] = []
        for node_id in members:
            full = columns and sum(heights[i] + ROW_HEIGHT for i in columns[-1]) + heights[node_id] > MAX_COLUMN_HEIGHT
            if not columns or depth[node_id] != depth[columns[-1][-1]] or full:
                columns.append([])
            columns[-1].append(node_id)
        width = len(columns) * COLUMN_WIDTH - (COLUMN_WIDTH - NODE_WIDTH)
        if x > left and x + width - left > MAX_ROW_WIDTH:
            x, top = left, row_bottom + GROUP_GAP
        bottom = top
        for k, column in enumerate(columns):
            y = top + GROUP_TITLE + NODE_TITLE
            for node_id in column:
                positions[node_id] = [x + k * COLUMN_WIDTH, y]
                y += heights[node_id] + ROW_HEIGHT  # ROW_HEIGHT leaves room for the next node's title bar
            bottom = max(bottom, y - ROW_HEIGHT + GROUP_PAD)
        if name is not None:
            groups.append({"id": len(groups) + 1, "title": name, "bounding": [x - GROUP_PAD, top, width + 2 * GROUP_PAD, bottom - top],
                           "color": GROUP_COLOR, "font_size": GROUP_FONT, "flags": {}})
        x += width + 2 * GROUP_PAD + GROUP_GAP
        row_bottom = max(row_bottom, bottom)
    return positions, groups


def _depth_layout(graph: dict, depth: dict, heights: dict) -> dict:
    """Without groups: a column per depth, nodes stacked in it."""
    positions, rows = {}, {}
    for node_id in sorted(graph, key=lambda i: (depth[i], int(i))):
        column = depth[node_id]
        positions[node_id] = [LEFT + column * COLUMN_WIDTH, LEFT + rows.get(column, 0)]
        rows[column] = rows.get(column, 0) + heights[node_id] + ROW_HEIGHT
    return positions


def to_ui(graph: dict, classes: dict, note: str | None = None) -> dict:
    depth = _depths(graph)
    links, nodes, heights = [], {}, {}
    for node_id in sorted(graph, key=lambda i: (depth[i], int(i))):
        node = graph[node_id]
        cls = classes[node["class_type"]]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        inputs, widgets = [], []
        for name, kind, options in _inputs(cls):
            value = node["inputs"].get(name, options.get("default"))
            if _is_widget(kind):
                widgets.append(None if _is_link(value, graph) else value)
                if name in SEED_INPUTS:
                    widgets.append("fixed")
            if _is_link(value, graph):
                links.append([len(links) + 1, int(value[0]), value[1], int(node_id), len(inputs), classes[graph[str(value[0])]["class_type"]].RETURN_TYPES[value[1]]])
                entry = {"name": name, "type": "COMBO" if isinstance(kind, (list, tuple)) else kind, "link": len(links)}
                if _is_widget(kind):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not _is_widget(kind):
                inputs.append({"name": name, "type": kind, "link": None})
        if any(options.get("image_upload") for _, _, options in _inputs(cls)):
            widgets.append("image")
        heights[node_id] = 40 + 22 * max(len(inputs), len(names)) + 26 * len(widgets) + _widget_extra(cls)
        nodes[node_id] = {
            "id": int(node_id), "type": node["class_type"], "pos": None,
            "size": [NODE_WIDTH, heights[node_id]], "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        }
        if "title" in node.get("_meta", {}):
            nodes[node_id]["title"] = node["_meta"]["title"]
    for link_id, source, slot, *_ in links:
        nodes[str(source)]["outputs"][slot]["links"].append(link_id)

    last_id, groups, extra = max(int(i) for i in graph), [], {}
    if any(group_of(node) for node in graph.values()) or note:
        left = LEFT + (NOTE_WIDTH + GROUP_GAP + GROUP_PAD if note else GROUP_PAD)
        positions, groups = _layout(graph, depth, heights, left)
        extra["ds"] = {"scale": OPENING_SCALE, "offset": [GROUP_PAD - LEFT, GROUP_PAD - TOP]}  # the note and first group at the top left
    else:
        positions = _depth_layout(graph, depth, heights)
    for node_id, position in positions.items():
        nodes[node_id]["pos"] = position
    if note:
        last_id += 1
        nodes[str(last_id)] = {"id": last_id, "type": NOTE_TYPE, "pos": [LEFT, TOP + NODE_TITLE], "size": [NOTE_WIDTH, _note_height(note)],
                               "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                               "widgets_values": [note], "title": "Start here", **NOTE_COLORS}
    return {"last_node_id": last_id, "last_link_id": len(links), "nodes": list(nodes.values()),
            "links": links, "groups": groups, "config": {}, "extra": extra, "version": 0.4}


def api_view(ui: dict, classes: dict) -> dict:
    """The API graph a UI workflow describes, read back as the frontend's graphToPrompt does: every node but the notes,
    its widget values by input name, its links as ``[source id, output slot]``, its title in ``_meta``."""
    links = {link[0]: link for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        if node["type"] in (NOTE_TYPE, "Note"):
            continue
        widgets = iter(node.get("widgets_values", []))
        linked = {entry["name"]: links[entry["link"]] for entry in node.get("inputs", []) if entry.get("link") is not None}
        inputs = {}
        for name, kind, _ in _inputs(classes[node["type"]]):
            if _is_widget(kind):
                value = next(widgets)
                if name in SEED_INPUTS:
                    next(widgets)  # control after generate: a frontend setting, not an input
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, **({"_meta": {"title": node["title"]}} if "title" in node else {})}
    return graph


def ui_path(api_path: Path) -> Path:
    return ROOT / "workflows" / api_path.name


def note_path(api_path: Path) -> Path:
    """The template's canvas note, beside its API twin: workflows/api/NAME.md."""
    return api_path.with_suffix(".md")


def read_note(api_path: Path) -> str | None:
    path = note_path(api_path)
    return path.read_text().strip() if path.is_file() else None
