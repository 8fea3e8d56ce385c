"""Write the drag-and-drop (UI format) twin of an API-format workflow, from the nodes' own INPUT_TYPES.

``python3 -m scripts.ui_workflow workflows/api/NAME.json`` writes workflows/NAME.json.

The UI file is derived, never hand-edited, so the two formats always describe the same graph
(a test regenerates every UI file and compares).
"""
from __future__ import annotations

from pathlib import Path

from pipelines.comfyui import ROOT

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_INPUTS = {"seed", "noise_seed"}  # the frontend adds a 'control after generate' widget after these
COLUMN_WIDTH, ROW_HEIGHT = 400, 40


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


def to_ui(graph: dict, classes: dict) -> dict:
    depth, rows = _depths(graph), {}
    links, nodes = [], {}
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
        column = depth[node_id]
        rows[column] = rows.get(column, 0)
        height = 40 + 22 * max(len(inputs), len(names)) + 26 * len(widgets) + _widget_extra(cls)
        nodes[node_id] = {
            "id": int(node_id), "type": node["class_type"], "pos": [40 + column * COLUMN_WIDTH, 40 + rows[column]],
            "size": [360, height], "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        }
        if "title" in node.get("_meta", {}):
            nodes[node_id]["title"] = node["_meta"]["title"]
        rows[column] += height + ROW_HEIGHT
    for link_id, source, slot, *_ in links:
        nodes[str(source)]["outputs"][slot]["links"].append(link_id)
    return {"last_node_id": max(int(i) for i in graph), "last_link_id": len(links), "nodes": list(nodes.values()),
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_path(api_path: Path) -> Path:
    return ROOT / "workflows" / api_path.name
