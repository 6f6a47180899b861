"""Where each input's result goes (CONTRACT §6): pure planning, nothing is read or written here.

One input: a file, a directory, or `-`. A batch (several inputs, or any directory, glob or list):
a directory that mirrors the tree below each directory argument. Without -o: beside the input
(`<stem>_<op>.<suffix>`), or a sibling directory `<dir>_<op>` for a directory argument.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from convfilter.errors import UsageError
from convfilter.files import exists_error
from convfilter.imageio import STDIO, format_for
from convfilter.inputs import Source

STDIN_NAME = "stdin.png"  # the input name of standard input, where an output name needs one


@dataclass(frozen=True)
class Job:
    """One input and its output: a path, `-` for standard output, or None (only --show)."""

    source: str
    target: str | None
    format: str = "PNG"  # the Pillow format the target is written in

    @property
    def label(self) -> str:
        return "standard input" if self.source == STDIO else repr(self.source)


def shown(path: str) -> str:
    """A path for a line of text: as it is, or quoted like the error lines when it holds a
    newline or another character that is not printable (or bytes that are not UTF-8)."""
    return path if path.isprintable() else repr(path)


def _writable_suffix(path: str) -> str:
    """The input's own suffix if Pillow can write it, else `.png`."""
    suffix = Path(path).suffix
    try:
        format_for(suffix)
    except UsageError:
        return ".png"
    return suffix


def _renamed(relative: str, suffix: str | None) -> str:
    """A relative output path: the input's, with --format's suffix or a writable one."""
    return str(Path(relative).with_suffix(suffix or _writable_suffix(relative)))


def default_target(source: str, op: str, suffix: str | None) -> str:
    """`<stem>_<op>.<suffix>` beside the input; the suffix is the input's unless --format gives one."""
    path = Path(source)
    return str(path.with_name(f"{path.stem}_{op}{suffix or _writable_suffix(source)}"))


def sibling_dir(directory: str, op: str) -> str:
    """`<dir>_<op>` beside a directory argument (`photos/` -> `photos_sharpen`)."""
    path = Path(directory)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    if not path.name:  # the root folder has no name to add to, nor a folder beside it
        raise UsageError(f"{directory!r} has no folder beside it to write into; give -o")
    return str(path.with_name(f"{path.name}_{op}"))


# Names of a process's open descriptors: a stream even when the shell opened a file for one
# (`/dev/stdin < photo.png`), with no folder beside it to write into.
_DESCRIPTOR_NAME = re.compile(r"/dev/(stdin|fd/\d+)|/proc/(self|thread-self|\d+)(/task/\d+)?/fd/\d+")


def is_descriptor_name(path: str) -> bool:
    """Whether `path`, or a symbolic link on the way from it, names an open descriptor."""
    for _ in range(40):  # the kernel's own limit on links followed
        if _DESCRIPTOR_NAME.fullmatch(re.sub(r"^/+", "/", os.path.abspath(path))):
            return True
        try:
            target = os.readlink(path)
        except (OSError, ValueError):  # not a link (or missing): the end of the chain
            return False
        path = os.path.join(os.path.dirname(path), target)
    return False


