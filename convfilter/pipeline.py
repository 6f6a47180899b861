"""The shared torch pipeline: steps become an `nn.Sequential` of frozen layers, run on
(N, C, H, W) float tensors: C = 1 for grayscale, 3 for colour (each channel filtered alone).

Every subcommand goes through `build` and `run`. Values are float32 in the image's units
(0-255, or 0-65535 for 16-bit; float64 in a pipeline that stretches, see `working_dtype`); each
convolution is followed by its range mapping (CONTRACT §5), and only `run` rounds, at the very
end. An alpha channel is carried past the filters: it only follows the geometry (strides,
pooling, upsampling).
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from convfilter import borders, pooling
from convfilter.errors import InputError, UsageError
from convfilter.layers import (
    AdaptiveMinPool2d, AvgPool2d, KernelConv2d, MaxPool2d, MinPool2d, RequireSize, StochasticPool2d, Upsample2d,
    ValueRange, exact_integer_dtype, whole_windows_only,
)
from convfilter.modes import DEVICES, check_choice
from convfilter.steps import AdaptivePoolStep, ConvStep, PoolStep, Step, largest_size, op_name


def _conv_layers(step: ConvStep, max_value: float, channels: int, after: str) -> list[nn.Module]:
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
                after,
            )
        )
    bias = step.bias * max_value / 255.0  # bias is given in 0-255 units
    layers.append(KernelConv2d(step.weights, bias, step.border, step.stride, channels))
    layers.append(ValueRange(step.range, max_value))
    return layers


def _pool_layers(step: PoolStep, after: str) -> list[nn.Module]:
    check = RequireSize(step.size, step.size, f"--size {step.size} pooling needs at least {step.size}x{step.size} pixels",
                        after)
    if step.mode == "stochastic":
        return [check, StochasticPool2d(step.size, step.stride, step.ceil, step.seed)]
    pool_class = {"avg": AvgPool2d, "max": MaxPool2d, "min": MinPool2d}[step.mode]
    options = {"count_include_pad": False} if step.mode == "avg" else {}
    return [check, pool_class(step.size, step.stride, ceil_mode=step.ceil, **options)]


def _adaptive_layer(step: AdaptivePoolStep) -> nn.Module:
    pool_class = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d, "min": AdaptiveMinPool2d}[step.mode]
    return pool_class((step.height, step.width))


def build(steps: list[Step], max_value: float = 255.0, channels: int = 1) -> nn.Sequential:
    """The steps as one frozen `nn.Sequential`; repeat and stride are options of the layers.
    A size check past the first layer names the steps before it (`after pool6`)."""
    layers: list[nn.Module] = []
    for index, step in enumerate(steps):
        if isinstance(step, ConvStep):
            for done in range(step.repeat):
                layers.extend(_conv_layers(step, max_value, channels, op_name([*steps[:index], replace(step, repeat=done)])))
        elif isinstance(step, PoolStep):
            layers.extend(_pool_layers(step, op_name(steps[:index])))
        elif isinstance(step, AdaptivePoolStep):
            layers.append(_adaptive_layer(step))
        else:
            layers.append(Upsample2d(step.factor, step.mode, channels))
    return nn.Sequential(*layers).eval().requires_grad_(False)


def geometry(steps: list[Step]) -> list[Step]:
    """What an alpha channel goes through: the same sizes and strides, no filtering (a 1x1
    identity kernel for each convolution; an average for a stochastic pool)."""
    carried: list[Step] = []
    for step in steps:
        if isinstance(step, ConvStep):
            carried.append(ConvStep("alpha", ((1.0,),), 0.0, "zeros", "clip", step.repeat, step.stride))
        elif isinstance(step, PoolStep) and step.mode == "stochastic":
            carried.append(PoolStep(step.size, step.stride, "avg", step.ceil))
        else:
            carried.append(step)
    return carried


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


_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice: every physical core


def set_threads(threads: int | None) -> None:
    """torch's threads for operations this thread runs, and for threads that have not run one yet
    (torch keeps the number per thread once it has); None: torch's default again."""
    torch.set_num_threads(threads or _DEFAULT_THREADS)


