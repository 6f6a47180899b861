"""Exact 'valid' cross-correlation of a padded (N, C, H, W) float tensor with one 2-D kernel, by
the fastest method for the kernel and the device. Every method computes the same sum; they
differ only in float32 rounding (far below the ±1 level of the contract).

- `mac`: one multiply-accumulate over a shifted view per non-zero weight. On the CPU
  `torch.nn.functional.conv2d` with one input and one output channel is slow (about 100 ms
  for a 3 MP image with a 3x3 kernel here, against under 4 ms for this).
- `separable`: for a rank-1 kernel (box, Gaussian, Sobel, Prewitt), a horizontal then a vertical
  pass: h + w taps instead of h * w.
- `matmul`: a rank-1 kernel with long factors (a large Gaussian or box): the same two passes, each
  as products with a small banded (Toeplitz) matrix, which run at matrix-multiply speed.
- `fft`: for kernels with many taps, the product of the spectra (cost independent of the size).
- `conv2d`: torch's own, where it is fast (CUDA, small kernels) or gradients are wanted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Above this many multiply-accumulate passes the FFT is faster. Measured on the 2-core CPU of
# the development machine, 1 and 2 threads, 1080p and 3 MP float images: a dense 9x9 (81
# passes) still wins by MAC (47 ms against 73 ms for the FFT on 3 MP, 1 thread), 11x11 (121)
# is even (79 against 73).
FFT_TAPS_CPU = 100
# A rank-1 kernel whose longer side has at least this many taps runs its passes as matrix
# products (`matmul`), in blocks of MATMUL_BLOCK outputs, and never goes to the FFT. Measured in
# the banded pipeline (2 cores, Gaussians, 3 MP and 24 MP): shifted passes win up to 7 taps, 9 is
# even, from 11 on the products win (24 MP: 11 taps 43 against 53 ms, 31 taps 73 against 160 ms,
# 63 taps 118 ms against 350 ms, and 650 ms for the FFT). Blocks of 16 beat 8, 20 and 40.
MATMUL_TAPS_CPU = 11
MATMUL_BLOCK = 16
# On CUDA, conv2d (cuDNN) is fast for small kernels and poor for large single-channel ones.
FFT_TAPS_CUDA = 49


@dataclass(frozen=True)
class Plan:
    method: str
    height: int
    width: int
    taps: tuple[tuple[int, int, float], ...] = ()  # (row, column, weight) of each non-zero weight
    column: tuple[tuple[int, float], ...] = ()  # rank-1 factors: kernel = column (x) row
    row: tuple[tuple[int, float], ...] = ()


# A kernel counts as rank 1 when the outer product of its factors differs from it by at most this
# much, summed over the weights and multiplied by the largest value of a 16-bit image: the most
# the dropped difference can move an output, in grey levels. A layer keeps its weights in float32,
# so a Gaussian computed in float64 is rank 1 only to about 1e-7 of its sum once stored (0.007
# levels at 16 bits for a normalised one): still rank 1. An absolute bound, not one relative to
# the weights: an edge kernel with large weights whose response cancels must not lose levels.
RANK1_LEVELS = 0.05


def _rank1(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(column, row) with outer(column, row) == kernel within RANK1_LEVELS, or None."""
    u, s, vt = np.linalg.svd(kernel)
    if s[0] == 0:
        return None
    scale = np.sqrt(s[0])
    column, row = u[:, 0] * scale, vt[0] * scale
    if np.abs(np.outer(column, row) - kernel).sum() * 65535 > RANK1_LEVELS:
        return None
    # exact zeros stay zeros (a Sobel's middle column): fewer passes
    column[np.abs(column) < 1e-12 * np.abs(column).max()] = 0
    row[np.abs(row) < 1e-12 * np.abs(row).max()] = 0
    return column, row


