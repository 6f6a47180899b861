"""The command line: parse options, call the core, report. Exit codes by CONTRACT §7.

torch is imported only inside the commands that filter, so `--help` and `kernels` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import signal
import stat
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Annotated, Callable, NoReturn, Optional

import typer

from convfilter import __version__, kernels
from convfilter.errors import ConvfilterError, UsageError, internal_error
from convfilter.modes import (
    DEFAULT_BORDER, DEFAULT_PNG_COMPRESSION, DEFAULT_POOL_MODE, DEFAULT_QUALITY, DEVICES, MAX_COLUMNS, MAX_JOBS,
)
from convfilter.steps import Step

app = typer.Typer(
    name="convfilter",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
kernels_app = typer.Typer(
    help="List, show or preview the named kernels.\n\nExample: convfilter kernels show sobel-x", no_args_is_help=False
)
app.add_typer(kernels_app, name="kernels")

_debug = False


def _error(message: str) -> None:
    sys.stderr.write(f"convfilter: error: {message}\n")
    sys.stderr.flush()


def _wrote(path: str, quiet: bool) -> None:
    """The line for a file written, unless -q."""
    from convfilter.outputs import shown

    if not quiet:
        sys.stderr.write(f"wrote {shown(path)}\n")


def _traceback() -> None:
    """With --debug, the traceback of the error being handled, before its line; the exit code
    stays the documented one."""
    if _debug:
        import traceback

        traceback.print_exc(file=sys.stderr)


def reports_errors(command: Callable) -> Callable:
    """Turn ConvfilterError into one `convfilter: error:` line and its exit code, Ctrl-C into
    exit 130 (CONTRACT §7); the parser's own Ctrl-C handling would say "Aborted!" and exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConvfilterError as error:
            _traceback()
            _error(str(error))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("convfilter: interrupted\n")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except BrokenPipeError:  # a reader left early (--dry-run | head): quiet, as a tool stopped by SIGPIPE
            from convfilter.files import discard_standard_output

            discard_standard_output()
            raise typer.Exit(141) from None
        except Exception as error:
            from convfilter.files import is_standard_output_error, standard_output_failed

            _traceback()
            if is_standard_output_error(error):
                _error(standard_output_failed(error))  # a plan, report or table on a full disk (> /dev/full)
                raise typer.Exit(1) from None
            _error(internal_error(error))  # a bug: still one line, the traceback with --debug
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"convfilter {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Filter images with torch.nn convolutions and pooling, exactly and safely.

    Example: convfilter apply photo.jpg -k sharpen
    """
    global _debug
    _debug = debug


# ---------------------------------------------------------------------------- options shared by apply and pool

QUIET = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]


# name: (annotation with the typer declaration, default). `with_run_options` adds these to a
# command's signature and hands them to it as one RunOptions; the order is the order in --help.
SHARED_OPTIONS = {
    "inputs": (Annotated[Optional[list[str]], typer.Argument(
        help="Image files, directories (-r: with subfolders), quoted globs, or '-' for standard input "
        "(the default when it is a pipe).", show_default=False)], None),
    "output": (Annotated[Optional[str], typer.Option(
        "-o", "--output", help="Output file, directory (existing, or ending in '/'), or '-' for standard output "
        "(PNG). Default: <stem>_<op>.<suffix> beside the input; <dir>_<op>/ for a directory; standard output "
        "for standard input.", show_default=False)], None),
    "fmt": (Annotated[Optional[str], typer.Option(
        "--format", help="Output format (png, jpg, webp, tiff, ...); default: by suffix.")], None),
    "quality": (Annotated[int, typer.Option("--quality", help="JPEG/WebP quality, 1-100.")], DEFAULT_QUALITY),
    "png_compression": (Annotated[int, typer.Option(
        "--png-compression", help="PNG zlib level, 0-9 (1: fast; Pillow's default is 6).")], DEFAULT_PNG_COMPRESSION),
    "overwrite": (Annotated[bool, typer.Option("--overwrite", help="Replace an existing output (never an input).")], False),
    "skip_existing": (Annotated[bool, typer.Option(
        "--skip-existing", help="Skip inputs whose output already exists (resume a run).")], False),
    "recursive": (Annotated[bool, typer.Option(
        "-r", "--recursive", help="Take images in subfolders of directory inputs too.")], False),
    "from_list": (Annotated[Optional[str], typer.Option(
        "--from", help="Also read input paths from FILE, one a line ('-': standard input).", show_default=False)], None),
    "null": (Annotated[bool, typer.Option("--null", "-0", help="--from lists are NUL-separated (find -print0).")], False),
    "jobs": (Annotated[Optional[int], typer.Option(
        "-j", "--jobs", help="Worker threads, 1 to 1024. Default: the number of cores this process may run on.",
        show_default=False)], None),
    "shard": (Annotated[Optional[str], typer.Option(
        "--shard", help="Process only the K-th of N deterministic slices of the inputs, e.g. 2/8.",
        show_default=False)], None),
    "dry_run": (Annotated[bool, typer.Option("--dry-run", help="Print the plan (input -> output), write nothing.")], False),
    "fail_fast": (Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed input.")], False),
    "json": (Annotated[bool, typer.Option(
        "--json", help="Print the summary and per-file results as JSON on standard output.")], False),
    "show": (Annotated[bool, typer.Option(
        "--show", help="Show the result in the system viewer (without -o: instead of writing).")], False),
    "quiet": (QUIET, False),
    "device": (Annotated[str, typer.Option("--device", help="cpu, cuda or auto (cuda when available).")], "auto"),
    "batch": (Annotated[Optional[int], typer.Option(
        "--batch", help="JPEGs decoded and filtered together on the device, N at a time. Default: 64 on a GPU, "
        "off on the CPU (where --batch runs the same batch path).", show_default=False)], None),
    "compare": (Annotated[Optional[str], typer.Option(
        "--compare", help="Also write FILE: the input and the result side by side, labelled (one input only).",
        show_default=False)], None),
    "color": (Annotated[bool, typer.Option(
        "--color", help="Keep colour: filter each RGB channel on its own (alpha is carried along unfiltered). "
        "Default: grayscale.")], False),
    "background": (Annotated[Optional[str], typer.Option(
        "--background", help="Composite transparent images on this colour (white, #rrggbb, 0-255) before "
        "going grey. Default: alpha is ignored.", show_default=False)], None),
    "max_pixels": (Annotated[Optional[int], typer.Option(
        "--max-pixels", help="Refuse images with more pixels than this. Default: Pillow's limit (89478485).",
        show_default=False)], None),
}


@dataclass(frozen=True)
class RunOptions:
    """The options every filtering command shares (inputs, outputs, batch, reporting)."""

    inputs: Optional[list[str]]
    output: Optional[str]
    fmt: Optional[str]
    quality: int
    png_compression: int
    overwrite: bool
    skip_existing: bool
    recursive: bool
    from_list: Optional[str]
    null: bool
    jobs: Optional[int]
    shard: Optional[str]
    dry_run: bool
    fail_fast: bool
    json: bool
    show: bool
    quiet: bool
    device: str
    batch: Optional[int]
    compare: Optional[str]
    color: bool
    background: Optional[str]
    max_pixels: Optional[int]


def with_run_options(command: Callable) -> Callable:
    """Give `command(..., run: RunOptions)` the SHARED_OPTIONS as command-line parameters."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "run"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in SHARED_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs):
        run = RunOptions(**{name: kwargs.pop(name) for name in SHARED_OPTIONS})
        return command(**kwargs, run=run)

    wrapper.__signature__ = signature.replace(parameters=own + shared)
    wrapper.__annotations__ = {p.name: p.annotation for p in own + shared}
    return wrapper


