"""Where a job goes in an API-format workflow: its image, masks, edit list and sampler settings, found by node class
and input name, so that any graph with the pack's nodes works (the repo's own or one exported from the app).

- image: the ``LoadImage`` node upstream of the pack's nodes;
- edit list: the ``edits`` input of the pack's encoder;
- masks: the ``mask_1`` … inputs of Object Masks from Painted Masks, fed by one ``LoadImageMask`` per object
  (a graph whose masks come from Grounded-SAM or from attention finds them itself; a mask-free graph, such as
  edit_dpl_maskfree_sd15, has none);
- settings (seed, steps, cfg, denoise, sampler, scheduler, checkpoint): the input of that name outside the pack;
- size: the ``ImageScale`` after the image (one is added when there is none) and any ``EmptyLatentImage``.

A slot that two nodes offer is refused with their ids (``--bind seed=11`` picks one); a slot no node offers is
refused when a job needs it.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

PACK_PREFIX = "LeakFree"
IMAGE_LOADER = "LoadImage"
MASK_LOADER = "LoadImageMask"
PAINTED_MASKS = "LeakFreeObjectMasksPainted"
FOUND_MASKS = ("LeakFreeObjectMasksGroundedSAM", "LeakFreeMasksFromAttention")
MASK_INPUTS = 8  # mask_1 … mask_8 on Object Masks from Painted Masks
PREVIEW_OUTPUT = 2  # every object-mask node's third output is its preview image
SETTINGS = {  # job setting -> the input names that take it
    "seed": ("seed", "noise_seed"),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "denoise": ("denoise",),
    "sampler_name": ("sampler_name",),
    "scheduler": ("scheduler",),
    "ckpt": ("ckpt_name",),
}
SCALERS = ("ImageScale",)  # image-scale nodes whose width and height the job's size sets
LATENT_SIZES = ("EmptyLatentImage",)
ADDED = "leakfree_batch"  # prefix of the ids of nodes the pipeline adds


class WorkflowError(ValueError):
    """A workflow the pipeline cannot fill in; ``problems`` lists every reason, each with the node ids involved."""

    def __init__(self, name: str, problems: list[str]):
        super().__init__(f"{name}: " + "; ".join(problems))
        self.problems = [f"{name}: {p}" for p in problems]


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def describe(graph: dict, node_id: str) -> str:
    node = graph[node_id]
    title = node.get("_meta", {}).get("title")
    return f"{node_id} ({node['class_type']}{', ' + repr(title) if title and title != node['class_type'] else ''})"


def upstream(graph: dict, starts: list[str]) -> set[str]:
    """Every node whose output reaches one of ``starts``."""
    seen, todo = set(), list(starts)
    while todo:
        for value in graph[todo.pop()]["inputs"].values():
            if is_link(value) and value[0] in graph and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return seen


def consumers(graph: dict, output: list) -> list[tuple[str, str]]:
    """(node id, input name) of every input linked to ``output`` ([node id, index])."""
    return [(node_id, name) for node_id, node in graph.items() for name, value in node["inputs"].items() if value == output]


def load_workflow(path: Path) -> dict:
    graph = json.loads(Path(path).read_text())
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError(Path(path).name, ["this is a UI workflow: save it from the app with Export (API)"])
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n and "inputs" in n for n in graph.values()):
        raise WorkflowError(Path(path).name, ["not an API-format workflow (node id -> class_type, inputs)"])
    return graph


@dataclass
class Slots:
    """The node ids that take each part of a job in one workflow."""

    name: str
    graph: dict
    image: str
    edits: str
    painted: str | None  # Object Masks from Painted Masks, None when the graph finds its masks
    mask_node: str | None  # the node whose preview is saved beside the result; None in a mask-free graph
    settings: dict[str, list[str]] = field(default_factory=dict)  # setting -> candidate node ids
    size_node: str | None = None  # the image-scale node --bind size= chose

    def problems(self, settings_used: set[str], size_used: bool, node_inputs: set[str]) -> list[str]:
        """What keeps the jobs' settings from going into this graph: an ambiguous or missing slot, an unknown node."""
        found = []
        for setting in sorted(settings_used):
            candidates = self.settings.get(setting, [])
            names = "/".join(SETTINGS[setting])
            if len(candidates) > 1:
                found.append(f"{len(candidates)} nodes take the {setting} ({', '.join(describe(self.graph, c) for c in candidates)}): "
                             f"pick one with --bind {setting}=<node id>")
            elif not candidates:
                found.append(f"no node outside the pack has a '{names}' input for the jobs' {setting}: set the input by node, "
                             f"e.g. --set <node id>.<input>=<value>")
        if size_used:
            scalers = self.scalers()
            if len(scalers) > 1:
                found.append(f"{len(scalers)} image-scale nodes after the image ({', '.join(describe(self.graph, s) for s in scalers)}): "
                             "pick one with --bind size=<node id>")
        for key in sorted(node_inputs):
            node_id = key.split(".", 1)[0]
            if node_id not in self.graph:
                found.append(f"'{key}' names node {node_id}, which the workflow does not have")
        return found

    def scalers(self) -> list[str]:
        if self.size_node:
            return [self.size_node]
        return [n for n, _ in consumers(self.graph, [self.image, 0]) if self.graph[n]["class_type"] in SCALERS]

    def fill(self, job, names: dict, prefix: str, mask_channel: str = "red") -> tuple[dict, set[str]]:
        """The graph for ``job`` (``names``: each input file's uploaded name) and the ids of its mask-preview nodes."""
        graph = copy.deepcopy(self.graph)
        graph[self.image]["inputs"]["image"] = names[job.image]
        if job.masks:
            self._wire_masks(graph, [names[m] for m in job.masks], mask_channel)
        self.apply(graph, job.edit_text, job.settings, job.inputs)
        for node in graph.values():
            if isinstance(node["inputs"].get("filename_prefix"), str):
                node["inputs"]["filename_prefix"] = prefix
        return graph, self._previews(graph)

    def apply(self, graph: dict, edits: str | None = None, settings: dict | None = None, inputs: dict | None = None) -> None:
        """Put an edit list, settings (seed, steps, …, size) and node inputs ("11.cfg") into ``graph``, a copy of ours."""
        if edits is not None:
            graph[self.edits]["inputs"]["edits"] = edits
        for setting, value in (settings or {}).items():
            if setting == "size":
                self._resize(graph, *value)
            else:
                node_id = self.settings[setting][0]
                name = next(n for n in SETTINGS[setting] if n in graph[node_id]["inputs"])
                graph[node_id]["inputs"][name] = value
        for key, value in (inputs or {}).items():
            node_id, name = key.split(".", 1)
            graph[node_id]["inputs"][name] = value

    def _wire_masks(self, graph: dict, mask_names: list[str], channel: str) -> None:
        inputs = graph[self.painted]["inputs"]
        replaced = {v[0] for k, v in inputs.items() if k.startswith("mask_") and is_link(v)}
        for key in [k for k in inputs if k.startswith("mask_")]:
            del inputs[key]
        for index, name in enumerate(mask_names, start=1):
            node_id = f"{ADDED}_mask_{index}"
            graph[node_id] = {"class_type": MASK_LOADER, "inputs": {"image": name, "channel": channel}}
            inputs[f"mask_{index}"] = [node_id, 0]
        used = {v[0] for node in graph.values() for v in node["inputs"].values() if is_link(v)}
        for node_id in replaced - used:
            if graph[node_id]["class_type"] == MASK_LOADER:
                del graph[node_id]

    def _resize(self, graph: dict, width: int, height: int) -> None:
        scalers = self.scalers()
        if scalers:
            graph[scalers[0]]["inputs"].update(width=width, height=height)
        else:  # masks of another size are resized to the image by the mask nodes
            node_id = f"{ADDED}_size"
            for consumer, name in consumers(graph, [self.image, 0]):
                graph[consumer]["inputs"][name] = [node_id, 0]
            graph[node_id] = {"class_type": "ImageScale", "inputs": {"image": [self.image, 0], "upscale_method": "lanczos",
                                                                     "width": width, "height": height, "crop": "disabled"}}
        for node in graph.values():
            if node["class_type"] in LATENT_SIZES:
                node["inputs"].update(width=width, height=height)

    def _previews(self, graph: dict) -> set[str]:
        if self.mask_node is None:
            return set()
        previews = {n for n, name in consumers(graph, [self.mask_node, PREVIEW_OUTPUT]) if graph[n]["class_type"] == "PreviewImage"}
        if not previews:
            graph[f"{ADDED}_mask_preview"] = {"class_type": "PreviewImage", "inputs": {"images": [self.mask_node, PREVIEW_OUTPUT]}}
            previews = {f"{ADDED}_mask_preview"}
        return previews


