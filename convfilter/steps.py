"""The parsed operations a pipeline is built from: plain values, checked here, no torch."""

from __future__ import annotations

from dataclasses import dataclass

from convfilter import kernels
from convfilter.errors import UsageError
from convfilter.modes import BORDERS, DEFAULT_RANGE, POOL_MODES, RANGES, check_choice


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
    """One pooling layer; `ceil` keeps the partial windows at the right and bottom edges."""

    size: int
    stride: int
    mode: str
    ceil: bool = False

    @property
    def name(self) -> str:
        return f"pool{self.size}"


Step = ConvStep | PoolStep


def _at_least_one(option: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{option} must be at least 1, got {value}")
    return value


def conv_steps(
    specs: list[str],
    *,
    border: str,
    normalize: bool | None = None,
    scale: float | None = None,
    bias: float | None = None,
    flip: bool = False,
    repeat: int = 1,
    stride: int = 1,
    range: str | None = None,
) -> list[ConvStep]:
    """One ConvStep a kernel spec, in order; the options given (not None) override each file's."""
    if not specs:
        raise UsageError("no kernel given; use -k NAME (see 'convfilter kernels')")
    check_choice("border", border, BORDERS)
    if range is not None:
        check_choice("range", range, RANGES)
    _at_least_one("--repeat", repeat)
    _at_least_one("--stride", stride)
    steps = []
    for spec in specs:
        kernel = kernels.resolve(spec).with_options(normalize=normalize, scale=scale, bias=bias, range=range)
        steps.append(
            ConvStep(
                name=kernel.name,
                weights=kernel.weights(flip=flip),
                bias=kernel.bias,
                border=border,
                range=kernel.range or DEFAULT_RANGE,
                repeat=repeat,
                stride=stride,
            )
        )
    return steps


def pool_step(*, size: int, stride: int | None, mode: str, ceil: bool) -> PoolStep:
    """A checked PoolStep; the stride defaults to the window size."""
    _at_least_one("--size", size)
    check_choice("pool mode", mode, POOL_MODES)
    return PoolStep(size=size, stride=_at_least_one("--stride", size if stride is None else stride), mode=mode, ceil=ceil)


def op_name(steps: list[Step]) -> str:
    """The `<op>` of default output names: kernel names joined by '+', or `pool<K>`."""
    return "+".join(step.name for step in steps)
