"""Pipeline files: a recipe of steps in TOML, run in order by `convfilter run` and `export`.

    color = true            # optional: keep colour (each channel filtered alone)
    description = "..."     # optional

    [[step]]                # exactly one of: kernel = "...", pool = "...", upsample = "..."
    kernel = "blur"

    [[step]]
    pool = "max"
    size = 2

Every step table is turned into a step by `steps.from_table`, as the command line's options are.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from convfilter import kernels
from convfilter import steps as steps_module
from convfilter.errors import ConvfilterError, KernelError, UsageError

TOP_KEYS = ("step", "color", "description")
_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: list[steps_module.Step]
    color: bool = False
    description: str = ""


# What a scan of a TOML file steps over at once: a comment, a string (multi-line ones first, the
# basic ones with their escapes), or any other run of characters.
_TOKEN = re.compile(r"""#[^\n]*|\"\"\"(?:\\.|[^\\])*?\"\"\"\"{0,2}|'''.*?''''{0,2}|"(?:\\.|[^"\\\n])*"|'[^'\n]*'|[^#"']+|.""",
                    re.S)


def _step_lines(text: str) -> list[int]:
    """The line of each [[step]] header (also written [["step"]]); a line that only looks like
    one, inside a multi-line string, is not one."""
    quoted = [token.span() for token in _TOKEN.finditer(text) if token[0][0] in "#\"'"]  # strings, comments
    ends = [end for _, end in quoted]
    starts = []
    for match in re.finditer(r"""^[ \t]*\[\[[ \t]*(step|"step"|'step')[ \t]*\]\]""", text, re.M):
        inside = bisect.bisect_right(ends, match.start())  # the first string or comment ending after it
        if inside == len(quoted) or quoted[inside][0] >= match.start():
            starts.append(match.start())
    return [text.count("\n", 0, start) + 1 for start in starts]


def _is_image(path: str) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def load(path: str) -> Pipeline:
    """Read and check a pipeline file; every error names the file, and the step and its line."""
    origin = f"pipeline file {path!r}"
    if not path:  # an unset variable ("$PIPELINE"): it would name the current folder
        raise UsageError("the pipeline file is an empty name ''; give a .toml file")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a leading BOM (Windows Notepad) is not TOML
    except FileNotFoundError:
        raise UsageError(f"{origin} not found") from None
    except UnicodeDecodeError as error:
        if _is_image(path):  # given where the pipeline goes (run photo.jpg edges.toml)
            raise UsageError(f"{origin} is an image; give the pipeline file first, then the images") from None
        raise UsageError(f"{origin}: not UTF-8 text: byte 0x{error.object[error.start]:02x} at position "
                         f"{error.start}") from None
    except OSError as error:
        raise UsageError(f"{origin}: cannot read it: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an integer past Python's 4300 digits
        if not isinstance(error, tomllib.TOMLDecodeError) and (long := kernels.too_many_digits(text, origin)):
            raise UsageError(long) from None
        message = str(error)
        position = _POSITION.search(message)
        where = f"{origin}, line {position[1]}" if position else origin
        raise UsageError(f"{where}: invalid TOML: {_POSITION.sub('', message)}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise UsageError(f"{origin}: unknown key {key!r}; allowed at the top: {', '.join(TOP_KEYS)}")
    tables = data.get("step")
    if isinstance(tables, dict):  # [step], one table, where the steps are an array of them
        raise UsageError(f"{origin}: 'step' must be an array of tables, [[step]] with two brackets, got [step]")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{origin}: no steps; give one or more [[step]] tables")
    if not isinstance(data.get("color", False), bool):
        raise UsageError(f"{origin}: 'color' must be true or false")
    if not isinstance(data.get("description", ""), str):
        raise UsageError(f"{origin}: 'description' must be a string, got {data['description']!r}")
    lines = _step_lines(text)
    built = []
    for index, table in enumerate(tables):
        where = f"{origin}, step {index + 1}" + (f" (line {lines[index]})" if index < len(lines) else "")
        try:
            built.append(steps_module.from_table(table, name=lambda key: repr(key)))
        except KernelError as error:
            raise KernelError(f"{where}: {error}") from None
        except ConvfilterError as error:
            raise UsageError(f"{where}: {error}") from None
    return Pipeline(Path(path).stem, built, data.get("color", False), str(data.get("description", "")))
