"""What a run tells the user on standard error (part of the CLI layer, so rich is allowed here):
one line a written/skipped/failed file, and a progress bar when standard error is a terminal."""

from __future__ import annotations

import sys
import time

from convfilter.process import FAILED, SKIPPED, WRITTEN, JobResult


class Reporter:
    """Receives each JobResult in the main thread; `keep` stores them (for --json)."""

    def __init__(self, total: int, quiet: bool, progress: bool, keep: bool = False):
        self.quiet = quiet
        self.keep = keep
        self.results: list[JobResult] = []
        self._progress = None
        if progress and not quiet and total > 1 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._task = self._progress.add_task("filtering", total=total, rate="")
            self._start = time.monotonic()
            self._done = 0

    def __enter__(self) -> Reporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, text: str) -> None:
        """One line on standard error, printed above the progress bar when there is one."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def result(self, result: JobResult) -> None:
        if self.keep:
            self.results.append(result)
        if result.status == FAILED:
            self.line(f"convfilter: error: {result.error}")
        elif not self.quiet and result.job.target not in (None, "-"):
            self.line(f"wrote {result.job.target}" if result.status == WRITTEN else f"skipped {result.job.target} (exists)")
        if self._progress is not None:
            self._done += 1
            rate = self._done / max(time.monotonic() - self._start, 1e-9)
            self._progress.update(self._task, advance=1, rate=f"{rate:.1f} files/s")
