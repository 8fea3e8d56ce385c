"""Grounded-SAM masks: phrase matching, the real SAM predictor path, the real Grounding-DINO forward, the node."""
import numpy as np
import pytest
import torch
from PIL import Image

from harness.gsam_models import CallCounter, FixedDetector, shipped_vocab_dir, small_grounding_dino, tiny_sam
from leakfree_edit.attention.plan import EditPlan, ObjectEdit
from leakfree_edit.masking import bert as bert_module, grounding_dino as gd, sam


@pytest.fixture(scope="module")
def tokenizer():
    return bert_module.load_bert_tokenizer(shipped_vocab_dir())


@pytest.fixture(scope="module")
def dino(tokenizer):
    torch.manual_seed(0)
    return gd.GroundingDinoDetector(small_grounding_dino(tokenizer), tokenizer, short_side=224)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return sam.SamSegmenter(tiny_sam())


@pytest.fixture(scope="module")
def photo(example_inputs):
    """A real ALE-Bench photo, 160 x 240 (not square), [H, W, 3] in [0, 1]."""
    image = Image.open(example_inputs / "artificial_img01.jpg").convert("RGB").resize((240, 160))
    return torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0)


def plan(*objects):
    return EditPlan(edits=tuple(ObjectEdit(o, f"golden {o}") for o in objects))


# ----------------------------------------------------------------------------- phrases


# ----------------------------------------------------------------------------- SAM path with known boxes


# ----------------------------------------------------------------------------- Grounding-DINO forward


# ----------------------------------------------------------------------------- the node


def test_node_batch_gives_image_major_masks_background_and_labelled_preview(photo, dino, segmenter):
    from leakfree_edit.nodes.grounded_sam import ObjectMasksGroundedSAM

    encoder = CallCounter(segmenter.model.image_encoder)
    images = torch.stack([photo, photo.flip(1)])
    masks, background, preview = ObjectMasksGroundedSAM.execute(
        images, plan("cat", "tree", "moon"), dino, segmenter, box_threshold=0.0, text_threshold=0.0,
        dilation_percent=4.0, on_missing="unmasked", instances="all")
    assert masks.shape == (6, 160, 240) and background.shape == (2, 160, 240) and preview.shape == (2, 160, 240, 3)
    assert encoder.count == 2
    for image in range(2):
        union = masks[3 * image: 3 * image + 3].amax(dim=0)
        assert torch.equal(background[image], 1 - union)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not torch.allclose(preview, images, atol=0.05)


def test_node_error_names_the_node_the_object_and_the_image(photo, segmenter):
    from leakfree_edit.nodes.grounded_sam import ObjectMasksGroundedSAM

    detector = FixedDetector({"cat": [[10, 10, 90, 70]]})
    images = torch.stack([photo, photo])
    with pytest.raises(ValueError, match=r"Object Masks from Grounded-SAM \(LeakFree\): image 1 of 2: no box for 'wolf'.*on_missing"):
        ObjectMasksGroundedSAM.execute(images, plan("cat", "wolf"), detector, segmenter, 0.45, 0.4, 4.0, "error", "all")
