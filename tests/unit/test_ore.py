"""The edit list parsed, and the EOS modes of Object-Restricted Encoding on tensors (ORE on ComfyUI's CLIP in tests/comfy_nodes/)."""
import pytest
import torch

from leakfree_edit.attention.ore import object_restricted
from leakfree_edit.attention.plan import EditPlanError, parse_edits


def test_parse_edits_reads_lines_and_names_bad_ones():
    assert [e.target for e in parse_edits("# comment\n wolf -> goat \n\nmoon → gold moon")] == ["goat", "gold moon"]
    with pytest.raises(EditPlanError, match="line 2 .*no '->'"):
        parse_edits("wolf -> goat\nmoon is gold")
    with pytest.raises(EditPlanError, match="line 1"):
        parse_edits(" -> goat")
    with pytest.raises(EditPlanError, match="empty"):
        parse_edits("\n# nothing\n")


def test_eos_modes_fill_the_tail_as_documented():
    base, own, empty = torch.randn(12, 4), torch.randn(2, 12, 4), torch.randn(12, 4)
    spans, eos = [(1, 3), (4, 5)], 5
    tails = {mode: object_restricted(base, own, spans, eos, mode, empty).objects[:, eos:] for mode in ("naive", "zero", "bos", "empty")}
    sub = object_restricted(base, own, spans, eos, "naive").substituted
    assert torch.equal(tails["naive"][0], sub[eos:])
    assert torch.count_nonzero(tails["zero"]) == 0
    assert torch.equal(tails["bos"][1], base[0].expand(12 - eos, -1))
    assert torch.equal(tails["empty"][0], empty[1 : 1 + 12 - eos])