def find_slots(graph: dict, name: str, bind: dict[str, str] | None = None) -> Slots:
    """The slots of ``graph``; ``bind`` (slot -> node id) settles the ones two nodes offer. Raises WorkflowError."""
    bind = dict(bind or {})
    problems = []
    for slot, node_id in bind.items():
        if node_id not in graph:
            problems.append(f"--bind {slot}={node_id}: the workflow has no node {node_id}")
    if problems:
        raise WorkflowError(name, problems)
    pack_nodes = [n for n, node in graph.items() if node["class_type"].startswith(PACK_PREFIX)]
    if not pack_nodes:
        raise WorkflowError(name, ["it has none of the pack's nodes (LeakFree…)"])

    def one(slot: str, candidates: list[str], what: str) -> str | None:
        if slot in bind:
            if bind[slot] not in candidates:
                problems.append(f"--bind {slot}={bind[slot]}: node {describe(graph, bind[slot])} is not {what} "
                                f"(candidates: {', '.join(candidates) or 'none'})")
                return None
            return bind[slot]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            problems.append(f"{len(candidates)} nodes could take the {slot} ({', '.join(describe(graph, c) for c in candidates)}): "
                            f"pick one with --bind {slot}=<node id>")
        else:
            problems.append(f"no node takes the {slot}: it needs {what}")
        return None

    ancestors = upstream(graph, pack_nodes)
    image = one("image", sorted(n for n in ancestors if graph[n]["class_type"] == IMAGE_LOADER), "a LoadImage node feeding the pack's nodes")
    edits = one("edits", [n for n in pack_nodes if isinstance(graph[n]["inputs"].get("edits"), str)],
                "the pack's Object-Restricted Encode (its 'edits' input)")
    mask_nodes = [n for n in pack_nodes if graph[n]["class_type"] in (PAINTED_MASKS, *FOUND_MASKS)]
    mask_node = one("masks", mask_nodes, "an object-mask node of the pack") if mask_nodes or "masks" in bind else None
    if problems:
        raise WorkflowError(name, problems)
    painted = mask_node if mask_node is not None and graph[mask_node]["class_type"] == PAINTED_MASKS else None
    slots = Slots(name, graph, image, edits, painted, mask_node)
    for setting, inputs in SETTINGS.items():
        candidates = sorted((n for n, node in graph.items() if not node["class_type"].startswith(PACK_PREFIX)
                             and any(i in node["inputs"] and not is_link(node["inputs"][i]) for i in inputs)), key=_numeric)
        if setting in bind:
            if bind[setting] not in candidates:
                problems.append(f"--bind {setting}={bind[setting]}: node {describe(graph, bind[setting])} has no "
                                f"'{'/'.join(inputs)}' input (candidates: {', '.join(candidates) or 'none'})")
            candidates = [bind[setting]]
        slots.settings[setting] = candidates
    if "size" in bind:
        if graph[bind["size"]]["class_type"] not in SCALERS:
            problems.append(f"--bind size={bind['size']}: node {describe(graph, bind['size'])} is not an ImageScale")
        slots.size_node = bind["size"]
    if problems:
        raise WorkflowError(name, problems)
    return slots


def _numeric(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