def _check(run: RunOptions) -> None:
    if run.overwrite and run.skip_existing:
        raise UsageError("--overwrite and --skip-existing cannot be used together")
    if not 1 <= run.quality <= 100:
        raise UsageError(f"--quality must be between 1 and 100, got {run.quality}")
    if not 0 <= run.png_compression <= 9:
        raise UsageError(f"--png-compression must be between 0 and 9, got {run.png_compression}")
    if run.max_pixels is not None and run.max_pixels < 1:
        raise UsageError(f"--max-pixels must be at least 1, got {run.max_pixels}")
    if run.jobs is not None and not 1 <= run.jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be 1 to {MAX_JOBS}, got {run.jobs}")
    for option, value, rule in (
        ("-o", run.output, "give a file, a folder or -"),
        ("--compare", run.compare, "give a file name"),
        ("--shard", run.shard, "give K/N, like 2/8"),
        ("--format", run.fmt, "give a format like png, jpg or tiff"),
    ):
        if value == "":  # an unset variable in a script ("$OUT") must not mean the current folder, or all
            raise UsageError(f"{option} is empty; {rule}")
    if run.null and run.from_list is None:
        raise UsageError("--null describes a --from list; give --from FILE or --from -")
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if run.show and sys.platform.startswith("linux") and not display:  # a viewer would fail later, after exit 0
        instead = "drop --show (-o writes the result)" if run.output is not None else "use -o FILE"
        raise UsageError(f"--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set; {instead}")


