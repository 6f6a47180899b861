"""The parsed operations a pipeline is built from: plain values, checked here, no torch.

A step is described by a table — one `[[step]]` of a pipeline file, or what `apply`, `pool` and
`upsample` make of their options — and `from_table` turns every table into a step the same way
(one path for the command line and for pipeline files).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Callable

from convfilter import kernels
from convfilter.errors import KernelError, UsageError
from convfilter.modes import (
    ADAPTIVE_POOL_MODES, BORDERS, DEFAULT_BORDER, DEFAULT_POOL_SIZE, DEFAULT_RANGE, POOL_MODES, RANGES,
    UPSAMPLE_MODES,
)


@dataclass(frozen=True)
class ConvStep:
    """One kernel as a convolution layer: cross-correlation weights, bias in 0-255 units."""

    name: str
    weights: kernels.Matrix
    bias: float
    border: str
    range: str
    repeat: int = 1
    stride: int = 1


@dataclass(frozen=True)
class PoolStep:
    """One pooling layer over size x size windows; `ceil` keeps partial windows at the right and
    bottom edges; `seed` makes stochastic pooling reproducible."""

    size: int
    stride: int
    mode: str
    ceil: bool = False
    seed: int | None = None

    @property
    def name(self) -> str:
        return f"pool{self.size}"


@dataclass(frozen=True)
class AdaptivePoolStep:
    """Pooling to an exact output size (nn.AdaptiveAvgPool2d / AdaptiveMaxPool2d)."""

    width: int
    height: int
    mode: str

    @property
    def name(self) -> str:
        return f"pool{self.width}x{self.height}"


@dataclass(frozen=True)
class UpsampleStep:
    """Upsampling by an integer factor, as a transposed convolution with fixed weights."""

    factor: int
    mode: str

    @property
    def name(self) -> str:
        return f"up{self.factor}"


Step = ConvStep | PoolStep | AdaptivePoolStep | UpsampleStep

KINDS = ("kernel", "pool", "upsample")
# The largest output a convolution may be able to give. float32 ends at 3.4e38; the factor left
# is room for sums over the whole image (an FFT's, over up to 3e10 pixels), so that no value
# becomes infinite or NaN on the way.
OUTPUT_REACH = 1e28
OP_NAME_MAX = 100  # bytes of the <op> in output names before repeats are counted instead
# Each repeat is a layer of the model, and an upsampled image has factor**2 times the pixels: a
# billion repeats or a factor of 20,000 would take all of the memory instead of failing clearly.
MAX_REPEAT = 1000
MAX_FACTOR = 16
MAX_STRIDE = 1_000_000  # past any side an image has in practice; torch's strides overflow near 10**17
KEYS = {
    "kernel": ("kernel", "border", "normalize", "scale", "bias", "flip", "repeat", "stride", "range"),
    "pool": ("pool", "size", "stride", "ceil", "to", "seed"),
    "upsample": ("upsample", "factor"),
}
TYPES = {
    "kernel": str, "border": str, "normalize": bool, "scale": (int, float), "bias": (int, float), "flip": bool,
    "repeat": int, "stride": int, "range": str, "pool": str, "size": int, "ceil": bool, "to": str, "seed": int,
    "upsample": str, "factor": int,
}
TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", (int, float): "a number"}
_SIZE = re.compile(r"(\d+)x(\d+)")

# How a setting is named in messages: '--repeat' on the command line, 'repeat' in a file.
Naming = Callable[[str], str]


def option_name(key: str) -> str:
    return "--to" if key == "to" else f"--{key}"


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
    return value


def _at_least_one(name: str, value: int, most: int | None = None) -> int:
    if value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")
    if most is not None and value > most:
        raise UsageError(f"{name} must be at most {most}, got {value}")
    return value


def from_table(table: dict, name: Naming = option_name) -> Step:
    """One step from its table; errors name the setting as `name` spells it."""
    kinds = [kind for kind in KINDS if kind in table]
    if len(kinds) != 1:
        raise UsageError(f"a step is exactly one of {', '.join(KINDS)}; got {', '.join(kinds) or 'none'}")
    kind = kinds[0]
    for key, value in table.items():
        if key not in KEYS[kind]:
            raise UsageError(f"unknown setting {name(key)} for a {kind} step; allowed: {', '.join(KEYS[kind])}")
        expected = TYPES[key]
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise UsageError(f"{name(key)} must be {TYPE_NAMES[expected]}, got {value!r}")
    if kind == "kernel":
        return _conv(table, name)
    if kind == "pool":
        return _pool(table, name)
    return UpsampleStep(
        factor=_at_least_one(name("factor"), table.get("factor", 2), MAX_FACTOR),
        mode=_choice("upsample mode", table["upsample"], UPSAMPLE_MODES),
    )


def _conv(table: dict, name: Naming) -> ConvStep:
    border = _choice("border", table.get("border", DEFAULT_BORDER), BORDERS)
    if "range" in table:
        _choice("range", table["range"], RANGES)
    repeat = _at_least_one(name("repeat"), table.get("repeat", 1), MAX_REPEAT)
    stride = _at_least_one(name("stride"), table.get("stride", 1), MAX_STRIDE)
    # finite and within float32, as a kernel file's scale and bias must be
    scale, bias = (kernels.parse_number(table[key], name(key)) if key in table else None for key in ("scale", "bias"))
    kernel = kernels.resolve(table["kernel"]).with_options(
        normalize=table.get("normalize"), scale=scale, bias=bias, range=table.get("range")
    )
    weights = kernel.weights(flip=table.get("flip", False))
    reach = 65535 * math.fsum(abs(v) for row in weights for v in row) + 257 * abs(kernel.bias)
    if reach > OUTPUT_REACH:
        given_here = [f"{name(key)} {table[key]}" for key in ("scale", "bias") if key in table]  # the likely cause
        cause = f" with {' and '.join(given_here)}" if given_here else ""
        raise KernelError(
            f"{kernel.origin}{cause}: outputs could reach {reach:.3g} (65535 x the sum of the weights' magnitudes, "
            f"plus the bias), more than {OUTPUT_REACH:.0e}, the room float32 leaves for the sums"
        )
    return ConvStep(
        name=kernel.name,
        weights=weights,
        bias=kernel.bias,
        border=border,
        range=kernel.range or DEFAULT_RANGE,
        repeat=repeat,
        stride=stride,
    )


def _pool(table: dict, name: Naming) -> PoolStep | AdaptivePoolStep:
    mode = table["pool"]
    if "to" in table:
        for key in ("size", "stride", "ceil", "seed"):
            if key in table:
                raise UsageError(f"{name('to')} gives the output size; it cannot be used with {name(key)}")
        size = _SIZE.fullmatch(table["to"])
        if not size or int(size[1]) < 1 or int(size[2]) < 1:
            raise UsageError(f"{name('to')} must be WIDTHxHEIGHT like 320x240, got {table['to']!r}")
        return AdaptivePoolStep(int(size[1]), int(size[2]), _choice("adaptive pool mode", mode, ADAPTIVE_POOL_MODES))
    _choice("pool mode", mode, POOL_MODES)
    if "seed" in table and mode != "stochastic":
        raise UsageError(f"{name('seed')} is for stochastic pooling only")
    if "seed" in table:
        check_seed(name("seed"), table["seed"])
    size = _at_least_one(name("size"), table.get("size", DEFAULT_POOL_SIZE))
    stride = _at_least_one(name("stride"), table["stride"], MAX_STRIDE) if "stride" in table else size
    return PoolStep(size=size, stride=stride, mode=mode, ceil=table.get("ceil", False), seed=table.get("seed"))


SEED_MIN, SEED_MAX = -2 ** 63, 2 ** 64 - 1  # what torch's generators take (negative ones wrap)


def check_seed(name: str, seed: int) -> int:
    """A seed torch's generators take: SEED_MIN to SEED_MAX."""
    if not SEED_MIN <= seed <= SEED_MAX:
        raise UsageError(f"{name} must be from {SEED_MIN} to {SEED_MAX}, got {seed}")
    return seed


