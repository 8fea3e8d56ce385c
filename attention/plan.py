"""The edit plan: which objects change into what, and where their tokens sit.

Pure Python; no ComfyUI imports. The plan travels between nodes as the
``EDIT_PLAN`` socket type and inside the target conditioning's ORE payload.
"""
from __future__ import annotations

from dataclasses import dataclass

EDIT_SEPARATORS = ("->", "→")
JOINER = " and "  # ALE-Edit: base prompt = object prompts joined with " and "


class EditPlanError(ValueError):
    """A user-facing error in an edit list; the message names the line and the fix."""


@dataclass(frozen=True)
class ObjectEdit:
    source: str  # the object as it is in the image ("wolf"): what the mask nodes look for
    target: str  # what it becomes ("brown-colored goat")
    line: int = 0  # its line in the edit list (1-based), for messages


@dataclass(frozen=True)
class EditPlan:
    """Objects in edit order and their token spans in the target base prompt.

    ``target_spans[i]`` is the half-open token range [start, end) of object i
    inside the 77-token window of the target base prompt (BOS at 0).
    """

    edits: tuple[ObjectEdit, ...]
    target_spans: tuple[tuple[int, int], ...] = ()
    target_eos: int = 0  # index of the EOS token in the target base window
    context_dim: int = 0  # width of the text features (768 SD1.5, 2048 SDXL)

    @property
    def objects(self) -> list[str]:
        return [e.source for e in self.edits]

    @property
    def targets(self) -> list[str]:
        return [e.target for e in self.edits]

    @property
    def lines(self) -> list[int]:
        return [e.line for e in self.edits]

    @property
    def source_prompt(self) -> str:
        return JOINER.join(self.objects)

    @property
    def target_prompt(self) -> str:
        return JOINER.join(self.targets)

    def __len__(self) -> int:
        return len(self.edits)

    @property
    def family(self) -> str:
        return {768: "SD1.5", 1024: "SD2", 2048: "SDXL"}.get(self.context_dim, f"{self.context_dim}-d")


def parse_edits(text: str, node: str = "Object-Restricted Encode") -> tuple[ObjectEdit, ...]:
    """Parse one ``source -> target`` edit per line; blank lines and ``#`` comments are skipped."""
    edits = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        separator = next((s for s in EDIT_SEPARATORS if s in line), None)
        if separator is None:
            raise EditPlanError(
                f"{node}: line {number} ({line!r}) has no '->'. "
                "Write one edit per line as 'source object -> target prompt', e.g. 'wolf -> brown-colored goat'."
            )
        source, _, target = (part.strip() for part in line.partition(separator))
        if not source or not target or separator in target:
            raise EditPlanError(
                f"{node}: line {number} ({line!r}) must have exactly one non-empty source and target, "
                "as in 'moon -> moon made of gold'."
            )
        edits.append(ObjectEdit(source, target, number))
    if not edits:
        raise EditPlanError(
            f"{node}: the edit list is empty. Add one line per object, e.g. 'wolf -> brown-colored goat'."
        )
    return tuple(edits)
