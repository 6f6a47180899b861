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

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

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


def _step_lines(text: str) -> list[int]:
    """The line of each [[step]] header. A line that only looks like one, inside a multi-line
    string, is told apart by the text before it: complete TOML before a real header, an
    unterminated string before the other."""
    header = r"""^[ \t]*\[\[[ \t]*(step|"step"|'step')[ \t]*\]\]"""
    starts = [m.start() for m in re.finditer(header, text, re.M) if _complete(text[:m.start()])]
    return [text.count("\n", 0, start) + 1 for start in starts]


def _complete(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def load(path: str) -> Pipeline:
    """Read and check a pipeline file; every error names the file, and the step and its line."""
    origin = f"pipeline file {path!r}"
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a leading BOM (Windows Notepad) is not TOML
    except FileNotFoundError:
        raise UsageError(f"{origin} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{origin}: cannot read it: {getattr(error, 'strerror', None) or error}") from None
    try:
        data = tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an integer past Python's 4300 digits
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
