"""Grounded-SAM masks: phrase matching, the real SAM predictor path, the real Grounding-DINO forward."""
import numpy as np
import pytest
import torch

from harness.gsam_models import CallCounter, FixedDetector, tiny_bert_config, tiny_sam
from leakfree_edit.masking import bert as bert_module
from leakfree_edit.masking import grounded_sam as gs
from leakfree_edit.masking import grounding_dino as gd
from leakfree_edit.masking.ops import dilate

# ----------------------------------------------------------------------------- phrases


def test_caption_spans_are_each_phrases_own_tokens(bert_tokenizer):
    phrases = ["wolf", "full moon", "brown-colored goat", "man's red t-shirt"]
    caption, spans = gd.caption_with_spans(bert_tokenizer, phrases)
    ids = bert_tokenizer(caption)["input_ids"]
    dot = bert_tokenizer.convert_tokens_to_ids(".")
    for phrase, (start, end) in zip(phrases, spans):
        assert ids[start:end] == bert_tokenizer(phrase, add_special_tokens=False)["input_ids"]
        assert ids[end] == dot
    assert ids[spans[-1][1] + 1] == bert_tokenizer.sep_token_id


def test_normalize_phrase_drops_separators_and_case():
    assert gs.normalize_phrase("  The Moon.  ") == "the moon"
    assert gs.normalize_phrase("cat?dog") == "cat dog"


def test_assign_boxes_uses_each_phrases_tokens_and_both_thresholds():
    spans = [(1, 2), (3, 5)]  # "wolf . full moon ."
    scores = torch.full((5, 7), 0.01)
    scores[0, 1] = 0.9  # wolf
    scores[1, 4] = 0.8  # moon (second word of "full moon")
    scores[2, 1] = 0.3  # below box_threshold
    scores[3, 2] = 0.9  # only the '.' between phrases: no phrase scores above text_threshold
    scores[4, 3], scores[4, 1] = 0.7, 0.5  # both phrases, "full moon" higher
    index, labels, best = gd.assign_boxes(scores, spans, box_threshold=0.45, text_threshold=0.4)
    assert index.tolist() == [0, 1, 4]
    assert labels.tolist() == [0, 1, 1]
    assert torch.allclose(best, torch.tensor([0.9, 0.8, 0.7]))


def test_boxes_per_line_all_best_and_one_instance_per_line_of_a_repeated_name():
    boxes = torch.tensor([[0, 0, 10, 10], [50, 0, 60, 10], [51, 0, 61, 10], [20, 30, 30, 40], [5, 5, 8, 8.0]])
    detections = gd.Detections(boxes, torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0.5, 0.9, 0.8, 0.7, 0.6]))
    chosen, notes = gs.choose_boxes(detections, lines=[0, 1], count=2, instances="all")
    assert chosen == [[0, 1, 2, 3], [4]] and notes == ["", ""]
    assert gs.choose_boxes(detections, [0, 1], 2, "best")[0] == [[1], [4]]
    # "car -> red car", "car -> blue car": two distinct instances (box 2 is box 1 found again), left to right
    chosen, notes = gs.choose_boxes(detections, lines=[0, 0, 1], count=2, instances="all")
    assert chosen == [[3], [1], [4]] and notes == ["1 of 2, left to right", "2 of 2, left to right", ""]
    chosen, _ = gs.choose_boxes(detections, lines=[1, 1], count=2, instances="best")  # one instance for two lines
    assert chosen == [[4], []]


# ----------------------------------------------------------------------------- SAM path with known boxes


def test_masks_follow_plan_order_and_a_missing_object_never_takes_anothers_mask(photo, tiny_segmenter):
    cat_boxes, bird_box = [[10, 10, 90, 70], [120, 30, 200, 120]], [[60, 80, 230, 150]]
    detector = FixedDetector({"cat": cat_boxes, "bird": bird_box})
    image = (photo * 255).round().to(torch.uint8).numpy()
    cat = tiny_segmenter.segment(image, torch.tensor(cat_boxes, dtype=torch.float32)).any(dim=0).float()
    bird = tiny_segmenter.segment(image, torch.tensor(bird_box, dtype=torch.float32))[0].float()
    assert not torch.equal(cat, bird)

    with pytest.raises(gd.ObjectPhraseError, match="'dog'"):
        gs.object_masks(photo, ["Cat", "dog", "bird"], detector, tiny_segmenter, on_missing="error")
    found = gs.object_masks(photo, ["Cat", "dog", "bird"], detector, tiny_segmenter, on_missing="unmasked")
    masks, missing = found.masks, found.missing
    assert missing == ["dog"]
    assert detector.calls[-1] == ["cat", "dog", "bird"]
    assert torch.equal(masks[0], cat) and torch.equal(masks[2], bird)
    # "dog" is edited unmasked: everywhere the found objects are not, so it overlaps neither of them
    assert torch.equal(masks[1], 1 - torch.maximum(cat, bird))


