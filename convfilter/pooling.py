"""Pooling over whole windows as two passes of strided views (across, then down): avg, max and min
are all separable. On the CPU this is several times faster than torch's pooling kernels on one
large channel, and gives the same values (sums of integers are exact in float32; the mean is one
correctly rounded division)."""

from __future__ import annotations

import torch

from convfilter.correlate import output_size

_COMBINE = {
    "avg": lambda acc, view: acc.add_(view),
    "sum": lambda acc, view: acc.add_(view),
    "max": lambda acc, view: torch.maximum(acc, view, out=acc),
    "min": lambda acc, view: torch.minimum(acc, view, out=acc),
}


def whole_windows(x: torch.Tensor, size: int, stride: int, mode: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H', W') over the windows that lie inside the image (no ceil mode).
    `mode` is avg, max, min, or sum (the avg before its division: integer inputs stay integer)."""
    rows, cols = output_size(x.shape[-2], size, stride), output_size(x.shape[-1], size, stride)
    combine = _COMBINE[mode]
    across = x[..., :, 0: (cols - 1) * stride + 1: stride].clone()
    for j in range(1, size):
        combine(across, x[..., :, j: j + (cols - 1) * stride + 1: stride])
    out = across[..., 0: (rows - 1) * stride + 1: stride, :].clone()
    for i in range(1, size):
        combine(out, across[..., i: i + (rows - 1) * stride + 1: stride, :])
    return out.div_(size * size) if mode == "avg" else out


def has_partial_windows(height: int, width: int, size: int, stride: int) -> bool:
    """Whether ceil mode would add windows that run off the right or bottom edge."""
    return (height - size) % stride != 0 or (width - size) % stride != 0