def plan(kernel: np.ndarray, device_type: str = "cpu") -> Plan:
    """The cheapest exact method for a 2-D float64 kernel on a device type."""
    height, width = kernel.shape
    taps = tuple((int(i), int(j), float(kernel[i, j])) for i, j in zip(*np.nonzero(kernel)))
    factors = _rank1(kernel) if min(height, width) > 1 else None
    column = tuple((i, float(v)) for i, v in enumerate(factors[0]) if v != 0) if factors else ()
    row = tuple((j, float(v)) for j, v in enumerate(factors[1]) if v != 0) if factors else ()
    passes = min(len(taps), len(column) + len(row) + 1 if factors else len(taps))
    if device_type == "cuda":  # conv2d computes every tap: count them, not separable passes
        method = "conv2d" if len(taps) <= FFT_TAPS_CUDA else "fft"
    elif factors and max(height, width) >= MATMUL_TAPS_CPU:
        method = "matmul"
    elif passes > FFT_TAPS_CPU:
        method = "fft"
    elif factors and len(column) + len(row) + 1 < len(taps):
        method = "separable"
    else:
        method = "mac"
    return Plan(method, height, width, taps, column, row)


def _window(x: torch.Tensor, top: int, left: int, rows: int, cols: int, row_step: int, col_step: int) -> torch.Tensor:
    """The rows x cols view of x from (top, left), taking every row_step-th row, col_step-th column."""
    return x[..., top: top + (rows - 1) * row_step + 1: row_step, left: left + (cols - 1) * col_step + 1: col_step]


