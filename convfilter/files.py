"""Atomic writing: a temporary file in the target's directory, then a rename (or a hard link,
which refuses to replace a file that appeared meanwhile). No partial file is ever left: not on
an error, not on Ctrl-C. And standard output once its reader has gone."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from convfilter.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)

EXISTS_HINT = "use --overwrite or --skip-existing"


def exists_error(target, hint: str = EXISTS_HINT) -> OutputError:
    """The one message for an output that is already there."""
    return OutputError(f"output '{target}' exists ({hint})")


def atomic_write(target: Path, write: Callable[[BinaryIO], None], overwrite: bool = False,
                 exists_hint: str = EXISTS_HINT) -> None:
    """Create `target` (and its directory) with what `write(stream)` writes. OSError from the
    file system becomes OutputError; other errors from `write` pass through, nothing left."""
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~_UMASK)
        if overwrite:
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)
            except FileExistsError:
                raise exists_error(target, exists_hint) from None
            except OSError:  # a file system without hard links
                if target.exists():
                    raise exists_error(target, exists_hint) from None
                os.replace(temporary, target)
    except FileExistsError:  # the directory to create is a file
        raise OutputError(f"cannot write '{target}': '{target.parent}' is not a directory") from None
    except OSError as error:
        raise OutputError(f"cannot write '{target}': {error.strerror or error}") from None
    finally:
        if temporary is not None and os.path.lexists(temporary):
            os.unlink(temporary)


def standard_output_failed(error: OSError) -> str:
    """The message for standard output that cannot be written (a full disk); what is still
    buffered for it is dropped, so that the last flush does not fail again."""
    discard_standard_output()
    return f"cannot write to standard output: {error.strerror or error}"


def is_standard_output_error(error: BaseException) -> bool:
    """Whether an error that reached the command is standard output's: an OSError of no file.
    Files are read and written through functions that name them (InputError, OutputError), and
    standard input's reads say so too; what is left is a print to standard output."""
    return isinstance(error, OSError) and error.errno is not None and error.filename is None


def discard_standard_output() -> None:
    """Point standard output at /dev/null once its reader has gone (a broken pipe), so that the
    last flush of what is still buffered does not fail again with a second message (the way
    Python's documentation advises)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not a real file: nothing to flush later
        descriptor = os.open(os.devnull, os.O_WRONLY)
        os.dup2(descriptor, sys.stdout.fileno())
        os.close(descriptor)
