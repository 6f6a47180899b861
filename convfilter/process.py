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
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

import numpy as np

from convfilter import files, imageio, visuals
from convfilter.errors import ConvfilterError, OutputError, internal_error
from convfilter.outputs import Job, same_file

FilterFn = Callable[[np.ndarray], np.ndarray]
Result = TypeVar("Result")

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


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system keeps one (taskset,
    cgroup cpusets, a cluster scheduler's binding), else every core of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this system (macOS, Windows)
        return os.cpu_count() or 1


def torch_threads(jobs: int | None, workers: int) -> int | None:
    """torch's threads in each of `workers` threads that filter: `-j N` keeps the process to N
    cores (at most the cores it may run on), the default to the cores it may run on. None
    (torch's own default, every core) for one worker without -j on an unrestricted machine.
    Two processes of `-j 1` with two torch threads each (GNU parallel, 2 cores) took 5.5-22 s
    over 200 photos instead of 2.9-3.1 s: OpenMP threads spin while they wait, and here they
    waited for each other's cores."""
    cores = available_cores()
    if jobs is None and workers <= 1 and cores == os.cpu_count():
        return None
    return max(1, min(jobs or cores, cores) // max(1, workers))


# While the filter is not ready yet (torch still importing), workers decode the next inputs
# instead of waiting, holding at most this many bytes of decoded images.
READ_AHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class Loaded:
    """A job whose input is decoded, waiting to be filtered and written."""

    job: Job
    image: np.ndarray


def run_job(job: Job, filter_fn: FilterFn, options: WriteOptions, stdin: BinaryIO, stdout: BinaryIO) -> JobResult:
    """One job start to end. Errors become a failed result: '<input>: <what failed>'."""
    loaded = load_job(job, options, stdin)
    return loaded if isinstance(loaded, JobResult) else finish_job(loaded, filter_fn, options, stdout)


def check_target(job: Job, options: WriteOptions) -> JobResult | None:
    """Before reading: the result of a job that must not go on (its output is its input, or
    exists, or its --compare picture exists), or None."""
    def check() -> JobResult | None:
        target = job.target
        if target not in (None, imageio.STDIO):
            if job.source != imageio.STDIO and same_file(job.source, target):
                raise OutputError(f"output {target!r} is the input itself; convfilter never overwrites an input")
            if os.path.lexists(target) and not options.overwrite:
                if options.skip_existing:
                    return JobResult(job, SKIPPED)
                raise files.exists_error(target)
        if options.compare is not None and os.path.lexists(options.compare[0]) and not options.overwrite:
            raise OutputError(f"--compare {str(options.compare[0])!r} exists (use --overwrite)")  # before the filter
        return None

    return guarded(job, options, check)


def load_job(job: Job, options: WriteOptions, stdin: BinaryIO) -> Loaded | JobResult:
    """The first half of a job: check the target, read and decode the input."""
    return check_target(job, options) or decode_job(job, options, stdin)


def decode_job(job: Job, options: WriteOptions, stdin: BinaryIO) -> Loaded | JobResult:
    """Read and decode a job's input (its target already checked)."""
    def load() -> Loaded:
        source = imageio.read_stream(stdin, options.max_pixels) if job.source == imageio.STDIO else job.source
        return Loaded(job, imageio.read_image(source, options.max_pixels, options.background, options.color))

    return guarded(job, options, load)


def finish_job(loaded: Loaded, filter_fn: FilterFn, options: WriteOptions, stdout: BinaryIO) -> JobResult:
    """The second half of a job: filter, then write (and show, and compare)."""
    def finish() -> JobResult:
        job, image = loaded.job, loaded.image
        result = filter_fn(image)
        if options.compare is not None:
            path, label = options.compare
            picture = visuals.side_by_side(image, result, "input", label)
            imageio.write_picture(picture, path, options.overwrite)
        if job.target == imageio.STDIO:
            imageio.write_stream(result, stdout, job.format, options.encoding)
        elif job.target is not None:
            imageio.write_image(result, Path(job.target), job.format, options.encoding, options.overwrite)
        if options.show:
            imageio.show_image(result)
        return JobResult(job, WRITTEN)

    return guarded(loaded.job, options, finish)


def guarded(job: Job, options: WriteOptions, step: Callable[[], Result]) -> Result | JobResult:
    """`step()`, with its errors turned into a failed result for `job`."""
    try:
        return step()
    except Exception as error:
        return failure(job, options, error)


def failure(job: Job, options: WriteOptions, error: Exception) -> JobResult:
    """`job` failed with `error`: its message, or for anything but a ConvfilterError (a bug,
    MemoryError) an internal error; with --debug that is raised, for its traceback. An output
    that another process wrote meanwhile is a skip with --skip-existing (two runs resuming one
    folder at once), as it would have been had it been there at the start."""
    if isinstance(error, files.OutputExistsError) and options.skip_existing:
        return JobResult(job, SKIPPED)
    if isinstance(error, ConvfilterError):
        return JobResult(job, FAILED, f"{job.label}: {error}")
    if options.debug:
        raise error
    return JobResult(job, FAILED, f"{job.label}: {internal_error(error)}")


def process(
    jobs: list[Job],
    filter_fn: FilterFn,
    options: WriteOptions,
    *,
    stdin: BinaryIO,
    stdout: BinaryIO,
    on_result: Callable[[JobResult], None],
    filter_ready: threading.Event | None = None,
) -> Summary:
    """Every job, `options.workers` at a time; `on_result` is called in this thread as each ends.
    Until `filter_ready` is set (None: it is), workers only decode inputs, up to READ_AHEAD_BYTES.
    Ctrl-C (KeyboardInterrupt) stops cleanly: jobs not started are dropped, the running ones
    finish (their writes are atomic), and the summary says `interrupted`."""
    summary = Summary()
    start = time.monotonic()
    stop = threading.Event()
    if filter_ready is None:
        filter_ready = threading.Event()
        filter_ready.set()

    recorded: set[int] = set()

    def record(result: JobResult, order: int) -> None:
        if order in recorded:  # a Ctrl-C between two results must not count one twice
            return
        recorded.add(order)
        summary.add(result)
        on_result(result)
        if result.status == FAILED and options.fail_fast:
            stop.set()

    if len(jobs) == 1:
        try:
            record(run_job(jobs[0], filter_fn, options, stdin, stdout), 0)
        except KeyboardInterrupt:
            summary.interrupted = True
        summary.seconds = time.monotonic() - start
        return summary

    todo = deque(enumerate(jobs))
    loaded: deque[tuple[int, Loaded]] = deque()  # decoded ahead of the filter
    held = 0  # their bytes

    def submit(pool: ThreadPoolExecutor) -> Future | None:
        """The next task: finish a decoded job once the filter is ready; else start the next
        job (whole, or only its decoding while the filter is not ready and memory allows)."""
        nonlocal held
        if filter_ready.is_set() and loaded:
            order, item = loaded.popleft()
            held -= item.image.nbytes
            future = pool.submit(finish_job, item, filter_fn, options, stdout)
        elif todo and filter_ready.is_set():
            order, job = todo.popleft()
            future = pool.submit(run_job, job, filter_fn, options, stdin, stdout)
        elif todo and held < READ_AHEAD_BYTES:
            order, job = todo.popleft()
            future = pool.submit(load_job, job, options, stdin)
        else:
            return None
        future.order = order
        return future

    def collect(futures: set[Future]) -> set[Future]:
        nonlocal held
        done, pending = wait(futures, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: f.order):
            outcome = future.result()
            if isinstance(outcome, Loaded):
                loaded.append((future.order, outcome))
                held += outcome.image.nbytes
            else:
                record(outcome, future.order)
        return pending

    pool = ThreadPoolExecutor(options.workers, thread_name_prefix="convfilter")
    pending: set[Future] = set()
    in_flight = 1 if options.workers == 1 else 2 * options.workers  # -j 1: strictly one after another
    try:
        while True:
            while len(pending) < in_flight and not stop.is_set():
                future = submit(pool)
                if future is None:
                    break
                pending.add(future)
            if pending:
                pending = collect(pending)
            elif loaded and not stop.is_set():
                filter_ready.wait()  # memory is full of decoded images: wait for the filter
            else:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in sorted(pending, key=lambda f: f.order):
            if future.done() and not future.cancelled() and future.exception() is None:
                outcome = future.result()
                if not isinstance(outcome, Loaded):
                    record(outcome, future.order)
    summary.seconds = time.monotonic() - start
    return summary