def _listed(run: RunOptions) -> list[str]:
    """The paths of a --from list."""
    from convfilter.inputs import read_list

    if run.from_list is None:
        return []
    if run.from_list == "-":
        try:
            return read_list(sys.stdin.buffer, run.null)
        except OSError as error:
            raise UsageError(f"--from -: cannot read standard input: {error.strerror or error}") from None
    try:
        with open(run.from_list, "rb") as stream:
            return read_list(stream, run.null)
    except OSError as error:
        raise UsageError(f"--from {run.from_list!r}: cannot read it: {error.strerror or error}") from None


def _run(steps: list[Step], run: RunOptions, op: Optional[str] = None, color: bool = False) -> None:
    """Expand, plan, build the pipeline, process every job, report; exit 1 if any input failed.
    `op` names the outputs (default: the steps' names); `color` as --color (a pipeline file's)."""
    import json
    from pathlib import Path

    from convfilter import imageio, inputs, outputs, process
    from convfilter.background import BackgroundFilter
    from convfilter.modes import DEVICES, check_choice
    from convfilter.reporting import Reporter
    from convfilter.steps import op_name

    _check(run)
    check_choice("device", run.device, DEVICES)
    background = imageio.parse_background(run.background) if run.background is not None else None
    shard = inputs.parse_shard(run.shard) if run.shard is not None else None
    max_pixels = run.max_pixels or imageio.DEFAULT_MAX_PIXELS
    pipeline = None if run.dry_run else BackgroundFilter(steps, run.device, max_pixels)  # torch loads meanwhile
    arguments = list(run.inputs or [])
    _check_standard_input(arguments, run.from_list)
    if run.json or run.dry_run:
        _require_standard_output("--json" if run.json else "--dry-run")
    if not arguments and run.from_list is None:
        if sys.stdin.isatty():
            raise UsageError("no input: give image files or directories, or pipe one on standard input")
        arguments = [imageio.STDIO]
    if run.from_list == "-" and imageio.STDIO in arguments:
        raise UsageError("--from - and '-' both want standard input")
    expansion = inputs.expand(arguments, run.recursive, _listed(run))
    name = op or op_name(steps)
    jobs = outputs.plan(expansion.sources, run.output, name, run.fmt, run.show, expansion.batch, run.overwrite)
    if shard:
        jobs = outputs.shard(jobs, *shard)
    if run.compare is not None and len(jobs) != 1:
        raise UsageError(f"--compare writes one picture; it takes one input, {len(jobs)} were given")
    if run.compare is not None:
        sources, targets = [job.source for job in jobs], [job.target for job in jobs]
        outputs.check_single_output("--compare", run.compare, sources, targets)
        imageio.format_for(Path(run.compare).suffix or ".png")  # an unknown suffix: a usage error, now
    to_stdout = any(job.target == imageio.STDIO for job in jobs)
    if to_stdout and (run.json or run.dry_run):
        if run.output == imageio.STDIO:
            raise UsageError("-o - writes the image to standard output; it cannot be used with --json or --dry-run")
        raise UsageError("without -o, an image read from standard input or a pipe is written to standard output; "
                         "that cannot be used with --json or --dry-run: give -o")
    if to_stdout and (sys.stdout is None or "stdout" in _closed_streams):  # started with it closed (1>&-)
        raise UsageError("standard output is closed; use -o FILE")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write image data to a terminal; use -o FILE or a pipe")
    if to_stdout:
        _check_stdout_is_no_input(jobs)
    one_file = run.output not in (None, imageio.STDIO) and len(jobs) == 1 and jobs[0].target == run.output
    chosen = run.fmt or (Path(run.output).suffix if one_file else None)
    if chosen:  # a format the user chose (not an input's own): one that cannot hold the images is a usage error
        imageio.check_holds(chosen, run.color or color)
    if run.dry_run:
        if run.json:
            plan = [{"input": job.source, "output": job.target} for job in jobs]
            print(json.dumps({"dry_run": True, "files": plan}, indent=2))
            return
        for job in jobs:
            print(f"{outputs.shown(job.source)} -> "
                  f"{outputs.shown(job.target) if job.target is not None else '(shown only)'}")
        return

    workers = run.jobs or process.available_cores()
    batch_size = _batch_size(run, steps, jobs)
    per_file = min(workers, len(jobs))  # the threads that call the filter on the per-file path
    pipeline.start(process.torch_threads(run.jobs, 1 if batch_size is not None else per_file))
    if run.device == "cuda" or batch_size == 0:
        built = pipeline.ready()  # "no CUDA device" is a usage error, before any file
        if batch_size == 0:  # the default: batches when the pipeline is on a GPU
            from convfilter.batch import DEFAULT_BATCH  # imports torch, which is there by now

            batch_size = DEFAULT_BATCH if built.device.type == "cuda" else None
            if batch_size is None:  # no GPU after all: the per-file path, and its workers' share
                pipeline.start(process.torch_threads(run.jobs, per_file))
    options = process.WriteOptions(
        encoding=imageio.Encoding(run.quality, run.png_compression),
        overwrite=run.overwrite,
        skip_existing=run.skip_existing,
        show=run.show,
        max_pixels=max_pixels,
        background=background,
        color=run.color or color,
        compare=(Path(run.compare), name) if run.compare is not None else None,
        workers=workers,
        fail_fast=run.fail_fast,
        debug=_debug,
    )
    batch = expansion.batch
    with Reporter(total=len(jobs), quiet=run.quiet, progress=batch, keep=run.json) as reporter:
        with _terminate_as_interrupt():
            if batch_size:
                from convfilter import batch as batches  # imports torch

                summary = batches.process(jobs, pipeline.ready(), options, batch_size, on_result=reporter.result)
            else:
                summary = process.process(
                    jobs, pipeline, options,
                    stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, on_result=reporter.result,
                    filter_ready=pipeline.built,
                )
        if run.compare is not None and summary.written and not run.quiet:
            reporter.line(f"wrote {outputs.shown(run.compare)}")
        if batch and (summary.failed or summary.interrupted or not run.quiet):
            reporter.line(str(summary))
    if run.json:
        document = {
            "written": summary.written, "skipped": summary.skipped, "failed": summary.failed,
            "seconds": round(summary.seconds, 3), "interrupted": summary.interrupted,
            "files": [result.as_dict() for result in _in_plan_order(reporter.results, jobs)],
        }
        print(json.dumps(document, indent=2))
    if summary.interrupted:
        raise KeyboardInterrupt
    if summary.failed:
        raise typer.Exit(1)


