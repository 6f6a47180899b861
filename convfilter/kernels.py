"""Kernel specs to `Kernel` values: TOML files, plain matrix files, inline matrices, the search path.

No torch here: `convfilter kernels` and `kernels show` run on this module alone (CONTRACT §3).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from convfilter.errors import KernelError, KernelNotFoundError
from convfilter.modes import RANGES

MAX_SIZE = 63
PATH_VARIABLE = "CONVFILTER_KERNEL_PATH"
KERNEL_SUFFIXES = (".toml", ".txt")  # what a name matches in a search directory, in this order
TOML_KEYS = ("weights", "description", "scale", "bias", "normalize", "range")
INLINE_NAME = "custom"
FLOAT32_MAX = 3.4028234663852886e38  # the pipeline runs in float32: every value must fit in it

Matrix = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Kernel:
    """A named kernel as its file gives it; `weights()` folds in normalize and scale."""

    name: str
    raw_weights: Matrix
    origin: str  # "kernel file 'k.toml'" or "inline kernel '...'": the start of every message about it
    source: str = ""  # the file it came from, "" for an inline matrix
    description: str = ""
    scale: float = 1.0
    bias: float = 0.0
    normalize: bool = False
    range: str | None = None

    @property
    def height(self) -> int:
        return len(self.raw_weights)

    @property
    def width(self) -> int:
        return len(self.raw_weights[0])

    def weights(self, flip: bool = False) -> Matrix:
        """The effective cross-correlation weights: divided by their sum if `normalize`, times
        `scale`, and rotated 180 degrees if `flip` (true convolution)."""
        factor, how = self.scale, [f"scale {self.scale:g}"] if self.scale != 1 else []
        if self.normalize:
            total = math.fsum(v for row in self.raw_weights for v in row)
            if abs(total) <= 1e-12 * math.fsum(abs(v) for row in self.raw_weights for v in row):  # 0, or rounding's
                why = "" if total == 0 else f" ({total:g}, within the rounding of weights this large)"
                raise KernelError(f"{self.origin}: cannot normalize: the weights sum to 0{why}")
            factor /= total
            how.insert(0, f"normalize (the weights sum to {total:g})")
        weights = tuple(tuple(v * factor for v in row) for row in self.raw_weights)
        for i, row in enumerate(weights):
            for j, value in enumerate(row):
                if not abs(value) <= FLOAT32_MAX:
                    raise KernelError(
                        f"{self.origin}: the weight in row {i + 1}, column {j + 1} becomes {value:g} after "
                        f"{' and '.join(how)}, {_OUT_OF_RANGE}"
                    )
        rows = weights[::-1] if flip else weights
        return tuple(row[::-1] if flip else row for row in rows)

    def with_options(self, *, normalize=None, scale=None, bias=None, range=None) -> Kernel:
        """A copy with the command-line settings (those not None) replacing the file's."""
        given = {"normalize": normalize, "scale": scale, "bias": bias, "range": range}
        return replace(self, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class Shape:
    separable: bool  # rank 1: an outer product of a column and a row
    symmetric: bool  # equal to its transpose
    flip_invariant: bool  # equal to its 180-degree rotation: --flip changes nothing


def shape_of(weights: Matrix) -> Shape:
    import numpy as np  # only here: listing kernels does not need it

    k = np.array(weights, dtype=np.float64)
    singular = np.linalg.svd(k, compute_uv=False)
    tolerance = 1e-9 * max(float(np.abs(k).max()), 1e-300)
    return Shape(
        separable=bool(len(singular) < 2 or singular[1] <= 1e-9 * singular[0]),
        symmetric=k.shape[0] == k.shape[1] and bool(np.allclose(k, k.T, rtol=0, atol=tolerance)),
        flip_invariant=bool(np.allclose(k, k[::-1, ::-1], rtol=0, atol=tolerance)),
    )


# ---------------------------------------------------------------------------- numbers and matrices


_OUT_OF_RANGE = f"out of float32's range (magnitudes up to {FLOAT32_MAX:.8g})"
MINUS_SIGN = "\u2212"  # the typeset minus (as in "−1/9"), read as '-'


def parse_number(text: object, where: str) -> float:
    """A float from a number or a string like '0.5', '-1/9', '2e-3': finite, and within float32's
    range, which the pipeline computes in."""
    if isinstance(text, bool):
        raise KernelError(f"{where}: expected a number, got {str(text).lower()}")
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:  # an integer of hundreds of digits (TOML has no limit)
            raise KernelError(f"{where}: {_digits_out_of_range(str(text))}") from None
    elif isinstance(text, str):
        numerator, slash, denominator = text.strip().replace(MINUS_SIGN, "-").partition("/")
        try:
            value = float(numerator) / float(denominator) if slash else float(numerator)
        except ValueError:
            raise KernelError(f"{where}: {text!r} is not a number") from None
        except ZeroDivisionError:
            raise KernelError(f"{where}: {text!r} divides by zero") from None
    else:
        raise KernelError(f"{where}: expected a number, got {type(text).__name__} {text!r}")
    if not math.isfinite(value):
        raise KernelError(f"{where}: value {text!r} is not finite")
    if abs(value) > FLOAT32_MAX:
        raise KernelError(f"{where}: value {text!r} is {_OUT_OF_RANGE}")
    return value


def _matrix(rows: list[list[object]], row_where: list[str], origin: str) -> Matrix:
    """Check a list of rows (size, rectangular, finite numbers) and return it as floats."""
    if not rows:
        raise KernelError(f"{origin}: no weights (it is empty or holds only comments)")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if not row:
            raise KernelError(f"{row_where[i]}: empty row")
        if "" in row:
            raise KernelError(f"{row_where[i]}: empty value at position {row.index('') + 1}")
        if len(row) != width:
            raise KernelError(
                f"{row_where[i]}: expected {width} values like the first row, got {len(row)}"
            )
        if len(row) > MAX_SIZE:
            raise KernelError(f"{row_where[i]}: {len(row)} values in a row; the most allowed is {MAX_SIZE}")
        if i == MAX_SIZE:
            raise KernelError(f"{row_where[i]}: more than {MAX_SIZE} rows; the most allowed is {MAX_SIZE}")
    return tuple(tuple(parse_number(v, row_where[i]) for v in row) for i, row in enumerate(rows))


def _split_values(text: str) -> list[str]:
    """A row's values, split by commas and/or whitespace. One trailing comma is allowed (as in
    '1, 2, 3,'); any other comma with no value before it gives '' (an empty value, refused)."""
    text = text.strip()
    if text.endswith(","):
        text = text[:-1].rstrip()
    return [value for piece in text.split(",") for value in (piece.split() or [""])] if text else []


def parse_plain(text: str, origin: str) -> Kernel:
    """A plain matrix file: one row a line, values split by spaces/commas/tabs, `#` comments."""
    rows, where = [], []
    for lineno, line in enumerate(_lines(text), 1):
        values = _split_values(line.split("#", 1)[0])
        if values:
            rows.append(values)
            where.append(f"{origin}, line {lineno}")
    return Kernel(name=INLINE_NAME, raw_weights=_matrix(rows, where, origin), origin=origin)


def _lines(text: str) -> list[str]:
    """The lines of a text, split at line ends only (\\n, \\r\\n, \\r): `splitlines` also splits
    at a form feed or U+2028, which made line numbers wrong and ended comments early."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_inline(spec: str) -> Kernel:
    """An inline matrix: rows split by ';', values by ',' or spaces, e.g. '0,-1,0; -1,5,-1; 0,-1,0'.
    Without any ';', by line ends (`-k "$(cat k.txt)"`, blank lines skipped): they were spaces,
    and three lines made one row of nine. With ';', line ends stay spaces (a row may wrap)."""
    origin = f"inline kernel {spec!r}"
    if ";" not in spec:
        spec = ";".join(line for line in _lines(spec) if line.strip())
    parts = spec.strip().strip(";").split(";")
    rows = [_split_values(part) for part in parts]
    where = [f"{origin}, row {i}" for i in range(1, len(rows) + 1)]
    if rows == [[]]:
        rows = []
    return Kernel(name=INLINE_NAME, raw_weights=_matrix(rows, where, origin), origin=origin)


# ---------------------------------------------------------------------------- TOML files

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


def _key_line(text: str, key: str) -> int | None:
    """The line of `key = ...`, or of a table `[key]` / `[[key]]`."""
    name = re.escape(key)
    match = re.search(rf"^[ \t]*(?:{name}[ \t]*=|\[\[?[ \t]*{name}[ \t]*\]\]?)", text, re.M)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _row_lines(text: str) -> list[int]:
    """The line on which each row of the `weights` array opens (for messages)."""
    match = re.search(r"^[ \t]*weights[ \t]*=", text, re.M)
    if not match:
        return []
    lines, depth, comment = [], 0, False
    line = text.count("\n", 0, match.end()) + 1
    for ch in text[match.end():]:
        if ch == "\n":
            line, comment = line + 1, False
        elif comment:
            continue
        elif ch == "#":
            comment = True
        elif ch == "[":
            depth += 1
            if depth == 2:
                lines.append(line)
        elif ch == "]":
            depth -= 1
            if depth <= 0:
                break
    return lines


def too_many_digits(text: str, origin: str) -> str | None:
    """For a TOML text that tomllib refused with a plain ValueError (an integer of more digits than
    Python converts, 4300): the message naming its line, as for any integer out of float32's
    range; None if there is no such integer."""
    match = re.search(r"[+-]?[0-9][0-9_]{4000,}", text)
    if match is None:
        return None
    line = text.count("\n", 0, match.start()) + 1
    return f"{origin}, line {line}: {_digits_out_of_range(match[0].replace('_', ''))}"


def _digits_out_of_range(digits: str) -> str:
    """An integer too long to show: its first digits and how many there are."""
    return f"value {digits[:12]}... ({len(digits.lstrip('+-'))} digits) is {_OUT_OF_RANGE}"


def parse_toml(text: str, origin: str) -> Kernel:
    """A kernel TOML file: `weights` (required), `description`, `scale`, `bias`, `normalize`, `range`."""
    try:
        data = tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an integer past Python's 4300 digits
        if not isinstance(error, tomllib.TOMLDecodeError) and (long := too_many_digits(text, origin)):
            raise KernelError(long) from None
        message = str(error)
        position = _TOML_POSITION.search(message)
        if position:
            message = _TOML_POSITION.sub("", message)
            raise KernelError(f"{origin}, line {position[1]}: invalid TOML: {message} (column {position[2]})") from None
        raise KernelError(f"{origin}: invalid TOML: {message}") from None

    def at(key: str) -> str:
        line = _key_line(text, key)
        return f"{origin}, line {line}" if line else origin

    for key in data:
        if key not in TOML_KEYS:
            raise KernelError(f"{at(key)}: unknown key {key!r}; allowed keys: {', '.join(TOML_KEYS)}")
    if "weights" not in data:
        raise KernelError(f"{origin}: missing the required key 'weights' (a list of rows)")
    weights = data["weights"]
    if not isinstance(weights, list) or not all(isinstance(row, list) for row in weights):
        raise KernelError(f"{at('weights')}: 'weights' must be a list of rows, e.g. [[0, -1, 0], ...]")
    lines = _row_lines(text)
    where = [
        f"{origin}, line {lines[i]}" if i < len(lines) else f"{at('weights')} (row {i + 1})"
        for i in range(len(weights))
    ]
    kernel = Kernel(name=INLINE_NAME, raw_weights=_matrix(weights, where, at("weights")), origin=origin)

    settings: dict[str, object] = {}
    if "description" in data:
        if not isinstance(data["description"], str):
            raise KernelError(f"{at('description')}: 'description' must be a string")
        settings["description"] = data["description"].strip()
    for key in ("scale", "bias"):
        if key in data:
            settings[key] = parse_number(data[key], f"{at(key)}: '{key}'")
    if "normalize" in data:
        if not isinstance(data["normalize"], bool):
            raise KernelError(f"{at('normalize')}: 'normalize' must be true or false")
        settings["normalize"] = data["normalize"]
    if "range" in data:
        value = data["range"]
        if not isinstance(value, str) or value not in RANGES:
            raise KernelError(f"{at('range')}: unknown range {value!r}; choose from {', '.join(RANGES)}")
        settings["range"] = value
    return replace(kernel, **settings)


# ---------------------------------------------------------------------------- files and the search path


MAX_FILE_BYTES = 16 << 20  # a 63x63 kernel in text takes well under 1 MB


def load_file(path: Path) -> Kernel:
    """A kernel from a file (or a pipe, `-k <(...)`): TOML for `.toml`, a plain matrix for any
    other suffix."""
    origin = f"kernel file {str(path)!r}"
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO with no writer: empty, no wait
        os.set_blocking(descriptor, True)
        with open(descriptor, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise KernelError(f"{origin}: cannot read it: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KernelError(f"{origin}: more than {MAX_FILE_BYTES >> 20} MB, not a kernel file")
    try:
        text = data.decode("utf-8-sig")  # a leading BOM (Windows Notepad) is not a value
    except UnicodeDecodeError:
        raise KernelError(f"{origin}: not a text file") from None
    parse = parse_toml if path.suffix.lower() == ".toml" else parse_plain
    return replace(parse(text, origin), name=path.stem, source=str(path))


def builtin_dir() -> Path:
    """The built-in kernel library, shipped inside the package as `convfilter.builtin_kernels`."""
    spec = importlib.util.find_spec("convfilter.builtin_kernels")
    return Path(next(iter(spec.submodule_search_locations)))


def search_dirs() -> list[Path]:
    """`CONVFILTER_KERNEL_PATH` (':'-separated), the user directory, then the built-ins."""
    dirs = [_expanded(p) for p in os.environ.get(PATH_VARIABLE, "").split(os.pathsep) if p]
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):  # unset, empty or relative: the XDG spec says to ignore it
        config = "~/.config"
    dirs.append(_expanded(config) / "convfilter" / "kernels")
    dirs.append(builtin_dir())
    return dirs


def _expanded(path: str) -> Path:
    """`path` with a leading `~` or `~user` expanded where there is such a home; else as it is
    (Path.expanduser raised RuntimeError: an internal error for `-k '~x'`)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def available() -> dict[str, Path]:
    """Every kernel name on the search path and the file it resolves to (first match wins)."""
    found: dict[str, Path] = {}
    for directory in search_dirs():
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for suffix in KERNEL_SUFFIXES:
            for path in entries:
                if path.suffix == suffix and not path.name.startswith(".") and path.is_file():
                    found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


# A kernel name: what `available` lists, any file name that is not hidden, without a folder part.
_NAME = re.compile(r"[^/\x00.][^/\x00]*")
_INLINE = re.compile(r"[\d\s.,;/+\-eE\u2212]+")


def _looks_inline(spec: str) -> bool:
    return ";" in spec or "," in spec or (bool(_INLINE.fullmatch(spec)) and any(c.isdigit() for c in spec))


def _is(test, path: Path) -> bool:
    """`path.is_file()` or `is_dir()`, False where the name cannot be a path (too long, NUL...)."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def resolve(spec: str) -> Kernel:
    """SPEC as CONTRACT §3 orders it: an existing file, a name on the search path, an inline matrix."""
    path = _expanded(spec)
    if _is(Path.is_file, path):
        return load_file(path)
    if _is(Path.is_fifo, path):  # a pipe (-k <(...)): named like an inline kernel, not '63'
        return replace(load_file(path), name=INLINE_NAME)
    if not spec.strip():
        raise KernelError(f"empty kernel spec {spec!r}; give a kernel name, file or inline matrix "
                          "(see 'convfilter kernels')")
    if _NAME.fullmatch(spec):
        for directory in search_dirs():
            for suffix in KERNEL_SUFFIXES:
                candidate = directory / f"{spec}{suffix}"
                if _is(Path.is_file, candidate):  # an inline matrix may be too long for a file name
                    return load_file(candidate)
    if _looks_inline(spec):
        return parse_inline(spec)
    if _is(Path.is_dir, path):
        raise KernelError(f"kernel {spec!r} is a directory, not a kernel file")
    if _is(Path.exists, path):  # a device, a socket: it said 'not found'
        raise KernelError(f"kernel file {spec!r} is not a regular file")
    if "/" in spec or path.suffix.lower() in KERNEL_SUFFIXES:
        raise KernelNotFoundError(f"kernel file {spec!r} not found")
    names = list(available())
    lowered: dict[str, list[str]] = {}  # 'BLUR' is close to 'blur' (and to a user's 'Blur')
    for name in names:
        lowered.setdefault(name.lower(), []).append(name)
    close = [name for key in difflib.get_close_matches(spec.lower(), list(lowered), n=3, cutoff=0.6)
             for name in lowered[key]]
    if close:
        raise KernelNotFoundError(
            f"unknown kernel {spec!r}; did you mean {' or '.join(repr(n) for n in close)}?"
        )
    raise KernelNotFoundError(f"unknown kernel {spec!r}; known kernels: {', '.join(names)}")