def _is_stream(path: str) -> bool:
    """A pipe (<(...), a FIFO, a socket), a device, or a descriptor's name (/dev/stdin, /dev/fd/3)."""
    if is_descriptor_name(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing: fails on its own, when it is read
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def _target(source: Source, output: str | None, op: str, suffix: str | None, show: bool, batch: bool) -> str | None:
    if output is None:
        if show:
            return None
        if source.path == STDIO:
            return STDIO
        if _is_stream(source.path):  # <(...), /dev/stdin: read like standard input, written likewise
            if batch:
                raise UsageError(f"{source.path!r} is a stream, with no folder beside it for its output; give -o")
            return STDIO
        if source.base is not None:
            return str(Path(sibling_dir(source.base, op)) / _renamed(source.relative, suffix))
        return default_target(source.path, op, suffix)
    if output == STDIO:
        return STDIO
    if batch or output.endswith("/") or Path(output).is_dir():
        relative = STDIN_NAME if source.path == STDIO else source.relative
        return str(Path(output) / _renamed(relative, suffix))
    return output


def _check_targets(jobs: list[Job]) -> None:
    """No two inputs write one output; no output is an input (convfilter never overwrites inputs).
    Paths are compared with their folders resolved: through a folder linked back into the tree
    (d/sub/loop -> d) one file has two names, and its two outputs one."""
    folders = functools.lru_cache(maxsize=None)(os.path.realpath)

    def where(path: str) -> str:
        return os.path.join(folders(os.path.dirname(os.path.abspath(path))), os.path.basename(path))

    by_target: dict[str, list[str]] = defaultdict(list)
    inputs = {where(job.source): job.source for job in jobs if job.source != STDIO}
    for job in jobs:
        if job.target in (None, STDIO):
            continue
        key = where(job.target)
        if key in inputs:
            raise UsageError(
                f"output {job.target!r} is the input {inputs[key]!r}; convfilter never overwrites an input"
            )
        by_target[key].append(job.source)
    clashes = [(target, sources) for target, sources in by_target.items() if len(sources) > 1]
    if clashes:
        listed = "; ".join(
            f"{os.path.relpath(target)} <- {', '.join(map(repr, sources))}" for target, sources in clashes[:5]
        )
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise UsageError(f"several inputs would write the same output: {listed}{more}")


def plan(
    sources: list[Source],
    output: str | None,
    op: str,
    fmt: str | None = None,
    show: bool = False,
    batch: bool = False,
    overwrite: bool = False,
) -> list[Job]:
    """The jobs for `sources`, output names by CONTRACT §6, formats and collisions checked up front.
    `overwrite` as --overwrite: an output of this run that a walk also found as an input is then
    refused, instead of left out as an earlier run's output."""
    batch = batch or len(sources) > 1
    if not sources:
        raise UsageError("no input images: give image files or directories, or pipe one on standard input")
    if batch and output == STDIO:
        raise UsageError(f"-o - writes one image to standard output; {len(sources)} inputs were given")
    if batch and output is not None and Path(output).is_file():
        raise UsageError(f"-o {output!r} is a file; several inputs need a directory")
    suffix = "." + fmt.lower().lstrip(".") if fmt else None
    jobs = []
    for source in sources:
        target = _target(source, output, op, suffix, show, batch)
        written_as = fmt or (Path(target).suffix if target not in (None, STDIO) else "png")
        if not written_as:
            raise UsageError(f"cannot tell the format of output {target!r}; give it a suffix or use --format")
        if fmt and target == output:
            _check_suffix_is(fmt, output)
        jobs.append(Job(source=source.path, target=target, format=format_for(written_as)))
    if batch and output not in (None, STDIO):
        jobs = _without_earlier_outputs(jobs, sources, output, overwrite)
        if not jobs:
            raise UsageError(f"no input images: every file found is an output of this run in {output!r}")
    _check_targets(jobs)
    return jobs


def _check_suffix_is(fmt: str, output: str) -> None:
    """-o FILE with --format: a suffix of another image format would hold data it does not name
    (-o out.png --format jpg). A suffix that names no image format (out.dat) is the user's choice."""
    try:
        named = format_for(Path(output).suffix) if Path(output).suffix else None
    except UsageError:
        return
    if named is not None and named != format_for(fmt):
        raise UsageError(f"-o {output!r} names a {named} file but --format is {fmt!r}; give -o a matching suffix, "
                         "or leave out --format")


def _without_earlier_outputs(jobs: list[Job], sources: list[Source], output: str, overwrite: bool) -> list[Job]:
    """The jobs less those whose input, found by a folder walk or glob inside the -o folder, is
    the output another input of this plan writes: an -o folder inside the input folder holds an
    earlier run's outputs (photos -r -o photos/out), so a rerun with --skip-existing resumes.
    Compared as files (device, inode); the -o folder by its real path, so one reached through a
    symbolic link counts too. Nothing tells such a file from a photo of the user's own there, so
    with --overwrite, which would replace it, it is a usage error. Files named one by one and files
    outside the -o folder stay."""
    written = {}
    for job in jobs:
        if job.target not in (None, STDIO):
            try:
                info = os.stat(job.target)
            except (OSError, ValueError):  # not written yet: the first run
                continue
            if not same_file(job.source, job.target):  # its own output: refused by _check_targets
                written.setdefault((info.st_dev, info.st_ino), job)
    if not written:
        return jobs
    folder = os.path.join(os.path.realpath(output), "")
    kept = []
    for job, source in zip(jobs, sources):
        if source.base is not None and os.path.realpath(job.source).startswith(folder):
            with contextlib.suppress(OSError, ValueError):
                info = os.stat(job.source)
                writer = written.get((info.st_dev, info.st_ino), job)
                if writer is not job:
                    if overwrite:
                        raise UsageError(
                            f"output {writer.target!r} of {writer.source!r} is also an input, found in {source.base!r}; "
                            "convfilter never overwrites an input: without --overwrite it is left out as an earlier "
                            "output (--skip-existing resumes), or write outside the input folder"
                        )
                    continue
        kept.append(job)
    return kept


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The index-th of `count` deterministic slices, 1-based: every count-th job of the plan
    sorted by input path, so that tasks given the same inputs in another order (arguments,
    `--from` lists) still split them alike. Kept in plan order."""
    ranked = sorted(range(len(jobs)), key=lambda i: jobs[i].source)
    chosen = set(ranked[index - 1 :: count])
    return [job for i, job in enumerate(jobs) if i in chosen]


def check_single_output(option: str, output: str, inputs: list[str], planned: list[str] = ()) -> None:
    """An option that writes one file of its own (export -o, learn -o, kernels preview -o,
    --compare) takes a file name: not '-' nor a folder, never one of the command's `inputs` (not
    even with --overwrite), nor a file the command writes besides (`planned`)."""
    if not output or output == STDIO or output.endswith(("/", os.sep)) or os.path.isdir(output):
        raise UsageError(f"{option} takes a file name, got {output!r}")
    for path in inputs:
        if path != STDIO and same_file(path, output):
            raise UsageError(f"{option} {output!r} is the input {path!r}; convfilter never overwrites an input")
    if any(path not in (None, STDIO) and same_file(path, output) for path in planned):
        raise UsageError(f"{option} {output!r} is also the output of the filter")


def refuse_existing(output: str, overwrite: bool) -> None:
    """The file a command writes of its own (export -o, learn -o, kernels preview -o) is refused
    before the work when it exists, unless `overwrite`: not after seconds of it."""
    if os.path.lexists(output) and not overwrite:
        raise exists_error(output, "use --overwrite")


def same_file(a: str, b: str) -> bool:
    """The same path, or two names of one existing file (a link)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (yet)
        return False
