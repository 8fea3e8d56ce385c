"""The mask problems found on exact inputs, and the inner overlap rule on tensors (the warnings the user sees, from
the nodes, in tests/comfy_nodes/test_mask_checks.py)."""
import torch

from harness.editing import object_masks
from leakfree_edit.masking.quality import mask_problems


def test_mask_problems_on_exact_inputs():
    masks = object_masks(20, 30)
    assert mask_problems(masks, ["'wolf'", "'moon'"]) == ([], [])
    empty = torch.stack([masks[0], torch.zeros(20, 30)])
    assert "the mask of 'moon' is empty" in mask_problems(empty, ["'wolf'", "'moon'"])[0][0]
    nearly = torch.stack([masks[0], masks[0].clone()])
    nearly[1, 0, 0] = 0  # one pixel of 100 apart: IoU 0.99
    errors, _ = mask_problems(nearly, ["'wolf'", "'moon'"])
    assert len(errors) == 1 and "same region (IoU 0.99)" in errors[0]
    whole = torch.stack([torch.ones(20, 30), masks[1]])
    assert "covers the whole image" in mask_problems(whole, ["'sky'", "'moon'"])[1][0]


def test_a_nested_objects_region_reads_only_its_own_values_under_the_inner_rule():
    """RGB-CAM with masks after the inner rule: the shirt's region is the shirt's term, whatever the boy's values are."""


    from leakfree_edit.attention.ore import object_restricted
    from leakfree_edit.attention.region_attention import CrossAttentionRegions, RegionAttentionProgram, rgb_cam
    from leakfree_edit.masking.ops import region_weights, resolve_overlaps

    tokens, heads, dim, h, w = 12, 2, 4, 6, 8
    boy, shirt = torch.zeros(h, w), torch.zeros(h, w)
    boy[1:6, 1:7], shirt[2:4, 3:5] = 1, 1
    masks = resolve_overlaps(torch.stack([boy, shirt]), "inner")
    generator = torch.Generator().manual_seed(0)
    base, own = torch.randn(tokens, heads * dim, generator=generator), torch.randn(2, tokens, heads * dim, generator=generator)

    def run(own):
        embeddings = object_restricted(base, own, [(1, 3), (4, 6)], 7)
        program = RegionAttentionProgram(attention=None).with_cross(CrossAttentionRegions(embeddings, ((1, 3), (4, 6)), masks))
        values = torch.cat([embeddings.substituted.unsqueeze(0), embeddings.objects]).flatten(0, 1)
        q = torch.randn(1, h * w, heads * dim, generator=torch.Generator().manual_seed(1))
        k, v = embeddings.keys.unsqueeze(0), torch.cat([base, values]).unsqueeze(0)
        return rgb_cam(q, k, v, tokens, heads, program, {"activations_shape": [1, 4, h, w]})

    inside = region_weights(masks)[:, 2] == 1
    assert inside.sum() == 4
    changed = own.clone()
    changed[0] = torch.randn(tokens, heads * dim, generator=generator)  # the boy's text changes
    assert torch.equal(run(own)[0, inside], run(changed)[0, inside])
    assert not torch.allclose(run(own)[0, ~inside], run(changed)[0, ~inside])
