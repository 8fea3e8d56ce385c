"""Object-Restricted Encode's ``source_substitution`` on ComfyUI's CLIP: ``ale_code`` gives the official source and
background values; ``pack`` (the default) is unchanged."""
import pytest
import torch

from leakfree_edit.nodes.encode import ObjectRestrictedEncode

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


def encode_alone(clip, text):
    return clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)[0][0]


def token_ids(clip, text):
    ids = [t[0] for t in clip.tokenize(text)["l"][0]]
    return ids[: ids.index(EOS) + 1]


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_the_node_gives_the_official_source_and_background_values_and_keeps_its_default(models, kind):
    clip = models.clip(kind)
    edits = "wolf -> brown-colored goat\nfull moon -> moon made of gold\nmountain -> goat"
    default_target, default_source, plan = ObjectRestrictedEncode.execute(clip, edits, "object")
    pack_target, pack_source, _ = ObjectRestrictedEncode.execute(clip, edits, "object", "pack")
    target, source, _ = ObjectRestrictedEncode.execute(clip, edits, "object", "ale_code")
    assert torch.equal(default_source[0][0], pack_source[0][0])  # existing graphs (no input) keep the pack's form
    for side, texts, got in (("source", plan.objects, source[0][0][0]), ("target", plan.targets, target[0][1]["leakfree_ore"].embeddings.substituted)):
        base_text = " and ".join(texts)
        base_ids = token_ids(clip, base_text)
        expected = official_substitution(encode_alone(clip, base_text), [encode_alone(clip, t) for t in texts], base_ids,
                                         [token_ids(clip, t)[1:-1] for t in texts])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=side)
    pack_ore, ore = pack_target[0][1]["leakfree_ore"].embeddings, target[0][1]["leakfree_ore"].embeddings
    assert torch.equal(ore.objects, pack_ore.objects) and torch.equal(ore.keys, pack_ore.keys)
    # The first object's own tokens are the same either way, except its "goat", where ALE's code finds the third target
    # ("goat") first and writes that solo prompt's state there; the second object reads its solo prompt's EOS and padding.
    (start, end), (later_start, later_end) = plan.target_spans[0], plan.target_spans[1]
    torch.testing.assert_close(ore.substituted[start : end - 1], pack_ore.substituted[start : end - 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(ore.substituted[end - 1], encode_alone(clip, "goat")[end - 1], rtol=0, atol=1e-5)
    assert not torch.allclose(ore.substituted[end - 1], pack_ore.substituted[end - 1], atol=1e-3)
    assert not torch.allclose(ore.substituted[later_start:later_end], pack_ore.substituted[later_start:later_end], atol=1e-3)