def _in_plan_order(results: list, jobs: list) -> list:
    """Results (which come in the order files finish) in the order of the plan."""
    order = {id(job): i for i, job in enumerate(jobs)}
    return sorted(results, key=lambda result: order.get(id(result.job), len(jobs)))


def _check_stdout_is_no_input(jobs: list) -> None:
    """`-o - >> photo.png` (or `> photo.png` after the shell has emptied it): standard output is
    the input file itself, which convfilter never writes (as `cat` refuses "input file is output
    file")."""
    try:
        output = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a file descriptor (tests, embedding)
        return
    if not stat.S_ISREG(output.st_mode):
        return
    for job in jobs:
        # a missing input fails on its own, when it is read
        with contextlib.suppress(AttributeError, OSError, ValueError):
            source = os.fstat(sys.stdin.fileno()) if job.source == "-" else os.stat(job.source)
            if (source.st_dev, source.st_ino) == (output.st_dev, output.st_ino):
                what = "the same file as standard input" if job.source == "-" else f"the input {job.source!r}"
                raise UsageError(f"standard output is {what}; convfilter never overwrites an input")


def _batch_size(run: RunOptions, steps: list[Step], jobs: list) -> int | None:
    """Images a batch for the batch path; None for the per-file path; 0 for "batches if the
    pipeline turns out to be on a GPU" (decided without waiting for torch where no NVIDIA device
    exists). The batch path writes files only, and a seeded stochastic pool draws per call."""
    from convfilter.imageio import STDIO
    from convfilter.steps import PoolStep

    unsuitable = [
        reason for reason, present in (
            ("standard input or output", any(STDIO in (job.source, job.target) for job in jobs)),
            ("--show", run.show), ("--compare", run.compare is not None),
            ("stochastic pooling", any(isinstance(s, PoolStep) and s.mode == "stochastic" for s in steps)),
        ) if present
    ]
    if run.batch is not None:
        if run.batch < 1:
            raise UsageError(f"--batch must be at least 1, not {run.batch}")
        if unsuitable:
            raise UsageError(f"--batch cannot be used with {unsuitable[0]}")
        return run.batch
    if unsuitable or run.device == "cpu" or (run.device == "auto" and not _nvidia_present()):
        return None
    return 0


