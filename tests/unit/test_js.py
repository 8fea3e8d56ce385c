"""The web extension's JS unit tests (tests/unit/js/, Node's own test runner): the edit-list parser and the
node-title feedback, without a browser. Skipped without Node.js, except in CI (``LEAKFREE_REQUIRE_BROWSER=1``)."""
import os
import re
import shutil
import subprocess

import pytest

from pipelines.comfyui import ROOT


def test_js_unit_tests_pass(e2e_report):
    node = shutil.which("node")
    if node is None:
        if os.environ.get("LEAKFREE_REQUIRE_BROWSER") == "1":
            pytest.fail("Node.js (node) is not on the PATH (LEAKFREE_REQUIRE_BROWSER=1 needs it)", pytrace=False)
        pytest.skip("Node.js (node) is not on the PATH")
    run = subprocess.run([node, "--test", "tests/unit/js/"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    passed = re.search(r"^# pass (\d+)", run.stdout, re.M)
    assert passed and int(passed.group(1)) > 0, run.stdout[-3000:]
    e2e_report["JS unit tests passed (node --test tests/unit/js/)"] += int(passed.group(1))
