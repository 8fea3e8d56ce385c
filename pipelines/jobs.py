"""Edit jobs: one image, its edit list, its masks (or none: the graph finds them) and per-job settings.

Read from a JSONL or CSV manifest, from a folder in ALE-Bench's layout, or from the command line; every problem
of a batch is gathered and reported at once, before anything is submitted.

Manifest fields (JSONL keys or CSV columns; paths relative to the manifest):

    image    the source image (required)
    edits    "source -> target" lines: a JSON list, or one string with lines separated by newlines or ';'
    masks    one mask file per edit line, in order (JSON list, or ';'-separated); empty or "detect": the graph
             finds them (Grounded-SAM)
    id       the job's name (default: the edit's targets and a short hash of the job)
    seed, steps, cfg, denoise, sampler_name, scheduler, ckpt, size ("512" or "768x512")
    <node id>.<input>   any other input of the workflow, e.g. "14.target_cfg"
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SETTING_TYPES = {"seed": int, "steps": int, "cfg": float, "denoise": float, "sampler_name": str, "scheduler": str, "ckpt": str}
FIELDS = ("id", "image", "edits", "masks", *SETTING_TYPES, "size")
NODE_INPUT = re.compile(r"^[^.\s]+\.[A-Za-z_]\w*$")
DETECT = "detect"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ManifestError(ValueError):
    """Everything wrong with a batch's jobs, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Job:
    image: Path
    edits: tuple[str, ...]  # "source -> target" lines, in order
    masks: tuple[Path, ...] | None  # one per edit line; None: the graph finds them
    settings: dict = field(default_factory=dict)  # seed, steps, cfg, … and size as (width, height)
    inputs: dict = field(default_factory=dict)  # "node id.input" -> value
    id: str = ""
    origin: str = ""  # where the job was read ("jobs.jsonl line 3")

    @property
    def edit_text(self) -> str:
        return "\n".join(self.edits)

    @property
    def key(self) -> str:
        """Where its results go: ``<image stem>/<job id>``."""
        return f"{self.image.stem}/{self.id}"


def edit_lines(value) -> tuple[str, ...]:
    """The edit list's lines, blank lines and '#' comments left out (as the pack's encoder reads them)."""
    lines = value if isinstance(value, list) else re.split(r"\n|\\n|;", str(value))
    return tuple(line.strip() for line in map(str, lines) if line.strip() and not line.strip().startswith("#"))


def parse_size(value) -> tuple[int, int]:
    text = str(value).lower().strip()
    width, _, height = text.partition("x")
    size = (int(width), int(height or width))
    if min(size) < 64 or any(s % 8 for s in size):
        raise ValueError(f"size {value!r}: width and height must be multiples of 8, at least 64")
    return size


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_id(job: Job) -> str:
    """The edit's targets, then a hash of everything the job is: stable across runs, distinct between jobs."""
    targets = "_".join(slug(line.split("->", 1)[-1].split("→", 1)[-1]) for line in job.edits)[:48].strip("-_") or "edit"
    identity = json.dumps([job.image.name, job.edits, [m.name for m in job.masks or ()], job.settings, job.inputs],
                          sort_keys=True, default=str)
    return f"{targets}-{hashlib.sha1(identity.encode()).hexdigest()[:6]}"


def settings_of(fields: dict) -> tuple[dict, dict, list[str]]:
    """The typed settings, the node inputs and the problems of a row's fields other than image, edits, masks, id."""
    settings, problems = {}, []
    unknown = sorted(k for k in fields if k not in FIELDS and k != "inputs" and not NODE_INPUT.match(k))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(FIELDS)}, inputs, or '<node id>.<input>')")
    for name, kind in SETTING_TYPES.items():
        if name in fields:
            try:
                settings[name] = kind(fields[name])
            except ValueError:
                problems.append(f"{name} {fields[name]!r} is not a{'n integer' if kind is int else ' number' if kind is float else ' text'}")
    if "size" in fields:
        try:
            settings["size"] = parse_size(fields["size"])
        except ValueError as error:
            problems.append(str(error))
    inputs = dict(fields.get("inputs") or {})
    inputs.update({k: v for k, v in fields.items() if NODE_INPUT.match(k)})
    problems += [f"input '{k}' must be '<node id>.<input>'" for k in inputs if not NODE_INPUT.match(k)]
    return settings, {k: _typed(v) for k, v in inputs.items()}, problems


def check_defaults(defaults: dict | None) -> None:
    """The command line's fields for every job, checked once (not once per job)."""
    problems = settings_of(defaults or {})[2]
    if problems:
        raise ManifestError([f"the command line: {p}" for p in problems])


