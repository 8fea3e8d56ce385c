"""Pixel Background Composite's feather: a linear edge of the given width (the node in tests/comfy_nodes/)."""
import pytest
import torch

from leakfree_edit.masking.composite import feather_ramp


def test_the_feather_is_a_linear_ramp_of_the_given_width():
    core = torch.zeros(1, 21, 21)
    core[0, 10, 10] = 1
    ramp = feather_ramp(core, 4)
    assert ramp[0, 10].tolist()[10:17] == pytest.approx([1, 0.8, 0.6, 0.4, 0.2, 0, 0])
    assert torch.equal(feather_ramp(core, 0), core)
