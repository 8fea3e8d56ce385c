"""Object-Restricted Encoding equals ALE-Edit's definition, element by element, on ComfyUI's CLIP."""
import pytest
import torch

from leakfree_edit.attention.plan import parse_edits

EDITS = "wolf -> brown-colored goat\nmoon -> goat made of gold\ncloud -> brown-colored goat"


def encode_alone(clip, text):
    cond, _ = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return cond[0]


def inner_ids(clip, text, key="l"):
    window = clip.tokenize(text)[key][0]
    ids = [t[0] for t in window]
    return ids[1 : ids.index(49407)]


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_ore_matches_the_definition(models, kind):
    from leakfree_edit.integration.encoding import encode_plan
    from leakfree_edit.nodes.encode import NODE

    clip = models.clip(kind)
    plan, ore, pooled = encode_plan(clip, EDITS, "object", NODE)
    targets = plan.targets
    base_prompt = " and ".join(targets)
    # Keys are the plain encoding of the target base prompt, as CLIPTextEncode would give.
    torch.testing.assert_close(ore.keys, encode_alone(clip, base_prompt), rtol=0, atol=1e-5)
    # Spans are exact for multi-token words and repeated prompts (objects 0 and 2 are the same text).
    base_ids = inner_ids(clip, base_prompt)
    for (start, end), target in zip(plan.target_spans, targets):
        assert base_ids[start - 1 : end - 1] == inner_ids(clip, target)
    assert plan.target_spans[0] != plan.target_spans[2]
    assert len(inner_ids(clip, "brown-colored goat")) == 4  # brown - colored goat
    assert plan.target_eos == len(base_ids) + 1
    eos, length = plan.target_eos, ore.keys.shape[0]
    for i, ((start, end), target) in enumerate(zip(plan.target_spans, targets)):
        own = encode_alone(clip, target)
        span = end - start
        torch.testing.assert_close(ore.own[i], own, rtol=0, atol=1e-5)
        torch.testing.assert_close(ore.substituted[start:end], own[1 : 1 + span], rtol=0, atol=1e-5)
        o = ore.objects[i]
        torch.testing.assert_close(o[0], ore.keys[0], rtol=0, atol=1e-5)  # BOS kept
        torch.testing.assert_close(o[start:end], own[1 : 1 + span], rtol=0, atol=1e-5)
        outside = torch.ones(length, dtype=torch.bool)
        outside[0], outside[start:end], outside[eos:] = False, False, False
        assert torch.count_nonzero(o[outside]) == 0  # other objects and the "and"s zeroed
        torch.testing.assert_close(o[eos:], own[1 + span : 1 + span + length - eos], rtol=0, atol=1e-5)  # own EOS+padding
    assert pooled.shape[-1] == (768 if kind == "sd15" else 1280)


def test_weight_syntax_keeps_spans_exact(models):
    from leakfree_edit.integration.encoding import encode_plan
    from leakfree_edit.nodes.encode import NODE

    clip = models.clip()
    plan, _, _ = encode_plan(clip, "wolf -> (brown-colored goat:1.3)\nmoon -> moon made of gold", "object", NODE)
    plain, _, _ = encode_plan(clip, "wolf -> brown-colored goat\nmoon -> moon made of gold", "object", NODE)
    assert plan.target_spans == plain.target_spans == ((1, 5), (6, 10))


def test_one_batched_text_encoder_call(models, monkeypatch):
    from leakfree_edit.integration.encoding import encode_plan
    from leakfree_edit.nodes.encode import NODE

    clip = models.clip()
    calls = []
    inner = clip.cond_stage_model.clip_l
    original = inner.encode
    monkeypatch.setattr(inner, "encode", lambda tokens: calls.append(len(tokens)) or original(tokens))
    encode_plan(clip, EDITS, "object", NODE)
    assert calls == [len(parse_edits(EDITS)) + 2]  # base + 3 objects + empty, one forward


def test_too_long_prompt_is_a_clear_error(models):
    from leakfree_edit.integration.encoding import encode_plan
    from leakfree_edit.integration.errors import NodeInputError
    from leakfree_edit.nodes.encode import NODE

    long_target = " ".join(["gold"] * 40)
    with pytest.raises(NodeInputError, match=r"Object-Restricted Encode \(LeakFree\): .* at most 75 fit one CLIP window"):
        encode_plan(models.clip(), f"wolf -> {long_target}\nmoon -> {long_target}", "object", NODE)


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_source_is_the_substituted_source_base(models, kind, monkeypatch):
    """The source branch's text (ALE-Edit ore.py get_substituted_base_embeds): the source base prompt with each object's
    span replaced by that object's own tokens 1..L_i from its solo encoding; base and objects in one batched call."""
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip(kind)
    edits = "wolf -> brown-colored goat\nfull moon -> moon made of gold\nwolf -> goat"  # multi-token and repeated sources
    _, source, plan = ObjectRestrictedEncode.execute(clip, edits, "object")
    substituted = source[0][0][0]
    base = encode_alone(clip, plan.source_prompt)
    base_ids, start = inner_ids(clip, plan.source_prompt), 1
    changed = torch.zeros(base.shape[0], dtype=torch.bool)
    for number, obj in enumerate(plan.objects):
        own, length = encode_alone(clip, obj), len(inner_ids(clip, obj))
        assert base_ids[start - 1: start - 1 + length] == inner_ids(clip, obj)
        torch.testing.assert_close(substituted[start: start + length], own[1: 1 + length], rtol=0, atol=1e-5)
        changed[start: start + length] = True
        start += length + len(inner_ids(clip, "and"))
    torch.testing.assert_close(substituted[~changed], base[~changed], rtol=0, atol=1e-5)  # BOS, "and"s, EOS, padding
    assert not torch.allclose(substituted[changed], base[changed], atol=1e-3)  # later objects differ from the joint encoding
    calls = []
    inner = clip.cond_stage_model.clip_l
    original = inner.encode
    monkeypatch.setattr(inner, "encode", lambda tokens: calls.append(len(tokens)) or original(tokens))
    ObjectRestrictedEncode.execute(clip, edits, "object")
    assert calls == [len(plan) + 2, len(plan) + 1]  # target side (base, objects, empty), source side (base, objects)


def test_an_over_long_prompt_names_its_line_and_token_count(models):
    from leakfree_edit.integration.errors import NodeInputError
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    long_target = " ".join(["gold"] * 80)
    with pytest.raises(NodeInputError, match=r"line 3: the target prompt 'gold gold.*' is 80 tokens; at most 75 fit one CLIP window"):
        ObjectRestrictedEncode.execute(models.clip(), f"wolf -> goat\n# a comment\nmoon -> {long_target}", "object")
    with pytest.raises(NodeInputError, match=r"line 1: the source prompt .* is 80 tokens"):
        ObjectRestrictedEncode.execute(models.clip(), f"{long_target} -> goat", "object")
