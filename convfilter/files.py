"""Atomic writing: a temporary file in the target's directory, then a rename (or a hard link,
which refuses to replace a file that appeared meanwhile). No partial file is ever left: not on
an error, not on Ctrl-C. And standard output once its reader has gone."""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable

from convfilter.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)

EXISTS_HINT = "use --overwrite or --skip-existing"


class OutputExistsError(OutputError):
    """An output that is already there (--skip-existing counts its input as skipped)."""


def exists_error(target, hint: str = EXISTS_HINT) -> OutputExistsError:
    """The one message for an output that is already there."""
    return OutputExistsError(f"output {str(target)!r} exists ({hint})")


# The temporary files being written, so that an exit that does not wait for the writers (a
# second Ctrl-C) removes them; none is made after that.
_temporaries: set[str] = set()
_temporaries_lock = threading.Lock()
_closing = False
NAME_MAX = 255  # bytes of one file name (Linux, macOS)
_TEMPORARY_EXTRA = len(".") + len(".") + 8 + len(".tmp")  # ".NAME.XXXXXXXX.tmp"


def remove_temporaries() -> None:
    """Remove the temporary files still being written; atomic_write makes no more after this."""
    global _closing
    with _temporaries_lock:
        _closing = True
        for path in _temporaries:
            with contextlib.suppress(OSError):
                os.unlink(path)
        _temporaries.clear()


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new hidden temporary file beside `target`, open: `.NAME.XXXXXXXX.tmp`, NAME cut short
    where the whole would pass 255 bytes (an output name of 242-255 bytes failed as "File name
    too long")."""
    name = os.fsencode(target.name)[:NAME_MAX - _TEMPORARY_EXTRA]
    with _temporaries_lock:
        if _closing:
            raise OutputError(f"cannot write {str(target)!r}: convfilter is stopping")
        fd, temporary = tempfile.mkstemp(dir=os.fsencode(target.parent), prefix=b"." + name + b".", suffix=b".tmp")
        temporary = os.fsdecode(temporary)
        _temporaries.add(temporary)
    return fd, temporary


def _in_memory(write: Callable[[BinaryIO], None]) -> bytes | memoryview | mmap.mmap:
    """What `write(stream)` writes, whole. Pillow writes some formats (JPEG, TIFF, BMP, PPM) to a
    stream's descriptor in one call of its C encoder, and does not notice a short write. So the
    stream is an anonymous file in memory (memfd) where the system has them: the fast path, which
    a disk can never cut short; only a file size limit can, and then the one byte written after
    it fails too (EFBIG). A BytesIO elsewhere: Pillow then encodes in chunks through Python, a
    tenth slower over a folder of photos with two workers (200 photos: 2.97-3.21 s against
    2.75-2.85 s through a descriptor, 4 interleaved rounds). Costs one copy of the output in
    memory while it is written."""
    if not hasattr(os, "memfd_create"):
        buffer = io.BytesIO()
        write(buffer)
        return buffer.getbuffer()
    with os.fdopen(os.memfd_create("convfilter-output", os.MFD_CLOEXEC), "w+b") as memory:
        write(memory)
        size = memory.seek(0, os.SEEK_END)
        memory.write(b"\0")  # where a size limit cut the encoder short, this raises
        memory.flush()
        return mmap.mmap(memory.fileno(), size, access=mmap.ACCESS_READ) if size else b""  # its pages, no copy


def atomic_write(target: Path, write: Callable[[BinaryIO], None], overwrite: bool = False,
                 exists_hint: str = EXISTS_HINT) -> None:
    """Create `target` (and its directory) with what `write(stream)` writes. OSError from the
    file system becomes OutputError; other errors from `write` pass through, nothing left.
    `write` writes into memory first (`_in_memory`); Python's own write then puts it on disk, and
    raises on a short write (a full disk, `ulimit -f`), where Pillow's did not: it left a cut-off
    image under its final name."""
    temporary = None
    try:
        encoded = _in_memory(write)  # Pillow's encoder errors are OSError too: "cannot write" this target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = _temporary_beside(target)
        with os.fdopen(fd, "wb") as stream:
            stream.write(encoded)
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
        raise OutputError(f"cannot write {str(target)!r}: {str(target.parent)!r} is not a directory") from None
    except OSError as error:
        raise OutputError(f"cannot write {str(target)!r}: {error.strerror or error}") from None
    finally:
        if temporary is not None:
            with _temporaries_lock:
                _temporaries.discard(temporary)
                if os.path.lexists(temporary):
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
