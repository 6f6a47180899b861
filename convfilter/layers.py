"""The torch.nn layers of a pipeline, each working on (N, C, H, W) float tensors in the image's
units. Every layer is a subclass of the torch layer it stands for (Conv2d, AvgPool2d, MaxPool2d,
ConvTranspose2d, ...) and keeps that layer's weights and settings; on the CPU the convolutions
and pooling take faster exact routes (correlate.py, pooling.py). While a pipeline is exported
(torch.export) every layer uses torch's own operations only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convfilter import borders, correlate, pooling
from convfilter.errors import InputError

PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "zeros": "constant", "circular": "circular"}


def exporting() -> bool:
    """Whether torch.export (or tracing) is recording the model: plain torch operations only."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


class RequireSize(nn.Module):
    """Refuses (as a per-image InputError) an image smaller than the next layer can take.
    `after` names the steps before it, if any: the image it sees is theirs, not the input."""

    def __init__(self, min_height: int, min_width: int, reason: str, after: str = ""):
        super().__init__()
        self.min_height, self.min_width, self.reason, self.after = min_height, min_width, reason, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting():
            return x
        height, width = x.shape[-2:]
        if height < self.min_height or width < self.min_width:
            after = f" after {self.after}" if self.after else ""
            raise InputError(f"image is {width}x{height}{after}, too small: {self.reason}")
        return x