def test_found_masks_are_dilated_before_an_unmasked_object_takes_the_rest(photo, tiny_segmenter):
    detector = FixedDetector({"cat": [[10, 10, 90, 70]]})
    plain = gs.object_masks(photo, ["cat", "dog"], detector, tiny_segmenter, on_missing="unmasked").masks
    grown = gs.object_masks(photo, ["cat", "dog"], detector, tiny_segmenter, on_missing="unmasked", dilation=5).masks
    assert torch.equal(grown[0], dilate(plain[0:1], 5)[0]) and grown[0].sum() > plain[0].sum()
    assert torch.equal(grown[1], 1 - grown[0])
    nothing = gs.object_masks(photo, ["wolf"], FixedDetector({}), tiny_segmenter, on_missing="unmasked")
    assert nothing.missing == ["wolf"] and nothing.notes == ["unmasked"] and torch.equal(nothing.masks[0], torch.ones(160, 240))


def test_one_image_encoding_and_one_decoder_batch_for_all_boxes(photo, tiny_segmenter):
    encoder, decoder = CallCounter(tiny_segmenter.model.image_encoder), CallCounter(tiny_segmenter.model.mask_decoder)
    detector = FixedDetector({"cat": [[10, 10, 90, 70], [120, 30, 200, 120]], "bird": [[60, 80, 230, 150]]})
    gs.object_masks(photo, ["cat", "bird"], detector, tiny_segmenter)
    assert (encoder.count, decoder.count) == (1, 1)


def test_best_instance_keeps_the_top_scoring_box_and_decodes_only_it(photo, tiny_segmenter, monkeypatch):
    boxes = [[10, 10, 90, 70], [120, 30, 200, 120]]
    detector = FixedDetector({"cat": boxes}, {"cat": [0.5, 0.8]})
    decoded = []
    segment = tiny_segmenter.segment
    monkeypatch.setattr(tiny_segmenter, "segment", lambda image, chosen: decoded.append(chosen.tolist()) or segment(image, chosen))
    masks = gs.object_masks(photo, ["cat"], detector, tiny_segmenter, instances="best").masks
    assert decoded == [boxes[1:]]
    monkeypatch.undo()
    image = (photo * 255).round().to(torch.uint8).numpy()
    expected = tiny_segmenter.segment(image, torch.tensor(boxes[1:], dtype=torch.float32))[0].float()
    assert torch.equal(masks[0], expected)


def test_a_repeated_name_gets_one_instance_per_line_in_reading_order(photo, tiny_segmenter):
    """"car -> red car", "car -> blue car": each line its own car, left to right (once one mask for both, all overlap)."""
    left, right = [10, 10, 90, 70], [120, 30, 200, 120]
    detector = FixedDetector({"cat": [right, left]}, {"cat": [0.9, 0.8]})
    found = gs.object_masks(photo, ["cat", "Cat."], detector, tiny_segmenter)
    image = (photo * 255).round().to(torch.uint8).numpy()
    expected = tiny_segmenter.segment(image, torch.tensor([left, right], dtype=torch.float32)).float()
    assert detector.calls[-1] == ["cat"] and torch.equal(found.masks, expected)
    assert found.notes == ["1 of 2, left to right", "2 of 2, left to right"]
    with pytest.raises(gd.ObjectPhraseError, match="'Cat.'.*one instance per line"):  # fewer instances than lines
        gs.object_masks(photo, ["cat", "Cat."], FixedDetector({"cat": [left]}), tiny_segmenter)
    one = gs.object_masks(photo, ["cat", "Cat."], FixedDetector({"cat": [left]}), tiny_segmenter, on_missing="unmasked")
    assert one.missing == ["Cat."] and one.notes == ["1 of 2, left to right", "unmasked"] and torch.equal(one.masks[1], 1 - one.masks[0])


# ----------------------------------------------------------------------------- Grounding-DINO forward


