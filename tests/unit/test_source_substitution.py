"""Object-Restricted Encode's ``source_substitution = ale_code`` is ALE-Edit's code (ml-postech/ALE ale/ore.py,
get_substituted_base_embeds: for each object in turn, ``base[indices] = solo[indices]`` with ``indices`` the first place the
object's token ids occur in the base prompt's ids) on fixed token positions (the node on ComfyUI's CLIP in
tests/comfy_nodes/test_source_substitution.py)."""
import torch

from leakfree_edit.attention.ore import object_restricted, substitute_spans
from leakfree_edit.attention.tokens import first_occurrences

EOS = 49407


def official_substitution(base: torch.Tensor, solos: list[torch.Tensor], base_ids: list[int], object_ids: list[list[int]]) -> torch.Tensor:
    """ALE's form written out: for each object, its ids (no BOS/EOS) searched in the base ids from the left, the first match's
    positions overwritten, in object order, with the object's solo encoding at those same positions."""
    out = base.clone()
    for ids, solo in zip(object_ids, solos):
        matches = [i for i in range(len(base_ids) - len(ids) + 1) if base_ids[i : i + len(ids)] == ids]
        positions = list(range(matches[0], matches[0] + len(ids))) if matches else []
        out[positions] = solo[positions]
    return out


def test_ale_code_is_the_official_form_on_fixed_token_positions():
    # base "BOS red car and car and full moon EOS pad...": object 2 ("car") also occurs inside object 1, object 3 is two tokens
    ids = {"red": 736, "car": 1615, "and": 537, "full": 1476, "moon": 3293}
    objects = [[ids["red"], ids["car"]], [ids["car"]], [ids["full"], ids["moon"]]]
    base_ids = [49406, 736, 1615, 537, 1615, 537, 1476, 3293, EOS]
    window = [(token, 1.0) for token in base_ids + [EOS] * (16 - len(base_ids))]
    spans = [(1, 3), (4, 5), (6, 8)]  # the pack's exact spans
    generator = torch.Generator().manual_seed(0)
    base, solos = torch.randn(16, 8, generator=generator), torch.randn(3, 16, 8, generator=generator)
    found = first_occurrences(window, spans)
    assert found == [(1, 3), (2, 3), (6, 8)]  # "car" found inside "red car", as ALE's find_sublist_indices finds it
    expected = official_substitution(base, list(solos), base_ids, objects)
    assert torch.equal(substitute_spans(base, solos, found, "ale_code"), expected)
    assert torch.equal(expected[2], solos[1][2]) and torch.equal(expected[4], base[4])  # the later write wins; "car" #2 untouched
    pack = substitute_spans(base, solos, spans)
    assert torch.equal(pack[1:3], solos[0][1:3]) and torch.equal(pack[4], solos[1][1]) and torch.equal(pack[6:8], solos[2][1:3])
    ore = object_restricted(base, solos, spans, 8, substitution="ale_code", substitution_spans=found)
    assert torch.equal(ore.substituted, expected)
    assert torch.equal(ore.objects, object_restricted(base, solos, spans, 8).objects)  # ORE_i itself does not depend on it
