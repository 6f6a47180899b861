"""The console script's entry point. Loading the command line (typer, rich) takes about 0.1 s:
Ctrl-C or SIGTERM then stops convfilter as it does later, with one line and exit 130, instead of
a traceback from inside an import or a silent death by the signal."""

from __future__ import annotations

import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # the whole run: SIGTERM stops it like Ctrl-C
    try:
        from convfilter.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("convfilter: interrupted\n")
        sys.exit(130)
    run()