def given(**options) -> dict:
    """The options a user gave (not None), as a step table."""
    return {key: value for key, value in options.items() if value is not None}


def conv_steps(specs: list[str], *, border: str = DEFAULT_BORDER, flip: bool = False, repeat: int = 1,
               stride: int = 1, **options) -> list[ConvStep]:
    """One ConvStep a kernel spec, in order: `apply`'s shorthand for a one-kernel-a-step pipeline.
    The options given (not None) replace each kernel file's."""
    if not specs:
        raise UsageError("no kernel given; use -k NAME (see 'convfilter kernels')")
    common = given(border=border, flip=flip, repeat=repeat, stride=stride, **options)
    return [from_table({"kernel": spec, **common}) for spec in specs]


def pool_step(*, size: int | None = None, stride: int | None = None, mode: str, ceil: bool = False,
              to: str | None = None, seed: int | None = None) -> PoolStep | AdaptivePoolStep:
    """`pool`'s shorthand for a one-step pipeline."""
    return from_table(given(pool=mode, size=size, stride=stride, ceil=ceil or None, to=to, seed=seed))


def op_name(steps: list[Step]) -> str:
    """The `<op>` of default output names: step names joined by '+' (kernel names, `pool<K>`, ...);
    a kernel repeated N times is named N times, as when it is given N times. Past OP_NAME_MAX
    bytes (UTF-8), a run of one name is written once with its count (`blurx60`); if that is
    still too long, the names that fit are followed by the count of those left (`a+b+c+21more`):
    file names end at 255 bytes. A single name is kept whole, however long."""
    names = [step.name for step in steps for _ in range(getattr(step, "repeat", 1))]
    joined = "+".join(names)
    if _bytes(joined) <= OP_NAME_MAX:
        return joined
    runs = [name if count == 1 else f"{name}x{count}" for name, count in
            ((name, len(list(run))) for name, run in itertools.groupby(names))]
    joined = "+".join(runs)
    if _bytes(joined) <= OP_NAME_MAX or len(runs) == 1:
        return joined
    kept = 1
    while kept + 1 < len(runs) and _bytes("+".join(runs[:kept + 1])) + len(f"+{len(runs)}more") <= OP_NAME_MAX:
        kept += 1
    return "+".join(runs[:kept]) + f"+{len(runs) - kept}more"


