"""The unit tier: pure torch and pure Python. When only this tier runs, ComfyUI must not have been imported by the
end (tests/unit/test_layout.py checks the test files' imports; this checks what they ran)."""
import sys

import pytest

from harness.comfy_env import COMFY_MODULES


@pytest.fixture(scope="session", autouse=True)
def comfyui_is_never_imported(request):
    yield
    if all(item.get_closest_marker("unit") for item in request.session.items):
        imported = sorted(name for name in sys.modules if name.split(".")[0] in COMFY_MODULES)
        assert not imported, f"the unit tier imported ComfyUI: {imported[:10]} (move that test to tests/comfy_nodes/)"
