"""Where each input's result goes (CONTRACT §6): pure planning, nothing is read or written here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convfilter.errors import UsageError
from convfilter.imageio import STDIO, format_for

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


def _with_suffix(name: str, suffix: str | None) -> str:
    return str(Path(name).with_suffix(suffix)) if suffix else name


def _writable_suffix(path: str) -> str:
    """The input's own suffix if Pillow can write it, else `.png`."""
    suffix = Path(path).suffix
    try:
        format_for(suffix)
    except UsageError:
        return ".png"
    return suffix


def default_target(source: str, op: str, suffix: str | None) -> str:
    """`<stem>_<op>.<suffix>` beside the input; the suffix is the input's unless --format gives one."""
    path = Path(source)
    return str(path.with_name(f"{path.stem}_{op}{suffix or _writable_suffix(source)}"))


def _target(source: str, output: str | None, op: str, suffix: str | None, show: bool, many: bool) -> str | None:
    if output is None:
        if show:
            return None
        return STDIO if source == STDIO else default_target(source, op, suffix)
    if output == STDIO:
        return STDIO
    if many or output.endswith("/") or Path(output).is_dir():
        name = Path(STDIN_NAME if source == STDIO else source).name
        return str(Path(output) / _with_suffix(name, suffix))
    return output


def plan(
    inputs: list[str], output: str | None, op: str, fmt: str | None = None, show: bool = False
) -> list[Job]:
    """The jobs for `inputs`: output names by CONTRACT §6, formats checked, no two jobs sharing a target."""
    if not inputs:
        raise UsageError("no input: give an image file, or pipe one on standard input")
    if STDIO in inputs and len(inputs) > 1:
        raise UsageError("'-' (standard input) must be the only input")
    many = len(inputs) > 1
    if many and output == STDIO:
        raise UsageError(f"-o - writes one image to standard output; {len(inputs)} inputs were given")
    suffix = "." + fmt.lower().lstrip(".") if fmt else None
    jobs, seen = [], {}
    for source in inputs:
        target = _target(source, output, op, suffix, show, many)
        if target not in (None, STDIO):
            key = str(Path(target).resolve())
            if key in seen:
                raise UsageError(f"inputs {seen[key]!r} and {source!r} would both write {target!r}")
            seen[key] = source
        written_as = fmt or (Path(target).suffix if target not in (None, STDIO) else "png")
        if not written_as:
            raise UsageError(f"cannot tell the format of output {target!r}; give it a suffix or use --format")
        jobs.append(Job(source=source, target=target, format=format_for(written_as)))
    return jobs
