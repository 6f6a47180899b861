"""The shared torch pipeline: steps become an `nn.Sequential` of frozen layers, run on (N, 1, H, W).

Every subcommand goes through `build` and `run`. Values are float32 in the image's units
(0-255, or 0-65535 for 16-bit); each convolution is followed by its range mapping (CONTRACT §5),
and only `run` rounds, at the very end.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch
from torch import nn

from convfilter import borders, correlate, pooling
from convfilter.errors import InputError, UsageError
from convfilter.modes import DEVICES, check_choice
from convfilter.steps import ConvStep, PoolStep, Step


class RequireSize(nn.Module):
    """Refuses (as a per-image InputError) an image smaller than the next layer can take."""

    def __init__(self, min_height: int, min_width: int, reason: str):
        super().__init__()
        self.min_height, self.min_width, self.reason = min_height, min_width, reason

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height < self.min_height or width < self.min_width:
            raise InputError(f"image is {width}x{height}, too small: {self.reason}")
        return x


class KernelConv2d(nn.Conv2d):
    """An `nn.Conv2d` whose frozen weight is one kernel, padded by a border rule to keep the size.

    Even sizes put the extra row/column of padding at the bottom/right (CONTRACT §3).
    """

    def __init__(self, weights, bias: float, border: str, stride: int = 1):
        height, width = len(weights), len(weights[0])
        super().__init__(1, 1, (height, width), stride=stride, padding=0, bias=True)
        with torch.no_grad():
            self.weight.copy_(torch.tensor(weights, dtype=torch.float32).view(1, 1, height, width))
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
        if any(self.padding_lrtb):
            x = borders.pad(x, *self.padding_lrtb, self.border)
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return super().forward(x)  # autograd through torch's own convolution
        return self.forward_padded(x)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The valid correlation (plus bias) of an input that is already padded."""
        out = correlate.correlate(x, self.weight[0, 0], self.plan(x.device.type), self.stride[0])
        return out.add_(self.bias) if self.bias is not None else out


class ValueRange(nn.Module):
    """CONTRACT §5: `clip` clamps, `abs` takes |v| then clamps, `stretch` maps min..max to the full range.
    In inference mode it works in place: in the pipeline its input is a convolution's fresh output."""

    def __init__(self, mode: str, max_value: float):
        super().__init__()
        self.mode, self.max_value = mode, max_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "stretch":
            low = x.amin(dim=(1, 2, 3), keepdim=True)
            span = x.amax(dim=(1, 2, 3), keepdim=True) - low
            stretched = (x - low) * (self.max_value / span.clamp_min(1e-30))
            x = torch.where(span > 0, stretched, x)  # a constant image stays as it is
        if torch.is_inference_mode_enabled():  # the convolution's own fresh output: no copy needed
            return (x.abs_() if self.mode == "abs" else x).clamp_(0.0, self.max_value)
        return (x.abs() if self.mode == "abs" else x).clamp(0.0, self.max_value)


