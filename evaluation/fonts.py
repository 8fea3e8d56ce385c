"""The font the pack's pictures are drawn with (mask previews, attention panels, the Leakage Metrics card).

DejaVu Sans as matplotlib ships it (``mpl-data/fonts/ttf``, nothing is downloaded): Latin, Greek, Cyrillic, Armenian,
Georgian, Hebrew and Arabic letters, dashes and arrows, so object names in those scripts and the "–" of a missing
metric draw as text. It has no CJK glyphs. Without matplotlib, Pillow's built-in font (Latin only).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import ImageFont


def dejavu_path() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    path = dejavu_path()
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size=size)
