"""Region-guided joint attention's routing rules on plain tensors: who may attend to whom, and which tokens a region owns
(on ComfyUI's Flux classes in tests/comfy_nodes/test_flux.py)."""
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
    from leakfree_edit.masking.token_grid import token_masks

    masks = torch.zeros(1, 8 * 5, 8 * 7)  # latent 5x7, tokens 3x4 (the last row and column padded)
    masks[0, 8 * 4 :, 8 * 6 :] = 1  # the bottom-right latent pixel only
    grid = token_masks(masks, 5, 7, 2)
    assert grid.shape == (1, 3, 4) and grid.sum() == 1 and grid[0, 2, 3] == 1
