"""Border padding (CONTRACT §4): the pixels a kernel sees beyond the image's edges.

`reflect` mirrors without repeating the edge pixel (OpenCV's BORDER_REFLECT_101, scipy's
`mirror`), `replicate` repeats the edge pixel, `zeros` is black, `circular` wraps around.
Rows are padded first, then columns over the full height, so corners follow both rules, as in
OpenCV. Written with slices into one new tensor: `torch.nn.functional.pad` in reflect mode is
several times slower on large single-channel images.
"""

from __future__ import annotations

import torch


def _fill(band: torch.Tensor, before: int, size: int, after: int, border: str, dim: int) -> None:
    """Fill the `before` and `after` margins of `band` along `dim` from its middle `size` entries."""

    def part(start: int, stop: int) -> torch.Tensor:
        return band.narrow(dim, start, stop - start)

    first, last = before, before + size  # the image lies in [first, last)
    if border == "zeros":
        part(0, first).zero_()
        part(last, last + after).zero_()
    elif border == "replicate":
        part(0, first).copy_(part(first, first + 1).expand_as(part(0, first)))
        part(last, last + after).copy_(part(last - 1, last).expand_as(part(last, last + after)))
    elif border == "circular":
        part(0, first).copy_(part(last - before, last))
        part(last, last + after).copy_(part(first, first + after))
    else:  # reflect: the edge pixel is not repeated
        part(0, first).copy_(part(first + 1, first + 1 + before).flip(dim))
        part(last, last + after).copy_(part(last - 1 - after, last - 1).flip(dim))


def pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int, border: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right), the margins filled by `border`.
    reflect needs each margin smaller than the side, circular no larger (the caller checks)."""
    height, width = x.shape[-2:]
    out = x.new_empty(*x.shape[:-2], top + height + bottom, left + width + right)
    pad_band(x, 0, out, left, right, top, border)  # the whole padded image is one band
    return out


def _source_row(index: int, size: int, border: str) -> int | None:
    """The image row (or column) that padding shows at `index` (< 0 or >= size); None for zeros."""
    if border == "zeros":
        return None
    if border == "replicate":
        return min(max(index, 0), size - 1)
    if border == "circular":
        return index % size
    return -index if index < 0 else 2 * (size - 1) - index  # reflect


def pad_band(x: torch.Tensor, first: int, out: torch.Tensor, left: int, right: int, top: int, border: str) -> None:
    """out = rows first .. first + out.shape[-2] of pad(x, left, right, top, ..., border): one band of
    the padded image, without padding the whole image (same values, same corners: rows first,
    then columns over the band's full height)."""
    height, width = x.shape[-2:]
    inner = out[..., left: left + width]
    start = first - top  # the image row of out's first row
    low, high = max(start, 0), min(start + out.shape[-2], height)
    if low < high:
        inner[..., low - start: high - start, :] = x[..., low:high, :]
    for row in [*range(start, min(0, start + out.shape[-2])), *range(max(height, start), start + out.shape[-2])]:
        source = _source_row(row, height, border)
        if source is None:
            inner[..., row - start, :].zero_()
        else:
            inner[..., row - start, :] = x[..., source, :]
    if left or right:
        _fill(out, left, width, right, border, dim=-1)
