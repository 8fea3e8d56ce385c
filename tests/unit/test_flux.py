"""Region-guided joint attention's routing rules on plain tensors: who may attend to whom, and which tokens a region owns
(on ComfyUI's Flux classes in tests/comfy_nodes/test_flux.py)."""
import pytest
import torch


def test_routing_rules_on_plain_tensors():
    """Text classes [obj1, obj1, obj2, bg], image classes [obj1, obj2, bg, bg]: who may attend to whom."""
    from leakfree_edit.attention.joint_attention import joint_bias

    text, image = torch.tensor([1, 1, 2, 0]), torch.tensor([[1, 2, 0, 0]])
    allowed = {mode: joint_bias(text, image, mode, torch.float32)[0, 0] == 0 for mode in ("region", "all")}
    t1, t2, tb, i1, i2, ib = [0, 1], [2], [3], [4], [5], [6, 7]
    region = allowed["region"]
    assert region[i1][:, t1 + i1 + ib].all() and not region[i1][:, t2 + tb + i2].any()  # region 1: its text, itself, background
    assert region[ib][:, tb + ib].all() and not region[ib][:, t1 + t2 + i1 + i2].any()  # background: its text and itself
    assert region[t1][:, t1 + i1].all() and not region[t1][:, t2 + tb + i2 + ib].any()  # object 1's text: itself and region 1
    assert region[tb][:, tb + ib].all() and not region[tb][:, t1 + t2 + i1 + i2].any()
    every = allowed["all"]
    assert every[i1][:, i1 + i2 + ib].all() and every[ib][:, i1 + i2 + ib].all() and not every[i1][:, t2 + tb].any()
    assert torch.equal(every[:4], region[:4])  # the text is routed alike in both modes


def test_tokens_take_the_region_of_any_latent_pixel_they_hold():
    from leakfree_edit.masking.token_grid import token_regions

    masks = torch.zeros(1, 8 * 5, 8 * 7)  # latent 5x7, tokens 3x4 (the last row and column padded)
    masks[0, 8 * 4 :, 8 * 6 :] = 1  # the bottom-right latent pixel only
    grid = token_regions(masks, 1, 5, 7, 2).view(3, 4)
    assert grid.sum() == 1 and grid[2, 3] == 1


DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])


@DTYPES
def test_routed_attention_isolates_each_class_bit_for_bit_and_stays_finite(dtype):
    """The pack's own routed call (SDPA with the routing bias, -inf in the dtype): every token of objects 1, the
    background and the shared text is unchanged bit for bit when object 2's text and image tokens change entirely."""
    from leakfree_edit.attention.joint_attention import SHARED, joint_bias, sdpa_attention

    text = torch.tensor([1, 1, 2, 2, 0, 0, SHARED, SHARED])
    image = torch.tensor([[1, 1, 2, 2, 0, 0, 0]])
    classes = torch.cat([text, image[0]])
    bias = joint_bias(text, image, "region", dtype)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, classes.numel(), 8, generator=g).to(dtype) for _ in range(3))
    out = sdpa_attention(q, k, v, 3, mask=bias, skip_reshape=True)
    moved = [t.clone() for t in (q, k, v)]
    for t in moved:
        t[:, :, classes == 2] = torch.randn(t[:, :, classes == 2].shape, generator=g).to(dtype)
    changed = sdpa_attention(*moved, 3, mask=bias, skip_reshape=True)
    assert out.dtype == dtype and torch.isfinite(out).all() and torch.isfinite(changed).all()
    kept = classes != 2
    assert torch.equal(out.view(2, -1, 3, 8)[:, kept], changed.view(2, -1, 3, 8)[:, kept])
    assert not torch.equal(out.view(2, -1, 3, 8)[:, ~kept], changed.view(2, -1, 3, 8)[:, ~kept])


def test_shared_text_is_read_by_every_token_and_reads_only_itself():
    from leakfree_edit.attention.joint_attention import SHARED, joint_bias

    text, image = torch.tensor([1, 2, 0, SHARED]), torch.tensor([[1, 2, 0]])
    allowed = joint_bias(text, image, "region", torch.float32)[0, 0] == 0
    assert allowed[:, 3].all()  # every query may read the shared token
    assert allowed[3].tolist() == [False, False, False, True, False, False, False]


def test_a_seam_between_touching_objects_leaves_no_background_tokens():
    """Two masks meeting inside a column of tokens: before, a token any pixel of which both claimed was background, a
    band at the seam that followed neither prompt. Now the object covering more of the token owns it."""
    from leakfree_edit.masking.token_grid import token_regions

    masks = torch.zeros(2, 8 * 6, 8 * 8)  # latent 6x8, tokens 3x4
    masks[0, :, : 8 * 3 + 2] = 1  # the seam in the middle of latent column 3, inside token column 1
    masks[1, :, 8 * 3 + 2 :] = 1
    classes = token_regions(masks, 2, 6, 8, 2)[0].view(3, 4)
    assert (classes > 0).all()
    assert classes[:, :2].eq(1).all() and classes[:, 2:].eq(2).all()


def test_tokens_both_objects_cover_alike_follow_the_overlap_rule():
    from leakfree_edit.masking.token_grid import token_regions

    masks = torch.zeros(2, 8 * 6, 8 * 8)
    masks[0] = 1  # a large object over everything
    masks[1, 16:32, 16:32] = 1  # a small one inside it (2x2 latent pixels: one token)
    background, inner = (token_regions(masks, 2, 6, 8, 2, rule)[0].view(3, 4) for rule in ("background", "inner"))
    assert background[1, 1] == 0 and inner[1, 1] == 2
    assert (background.flatten()[[0, 1, 2, 3]] == 1).all() and (inner == 1).sum() == 11
    with pytest.raises(ValueError, match="overlap rule"):
        token_regions(masks, 2, 6, 8, 2, "outer")