def _nvidia_present() -> bool:
    from pathlib import Path

    return Path("/dev/nvidiactl").exists()


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM stops a run like Ctrl-C: cleanly, exit 130 (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
@reports_errors
@with_run_options
def apply(
    kernel: Annotated[
        list[str],
        typer.Option("-k", "--kernel", help="Kernel name, file or inline matrix ('0,-1,0; -1,5,-1; 0,-1,0'). "
                     "Repeat to run several in order.", show_default=False),
    ] = [],
    border: Annotated[str, typer.Option("--border", help="reflect, replicate, zeros or circular.")] = DEFAULT_BORDER,
    normalize: Annotated[
        Optional[bool],
        typer.Option("--normalize/--no-normalize", help="Divide the weights by their sum. Default: the kernel file's.",
                     show_default=False),
    ] = None,
    scale: Annotated[Optional[float], typer.Option("--scale", help="Multiply the weights. Default: the kernel file's.")] = None,
    bias: Annotated[
        Optional[float], typer.Option("--bias", help="Add to every output value, in 0-255 units. Default: the kernel file's.")
    ] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Rotate kernels 180 degrees: true convolution.")] = False,
    repeat: Annotated[int, typer.Option("--repeat", help="Run each kernel N times.")] = 1,
    stride: Annotated[int, typer.Option("--stride", help="Keep every N-th output pixel of each convolution.")] = 1,
    range_: Annotated[
        Optional[str],
        typer.Option("--range", help="clip, abs or stretch, for every step. Default: each kernel file's, else clip.",
                     show_default=False),
    ] = None,
    run: RunOptions = None,
) -> None:
    """Convolve images with one or more kernels, in order (each a torch Conv2d).

    Example: convfilter apply photo.jpg -k sharpen   # writes photo_sharpen.jpg
    """
    from convfilter.steps import conv_steps

    steps = conv_steps(
        kernel, border=border, normalize=normalize, scale=scale, bias=bias, flip=flip,
        repeat=repeat, stride=stride, range=range_,
    )
    _run(steps, run)


@app.command()
@reports_errors
@with_run_options
def pool(
    size: Annotated[Optional[int], typer.Option("--size", help="Window size K (K x K). Default: 2.",
                                                show_default=False)] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Step between windows. Default: the size.",
                                                  show_default=False)] = None,
    mode: Annotated[str, typer.Option("--mode", help="avg, max, min or stochastic.")] = DEFAULT_POOL_MODE,
    ceil: Annotated[bool, typer.Option("--ceil", help="Keep partial windows at the right and bottom edges.")] = False,
    to: Annotated[Optional[str], typer.Option(
        "--to", help="Adaptive pooling to exactly WIDTHxHEIGHT (avg, max or min), e.g. 320x240.",
        show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seed of stochastic pooling: the same result on every run.", show_default=False)] = None,
    run: RunOptions = None,
) -> None:
    """Downsample images with a pooling layer (avg, max, min, stochastic, or adaptive with --to).

    Windows of K x K pixels, every --stride pixels; --to WxH pools to exactly that size instead.

    Example: convfilter pool photo.jpg --size 2 --mode max   # writes photo_pool2.jpg
    """
    from convfilter.steps import pool_step

    _run([pool_step(size=size, stride=stride, mode=mode, ceil=ceil, to=to, seed=seed)], run)


@app.command()
@reports_errors
@with_run_options
def upsample(
    factor: Annotated[int, typer.Option("--factor", help="Integer scale factor.")] = 2,
    mode: Annotated[str, typer.Option("--mode", help="nearest or bilinear.")] = "nearest",
    run: RunOptions = None,
) -> None:
    """Upsample images by an integer factor (a transposed convolution, nearest or bilinear).

    An nn.ConvTranspose2d with fixed weights and stride = factor: nearest repeats pixels (the
    inverse of pooling), bilinear interpolates.

    Example: convfilter upsample small.png --factor 2 --mode bilinear   # writes small_up2.png
    """
    from convfilter.steps import from_table

    _run([from_table({"upsample": mode, "factor": factor})], run)


@app.command("run")
@reports_errors
@with_run_options
def run_pipeline(
    pipeline: Annotated[str, typer.Argument(help=r"A pipeline file (TOML): \[\[step]] tables run in order.",
                                            show_default=False)],
    run: RunOptions = None,
) -> None:
    """Run a pipeline file: several steps in one pass (kernels, pooling, upsampling).

    Values stay float between steps; outputs are named after the file (photo_<pipeline>.jpg).

    Example: convfilter run samples/edges.toml photo.jpg
    """
    from convfilter import pipelines

    recipe = pipelines.load(pipeline)
    _run(recipe.steps, run, op=recipe.name, color=recipe.color)


@app.command()
@reports_errors
def export(
    pipeline: Annotated[str, typer.Argument(help="A pipeline file (TOML).", show_default=False)],
    output: Annotated[str, typer.Option("-o", "--output", help="The file to write (.pt2).", show_default=False)],
    color: Annotated[bool, typer.Option("--color", help="Export for 3-channel (RGB) input. Default: the "
                                        "pipeline file's 'color', else 1 channel.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: QUIET = False,
) -> None:
    """Export a pipeline file as a torch.export program for plain PyTorch.

    Load it with torch.export.load(path).module(), call it on an (N, C, H, W) float tensor in
    0-255 units, and round the result.

    Example: convfilter export samples/edges.toml -o edges.pt2
    """
    from convfilter import pipelines
    from convfilter.export import export_program
    from convfilter.outputs import check_single_output

    check_single_output("-o", output, [pipeline])
    recipe = pipelines.load(pipeline)
    export_program(recipe.steps, 3 if (color or recipe.color) else 1, output, overwrite, f"pipeline file {pipeline!r}")
    _wrote(output, quiet)

@app.command()
@reports_errors
def learn(
    before: Annotated[str, typer.Argument(help="The original image.", show_default=False)],
    after: Annotated[str, typer.Argument(help="The same image after the filter to recover.", show_default=False)],
    size: Annotated[int, typer.Option("--size", help="Kernel size K (K x K).")] = 3,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", help="Write the kernel here (TOML, usable with apply -k).", show_default=False)] = None,
    border: Annotated[str, typer.Option("--border", help="reflect, replicate, zeros or circular, as apply.")] = DEFAULT_BORDER,
    bias: Annotated[bool, typer.Option("--bias/--no-bias", help="Fit a bias (an offset) too.")] = True,
    steps: Annotated[int, typer.Option("--steps", help="L-BFGS steps (each up to 20 iterations).")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial weights (xavier normal).")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: QUIET = False,
) -> None:
    """Recover the kernel that turned BEFORE into AFTER (fitted by autograd).

    A K x K nn.Parameter fitted with L-BFGS; prints it with its error (RMSE in levels, PSNR) and
    writes it as a kernel file for apply -k.

    Example: convfilter learn photo.png edited.png --size 5 -o mine.toml
    """
    from pathlib import Path

    from convfilter import imageio
    from convfilter.files import atomic_write
    from convfilter.imageio import STDIO
    from convfilter.modes import BORDERS, check_choice
    from convfilter.outputs import check_single_output, refuse_existing
    from convfilter.steps import check_seed

    if STDIO in (before, after):
        raise UsageError("learn reads BEFORE and AFTER from files; '-' (standard input) is not taken")
    if "" in (before, after):
        raise UsageError(f"{'BEFORE' if before == '' else 'AFTER'} is empty; give an image file")
    check_choice("border", border, BORDERS)
    check_choice("device", device, DEVICES)
    check_seed("--seed", seed)
    if output is None:
        _require_standard_output("learn without -o")  # the kernel is only printed
    else:
        check_single_output("-o", output, [before, after])
        if Path(output).suffix.lower() != ".toml":  # kernels.resolve reads any other suffix as a plain matrix
            raise UsageError(f"-o {output!r}: learn writes a TOML kernel file; give it the suffix .toml")
    images = []
    for label, path in (("BEFORE", before), ("AFTER", after)):
        try:
            images.append(imageio.read_image(path))
        except ConvfilterError as error:
            raise type(error)(f"{label} {path!r}: {error}") from None
    if output is not None:
        refuse_existing(output, overwrite)  # before the fit, not after

    from convfilter import learn as learning  # imports torch
    from convfilter.reporting import Bar

    with Bar(steps, shown=not quiet) as bar:
        fitted = learning.fit(*images, size=size, border=border, bias=bias, steps=steps, seed=seed,
                              device=device, progress=lambda done, rmse: bar.update(done, f"RMSE {rmse:.3f}"))
    _print_matrix(f"learned {size}x{size} kernel", fitted.weights.tolist())
    print(f"bias {_number(fitted.bias)}; fit error: RMSE {fitted.rmse:.3f} levels, PSNR {fitted.psnr:.1f} dB "
          f"({fitted.steps} L-BFGS steps)")
    if output is not None:
        text = learning.kernel_toml(fitted, before, after, border)
        atomic_write(Path(output), lambda stream: stream.write(text.encode()), overwrite, "use --overwrite")
        _wrote(output, quiet)


# ---------------------------------------------------------------------------- kernels


def _number(value: float) -> str:
    return f"{value + 0.0:.6g}"  # + 0.0 turns -0.0 into 0.0


def _where(path) -> str:
    """'built-in' for the shipped library, else the file's path."""
    return "built-in" if path.parent == kernels.builtin_dir() else str(path)


@kernels_app.callback(invoke_without_command=True)
@reports_errors
def kernels_list(ctx: typer.Context) -> None:
    """List the named kernels on the search path: name, size, sum, description, file.

    Example: convfilter kernels
    """
    if ctx.invoked_subcommand is not None:
        return
    _require_standard_output("the list of kernels")
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("name", "size", "sum", "description", "file")
    for name, path in kernels.available().items():
        try:
            kernel = kernels.load_file(path)
            weights = kernel.weights()
        except ConvfilterError as error:
            table.add_row(escape(name), "", "", f"[red]{escape(str(error))}[/red]", escape(_where(path)))
            continue
        total = sum(v for row in weights for v in row)
        description = " ".join(kernel.description.split())  # one line a row; [brackets] are text
        table.add_row(escape(name), f"{kernel.width}x{kernel.height}", _number(total), escape(description),
                      escape(_where(path)))
    # To a terminal, the table fits its width; to a pipe or file, every row is one whole line (Rich
    # would take 80 columns and cut the file names short).
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)


@kernels_app.command("show")
@reports_errors
def kernels_show(
    spec: Annotated[str, typer.Argument(help="A kernel name, file or inline matrix.", show_default=False)],
) -> None:
    """Show a kernel as a heat map, with its size, sum, and whether it is separable and symmetric.

    The weights shown are the effective ones (after the file's scale and normalize).

    Example: convfilter kernels show sobel-x
    """
    _require_standard_output("kernels show")
    kernel = kernels.resolve(spec)
    weights = kernel.weights()
    total = sum(v for row in weights for v in row)
    print(f"{kernel.name}: {kernel.width}x{kernel.height}, sum {_number(total)}"
          + (f", bias {_number(kernel.bias)}" if kernel.bias else "")
          + (f", range {kernel.range}" if kernel.range else ""))
    shape = kernels.shape_of(weights)
    yes_no = {True: "yes", False: "no"}
    print(f"separable (rank 1): {yes_no[shape.separable]}; symmetric (equals its transpose): "
          f"{yes_no[shape.symmetric]}; unchanged by --flip: {yes_no[shape.flip_invariant]}")
    if kernel.description:
        print(kernel.description)
    if kernel.source:
        print(f"file: {kernel.source}")
    _print_matrix(None, weights)


def _print_matrix(title: Optional[str], rows) -> None:
    """A kernel as a heat map: negative weights blue, positive red, stronger for larger |w|."""
    from rich.console import Console
    from rich.table import Table

    largest = max((abs(v) for row in rows for v in row), default=0) or 1
    console = Console()
    needed = sum(max(len(_number(row[j])) for row in rows) + 2 for j in range(len(rows[0])))
    if needed > console.width:  # Rich would squeeze the columns: values cut to '…', or left out
        if console.is_terminal:
            print(f"({len(rows[0])} columns need {needed} characters, the terminal has {console.width}: "
                  "lines wrap; pipe to less -RS to scroll)")
        console = Console(width=needed, force_terminal=console.is_terminal)
    table = Table(title=title, show_header=False, box=None, padding=(0, 1))
    for _ in rows[0]:
        table.add_column(justify="right")
    for row in rows:
        cells = []
        for value in row:
            level = int(40 + 180 * abs(value) / largest)
            colour = f"rgb({level},30,30)" if value > 0 else f"rgb(30,30,{level})" if value < 0 else "rgb(40,40,40)"
            cells.append(f"[white on {colour}]{_number(value)}[/]")
        table.add_row(*cells)
    console.print(table)


@kernels_app.command("preview")
@reports_errors
def kernels_preview(
    image: Annotated[Optional[str], typer.Argument(
        help="The photo to filter. Default: a grayscale sample photo shipped with convfilter.",
        show_default=False)] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="The contact sheet to write (PNG, JPEG, ...).",
                                        show_default=False)] = "kernels.png",
    columns: Annotated[int, typer.Option("--columns", help="Tiles a row.")] = 4,
    size: Annotated[int, typer.Option("--size", help="Tile size in pixels.")] = 256,
    color: Annotated[bool, typer.Option("--color", help="Filter in colour.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: QUIET = False,
) -> None:
    """Write a contact sheet: the photo, then every named kernel applied to it, each tile labelled.

    Example: convfilter kernels preview -o sheet.png
    """
    from importlib import resources
    from pathlib import Path

    from convfilter import imageio, visuals
    from convfilter.outputs import check_single_output, refuse_existing

    if not 1 <= columns <= MAX_COLUMNS:
        raise UsageError(f"--columns must be 1 to {MAX_COLUMNS}, got {columns}")
    if not 16 <= size <= 2048:
        raise UsageError(f"--size must be 16 to 2048 pixels, got {size}")
    if image == imageio.STDIO:
        raise UsageError("kernels preview reads the photo from a file; '-' (standard input) is not taken")
    if image == "":
        raise UsageError("IMAGE is empty; give a photo file, or leave it out for the sample photo")
    source = image or str(resources.files("convfilter") / "data" / "camera.png")
    check_single_output("-o", output, [source])
    refuse_existing(output, overwrite)  # before the work, as export and learn do

    from convfilter.pipeline import Filter  # imports torch
    from convfilter.steps import from_table

    try:
        array = imageio.read_image(source, color=color)
    except ConvfilterError as error:
        raise type(error)(f"{source!r}: {error}") from None
    tiles, left_out = [("input", array)], 0
    for name in kernels.available():
        try:
            tiles.append((name, Filter([from_table({"kernel": name})], "cpu")(array)))
        except ConvfilterError as error:  # a broken user kernel, or an image too small for one
            _error(f"kernel {name!r} left out: {error}")
            left_out += 1
    imageio.write_picture(visuals.contact_sheet(tiles, columns, size), Path(output), overwrite)
    _wrote(output, quiet)
    if left_out:  # the sheet is written, without them: exit 1, as a batch where some inputs failed
        raise typer.Exit(1)


# The standard streams that were closed when convfilter started (`<&-`, `>&-`, `2>&-`): each is
# /dev/null instead, so that no file convfilter opens takes descriptor 0, 1 or 2 (prints would
# land in an output image), and a run that does not use the stream works; one that needs it
# is told that it is closed.
_closed_streams: set[str] = set()


def _stand_in_for_closed_streams() -> None:
    for descriptor, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is not None:
            continue
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one, if closed
        if null != descriptor:
            os.dup2(null, descriptor)
            os.close(null)
        setattr(sys, name, open(descriptor, "r" if descriptor == 0 else "w", closefd=False))
        _closed_streams.add(name)


def _require_standard_output(what: str) -> None:
    """A usage error when standard output was closed and `what` prints to it."""
    if "stdout" in _closed_streams:
        raise UsageError(f"standard output is closed; {what} prints to it")


_STANDARD_INPUT_NAMES = ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")


def _check_standard_input(arguments: list[str], from_list: str | None) -> None:
    """A usage error when the run would read standard input and it is closed."""
    named = any(argument in _STANDARD_INPUT_NAMES for argument in arguments) or from_list in _STANDARD_INPUT_NAMES
    if "stdin" in _closed_streams and (not arguments and from_list is None or named):
        raise UsageError("standard input is closed; give image files or directories")


def main() -> None:
    """The console script: run the app; Ctrl-C exits 130 with one line."""
    from convfilter import allocator

    _stand_in_for_closed_streams()

    allocator.keep_freed_memory()  # the process is the CLI's own: memory a worker frees is kept for its next image
    # Pillow warns (several lines each) about damaged files that it still reads or that fail
    # anyway with one clear error line from convfilter: not for a user's terminal.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    logging.getLogger("PIL").setLevel(logging.CRITICAL)  # its log lines on damaged files, likewise
    try:
        app(prog_name="convfilter")
        code = 0
    except SystemExit as done:
        code = done.code
    except KeyboardInterrupt:
        sys.stderr.write("convfilter: interrupted\n")
        code = 130
    except OSError as error:  # help or --version that cannot be written (> /dev/full, 1</dev/null)
        from convfilter.files import is_standard_output_error, standard_output_failed

        _error(standard_output_failed(error) if is_standard_output_error(error) else internal_error(error))
        code = 1
    _exit(code)


def _exit(code: int | str | None) -> NoReturn:
    """Exit with `code`. Once torch is loaded, skip the interpreter's teardown: freeing torch's
    modules takes about 0.4 s here, a tenth of a 200-photo batch. By now every output is written
    and closed (atomically) and every worker joined; only the standard streams need flushing."""
    try:
        sys.stdout.flush()  # what a report left in the buffer: a full disk shows only now
    except BrokenPipeError:  # the reader has gone: quiet, as for a tool stopped by SIGPIPE
        from convfilter.files import discard_standard_output

        discard_standard_output()
    except OSError as error:
        from convfilter.files import standard_output_failed

        _error(standard_output_failed(error))
        code = code or 1
    except (AttributeError, ValueError):  # not a real stream (tests), or closed
        pass
    # A second Ctrl-C stops without waiting for the writers: none of their temporary files stays.
    # (Only where something was written: --help does not pay for importing files.)
    if "convfilter.files" in sys.modules:
        sys.modules["convfilter.files"].remove_temporaries()
    if "torch" not in sys.modules or not isinstance(code, int):
        sys.exit(code)
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)
