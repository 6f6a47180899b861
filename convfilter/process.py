"""Run planned jobs: read, filter, write, one at a time; a failing input never stops the others."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from convfilter import imageio
from convfilter.errors import ConvfilterError, OutputError
from convfilter.outputs import Job

FilterFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.written} written, {self.skipped} skipped, {self.failed} failed"


@dataclass(frozen=True)
class WriteOptions:
    quality: int
    overwrite: bool = False
    skip_existing: bool = False
    show: bool = False
    max_pixels: int = imageio.DEFAULT_MAX_PIXELS


def _is_input(source: str, target: str) -> bool:
    try:
        return os.path.samefile(source, target)
    except OSError:
        return False


def process(
    jobs: list[Job],
    filter_fn: FilterFn,
    options: WriteOptions,
    *,
    stdin: BinaryIO,
    stdout: BinaryIO,
    on_written: Callable[[str], None],
    on_skipped: Callable[[str], None],
    on_failed: Callable[[str], None],
) -> Summary:
    """Each job in turn; errors are reported through `on_failed` as '<input>: <what failed>'."""
    summary = Summary()
    for job in jobs:
        target = job.target
        try:
            if target not in (None, imageio.STDIO):
                if job.source != imageio.STDIO and _is_input(job.source, target):
                    raise OutputError(f"output '{target}' is the input itself; convfilter never overwrites an input")
                if os.path.lexists(target) and not options.overwrite:
                    if options.skip_existing:
                        summary.skipped += 1
                        on_skipped(target)
                        continue
                    raise OutputError(f"output '{target}' exists (use --overwrite or --skip-existing)")
            source = stdin.read() if job.source == imageio.STDIO else job.source
            result = filter_fn(imageio.read_image(source, options.max_pixels))
            if target == imageio.STDIO:
                imageio.write_stream(result, stdout, job.format, options.quality)
            elif target is not None:
                imageio.write_image(result, Path(target), job.format, options.quality, options.overwrite)
                on_written(target)
            if options.show:
                imageio.show_image(result)
            summary.written += 1
        except ConvfilterError as error:
            summary.failed += 1
            on_failed(f"{job.label}: {error}")
    return summary