class Filter:
    """A built pipeline on a device: call it with an (H, W) or (H, W, C) uint8/uint16 array, get
    one back. With C = 2 or 4 the last channel is alpha: it follows the geometry only.
    Safe to call from several threads: the frozen models are only read. With `max_pixels`, an
    image that the steps would make larger than that (upsampling, pooling to a size) is refused
    before any memory is taken for it."""

    def __init__(self, steps: list[Step], device: str = "auto", max_pixels: int | None = None):
        self.steps = steps
        self.device = resolve_device(device)
        self.max_pixels = max_pixels
        self._models: dict[tuple, nn.Sequential] = {}
        self._lock = threading.Lock()

    def model(self, max_value: float, channels: int = 1, alpha: bool = False) -> nn.Sequential:
        key = (max_value, channels, alpha)
        with self._lock:
            if key not in self._models:
                steps = geometry(self.steps) if alpha else self.steps
                self._models[key] = build(steps, max_value, channels).to(self.device)
            return self._models[key]

    def check_size(self, height: int, width: int) -> None:
        """Refuse (InputError) an image of height x width that the steps would make larger than
        `max_pixels` on the way."""
        if self.max_pixels is None:
            return
        rows, cols = largest_size(self.steps, height, width)
        if rows * cols > self.max_pixels:
            raise InputError(f"the filter would make it {cols}x{rows}, {rows * cols} pixels, "
                             f"more than --max-pixels {self.max_pixels}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.check_size(*image.shape[:2])
        max_value = float(np.iinfo(image.dtype).max)
        if image.ndim == 2:
            return run(self.model(max_value), image[None, None], self.device)[0, 0]
        planes = image.transpose(2, 0, 1)[None]  # (1, C, H, W), a view
        channels = planes.shape[1]
        if channels in (2, 4):  # grey + alpha, RGB + alpha
            colour = run(self.model(max_value, channels - 1), planes[:, :-1], self.device)
            alpha = run(self.model(max_value, 1, alpha=True), planes[:, -1:], self.device)
            planes = np.concatenate([colour, alpha], axis=1)
        else:
            planes = run(self.model(max_value, channels), planes, self.device)
        return np.ascontiguousarray(planes[0].transpose(1, 2, 0))


# The bytes of one band of the banded CPU path, by method: small enough to stay in the CPU's
# cache, large enough that two workers do not queue for the GIL between the short torch
# operations (3 MP sharpen, two threads filtering at once, bands counted at 4 bytes a pixel:
# 1 MB 269-335 images/s, 2 MB 400-466). Matrix products take taller bands, so that the k - 1
# rows each band shares with the next cost less (24 MP 31x31 Gaussian: 1 MB 106 ms, 4 MB
# 73 ms). int16 bands do so little per byte that the per-operation cost dominates: 3 MP sharpen,
# two threads, real bytes: 1 MB 433-448, 2 MB 567-643, 4 MB 666-736, 8 MB 586-703 images/s.
# int32 bands (16-bit images) were best at 2 MB, like float32 ones (blur: 320-363 at 2 MB,
# 213-301 at 4 MB).
BAND_BYTES = {"mac": 2 << 20, "separable": 2 << 20, "matmul": 4 << 20, "int16": 4 << 20}


def _single_convolution(model: nn.Sequential) -> tuple[KernelConv2d, ValueRange] | None:
    """The (convolution, range) of a model that is one stride-1, pointwise-ranged convolution
    computed band by band (shifted passes or matrix products); None for any other model."""
    layers = [layer for layer in model if not isinstance(layer, RequireSize)]
    if len(layers) != 2 or not isinstance(layers[0], KernelConv2d) or not isinstance(layers[1], ValueRange):
        return None
    conv, value_range = layers
    if conv.stride != (1, 1) or value_range.mode == "stretch" or conv.plan("cpu").method not in BAND_BYTES:
        return None
    return conv, value_range


_buffers = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of this shape from a buffer each thread keeps between bands and images: a new 2 MB
    tensor for every band costs fresh pages from the kernel (3 MP sharpen, one thread: 382 against
    563 images/s reusing the memory)."""
    kept = _buffers.__dict__.setdefault(name, {})
    size = int(np.prod(shape))
    if dtype not in kept or kept[dtype].numel() < size:
        kept[dtype] = torch.empty(size, dtype=dtype)
    return kept[dtype][:size].view(shape)


def _checked_source(model: nn.Sequential, images: np.ndarray) -> torch.Tensor:
    """The (N, C, H, W) images as a tensor sharing their memory, once the model's size checks pass
    (a copy if they are read-only or run backwards: torch takes no negative strides)."""
    if any(step < 0 for step in images.strides):
        images = np.ascontiguousarray(images)
    source = torch.from_numpy(np.require(images, requirements=["W"]))
    for layer in model:
        if isinstance(layer, RequireSize):
            layer(source)
    return source


def _run_banded(model: nn.Sequential, images: np.ndarray, conv: KernelConv2d, value_range: ValueRange) -> np.ndarray:
    """One convolution on the CPU, band by band: each band of rows is padded by the border rule
    on its own (no padded copy of the whole image: 8-10 ms on 24 MP), then goes integer -> float
    -> correlation -> range -> rounded integer while it is in the cache. The same layers and the
    same values as the whole-image path, a fraction of the memory traffic (a 3 MP image: several
    times faster). Where the layer allows it (integer weights, sums that fit), the bands are
    int16 or int32 instead of float32: the same values, exactly."""
    source = _checked_source(model, images)
    left, right, top_margin, bottom_margin = conv.padding_lrtb
    height, width = images.shape[-2:]
    extra, padded_width = top_margin + bottom_margin, left + width + right
    result = np.empty(images.shape, images.dtype)
    dtype = conv.integer_dtype(float(np.iinfo(images.dtype).max)) or torch.float32
    row_bytes = dtype.itemsize * padded_width * images.shape[0] * images.shape[1]
    rows = max(1, BAND_BYTES["int16" if dtype == torch.int16 else conv.plan("cpu").method] // row_bytes)
    band_in = _buffer("in", (*images.shape[:2], rows + extra, padded_width), dtype)
    band_out = _buffer("out", (*images.shape[:2], rows, width), dtype)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = band_in[..., : bottom - top + extra, :]
        borders.pad_band(source, top, band, left, right, top_margin, conv.border)
        band = value_range(conv.forward_padded(band, band_out[..., : bottom - top, :]))
        result[..., top:bottom, :] = (band.round_() if dtype.is_floating_point else band).numpy()  # numpy's cast: ~3x torch's
    return result


_POOL_MODES = {AvgPool2d: "avg", MaxPool2d: "max", MinPool2d: "min"}


def _single_pool(model: nn.Sequential, height: int, width: int) -> nn.Module | None:
    """The layer of a model that is one avg/max/min pooling over whole windows; None otherwise."""
    layers = [layer for layer in model if not isinstance(layer, RequireSize)]
    if len(layers) != 1 or type(layers[0]) not in _POOL_MODES:
        return None
    return layers[0] if whole_windows_only(layers[0], height, width) else None


def _run_pool_banded(model: nn.Sequential, images: np.ndarray, pool: nn.Module) -> np.ndarray:
    """One pooling layer on the CPU, band by band, on the integers themselves: max and min on the
    image's values, avg as an integer sum (int16 or int32, exact) then one division (float32, or
    float64 for sums past 2**24) and rounding: exactly the values of the float32 layer where its
    sums are exact, the exact averages past them, without a float copy of the image."""
    source = _checked_source(model, images)
    size, stride, mode = pool.kernel_size, pool.stride, _POOL_MODES[type(pool)]
    height, width = images.shape[-2:]
    rows, cols = pooling.output_size(height, size, stride), pooling.output_size(width, size, stride)
    result = np.empty((*images.shape[:2], rows, cols), images.dtype)
    bound = size * size * float(np.iinfo(images.dtype).max)
    dtype = exact_integer_dtype(bound) or torch.float32
    divided = torch.float64 if bound >= 2 ** 24 else torch.float32  # a sum float32 holds exactly, or not
    row_bytes = 4 * width * images.shape[0] * images.shape[1] * stride  # one output row's input, at 4 bytes a pixel
    band = max(1, BAND_BYTES["mac"] // row_bytes)
    for top in range(0, rows, band):
        bottom = min(rows, top + band)
        x = source[..., top * stride: (bottom - 1) * stride + size, :]
        if x.dtype != torch.uint8:  # torch has no maximum for uint16 on the CPU, nor adds it to int32
            x = x.to(torch.int32)
        if mode == "avg":
            x = pooling.whole_windows(x, size, stride, "sum", dtype).to(divided).div_(size * size).round_()
        else:
            x = pooling.whole_windows(x, size, stride, mode)
        result[..., top:bottom, :] = x.numpy()
    return result


def run(model: nn.Module, images: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """(N, C, H, W) integer images -> (N, C, H', W') of the same dtype, rounded to nearest and clamped."""
    max_value = float(np.iinfo(images.dtype).max)
    if torch.device(device).type == "cpu" and isinstance(model, nn.Sequential):
        single = _single_convolution(model)
        if single is not None:
            with torch.inference_mode():
                return _run_banded(model, images, *single)
        pool = _single_pool(model, *images.shape[-2:])
        if pool is not None:
            with torch.inference_mode():
                return _run_pool_banded(model, images, pool)
    dtype = working_dtype(model, max_value)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64 if dtype == torch.float64 else np.float32))
    x = x.to(device)
    with torch.inference_mode():
        y = model(x).round_().clamp_(0.0, max_value)
    return y.cpu().numpy().astype(images.dtype)  # numpy's cast is ~3x torch's here


def run_tensor(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """`run` for (N, C, H, W) uint8 images already on the model's device (the batch path)."""
    with torch.inference_mode():
        return model(images.to(working_dtype(model, 255.0))).round_().clamp_(0.0, 255.0).to(torch.uint8)


def working_dtype(model: nn.Module, max_value: float) -> torch.dtype:
    """float32, or float64 for a model
    - with a `stretch` range: stretching scales a result's span up to the full range, and the
      float32 rounding of the steps before it with it (a constant image came out as noise from 0
      to 255; a 16-bit image with a span of 69 levels 6 levels off);
    - with a convolution or an average pooling whose sums can pass 2**24 on values up to
      `max_value`, where float32 rounds them (16-bit images through integer weights in the
      hundreds: 3 levels off), or an adaptive average pooling, whose windows grow with the image.
      A single such convolution or pooling on the CPU runs on exact integers instead."""
    for layer in model.modules():
        if isinstance(layer, ValueRange) and layer.mode == "stretch":
            return torch.float64
        if isinstance(layer, KernelConv2d) and layer.largest_sum(max_value) >= 2 ** 24:
            return torch.float64
        if isinstance(layer, nn.AvgPool2d) and layer.kernel_size ** 2 * max_value >= 2 ** 24:
            return torch.float64
        if isinstance(layer, nn.AdaptiveAvgPool2d):  # its windows grow with the image (a constant 40001 gave 39957)
            return torch.float64
    return torch.float32
