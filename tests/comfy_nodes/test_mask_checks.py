"""What once ran "successfully" and edited the wrong thing now stops with an error or shows a warning the user sees:
on the preview image, on the node (ComfyUI's progress text), in the prompt's UI output and in the log."""
import pytest
import torch

from harness.editing import EDITS, object_masks


@pytest.fixture(scope="module")
def plan(models):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    return ObjectRestrictedEncode.execute(models.clip(), EDITS, "object")[2]


def painted(plan, masks, image=None, overlap="background", hidden=None, **more):
    from leakfree_edit.nodes.painted_masks import ObjectMasksPainted

    node = ObjectMasksPainted.PREPARE_CLASS_CLONE(hidden or {"UNIQUE_ID": "7"})
    return node.execute(plan, masks, 4.0, image=image, overlap=overlap, **more)


def node_error():
    from leakfree_edit.integration.errors import NodeInputError

    return NodeInputError


def test_silent_cases_are_errors_naming_the_object_and_line(plan):
    masks = object_masks()
    with pytest.raises(node_error(), match=r"Object Masks from Painted Masks \(LeakFree\): the mask of 'moon' \(line 2\) is empty"):
        painted(plan, torch.stack([masks[0], torch.zeros_like(masks[1])]))
    with pytest.raises(node_error(), match=r"the masks of 'wolf' \(line 1\) and 'moon' \(line 2\) are the same region"):
        painted(plan, masks[0:1], mask_2=masks[0:1])
    with pytest.raises(node_error(), match=r"mask_2 is 512x512 px but the image is 128x96 px \(another shape\)"):
        painted(plan, masks[0:1], image=torch.rand(1, 96, 128, 3), mask_2=torch.ones(1, 512, 512))
    prompt = {"7": {"class_type": "LeakFreeObjectMasksPainted", "inputs": {"mask_1": ["3", 0], "mask_9": ["4", 0]}}}
    with pytest.raises(node_error(), match=r"mask_9 is connected, but the node reads mask_1 to mask_8"):
        painted(plan, masks, hidden={"UNIQUE_ID": "7", "PROMPT": prompt})


def test_warnings_reach_the_preview_the_ui_output_and_the_log(plan, caplog):
    masks = object_masks()
    image = torch.full((1, 96, 128, 3), 0.5)
    plain = painted(plan, masks, image=image)
    assert plain.ui == {"leakfree_warnings": []}
    sky = torch.stack([torch.ones(96, 128), masks[1]])
    with caplog.at_level("WARNING", logger="LeakFreeEdit"):
        warned = painted(plan, sky, image=image)
    warnings = warned.ui["leakfree_warnings"]
    assert any("'wolf' (line 1) covers the whole image" in w for w in warnings)
    assert any("'moon' (line 2) keeps only 0% of its area" in w for w in warnings)  # inside the whole-image mask
    assert all(w in caplog.text for w in warnings)
    preview = warned.result[2][0]
    strip = (preview[-12:] - image[0, -12:]).abs().sum(-1) > 0.2  # the warning strip along the bottom edge
    assert strip.float().mean() > 0.5


def test_the_preview_labels_each_mask_with_its_name_and_own_share(plan):
    from leakfree_edit.masking.ops import preview_overlay

    masks = object_masks()
    image = torch.full((1, 96, 128, 3), 0.5)
    result = painted(plan, masks, image=image)
    tinted = preview_overlay(image[0], result.result[0])
    tags = (result.result[2][0] - tinted).abs().sum(-1) > 0.05  # beyond the preview's 8-bit rounding
    assert tags[:12, :40].any() and tags[48:60, 64:100].any()  # each tag at its mask's top-left corner
    assert not tags[60:, :40].any()


def test_the_inner_rule_lets_a_nested_object_keep_its_pixels(plan):
    boy, shirt = torch.zeros(96, 128), torch.zeros(96, 128)
    boy[10:90, 20:100] = 1
    shirt[40:60, 50:70] = 1
    ale = painted(plan, torch.stack([boy, shirt]))
    inner = painted(plan, torch.stack([boy, shirt]), overlap="inner")
    assert any("'moon' (line 2) keeps only 0% of its area" in w and "overlap inner" in w for w in ale.ui["leakfree_warnings"])
    assert inner.ui["leakfree_warnings"] == []
    masks = inner.result[0]
    assert not (masks[0] * masks[1]).any() and torch.equal(masks.amax(dim=0), ale.result[0].amax(dim=0))
    assert torch.equal(inner.result[1], ale.result[1])  # the background is the same either way
