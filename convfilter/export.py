"""Export a pipeline as a torch.export program that loads in plain PyTorch, without convfilter."""

from __future__ import annotations

from pathlib import Path

import torch

from convfilter.errors import UsageError
from convfilter.files import atomic_write, exists_error
from convfilter.pipeline import build
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
    if target.exists() and not overwrite:  # before the export's seconds of work
        raise exists_error(target, "use --overwrite")
    model = build(steps, 255.0, channels)
    example = torch.rand(2, channels, 96, 128) * 255
    dynamic = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=(dynamic,))
    atomic_write(target, lambda stream: torch.export.save(program, stream), overwrite, exists_hint="use --overwrite")
