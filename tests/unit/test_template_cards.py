"""The template browser's pictures (harness/template_cards.py, written by scripts/thumbnails.py): each template has
one, 512 x 384, showing the photo it edits with its masks tinted in the preview colours beside its edit lines."""
import json

import numpy as np
import pytest
from PIL import Image

from harness.template_cards import MARGIN, PHOTO, SIZE, template_card
from pipelines.comfyui import ROOT

WORKFLOWS = ROOT / "workflows"


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_every_template_has_its_picture(path):
    with Image.open(path.with_suffix(".jpg")) as picture:
        assert picture.format == "JPEG" and picture.size == SIZE


def card(stem: str, folder=None, **changes) -> np.ndarray:
    """The card of ``stem``, its API twin's node inputs changed by ``changes`` (node id -> inputs), written in ``folder``."""
    api = WORKFLOWS / "api" / f"{stem}.json"
    if changes:
        graph = json.loads(api.read_text())
        for node_id, inputs in changes.items():
            graph[node_id]["inputs"].update(inputs)
        api = folder / api.name
        api.write_text(json.dumps(graph))
    return np.asarray(template_card(api, ROOT / "example_inputs")).astype(int)


def test_the_card_tints_each_painted_mask_and_writes_the_edit_lines(tmp_path):
    painted = card("edit_painted_masks_sd15")
    top = MARGIN
    photo = painted[top: top + PHOTO, MARGIN: MARGIN + PHOTO]
    plain = np.asarray(Image.open(ROOT / "example_inputs" / "artificial_img03.jpg").convert("RGB").resize((PHOTO, PHOTO))).astype(int)
    wolf = np.asarray(Image.open(ROOT / "example_inputs" / "wolf_mask.png").convert("L").resize((PHOTO, PHOTO))) > 127
    tint = photo - plain
    assert tint[wolf][:, 0].mean() > 40 and abs(tint[~wolf]).mean() < abs(tint[wolf]).mean() / 3  # orange on the wolf only
    other = card("edit_painted_masks_sd15", tmp_path, **{"5": {"edits": "wolf -> white horse\nmoon -> red moon"}})
    text = np.s_[top:, MARGIN + PHOTO + MARGIN:]
    assert not np.array_equal(painted[text], other[text]) and np.array_equal(painted[top: top + PHOTO, :MARGIN + PHOTO], other[top: top + PHOTO, :MARGIN + PHOTO])
