"""What the pack's pictures say, readable: object names in non-Latin scripts and the "–" of a missing metric are drawn
as glyphs (DejaVu Sans from matplotlib, evaluation/fonts.py), and a mask preview's warnings wrap at spaces and never
cover more than a quarter of it, however small the picture (128 px in the tests, a thumbnail in the app)."""
import numpy as np
import torch

from leakfree_edit.evaluation.card import scores_table, table_card
from leakfree_edit.evaluation.fonts import font
from leakfree_edit.masking.preview import WARNING_SHARE, labelled_preview, wrap

STRIP = (40, 0, 0)
WARNING = ("the mask of 'moon' (line 2) covers the whole image: nothing is kept from the source as background, and every "
           "other object overlaps it")


def glyph(character: str, size: int = 24) -> bytes:
    mask = font(size).getmask(character)
    return bytes(mask) + bytes(str(mask.size), "ascii")


def test_names_in_other_scripts_and_the_dash_are_drawn_as_their_own_glyphs():
    missing = glyph("\ue000")  # a private-use code point: no font has it, so it draws the font's missing-glyph box
    for text in ("волк", "λύκος", "ձի", "זאב", "–", "↓↑"):
        shapes = [glyph(c) for c in text]
        assert missing not in shapes, f"{text!r} draws a missing-glyph box"
        assert len(set(shapes)) == len(set(text)), f"{text!r}: different characters draw the same shape"


def test_the_metrics_card_draws_the_dash_of_a_missing_metric_and_the_arrows():
    from leakfree_edit.evaluation.ale_metrics import METRICS, EditScores

    text, card = scores_table([EditScores(values={metric: float("nan") for metric in METRICS})], [])
    assert "–" in text and "↓" in text
    missing = table_card([["\ue000"]])
    for drawn in ("–", "↓"):
        assert not np.array_equal(table_card([[drawn]]), missing), f"the card draws {drawn!r} as a missing-glyph box"
    assert card.shape[2] == 3


def strip_rows(preview: torch.Tensor) -> int:
    """How many rows from the bottom the warning strip covers (its colour along the left edge)."""
    column = (preview[:, 0] * 255).round().to(torch.int64)
    rows = 0
    for pixel in reversed(column.tolist()):
        if tuple(pixel) != STRIP:
            break
        rows += 1
    return rows


def test_the_warning_strip_covers_at_most_a_quarter_of_a_128_px_preview():
    image, masks = torch.full((128, 128, 3), 0.5), torch.zeros(1, 128, 128)
    masks[0, 20:60, 20:60] = 1
    plain = labelled_preview(image, masks, ["moon"])
    warned = labelled_preview(image, masks, ["moon"], [WARNING, WARNING])
    covered = strip_rows(warned)
    assert 0 < covered <= WARNING_SHARE * 128
    assert torch.equal(warned[: 128 - covered], plain[: 128 - covered])  # the masks and tags above it are untouched
    large = labelled_preview(torch.full((512, 512, 3), 0.5), torch.zeros(1, 512, 512), ["moon"], [WARNING])
    assert strip_rows(large) < WARNING_SHARE * 512


def test_warnings_wrap_at_spaces_only():
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = wrap(draw, WARNING, font(10), 120)
    assert len(lines) > 3 and " ".join(lines) == WARNING
    assert all(draw.textlength(line, font=font(10)) <= 120 for line in lines if " " in line)
