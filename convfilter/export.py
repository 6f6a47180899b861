"""Export a pipeline as a torch.export program that loads in plain PyTorch, without convfilter."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from convfilter.errors import InputError, UsageError
from convfilter.files import atomic_write
from convfilter.outputs import refuse_existing
from convfilter.pipeline import build, working_dtype
from convfilter.steps import PoolStep, Step


def export_program(steps: list[Step], channels: int, output: str, overwrite: bool = False,
                   origin: str = "the pipeline") -> None:
    """Write `steps` as a torch.export program taking (N, channels, H, W) float32 in 0-255 units
    (any N, H, W that the layers accept), returning the unrounded float result. `origin` names
    the steps in messages ("pipeline file 'p.toml'")."""
    for index, step in enumerate(steps, 1):
        if isinstance(step, PoolStep) and step.mode == "stochastic":
            raise UsageError(f"{origin}, step {index}: stochastic pooling draws random numbers per call; "
                             "it cannot be exported reproducibly")
    target = Path(output)
    refuse_existing(output, overwrite)  # before the export's seconds of work
    model = build(steps, 255.0, channels)
    if working_dtype(model, 255.0) == torch.float64:
        model = InFloat64(model.to(torch.float64))
    example = _example(model, channels, origin)
    program = _record(model, example, sizes_of_one=True)
    if not _takes_one_image(program, example):  # a circular border's program refused N = 1
        program = _record(model, example, sizes_of_one=False)
    atomic_write(target, lambda stream: torch.export.save(program, stream), overwrite, exists_hint="use --overwrite")


class InFloat64(nn.Module):
    """A pipeline that `run` computes in float64 (a stretch step, sums past 2**24: see
    `pipeline.working_dtype`), computing in float64 too, on float32 in and out: in float32 a
    pipeline that stretched a nearly flat image came out 3 levels off `run`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(torch.float64)).to(images.dtype)


def _record(model: nn.Module, example: torch.Tensor, sizes_of_one: bool) -> torch.export.ExportedProgram:
    """The program, with any N, H and W dynamic; `sizes_of_one`: see `_sizes_of_one_allowed`."""
    dynamic = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    allowed = _sizes_of_one_allowed() if sizes_of_one else contextlib.nullcontext()
    with torch.no_grad(), _quiet_torch(), allowed:
        return torch.export.export(model, (example,), dynamic_shapes=(dynamic,))


def _takes_one_image(program: torch.export.ExportedProgram, example: torch.Tensor) -> bool:
    """Whether the program takes a batch of one image: recorded with sizes of one allowed, a
    circular border's program refused it ("Guard failed: input.size()[0] >= 2"). Read from the
    program's range of N, without running it (on an image of 8192x6144, that took 5 GB); where
    this torch's program does not show it, by running it on one image."""
    try:
        [name] = program.graph_signature.user_inputs
        [images] = [node for node in program.graph.nodes if node.op == "placeholder" and node.name == name]
        batch = images.meta["val"].shape[0]
        if not isinstance(batch, torch.SymInt):
            return batch == 1
        limits = program.range_constraints.get(batch.node.expr)
        return limits is None or limits.lower <= 1
    except (AttributeError, KeyError, ValueError):
        pass
    try:
        with torch.no_grad():
            program.module()(example[:1])
    except (AssertionError, RuntimeError):  # a guard of the program
        return False
    return True


def _example(model: nn.Module, channels: int, origin: str) -> torch.Tensor:
    """An input to record the program with: 96x128, or the first of its doublings that every
    layer accepts (a 50x50 pooling needs more), up to 6144x8192. Only the sizes matter: the
    program takes any size the layers accept."""
    height, width = 96, 128
    while True:
        try:
            with torch.no_grad():
                model(torch.zeros(1, channels, height, width))  # one image, the least memory
            return torch.rand(2, channels, height, width) * 255
        except InputError as error:  # the layers' own size check
            if width >= 8192:
                raise UsageError(f"{origin}: cannot be exported: even a {width}x{height} image is too small ({error})")
            height, width = height * 2, width * 2


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch.export's own log lines (warnings with tracebacks from its shape solver, about 200
    lines for a strided convolution followed by a ceil-mode pooling) are not the user's business:
    only errors, which convfilter reports itself."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sizes_of_one_allowed() -> contextlib.AbstractContextManager:
    """torch.export assumes that no size is 1 (a pooling's output 1 pixel wide, which `run`
    gives): the program refused such inputs ("Guard failed: input.size()[3] // 4 != 1").
    `backed_size_oblivious` (an option of torch's shape tracing, private) drops that
    assumption; where this torch has no such option, the program keeps it."""
    try:
        from torch.fx.experimental import _config
    except ImportError:
        return contextlib.nullcontext()
    if not hasattr(_config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return _config.patch(backed_size_oblivious=True)