def _bytes(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


def _after(step: Step, height: int, width: int) -> tuple[int, int]:
    """An image's (height, width) after one step, as torch's layers give it."""
    if isinstance(step, ConvStep):  # padded to keep the size, then strided
        for _ in range(step.repeat):
            height, width = (height - 1) // step.stride + 1, (width - 1) // step.stride + 1
        return height, width
    if isinstance(step, PoolStep):
        return _pooled(height, step), _pooled(width, step)
    if isinstance(step, AdaptivePoolStep):
        return step.height, step.width
    return height * step.factor, width * step.factor


def _pooled(size: int, step: PoolStep) -> int:
    """torch's pooled size without padding: in ceil mode a last, partial window where one starts
    inside the image."""
    if size < step.size:  # too small to pool: refused when it runs
        return 0
    count = (size - step.size) // step.stride + 1
    if step.ceil and (size - step.size) % step.stride:
        count += 1 if (count * step.stride) < size else 0
    return count


def largest_size(steps: list[Step], height: int, width: int) -> tuple[int, int]:
    """The (height, width) of the largest image (in pixels) that the steps make from one of
    height x width: upsampling and pooling to a size can make images far larger than the input."""
    largest = (0, 0)
    for step in steps:
        height, width = _after(step, height, width)
        largest = max(largest, (height, width), key=lambda size: size[0] * size[1])
    return largest
