"""Run planned jobs: read, filter, write — in a bounded pool of threads; a failing input never stops
the others (unless fail_fast). Results are handed back one by one, in the calling thread.

Threads, not processes: PIL's codecs and torch's kernels release the GIL, so decode, filtering and
encode of different files overlap, and torch is imported (and its memory paid) once. At most
2 x workers jobs are in flight, so memory stays bounded on a folder of any length.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from convfilter import files, imageio, visuals
from convfilter.errors import ConvfilterError, OutputError
from convfilter.outputs import Job

FilterFn = Callable[[np.ndarray], np.ndarray]

WRITTEN, SKIPPED, FAILED = "written", "skipped", "failed"


@dataclass(frozen=True)
class JobResult:
    job: Job
    status: str
    error: str | None = None

    def as_dict(self) -> dict:
        return {"input": self.job.source, "output": self.job.target, "status": self.status, "error": self.error}


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def add(self, result: JobResult) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)

    def __str__(self) -> str:
        return f"{self.written} written, {self.skipped} skipped, {self.failed} failed in {self.seconds:.1f} s"


@dataclass(frozen=True)
class WriteOptions:
    encoding: imageio.Encoding
    overwrite: bool = False
    skip_existing: bool = False
    show: bool = False
    max_pixels: int = imageio.DEFAULT_MAX_PIXELS
    background: tuple[int, int, int] | None = None  # composite transparent images on this colour
    color: bool = False  # keep colour (each channel filtered alone) instead of going grey
    compare: tuple[Path, str] | None = None  # write the input beside the result there, labelled so
    workers: int = 1
    fail_fast: bool = False
    debug: bool = False  # let an unexpected exception through, with its traceback


def _is_input(source: str, target: str) -> bool:
    try:
        return os.path.samefile(source, target)
    except OSError:
        return False


def run_job(job: Job, filter_fn: FilterFn, options: WriteOptions, stdin: BinaryIO, stdout: BinaryIO) -> JobResult:
    """One job start to end. Errors become a failed result: '<input>: <what failed>'."""
    target = job.target
    try:
        if target not in (None, imageio.STDIO):
            if job.source != imageio.STDIO and _is_input(job.source, target):
                raise OutputError(f"output '{target}' is the input itself; convfilter never overwrites an input")
            if os.path.lexists(target) and not options.overwrite:
                if options.skip_existing:
                    return JobResult(job, SKIPPED)
                raise files.exists_error(target)
        source = stdin.read() if job.source == imageio.STDIO else job.source
        image = imageio.read_image(source, options.max_pixels, options.background, options.color)
        result = filter_fn(image)
        if options.compare is not None:
            path, label = options.compare
            picture = visuals.side_by_side(image, result, "input", label)
            imageio.write_picture(picture, path, options.overwrite)
        if target == imageio.STDIO:
            imageio.write_stream(result, stdout, job.format, options.encoding)
        elif target is not None:
            imageio.write_image(result, Path(target), job.format, options.encoding, options.overwrite)
        if options.show:
            imageio.show_image(result)
        return JobResult(job, WRITTEN)
    except ConvfilterError as error:
        return JobResult(job, FAILED, f"{job.label}: {error}")
    except Exception as error:  # a bug or MemoryError: this file fails, the others go on
        if options.debug:
            raise
        return JobResult(
            job, FAILED, f"{job.label}: internal error: {type(error).__name__}: {error} "
            "(rerun with --debug for the traceback)"
        )


def process(
    jobs: list[Job],
    filter_fn: FilterFn,
    options: WriteOptions,
    *,
    stdin: BinaryIO,
    stdout: BinaryIO,
    on_result: Callable[[JobResult], None],
) -> Summary:
    """Every job, `options.workers` at a time; `on_result` is called in this thread as each ends.
    Ctrl-C (KeyboardInterrupt) stops cleanly: jobs not started are dropped, the running ones
    finish (their writes are atomic), and the summary says `interrupted`."""
    summary = Summary()
    start = time.monotonic()
    stop = threading.Event()

    recorded: set[int] = set()

    def record(result: JobResult, order: int) -> None:
        if order in recorded:  # a Ctrl-C between two results must not count one twice
            return
        recorded.add(order)
        summary.add(result)
        on_result(result)
        if result.status == FAILED and options.fail_fast:
            stop.set()

    def collect(futures: set[Future]) -> set[Future]:
        done, pending = wait(futures, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: f.order):
            record(future.result(), future.order)
        return pending

    if options.workers <= 1 or len(jobs) <= 1:
        try:
            for order, job in enumerate(jobs):
                if stop.is_set():
                    break
                record(run_job(job, filter_fn, options, stdin, stdout), order)
        except KeyboardInterrupt:
            summary.interrupted = True
    else:
        pool = ThreadPoolExecutor(options.workers, thread_name_prefix="convfilter")
        pending: set[Future] = set()
        try:
            for order, job in enumerate(jobs):
                while len(pending) >= 2 * options.workers:
                    pending = collect(pending)
                if stop.is_set():
                    break
                future = pool.submit(run_job, job, filter_fn, options, stdin, stdout)
                future.order = order
                pending.add(future)
            while pending:
                pending = collect(pending)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future in sorted(pending, key=lambda f: f.order):
                if future.done() and not future.cancelled() and future.exception() is None:
                    record(future.result(), future.order)
    summary.seconds = time.monotonic() - start
    return summary