class KernelConv2d(nn.Conv2d):
    """An `nn.Conv2d` whose frozen weight is one kernel, applied to each channel on its own
    (groups = channels, the same kernel for each), padded by a border rule to keep the size.
    Even sizes put the extra row/column of padding at the bottom/right (CONTRACT §3)."""

    def __init__(self, weights, bias: float, border: str, stride: int = 1, channels: int = 1):
        height, width = len(weights), len(weights[0])
        super().__init__(channels, channels, (height, width), stride=stride, padding=0, bias=True, groups=channels)
        with torch.no_grad():
            kernel = torch.tensor(weights, dtype=torch.float32).view(1, 1, height, width)
            self.weight.copy_(kernel.expand(channels, 1, height, width))
            self.bias.fill_(bias)
        self.requires_grad_(False)
        top, left = (height - 1) // 2, (width - 1) // 2
        self.padding_lrtb = (left, width - 1 - left, top, height - 1 - top)
        self.border = border
        self._plan, self._plan_key = None, None

    def plan(self, device_type: str) -> correlate.Plan:
        """The fastest exact method for this kernel on a device type (cached until the weight changes)."""
        key = (device_type, self.weight._version)
        if self._plan_key != key:
            kernel = self.weight.detach()[0, 0].double().cpu().numpy()
            self._plan, self._plan_key = correlate.plan(kernel, device_type), key
        return self._plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting() or (torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)):
            # torch's own convolution: exportable, and differentiable
            return super().forward(F.pad(x, self.padding_lrtb, mode=PAD_MODES[self.border]))
        if any(self.padding_lrtb):
            x = borders.pad(x, *self.padding_lrtb, self.border)
        return self.forward_padded(x)

    def forward_padded(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The valid correlation (plus bias) of an input that is already padded: float32, or the
        integer type `integer_dtype` allows; written into `out` where the method can."""
        out = correlate.correlate(x, self.weight[0, 0], self.plan(x.device.type), self.stride[0], out)
        if self.bias is None or not self._has_bias():
            return out
        return out.add_(self.bias[0] if x.is_floating_point() else int(self.bias[0]))

    def integer_dtype(self, max_value: float) -> torch.dtype | None:
        """An integer type in which this layer gives its exact values on inputs of 0..max_value:
        integer weights and bias, shifted passes (`mac`), and every sum within int32 (the float32
        values, where they are exact: below 2**24); int16 where the sums fit in it. None
        otherwise. On the CPU int16 moves half the bytes of float32 (3 MP sharpen, one thread:
        2.2 against 4.3 ms)."""
        plan = self.plan("cpu")
        bias = float(self.bias.detach()[0]) if self.bias is not None else 0.0
        weights = [weight for *_, weight in plan.taps]
        if plan.method != "mac" or not all(float(v).is_integer() for v in [*weights, bias]):
            return None
        return exact_integer_dtype(self.largest_sum(max_value))

    def largest_sum(self, max_value: float) -> float:
        """A bound on every partial sum (and input) on inputs of 0..max_value."""
        weights = self.weight.detach()[0, 0].double().abs().sum().item()
        bias = abs(float(self.bias.detach()[0])) if self.bias is not None else 0.0
        return max(1.0, weights) * max_value + bias

    def _has_bias(self) -> bool:
        """Whether the bias is non-zero (a pass over the image saved when it is zero)."""
        return bool(self.bias.detach()[0] != 0)


def exact_integer_dtype(bound: float) -> torch.dtype | None:
    """int16 or int32 for values and sums of magnitude below `bound`: the exact sums, which are the
    float32 layers' values below 2**24; past it, where float32 rounds partial sums (to 8 near
    10**8: a 16-bit image through integer weights in the hundreds was 3 levels off), better than
    them. None past int32."""
    if bound < 2 ** 15:
        return torch.int16
    return torch.int32 if bound < 2 ** 31 else None


# The relative span below which `stretch` counts an image as constant, by the type it is computed
# in: well above the rounding of each (float64 in the CLI's pipelines that stretch), well below any
# span an image has (1e-9 of 65535 is 1/15,000 of a level).
STRETCH_ROUNDING = {torch.float64: 1e-9, torch.float32: 1e-5}


class ValueRange(nn.Module):
    """CONTRACT §5: `clip` clamps, `abs` takes |v| then clamps, `stretch` maps each image's
    min..max (over all its channels) to the full range. In inference mode it works in place: in
    the pipeline its input is a convolution's fresh output."""

    def __init__(self, mode: str, max_value: float):
        super().__init__()
        self.mode, self.max_value = mode, max_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "stretch":
            low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
            span = high - low
            stretched = (x - low) * (self.max_value / span.clamp_min(1e-30))
            # A constant image stays as it is; so does one whose span is only the rounding of
            # the arithmetic that made it (a constant image through an FFT varies by 1e-12).
            rounding = torch.maximum(high.abs(), low.abs()) * STRETCH_ROUNDING.get(x.dtype, 1e-5)
            x = torch.where(span > rounding, stretched, x)
        if torch.is_inference_mode_enabled():
            top = self.max_value if x.is_floating_point() else int(self.max_value)  # integer passes
            return (x.abs_() if self.mode == "abs" else x).clamp_(0, top)
        return (x.abs() if self.mode == "abs" else x).clamp(0.0, self.max_value)


def whole_windows_only(layer: nn.Module, height: int, width: int) -> bool:
    """Whether a pooling layer sees whole windows only on this image: in ceil mode a partial
    window needs torch's pooling, which averages only what exists."""
    return not (layer.ceil_mode and pooling.has_partial_windows(height, width, layer.kernel_size, layer.stride))


