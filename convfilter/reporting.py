"""What a run tells the user on standard error (part of the CLI layer, so rich is allowed here):
one line a written/skipped/failed file, and a progress bar when standard error is a terminal."""

from __future__ import annotations

import sys
import time

from convfilter.outputs import shown
from convfilter.process import FAILED, WRITTEN, JobResult


class Bar:
    """A rich progress bar on standard error (bar, count, a note, time left) while a terminal
    watches and `shown`; otherwise nothing. A context manager."""

    def __init__(self, total: int, shown: bool = True):
        self.progress = None
        if shown and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._task = self.progress.add_task("", total=total, note="")

    def __enter__(self) -> Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, completed: int, note: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self._task, completed=completed, note=note)


class Reporter(Bar):
    """Receives each JobResult in the main thread; `keep` stores them (for --json)."""

    def __init__(self, total: int, quiet: bool, progress: bool, keep: bool = False):
        super().__init__(total, shown=progress and not quiet and total > 1)
        self.quiet = quiet
        self.keep = keep
        self.results: list[JobResult] = []
        self._start = time.monotonic()
        self._done = 0

    def line(self, text: str) -> None:
        """One line on standard error, printed above the progress bar when there is one."""
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def result(self, result: JobResult) -> None:
        if self.keep:
            self.results.append(result)
        if result.status == FAILED:
            self.line(f"convfilter: error: {result.error}")
        elif not self.quiet and result.job.target not in (None, "-"):
            target = shown(result.job.target)
            self.line(f"wrote {target}" if result.status == WRITTEN else f"skipped {target} (exists)")
        self._done += 1
        rate = self._done / max(time.monotonic() - self._start, 1e-9)
        self.update(self._done, f"{rate:.1f} files/s")