def output_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def _accumulate(views, weights, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum(weight * view), in place into the first product (into `out` if given)."""
    (first, *others), (w0, *rest) = views, weights
    out = torch.mul(first, w0, out=out)
    for view, w in zip(others, rest):
        out.add_(view, alpha=w)
    return out


def mac(x: torch.Tensor, plan: Plan, stride: int = 1, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the non-zero weights of weight x (the input shifted by its position)."""
    rows, cols = output_size(x.shape[-2], plan.height, stride), output_size(x.shape[-1], plan.width, stride)
    if not plan.taps:
        return x.new_zeros(*x.shape[:-2], rows, cols)
    views = [_window(x, i, j, rows, cols, stride, stride) for i, j, _ in plan.taps]
    weights = [w if x.is_floating_point() else int(w) for _, _, w in plan.taps]  # integer weights stay integer
    return _accumulate(views, weights, out)


def separable(x: torch.Tensor, plan: Plan, stride: int = 1) -> torch.Tensor:
    """A rank-1 kernel as a horizontal pass (the row factor) then a vertical one (the column)."""
    rows, cols = output_size(x.shape[-2], plan.height, stride), output_size(x.shape[-1], plan.width, stride)
    across = _accumulate([_window(x, 0, j, x.shape[-2], cols, 1, stride) for j, _ in plan.row],
                         [w for _, w in plan.row])
    return _accumulate([_window(across, i, 0, rows, cols, stride, 1) for i, _ in plan.column],
                       [w for _, w in plan.column])


@functools.lru_cache(maxsize=64)
def _banded_matrix(factor: tuple[tuple[int, float], ...], length: int, outputs: int, stride: int,
                   dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(outputs, (outputs - 1) * stride + length): row r holds the factor (its non-zero (index,
    weight) pairs, `length` taps in all) from column r * stride on, so that the matrix times the
    inputs gives their valid correlation with the factor. Cached: each band uses the same ones."""
    matrix = torch.zeros(outputs, (outputs - 1) * stride + length, dtype=torch.float64)
    for r in range(outputs):
        for i, weight in factor:
            matrix[r, r * stride + i] = weight
    return matrix.to(dtype=dtype, device=device)


def _down(a: torch.Tensor, factor: tuple, length: int, stride: int, out: torch.Tensor) -> None:
    """out = the valid correlation of a 2-D tensor with a column factor, down its rows: blocks of
    MATMUL_BLOCK output rows, each a banded matrix times a block of input rows (a strided view)."""
    block, rows = MATMUL_BLOCK, out.shape[0]
    full = rows - rows % block
    if full:
        matrix = _banded_matrix(factor, length, block, stride, a.dtype, a.device)
        blocks = a.as_strided((full // block, matrix.shape[1], a.shape[1]),
                              (block * stride * a.stride(0), a.stride(0), a.stride(1)))
        torch.matmul(matrix, blocks, out=out[:full].view(full // block, block, -1))
    if rows > full:
        tail = _banded_matrix(factor, length, rows - full, stride, a.dtype, a.device)
        torch.matmul(tail, a[full * stride: full * stride + tail.shape[1]], out=out[full:])


def _across(a: torch.Tensor, factor: tuple, length: int, stride: int, out: torch.Tensor) -> None:
    """out = the valid correlation of a 2-D tensor with a row factor, along its rows: blocks of
    MATMUL_BLOCK output columns, each a block of input columns (a strided view) times a banded matrix."""
    block, cols = MATMUL_BLOCK, out.shape[1]
    full = cols - cols % block
    if full:
        matrix = _banded_matrix(factor, length, block, stride, a.dtype, a.device).t()
        blocks = a.as_strided((full // block, a.shape[0], matrix.shape[0]),
                              (block * stride * a.stride(1), a.stride(0), a.stride(1)))
        out[:, :full].unflatten(1, (full // block, block)).copy_(torch.matmul(blocks, matrix).permute(1, 0, 2))
    if cols > full:
        tail = _banded_matrix(factor, length, cols - full, stride, a.dtype, a.device).t()
        out[:, full:] = a[:, full * stride: full * stride + tail.shape[0]] @ tail


def matmul(x: torch.Tensor, plan: Plan, stride: int = 1) -> torch.Tensor:
    """A rank-1 kernel as a pass along the rows then one down the columns, each as matrix products,
    in float64: the BLAS library's float32 products change in their last bit with the number of
    threads, which moved roundings by one level between runs with -j 1 and -j 2 (24 MP 31x31
    Gaussian: 185 ms against 80-110 ms in float32, OpenCV's filter2D 320-360 ms)."""
    rows, cols = output_size(x.shape[-2], plan.height, stride), output_size(x.shape[-1], plan.width, stride)
    out = x.new_empty(*x.shape[:-2], rows, cols)
    across = x.new_empty(x.shape[-2], cols, dtype=torch.float64)
    down = x.new_empty(rows, cols, dtype=torch.float64)
    for index in np.ndindex(*x.shape[:-2]):
        _across(x[index].double(), plan.row, plan.width, stride, across)
        _down(across, plan.column, plan.height, stride, down)
        out[index] = down
    return out


def fast_length(n: int) -> int:
    """The smallest 2,3,5-smooth number >= n: FFT sizes that are fast."""
    best = 1 << max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def fft(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Valid correlation as the product of spectra. The FFT size is at least the input's, so the
    circular wrap never reaches the valid region."""
    height, width = kernel.shape
    size = (fast_length(x.shape[-2]), fast_length(x.shape[-1]))
    dtype = torch.float64 if x.abs().amax() > 4096 else x.dtype  # 16-bit: keep 1 level of headroom
    spectrum = torch.fft.rfft2(x.to(dtype), s=size)
    spectrum *= torch.fft.rfft2(torch.flip(kernel, (0, 1)).to(dtype), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    out = full[..., height - 1: x.shape[-2], width - 1: x.shape[-1]]
    if stride > 1:
        out = out[..., ::stride, ::stride]
    return out.to(x.dtype).contiguous()


def correlate(x: torch.Tensor, kernel: torch.Tensor, plan: Plan, stride: int = 1,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Valid cross-correlation of a padded (N, C, H, W) tensor with one 2-D kernel, by `plan`.
    `mac` writes into `out` when it is given (a reused buffer); the other methods allocate."""
    if plan.method == "mac":
        return mac(x, plan, stride, out)
    if plan.method == "separable":
        return separable(x, plan, stride)
    if plan.method == "matmul":
        return matmul(x, plan, stride)
    if plan.method == "fft":
        return fft(x, kernel, stride)
    channels = x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=stride, groups=channels)
