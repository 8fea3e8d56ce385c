"""ALE-Bench's folder layout, read as ALE's own scripts read it (github.com/ml-postech/ALE at b57e21e:
``run_ale_bench.py`` (RB) and ``evaluate/evaluate_ale.py`` (EV)).

    images/<image>.jpg                              source images
    masks/<image>/<object>_mask.png                 one mask per object; the object's name is the file name up to
                                                    the first "_" (EV:106-111), read as 8-bit grey (convert("L"))
    prompts/<objects>/<edit type>/<image>_prompts.json
        {"image": ..., "prompts": [{"index", "editing_types", "edits": [[source object, target prompt], ...]}]}
    results/<objects>/<edit type>/<image>/edit_<i>.png   edit i of that file's prompt list (RB:93-135, EV:124-134)

No ComfyUI imports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EDIT_TYPES = ("color", "object", "material", "color+object", "object+material")  # RB:62-68, EV:52-57
OBJECT_COUNTS = (1, 2, 3)


@dataclass(frozen=True)
class BenchEdit:
    """One edit instance of the benchmark."""

    image: str  # "artificial_img03"
    objects: int  # number of edited objects (the prompts/<n> folder)
    edit_type: str  # the prompts/<n>/<type> folder
    position: int  # its place in the file's prompt list: the i of edit_<i>.png (RB:107, 134)
    edits: tuple[tuple[str, str], ...]  # (source object, target prompt) in the file's order
    editing_types: tuple[str, ...] = ()  # the prompt's "editing_types" (RB:101: what sets ALE's self-attention schedule)

    @property
    def half(self) -> str:
        """The benchmark half the image belongs to: "artificial" or "natural" (the image name's prefix)."""
        return self.image.split("_")[0]

    @property
    def key(self) -> str:
        return f"{self.objects}/{self.edit_type}/{self.image}/edit_{self.position}"

    @property
    def edit_list(self) -> str:
        """The pack's edit-list text: one 'source -> target' per line."""
        return "\n".join(f"{source} -> {target}" for source, target in self.edits)

    def result(self, results: Path) -> Path:
        return Path(results) / str(self.objects) / self.edit_type / self.image / f"edit_{self.position}.png"


def read_edits(bench: Path, images=None, objects=None, edit_types=None, limit: int | None = None) -> list[BenchEdit]:
    """The benchmark's edits, in a stable order (object count, edit type, image, position), filtered.

    ``images``: image names (or prefixes, "artificial" selects that half); ``objects``: counts; ``edit_types``: folders.
    """
    bench = Path(bench)
    found = []
    for count in sorted(objects or OBJECT_COUNTS):
        for edit_type in edit_types or EDIT_TYPES:
            for prompt_file in sorted((bench / "prompts" / str(count) / edit_type).glob("*.json")):
                data = json.loads(prompt_file.read_text())
                if images and not any(data["image"] == name or data["image"].startswith(name) for name in images):
                    continue
                for position, prompt in enumerate(data["prompts"]):
                    found.append(BenchEdit(data["image"], count, edit_type, position, tuple(tuple(e) for e in prompt["edits"]),
                                           tuple(prompt.get("editing_types", ()))))
    return found[:limit] if limit is not None else found


def mask_files(bench: Path, image: str) -> dict[str, Path]:
    """Object name -> mask file of ``image`` (EV:106-111: the name is the file name up to the first '_')."""
    return {path.name.split("_")[0]: path for path in sorted((Path(bench) / "masks" / image).glob("*.png"))}


def read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An 8-bit grey mask, as EV reads it (``convert("L")``); resized with PIL's nearest to ``size`` (w, h) if given."""
    from PIL import Image

    with Image.open(path) as image:
        grey = image.convert("L")
        return np.array(grey if size is None or grey.size == tuple(size) else grey.resize(tuple(size), Image.Resampling.NEAREST))


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as uint8 H x W x 3; resized to ``size`` (w, h) with PIL's default (bicubic) as EV:128 does."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        return np.array(image if size is None or image.size == tuple(size) else image.resize(tuple(size)))
