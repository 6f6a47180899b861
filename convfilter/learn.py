"""Recover a kernel from a before/after pair: a small nn.Module with an nn.Parameter weight (and
bias), fitted by autograd (L-BFGS) — convfilter's filters are torch modules, so the kernel that
made an edit can be learnt in a few lines.

The fit is linear least squares, in float64, on the pixels where AFTER is not saturated (0 or
the maximum): there `apply` clipped, and the unclipped value is unknown. The reported error is
that of the fitted kernel run exactly as `apply` runs it (clipped and rounded) on every pixel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convfilter.errors import InputError, UsageError
from convfilter.layers import PAD_MODES
from convfilter.pipeline import Filter, resolve_device
from convfilter.steps import ConvStep


class LearnedKernel(nn.Module):
    """One K x K kernel (and a bias) as parameters, applied like a ConvStep: padded by a border
    rule (the extra row/column of even sizes at the bottom/right), cross-correlation."""

    def __init__(self, size: int, border: str, bias: bool, seed: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, 1, size, size, dtype=torch.float64))
        generator = torch.Generator().manual_seed(seed)
        nn.init.xavier_normal_(self.weight, generator=generator)
        self.bias = nn.Parameter(torch.zeros(1, dtype=torch.float64)) if bias else None
        top = left = (size - 1) // 2
        self.padding = (left, size - 1 - left, top, size - 1 - top)
        self.border = border

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.padding, mode=PAD_MODES[self.border]), self.weight, self.bias)


@dataclass(frozen=True)
class Fit:
    weights: np.ndarray  # K x K, cross-correlation, as `apply` uses them
    bias: float  # in 0-255 units
    rmse: float  # levels, over every pixel, the kernel run as `apply` runs it
    psnr: float  # dB
    steps: int  # L-BFGS steps taken (it stops early once converged)


def fit(
    before: np.ndarray,
    after: np.ndarray,
    size: int,
    border: str = "reflect",
    bias: bool = True,
    steps: int = 100,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[int, float], None] | None = None,
) -> Fit:
    """Fit a size x size kernel with `before` -> `after` (same shape, grayscale, same depth)."""
    if before.shape != after.shape:
        raise InputError(
            f"BEFORE is {before.shape[1]}x{before.shape[0]} but AFTER is {after.shape[1]}x{after.shape[0]}; "
            "they must be the same size"
        )
    if before.dtype != after.dtype:  # levels of 0-255 against 0-65535: no kernel relates them
        depths = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}
        raise InputError(f"BEFORE is {depths.get(before.dtype, before.dtype)} but AFTER is "
                         f"{depths.get(after.dtype, after.dtype)}; they must have the same bit depth")
    if size < 1 or size > 63:
        raise UsageError(f"--size must be between 1 and 63, got {size}")
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if border in ("reflect", "circular") and min(before.shape) <= size // 2:
        raise InputError(f"the images ({before.shape[1]}x{before.shape[0]}) are too small for a {size}x{size} kernel")
    target_device = resolve_device(device)
    max_value = float(np.iinfo(after.dtype).max)
    x = torch.from_numpy(before.astype(np.float64) / max_value)[None, None].to(target_device)
    y = torch.from_numpy(after.astype(np.float64) / max_value)[None, None].to(target_device)
    if before.size < size * size + 1:
        raise InputError(f"the images ({before.shape[1]}x{before.shape[0]}) have fewer pixels than the "
                         f"{size * size + 1} unknowns of a {size}x{size} kernel and its bias")
    inside = (y > 0) & (y < 1)  # saturated pixels were clipped by apply: their true value is unknown
    if inside.sum() < size * size + 1:
        raise InputError("AFTER is saturated (0 or white) almost everywhere: nothing to fit")
    model = LearnedKernel(size, border, bias, seed).to(target_device)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=20, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((model(x) - y)[inside] ** 2).mean()
        loss.backward()
        return loss

    previous = math.inf
    used = 0
    for used in range(1, steps + 1):
        loss = float(optimizer.step(closure).detach())
        if progress is not None:
            progress(used, math.sqrt(loss) * max_value)
        if previous - loss <= 1e-16:  # converged: another step changes nothing
            break
        previous = loss
    weights = model.weight.detach()[0, 0].cpu().numpy()
    bias_value = float(model.bias.detach()[0]) * 255.0 if model.bias is not None else 0.0  # 0-255 units
    step = ConvStep("learned", tuple(map(tuple, weights.tolist())), bias_value, border, "clip")
    replay = Filter([step], "cpu")(before)
    rmse = float(np.sqrt(np.mean((replay.astype(np.float64) - after) ** 2)))
    psnr = 20 * math.log10(max_value / rmse) if rmse > 0 else math.inf
    return Fit(weights, bias_value, rmse, psnr, used)


def kernel_toml(result: Fit, before: str, after: str, border: str) -> str:
    """A kernel file `apply -k` takes: the fitted weights at full precision, the bias, a description."""
    rows = ",\n".join("  [" + ", ".join(repr(float(v)) for v in row) + "]" for row in result.weights)
    description = (f"learned from {before} -> {after} (--border {border}): RMSE {result.rmse:.3f} levels, "
                   f"PSNR {result.psnr:.1f} dB")
    return f"description = {json.dumps(description)}\nbias = {result.bias!r}\nweights = [\n{rows},\n]\n"