def make_job(row: dict, base: Path, origin: str, defaults: dict | None = None) -> tuple[Job | None, list[str]]:
    """A job from one manifest row (``base``: the folder its paths are relative to), or the row's problems.

    ``defaults`` are fields for every job (the command line's --steps, --size, --set …); the row's own win.
    """
    fields = {**(defaults or {}), **{k: v for k, v in row.items() if v not in (None, "")}}
    settings, inputs, problems = settings_of({k: v for k, v in fields.items() if k not in ("id", "image", "edits", "masks")})
    image = fields.get("image")
    if not image:
        problems.append("no image")
    elif not (base / image).is_file():
        problems.append(f"image {base / image} does not exist")
    edits = edit_lines(fields.get("edits") or "")
    if not edits:
        problems.append("no edit list (one 'source -> target' per line)")
    masks = fields.get("masks")
    if masks in (None, "", DETECT, [DETECT]):
        masks = None
    else:
        masks = tuple(base / m for m in (masks if isinstance(masks, list) else str(masks).split(";")) if str(m).strip())
        problems += [f"mask {m} does not exist" for m in masks if not m.is_file()]
        if edits and len(masks) != len(edits):
            problems.append(f"{len(masks)} mask(s) for {len(edits)} edit line(s): give one mask per line, in order")
    if problems:
        return None, [f"{origin}: {p}" for p in problems]
    job = Job(base / image, edits, masks, settings, inputs, origin=origin)
    job.id = str(fields.get("id") or "").strip() or default_id(job)
    if not re.fullmatch(r"[\w.+-]+", job.id):
        return None, [f"{origin}: id {job.id!r}: use letters, digits and . _ + - only (it names the output file)"]
    return job, []


def _typed(value):
    """CSV cells are text: '12' -> 12, '7.5' -> 7.5, 'true' -> True; anything else stays text."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def read_manifest(path: Path, defaults: dict | None = None) -> list[Job]:
    """Jobs from a JSONL or CSV manifest, or from a folder in ALE-Bench's layout. Raises ManifestError."""
    check_defaults(defaults)
    path = Path(path)
    if path.is_dir():
        return read_ale_bench(path, defaults)
    if not path.is_file():
        raise ManifestError([f"{path}: no such manifest file or ALE-Bench folder"])
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as file:
            rows = [(f"{path.name} row {n}", {k.strip(): (v or "").strip() for k, v in row.items() if k and k.strip()})
                    for n, row in enumerate(csv.DictReader(file), start=2)]
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [(f"{path.name} line {n}", _json_row(line))
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    else:
        raise ManifestError([f"{path}: a manifest is a .jsonl or .csv file (or an ALE-Bench folder)"])
    jobs, problems = [], []
    for origin, row in rows:
        job, found = make_job(row, path.parent, origin, defaults) if isinstance(row, dict) else (None, [f"{origin}: {row}"])
        problems += found
        jobs += [job] if job else []
    return check_unique(jobs, problems)


def _json_row(line: str) -> dict | str:
    """One JSONL line as a dict, or what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg})"
    return row if isinstance(row, dict) else "a job is a JSON object"


def read_ale_bench(folder: Path, defaults: dict | None = None) -> list[Job]:
    """Every edit of ``prompts/<n>/<type>/<image>_prompts.json``, masks from ``masks/<image>/<object>_mask.png``.

    Job ids are ``<n>obj-<type>-<index>``, so results land in ``<out>/<image>/2obj-color-03.png``.
    """
    check_defaults(defaults)
    if not (folder / "images").is_dir() or not (folder / "prompts").is_dir():
        raise ManifestError([f"{folder}: not in ALE-Bench's layout (images/, masks/, prompts/<n>/<type>/<image>_prompts.json)"])
    jobs, problems = [], []
    for prompts in sorted((folder / "prompts").glob("*/*/*_prompts.json")):
        count, kind = prompts.parent.parent.name, prompts.parent.name
        data = json.loads(prompts.read_text())
        stem = data.get("image") or prompts.name.removesuffix("_prompts.json")
        image = next((p for p in sorted((folder / "images").glob(f"{stem}.*")) if p.suffix.lower() in IMAGE_SUFFIXES), None)
        for entry in data["prompts"]:
            origin = f"{prompts.relative_to(folder)} index {entry['index']}"
            fields = {"id": f"{count}obj-{kind}-{int(entry['index']):02d}",
                      "image": str(image.relative_to(folder)) if image else f"images/{stem}.jpg",
                      "edits": [f"{source} -> {target}" for source, target in entry["edits"]],
                      "masks": [f"masks/{stem}/{source}_mask.png" for source, _ in entry["edits"]]}
            job, found = make_job(fields, folder, origin, defaults)
            problems += found
            jobs += [job] if job else []
    if not jobs and not problems:
        problems.append(f"{folder}: no prompts/<n>/<type>/<image>_prompts.json files")
    return check_unique(jobs, problems)


def check_unique(jobs: list[Job], problems: list[str]) -> list[Job]:
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.key in seen:
            problems.append(f"{job.origin}: writes the same output as {seen[job.key].origin} ({job.key}): give one of them another id")
        seen.setdefault(job.key, job)
    if problems:
        raise ManifestError(problems)
    return jobs
