"""Where the watermark is applied: once, on the decoded frame, before the ladder splits it.

The mark is sized from the frame's SHORTER side, so a portrait frame gets the
same mark as a landscape one instead of being covered, and every rung, scaled
down from that frame, carries it at its own scale.
"""

from __future__ import annotations

from pathlib import Path

# Watermark height and margin as fractions of the frame's shorter side.
WATERMARK_HEIGHT_FRACTION = 0.08
WATERMARK_MARGIN_FRACTION = 0.03


def default_watermark_path() -> str:
    """Return the path of the watermark PNG shipped with the library.

    The asset is a 224x44 RGBA PNG (white mark, soft dark outline, transparent
    background), rendered once with ffmpeg's ``drawtext`` and DejaVu Sans Bold;
    Lambda has no fonts, so we ship the picture, not the recipe.
    """
    return str(Path(__file__).resolve().parent.parent / "assets" / "watermark.png")


def watermark_filters(frame: str, mark: str, out: str, size: tuple[int, int]) -> list[str]:
    """Filter-graph chains that burn ``mark`` into the bottom-right corner of ``frame``.

    ``frame`` is a ``size`` (width, height) picture, ``mark`` the PNG's input
    pad (e.g. ``1:v``); the watermarked picture comes out on pad ``out``.
    """
    short = min(size)
    mark_height = max(2, round(short * WATERMARK_HEIGHT_FRACTION) // 2 * 2)
    margin = round(short * WATERMARK_MARGIN_FRACTION)
    return [
        f"[{mark}]scale=-2:{mark_height}[{out}_mark]",
        f"[{frame}][{out}_mark]overlay=W-w-{margin}:H-h-{margin}[{out}]",
    ]