def _pool_fast(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether the strided-view pooling gives this layer's result: no gradient wanted, and in ceil
    mode no partial window (those keep torch's own pooling, which averages only what exists)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    return not (layer.ceil_mode and pooling.has_partial_windows(*x.shape[-2:], layer.kernel_size, layer.stride))


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


def _conv_layers(step: ConvStep, max_value: float) -> list[nn.Module]:
    height, width = len(step.weights), len(step.weights[0])
    layers: list[nn.Module] = []
    if step.border in ("reflect", "circular"):
        # reflect cannot mirror more than side - 1 pixels; circular cannot wrap more than the side.
        extra = 1 if step.border == "reflect" else 0
        half_h, half_w = height // 2, width // 2
        longer = "longer than" if extra else "at least"
        layers.append(
            RequireSize(
                half_h + extra,
                half_w + extra,
                f"a {width}x{height} kernel with --border {step.border} needs each side "
                f"{longer} {max(half_h, half_w)} pixels",
            )
        )
    bias = step.bias * max_value / 255.0  # bias is given in 0-255 units
    layers.append(KernelConv2d(step.weights, bias, step.border, step.stride))
    layers.append(ValueRange(step.range, max_value))
    return layers


def _pool_layers(step: PoolStep) -> list[nn.Module]:
    pool_class = {"avg": AvgPool2d, "max": MaxPool2d, "min": MinPool2d}[step.mode]
    options = {"count_include_pad": False} if step.mode == "avg" else {}
    check = RequireSize(step.size, step.size, f"--size {step.size} pooling needs at least {step.size}x{step.size} pixels")
    return [check, pool_class(step.size, step.stride, ceil_mode=step.ceil, **options)]


def build(steps: list[Step], max_value: float = 255.0) -> nn.Sequential:
    """The steps as one frozen `nn.Sequential`; repeat and stride are options of the layers."""
    layers: list[nn.Module] = []
    for step in steps:
        if isinstance(step, ConvStep):
            for _ in range(step.repeat):
                layers.extend(_conv_layers(step, max_value))
        else:
            layers.extend(_pool_layers(step))
    return nn.Sequential(*layers).eval().requires_grad_(False)


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available. On cuda, TF32 is switched off (CONTRACT §5: same ±1 as the CPU)."""
    check_choice("device", name, DEVICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch.device(name)


def share_threads(workers: int) -> None:
    """Split the cores between `workers` threads that each run torch, so they do not oversubscribe."""
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


class Filter:
    """A built pipeline on a device: call it with an (H, W) uint8/uint16 array, get one back.
    Safe to call from several threads: the frozen model is only read."""

    def __init__(self, steps: list[Step], device: str = "auto"):
        self.steps = steps
        self.device = resolve_device(device)
        self._models: dict[float, nn.Sequential] = {}
        self._lock = threading.Lock()

    def model(self, max_value: float) -> nn.Sequential:
        with self._lock:
            if max_value not in self._models:
                self._models[max_value] = build(self.steps, max_value).to(self.device)
            return self._models[max_value]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return run(self.model(float(np.iinfo(image.dtype).max)), image[None], self.device)[0]


# The working set of one band of the banded CPU path: small enough to stay in the CPU's cache.
BAND_BYTES = 1 << 19


def _single_convolution(model: nn.Sequential) -> tuple[KernelConv2d, ValueRange] | None:
    """The (convolution, range) of a model that is one stride-1, pointwise-ranged convolution
    computed by shifted passes; None for any other model."""
    layers = [layer for layer in model if not isinstance(layer, RequireSize)]
    if len(layers) != 2 or not isinstance(layers[0], KernelConv2d) or not isinstance(layers[1], ValueRange):
        return None
    conv, value_range = layers
    if conv.stride != (1, 1) or value_range.mode == "stretch" or conv.plan("cpu").method not in ("mac", "separable"):
        return None
    return conv, value_range


def _run_banded(model: nn.Sequential, images: np.ndarray, conv: KernelConv2d, value_range: ValueRange) -> np.ndarray:
    """One convolution on the CPU, band by band: the integer image is padded once, then each band
    of rows goes integer -> float -> correlation -> range -> rounded integer while it is in the
    cache. The same layers and the same arithmetic as the whole-image path, a fraction of the
    memory traffic (a 3 MP image: several times faster)."""
    source = torch.from_numpy(np.require(images, requirements=["C", "W"])).unsqueeze(1)  # read only
    for layer in model:
        if isinstance(layer, RequireSize):
            layer(source)
    padded = borders.pad(source, *conv.padding_lrtb, conv.border)
    height, width = images.shape[-2:]
    extra = padded.shape[-2] - height
    result = np.empty_like(images)
    target = torch.from_numpy(result).unsqueeze(1)
    rows = max(1, BAND_BYTES // (4 * padded.shape[-1] * images.shape[0]))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = conv.forward_padded(padded[..., top: bottom + extra, :].float())
        target[..., top:bottom, :] = value_range(band).round_()
    return result


def run(model: nn.Module, images: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """(N, H, W) integer images -> (N, H', W') of the same dtype, rounded to nearest and clamped."""
    max_value = float(np.iinfo(images.dtype).max)
    if torch.device(device).type == "cpu" and isinstance(model, nn.Sequential):
        single = _single_convolution(model)
        if single is not None:
            with torch.inference_mode():
                return _run_banded(model, images, *single)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1).to(device)
    with torch.inference_mode():
        y = model(x).round_().clamp_(0.0, max_value)
    return y.squeeze(1).cpu().numpy().astype(images.dtype)  # numpy's cast is ~3x torch's here
