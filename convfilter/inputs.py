"""INPUT arguments to a list of image sources (CONTRACT §6): files, directories, globs, lists, `-`.

Pure file-system walking, no image is opened here. Directory walks take the image suffixes
below, skip hidden files and folders, follow symbolic links to folders but never into a loop,
and come out sorted, so the list (and every --shard slice of it) is the same on every run.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from convfilter.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
STDIO = "-"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Source:
    """One input image. `base` is the directory argument it was found under: its output
    mirrors the path below `base`. None for a file argument (its output takes its name)."""

    path: str
    base: str | None = None

    @property
    def relative(self) -> str:
        return os.path.relpath(self.path, self.base) if self.base is not None else Path(self.path).name


@dataclass(frozen=True)
class Expansion:
    sources: list[Source]
    batch: bool  # outputs go to a directory: several inputs, or any directory, glob or list


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def walk(directory: str, recursive: bool) -> list[Source]:
    """The image files in `directory` (and below, if `recursive`), sorted by relative path."""
    found, visited = [], set()
    for root, dirs, files in os.walk(directory, followlinks=True):
        try:
            stat = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in visited:  # a symbolic link back into the walk
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(os.path.join(root, name) for name in files if is_image_name(name))
    found.sort(key=lambda path: Path(os.path.relpath(path, directory)).parts)
    return [Source(path, base=directory) for path in found]


def _glob_base(pattern: str) -> str:
    """The directory part of a pattern before its first wildcard ('photos/**/*.jpg' -> 'photos')."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "."


def _expand_one(argument: str, recursive: bool, literal: bool) -> tuple[list[Source], bool]:
    """One argument -> its sources, and whether it was a directory or glob (a batch input)."""
    if os.path.isdir(argument):
        return walk(argument, recursive), True
    if not literal and _GLOB_CHARS & set(argument) and not os.path.lexists(argument):
        base = _glob_base(argument)
        sources = []
        for match in sorted(glob.glob(argument, recursive=True)):
            if os.path.isdir(match):
                sources.extend(walk(match, recursive))
            elif not Path(match).name.startswith("."):
                sources.append(Source(match, base=base))
        return sources or [Source(argument)], True  # no match: a per-file "no such file"
    return [Source(argument)], False


def read_list(stream: BinaryIO, null: bool) -> list[str]:
    """Paths from a list: one a line, or NUL-separated with `null` (find -print0)."""
    data = stream.read()
    items = data.split(b"\0") if null else data.splitlines()
    return [os.fsdecode(item) for item in items if item.strip()]


def expand(arguments: Iterable[str], recursive: bool = False, listed: Iterable[str] = ()) -> Expansion:
    """Every argument in order (then the `--from` entries, taken literally), duplicates dropped."""
    arguments, listed = list(arguments), list(listed)
    if STDIO in arguments:
        if len(arguments) > 1 or listed:
            raise UsageError("'-' (standard input) must be the only input")
        return Expansion([Source(STDIO)], batch=False)
    sources, batch, seen = [], bool(listed), set()
    for argument, literal in [(a, False) for a in arguments] + [(a, True) for a in listed]:
        found, grouped = _expand_one(argument, recursive, literal)
        batch = batch or grouped
        for source in found:
            key = os.path.normpath(os.path.abspath(source.path))
            if key not in seen:
                seen.add(key)
                sources.append(source)
    return Expansion(sources, batch=batch or len(sources) > 1)


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' with 1 <= K <= N."""
    k, slash, n = text.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index = count = 0
    if not slash or not 1 <= index <= count:
        raise UsageError(f"--shard must be K/N with 1 <= K <= N, like 2/8; got {text!r}")
    return index, count
