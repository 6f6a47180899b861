"""Pictures for people: an input beside its result, and a contact sheet of kernels (Pillow only)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from convfilter.imageio import to_8bit

LABEL_HEIGHT = 28
LABEL_MARGIN = 2  # pixels kept clear on each side of a label
FONT_SIZES = range(18, 9, -1)  # a label takes the largest that fits its tile
GAP = 8
BACKGROUND = (255, 255, 255)


def to_picture(array: np.ndarray) -> Image.Image:
    """An 8-bit RGB picture of a grey, grey+alpha, RGB or RGBA array (alpha dropped)."""
    array = to_8bit(array)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def _labelled(picture: Image.Image, label: str, width: int, height: int) -> Image.Image:
    tile = Image.new("RGB", (width, height + LABEL_HEIGHT), BACKGROUND)
    tile.paste(picture, ((width - picture.width) // 2, LABEL_HEIGHT + (height - picture.height) // 2))
    draw = ImageDraw.Draw(tile)
    label, font = _fitted(draw, label, width - 2 * LABEL_MARGIN)
    text_width = draw.textlength(label, font=font)
    draw.text(((width - text_width) / 2, 4 + (FONT_SIZES[0] - font.size) / 2), label, fill=(0, 0, 0), font=font)
    return tile


def _fitted(draw: ImageDraw.ImageDraw, label: str, width: float) -> tuple[str, ImageFont.FreeTypeFont]:
    """The label and the largest font size it fits `width` in; at the smallest size, the label cut
    short with an ellipsis (a 64-pixel tile, a long chain of kernel names)."""
    for size in FONT_SIZES:
        font = ImageFont.load_default(size=size)
        if draw.textlength(label, font=font) <= width:
            return label, font
    while len(label) > 1 and draw.textlength(label + "…", font=font) > width:
        label = label[:-1]
    return label + "…", font


def side_by_side(before: np.ndarray, after: np.ndarray, before_label: str, after_label: str) -> Image.Image:
    """The input and the result next to each other, each under its label; a result of another size
    (pooling, upsampling) is scaled to the input's height, pixels kept sharp."""
    left, right = to_picture(before), to_picture(after)
    if right.height != left.height:
        scale = left.height / right.height
        right = right.resize((max(1, round(right.width * scale)), left.height), Image.Resampling.NEAREST)
    sheet = Image.new("RGB", (left.width + GAP + right.width, left.height + LABEL_HEIGHT), BACKGROUND)
    sheet.paste(_labelled(left, before_label, left.width, left.height), (0, 0))
    sheet.paste(_labelled(right, after_label, right.width, right.height), (left.width + GAP, 0))
    return sheet


def contact_sheet(tiles: list[tuple[str, np.ndarray]], columns: int = 4, size: int = 256) -> Image.Image:
    """Labelled tiles, each fitted into size x size, in rows of `columns`."""
    rows = -(-len(tiles) // columns)
    cell_width, cell_height = size + GAP, size + LABEL_HEIGHT + GAP
    sheet = Image.new("RGB", (columns * cell_width + GAP, rows * cell_height + GAP), BACKGROUND)
    for index, (label, array) in enumerate(tiles):
        picture = to_picture(array)
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
        row, column = divmod(index, columns)
        sheet.paste(_labelled(picture, label, size, size), (GAP + column * cell_width, GAP + row * cell_height))
    return sheet
