"""The Object Masks from Grounded-SAM node: image batches, its preview and its errors."""
import pytest
import torch

from harness.gsam_models import CallCounter, FixedDetector
from leakfree_edit.attention.plan import EditPlan, ObjectEdit


def plan(*objects):
    return EditPlan(edits=tuple(ObjectEdit(o, f"golden {o}") for o in objects))


# ----------------------------------------------------------------------------- the node


def test_node_batch_gives_image_major_masks_background_and_labelled_preview(photo, small_detector, tiny_segmenter):
    from leakfree_edit.nodes.grounded_sam import ObjectMasksGroundedSAM

    encoder = CallCounter(tiny_segmenter.model.image_encoder)
    images = torch.stack([photo, photo.flip(1)])
    masks, background, preview = ObjectMasksGroundedSAM.execute(
        images, plan("cat", "tree", "moon"), small_detector, tiny_segmenter, box_threshold=0.0, text_threshold=0.0,
        dilation_percent=4.0, on_missing="unmasked", instances="all")
    assert masks.shape == (6, 160, 240) and background.shape == (2, 160, 240) and preview.shape == (2, 160, 240, 3)
    assert encoder.count == 2
    for image in range(2):
        union = masks[3 * image: 3 * image + 3].amax(dim=0)
        assert torch.equal(background[image], 1 - union)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not torch.allclose(preview, images, atol=0.05)


def test_node_error_names_the_node_the_object_and_the_image(photo, tiny_segmenter):
    from leakfree_edit.nodes.grounded_sam import ObjectMasksGroundedSAM

    detector = FixedDetector({"cat": [[10, 10, 90, 70]]})
    images = torch.stack([photo, photo])
    with pytest.raises(ValueError, match=r"Object Masks from Grounded-SAM \(LeakFree\): image 1 of 2: no box for 'wolf'.*on_missing"):
        ObjectMasksGroundedSAM.execute(images, plan("cat", "wolf"), detector, tiny_segmenter, 0.45, 0.4, 4.0, "error", "all")
