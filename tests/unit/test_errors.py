"""Bad input gets a clear error that names the node and the fix; resizable input is resized."""

from leakfree_edit.attention.plan import EditPlan, parse_edits
from harness.editing import EDITS


def test_plan_family_names():
    plan = EditPlan(parse_edits(EDITS), context_dim=2048)
    assert plan.family == "SDXL" and plan.source_prompt == "wolf and moon"
