"""INPUT arguments to a list of image sources (CONTRACT §6): files, directories, globs, lists, `-`.

Pure file-system walking, no image is opened here. Directory walks take the image suffixes
below, skip hidden files and folders, follow symbolic links to folders but never into a loop,
and come out sorted, so the list (and every --shard slice of it) is the same on every run.
A glob is walked the same way from its fixed part and takes the files it matches, whatever
their suffix; folders it matches are not inputs of their own.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Hashable, Iterable, Iterator

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


def _folders(
    top: str, start: Hashable, step: Callable[[Hashable, str], Hashable | None]
) -> Iterator[tuple[str, Hashable, list[str]]]:
    """(folder, its state, its file names) for `top` and the folders below it that
    `step(parent's state, name)` enters (None: not), following symbolic links to folders. A link
    back up to a folder above is never entered (no loop), and a folder reached two ways in the
    same state is listed once."""
    pending, visited = {top: (start, frozenset())}, set()
    for root, dirs, files in os.walk(top, followlinks=True):
        state, above = pending.pop(root)
        try:
            stat = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        folder = (stat.st_dev, stat.st_ino)
        if folder in above or (folder, state) in visited:
            dirs[:] = []
            continue
        visited.add((folder, state))
        entered = []
        for name in sorted(dirs):
            below = step(state, name)
            if below is not None:
                pending[os.path.join(root, name)] = (below, above | {folder})
                entered.append(name)
        dirs[:] = entered
        yield root, state, files


def _by_relative_path(paths: list[str], top: str) -> list[Source]:
    """Sources found below `top`, sorted by their path below it (the order of every run and shard)."""
    paths = sorted(paths, key=lambda path: Path(os.path.relpath(path, top)).parts)
    return [Source(path, base=top) for path in paths]


def walk(directory: str, recursive: bool) -> list[Source]:
    """The image files in `directory` (and below, if `recursive`), sorted by relative path."""
    found = [
        os.path.join(root, name)
        for root, _, files in _folders(directory, 0, lambda _, name: 0 if recursive and name[0] != "." else None)
        for name in files
        if is_image_name(name)
    ]
    return _by_relative_path(found, directory)


def _split_glob(pattern: str, folders: bool = False) -> tuple[str, tuple[str, ...]]:
    """The fixed folder before the first wildcard, and the parts after it
    ('photos/**/*.jpg' -> 'photos', ('**', '*.jpg')). A trailing '**' means every file below
    (with `folders`, every folder)."""
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) - 1 and not _GLOB_CHARS & set(parts[fixed]):
        fixed += 1
    rest = parts[fixed:] + (("*",) if parts[-1] == "**" and not folders else ())
    written = pattern.split(os.sep)  # as written: Path drops a '.' inside ('d/*/./s.png')
    wild = next((i for i, part in enumerate(written) if _GLOB_CHARS & set(part)), len(written))
    if {".", ".."} & set(written[wild + 1:]):  # no folder entry is named so: the walk could never match them
        raise UsageError(f"glob {pattern!r}: '.' and '..' only before its first wildcard; let the shell expand it")
    return (str(Path(*parts[:fixed])) if fixed else "."), rest


def _with_empty_stars(parts: tuple[str, ...], positions: Iterable[int]) -> frozenset[int]:
    """`positions` and those past any '**' there ('**' may match no folder at all)."""
    positions = set(positions)
    for index, part in enumerate(parts):
        if index in positions and part == "**":
            positions.add(index + 1)
    return frozenset(positions)


def _after(parts: tuple[str, ...], positions: frozenset[int], name: str) -> frozenset[int]:
    """Glob matching as a set of positions in `parts` (how many parts the path so far matched):
    those reached by one more path component `name`. '**' matches it and stays. A hidden name
    matches only a part that starts with '.' too, as in the shell."""
    reached = (
        index + (parts[index] != "**")
        for index in positions
        if index < len(parts) and fnmatch.fnmatch(name, parts[index])
        and (name[0] != "." or parts[index][0] == ".")
    )
    return _with_empty_stars(parts, reached)


def _glob_walk(base: str, parts: tuple[str, ...]) -> Iterator[tuple[str, frozenset[int], list[str]]]:
    """The folders below `base` that can lead to a match of `parts`, each with its positions
    (len(parts) among them: the folder itself matches), and its file names."""

    def enter(positions: frozenset[int], name: str) -> frozenset[int] | None:
        return _after(parts, positions, name) or None  # None: nothing below it can match

    return _folders(base, _with_empty_stars(parts, {0}), enter)


def _glob(pattern: str) -> list[Source]:
    """The files that `pattern` matches, found by walking its fixed part like a directory
    (entering only folders that can lead to a match), sorted by path below it; their outputs
    mirror that path. Folders the pattern matches are not inputs of their own."""
    base, parts = _split_glob(pattern)
    found = [
        os.path.join(root, name)
        for root, positions, files in _glob_walk(base, parts)
        for name in files
        if len(parts) in _after(parts, positions, name)
    ]
    return _glob_sources(found, base)


def _glob_folders(pattern: str, recursive: bool) -> list[Source]:
    """A pattern that ends in '/' matches folders: their images, as directory arguments (-r for
    their subfolders), mirrored below the pattern's fixed part."""
    base, parts = _split_glob(pattern, folders=True)
    matched = [root for root, positions, _ in _glob_walk(base, parts) if len(parts) in positions]
    return _glob_sources({source.path for folder in matched for source in walk(folder, recursive)}, base)


def _glob_sources(paths: Iterable[str], base: str) -> list[Source]:
    """A glob's finds, sorted below its fixed part; 'a.png', not './a.png', for a glob with none."""
    return _by_relative_path([os.path.normpath(path) if base == "." else path for path in paths], base)


def _expand_one(argument: str, recursive: bool, literal: bool) -> tuple[list[Source], bool]:
    """One argument -> its sources, and whether it was a directory or glob (a batch input)."""
    if literal and argument == STDIO:  # a file named '-' in a list, not standard input
        argument = os.path.join(os.curdir, argument)
    if os.path.isdir(argument):
        return walk(argument, recursive), True
    if not literal and _GLOB_CHARS & set(argument) and not os.path.lexists(argument):
        found = _glob_folders(argument, recursive) if argument.endswith(("/", os.sep)) else _glob(argument)
        return found or [Source(argument)], True  # no match: a per-file "no such file"
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
    if "" in arguments:  # an unset variable ("$f"): it would name the current folder's path
        raise UsageError("an input is an empty name ''; give an image file, a folder, a glob or -")
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
