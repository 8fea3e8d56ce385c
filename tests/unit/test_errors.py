"""Error messages name the model family of an edit plan (the node errors are in tests/comfy_nodes/test_errors.py)."""

from harness.editing import EDITS
from leakfree_edit.attention.plan import EditPlan, parse_edits


def test_plan_family_names():
    plan = EditPlan(parse_edits(EDITS), context_dim=2048)
    assert plan.family == "SDXL" and plan.source_prompt == "wolf and moon"
