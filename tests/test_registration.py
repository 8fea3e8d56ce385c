"""Registration: prefixed keys, one category tree, a description on every node and a tooltip on every input."""
import importlib
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pack():
    module = importlib.import_module("leakfree_edit")
    module.__spec__.loader.exec_module(module)  # run __init__ as ComfyUI does
    return module


def test_every_node_is_described_and_prefixed(pack):
    assert pack.NODE_CLASS_MAPPINGS
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert key.startswith("LeakFree"), key
        assert key in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY.startswith("LeakFreeEdit/"), key
        assert len(getattr(cls, "DESCRIPTION", "")) > 40, key
        assert callable(getattr(cls, cls.FUNCTION)), key
        assert isinstance(cls.RETURN_TYPES, tuple), key
        for group in cls.INPUT_TYPES().values():
            for name, spec in group.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{key}.{name} has no tooltip"


def test_web_directory_ships_the_extension(pack):
    web = Path(pack.__file__).parent / pack.WEB_DIRECTORY
    assert list(web.glob("*.js"))