def _pool_fast(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether the strided-view pooling gives this layer's result: not exporting, no gradient
    wanted, and whole windows only."""
    if exporting() or (torch.is_grad_enabled() and x.requires_grad):
        return False
    return whole_windows_only(layer, *x.shape[-2:])


class AvgPool2d(nn.AvgPool2d):
    """`nn.AvgPool2d` (count_include_pad=False) with a fast path for whole windows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _pool_fast(self, x):
            return pooling.whole_windows(x, self.kernel_size, self.stride, "avg")
        return super().forward(x)


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` with a fast path for whole windows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _pool_fast(self, x):
            return pooling.whole_windows(x, self.kernel_size, self.stride, "max")
        return super().forward(x)


class MinPool2d(nn.MaxPool2d):
    """Min pooling: the max pool of the negated image, negated back; fast path for whole windows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _pool_fast(self, x):
            return pooling.whole_windows(x, self.kernel_size, self.stride, "min")
        return -super().forward(-x)


class StochasticPool2d(nn.Module):
    """Stochastic pooling (Zeiler and Fergus, 2013): each window outputs one of its values, picked
    with probability proportional to its magnitude; a window of zeros gives 0. With a seed every
    image draws the same random numbers, so a file's result does not depend on the order or the
    threads it was processed in. Partial windows (ceil) draw from the pixels that exist."""

    def __init__(self, size: int, stride: int, ceil_mode: bool = False, seed: int | None = None):
        super().__init__()
        self.kernel_size, self.stride, self.ceil_mode, self.seed = size, stride, ceil_mode, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, stride = self.kernel_size, self.stride
        height, width = x.shape[-2:]
        rows, cols = (F.max_pool2d(x[:1, :1], size, stride, ceil_mode=self.ceil_mode)).shape[-2:]
        pad_h, pad_w = max(0, (rows - 1) * stride + size - height), max(0, (cols - 1) * stride + size - width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros: never drawn
        n, c = x.shape[:2]
        windows = F.unfold(x.reshape(n * c, 1, *x.shape[-2:]), size, stride=stride)  # (NC, size^2, L)
        magnitude = windows.abs()
        cumulative = magnitude.cumsum(dim=1)
        total = cumulative[:, -1:, :]
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        # Drawn on the CPU in float32, whatever the device and the type of x (float64 in a
        # pipeline that stretches): a seed picks the same pixels everywhere (a CUDA generator
        # draws another sequence from the same seed)
        draw = torch.rand(total.shape, generator=generator).to(x.device, x.dtype) * total
        index = (cumulative <= draw).sum(dim=1, keepdim=True).clamp_(max=size * size - 1)
        picked = windows.gather(1, index)
        picked = torch.where(total > 0, picked, torch.zeros_like(picked))
        return picked.reshape(n, c, rows, cols)


class AdaptiveMinPool2d(nn.AdaptiveMaxPool2d):
    """Adaptive min pooling: the adaptive max pool of the negated image, negated back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -super().forward(-x)


class Upsample2d(nn.ConvTranspose2d):
    """Upsampling by an integer factor as `nn.ConvTranspose2d` with fixed weights, stride = factor,
    one channel at a time: `nearest` spreads each pixel over a factor x factor block (the inverse
    of pooling by the factor); `bilinear` uses the triangle kernel of bilinear interpolation
    (pixel centres as OpenCV's INTER_LINEAR and torch's align_corners=False), the edges
    replicated first so that borders are interpolated, not darkened."""

    def __init__(self, factor: int, mode: str, channels: int = 1):
        size = factor if mode == "nearest" else 2 * factor - factor % 2
        super().__init__(channels, channels, size, stride=factor, groups=channels, bias=False)
        if mode == "nearest":
            kernel = torch.ones(size, size)
        else:
            centre = factor - 1 if size % 2 else factor - 0.5
            ramp = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
            kernel = torch.outer(ramp, ramp).float()
        with torch.no_grad():
            self.weight.copy_(kernel.expand(channels, 1, size, size))
        self.requires_grad_(False)
        self.factor, self.mode = factor, mode

    def _transposed(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution, its weights in the input's type (float64 where it stretches)."""
        weight = self.weight if x.dtype == self.weight.dtype else self.weight.to(x.dtype)
        return F.conv_transpose2d(x, weight, None, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return self._transposed(x)
        height, width = x.shape[-2:]
        full = self._transposed(F.pad(x, (1, 1, 1, 1), mode="replicate"))
        start = self.factor + self.factor // 2  # one replicated pixel, then the kernel's own offset
        return full[..., start: start + height * self.factor, start: start + width * self.factor]
