"""Pixel Background Composite: the source bit for bit outside the feathered mask, the edit bit for bit inside it,
any size (mask and decoded image resized to the source), batches."""
import pytest
import torch

from leakfree_edit.integration.errors import NodeInputError


def run(pack_nodes, *args, **kwargs):
    return pack_nodes["LeakFreePixelBackgroundComposite"].execute(*args, **kwargs).result


def test_outside_the_feathered_mask_the_source_inside_the_edit_bit_for_bit(pack_nodes):
    torch.manual_seed(0)
    source = torch.rand(2, 75, 101, 3)  # odd, non-square, not a multiple of 8
    edited = torch.rand(2, 72, 96, 3)  # a VAE decode's size: resized to the source
    masks = torch.zeros(2, 30, 40)  # two objects, drawn at another resolution
    masks[0, 5:12, 6:15] = 1
    masks[1, 18:26, 25:37] = 1
    image, weight = run(pack_nodes, edited, source, masks, feather=6)
    assert image.shape == source.shape and weight.shape == (2, 75, 101)
    outside, inside = weight == 0, weight == 1
    assert outside.any() and inside.any() and ((weight > 0) & (weight < 1)).any()
    resized = torch.nn.functional.interpolate(edited.movedim(-1, 1), size=(75, 101), mode="bicubic", align_corners=False).clamp(0, 1).movedim(1, -1)
    assert torch.equal(image[outside], source[outside])
    assert torch.equal(image[inside], resized[inside])
    band = (weight > 0) & (weight < 1)
    blend = weight[band].unsqueeze(-1)
    assert torch.allclose(image[band], blend * resized[band] + (1 - blend) * source[band])


def test_one_mask_set_per_image_of_a_batch(pack_nodes):
    from leakfree_edit.attention.plan import EditPlan, ObjectEdit

    plan = EditPlan((ObjectEdit("wolf", "goat"), ObjectEdit("moon", "sun")))
    source, edited = torch.zeros(2, 16, 16, 3), torch.ones(2, 16, 16, 3)
    masks = torch.zeros(4, 16, 16)
    masks[0, :4, :4] = 1  # image 0: top-left
    masks[3, -4:, -4:] = 1  # image 1: bottom-right
    image, _ = run(pack_nodes, edited, source, masks, feather=0, edit_plan=plan)
    assert image[0, :4, :4].eq(1).all() and image[0, -4:, -4:].eq(0).all()
    assert image[1, -4:, -4:].eq(1).all() and image[1, :4, :4].eq(0).all()
    with pytest.raises(NodeInputError, match="Pixel Background Composite"):
        run(pack_nodes, torch.ones(3, 16, 16, 3), source, masks, feather=0, edit_plan=plan)