def test_detector_matches_groundingdino_py_reference_predict(photo, small_detector):
    """Our caption, resize and box filter reproduce groundingdino-py's own ``predict`` boxes exactly."""
    from groundingdino.util.inference import predict

    phrases = ["cat", "full moon", "tree"]
    caption, _ = gd.caption_with_spans(small_detector.tokenizer, phrases)
    torch.manual_seed(0)
    reference_boxes, reference_scores, _ = predict(small_detector.model, gd.dino_input(photo, 224), caption, 0.0, 0.0, device="cpu")
    threshold = float(reference_scores.median())
    kept = reference_boxes[reference_scores > threshold]

    ours = small_detector.detect(photo, phrases, box_threshold=threshold, text_threshold=0.0)
    assert 0 < len(ours.boxes) == len(kept)
    height, width = photo.shape[:2]
    cx, cy, w, h = kept.unbind(-1)
    expected = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * torch.tensor([width, height, width, height])
    assert torch.allclose(ours.boxes, expected.clamp(min=0), atol=1e-3)
    assert set(ours.labels.tolist()) <= {0, 1, 2}


def test_text_encoder_reads_each_phrase_alone_as_transformers_bert_does(bert_tokenizer):
    """Grounding-DINO's per-phrase attention blocks through the pack's text encoder equal transformers' own BERT run
    on each block alone (the blocks and their restarting positions from groundingdino-py's own mask builder)."""
    from groundingdino.models.GroundingDINO.bertwarper import generate_masks_with_special_tokens_and_transfer_map
    from transformers import BertModel

    torch.manual_seed(0)
    bert = BertModel(tiny_bert_config()).eval()
    tokens = bert_tokenizer(["wolf . full moon ."], return_tensors="pt")
    special = bert_tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"])
    blocks_mask, positions, _ = generate_masks_with_special_tokens_and_transfer_map(tokens, special, bert_tokenizer)
    with torch.no_grad():
        out = bert_module.GroundingDinoText(bert)(input_ids=tokens["input_ids"], attention_mask=blocks_mask,
                                                  token_type_ids=tokens["token_type_ids"], position_ids=positions)
        blocks = {tuple(row.nonzero().flatten().tolist()) for row in blocks_mask[0]}
        assert len(blocks) >= 4  # [CLS], "wolf .", "full moon .", [SEP]
        for block in map(torch.tensor, blocks):
            alone = bert(input_ids=tokens["input_ids"][:, block], token_type_ids=tokens["token_type_ids"][:, block],
                         position_ids=positions[:, block]).last_hidden_state
            assert torch.allclose(out["last_hidden_state"][0, block], alone[0], atol=1e-5)


def test_building_a_detector_changes_neither_transformers_nor_groundingdino(small_detector):
    """The build hands groundingdino-py the local tokenizer and BERT without leaving anything changed behind it."""
    from groundingdino.util import get_tokenlizer
    from transformers import BertModel

    assert isinstance(small_detector.model.bert, bert_module.GroundingDinoText)
    assert get_tokenlizer.get_tokenlizer.__module__ == get_tokenlizer.__name__
    assert get_tokenlizer.get_pretrained_language_model.__module__ == get_tokenlizer.__name__
    assert not any(hasattr(BertModel, name) and name in vars(BertModel)
                   for name in ("get_extended_attention_mask", "invert_attention_mask", "get_head_mask"))


# ----------------------------------------------------------------------------- the node


def test_labelled_preview_tints_each_mask_and_writes_its_label(photo):
    from leakfree_edit.masking.preview import labelled_preview

    masks = torch.zeros(2, 160, 240)
    masks[0, 20:80, 20:100] = 1
    masks[1, 90:150, 120:230] = 1
    plain = labelled_preview(photo, masks, ["", ""])
    labelled = labelled_preview(photo, masks, ["cat", "bird"])
    assert labelled.shape == (160, 240, 3)
    changed = (labelled - plain).abs().sum(-1) > 0
    assert changed[20:40, 20:60].any() and changed[90:110, 120:160].any()
    assert not changed[150:, :100].any()


def test_many_boxes_are_decoded_in_bounded_batches(monkeypatch):
    """Hundreds of boxes (a loose threshold, a field of flowers) go through SAM's decoder a batch at a time."""

    from leakfree_edit.masking.sam import SamSegmenter

    tiny_segmenter = SamSegmenter(tiny_sam())
    batches = []
    original = tiny_segmenter.predictor.predict_torch
    monkeypatch.setattr(tiny_segmenter.predictor, "predict_torch", lambda *a, boxes, **k: batches.append(len(boxes)) or original(*a, boxes=boxes, **k))
    boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0]]).repeat(70, 1)
    masks = tiny_segmenter.segment(np.zeros((64, 64, 3), dtype=np.uint8), boxes)
    assert masks.shape == (70, 64, 64) and masks.dtype == torch.bool
    assert batches == [32, 32, 6]
