"""The allocator settings of a run: memory a worker thread frees is kept for its next image,
not handed back to the kernel and faulted in again page by page (convfilter/allocator.py)."""

import platform
import subprocess
import sys

import pytest

# One worker thread, 40 times what a 3 MP job holds: a decoded image, its result, the file's
# bytes; then the page faults that thread took. Run in a fresh interpreter each (the settings
# are for the whole process).
WORKER = """
import resource, sys, threading
import numpy as np
from convfilter import allocator
if sys.argv[1] == "tuned":
    assert allocator.keep_freed_memory()
def job():
    image = np.ones((1536, 2048), np.uint8)
    result = np.ones((1536, 2048), np.uint8)
    data = np.ones(700_000, np.uint8)
    del image, result, data
def worker():
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(40):
        job()
    print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=worker)
thread.start()
thread.join()
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", WORKER, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's (elsewhere nothing is set)")
def test_freed_image_memory_is_reused_not_faulted_in_again():
    # glibc's defaults here: each job's ~7 MB, freed, goes back to the kernel (about 1,700 faults
    # a job); with the settings only the first job faults. Bound: a tenth of the default.
    default, tuned = _faults("default"), _faults("tuned")
    pages_per_job = (2 * 1536 * 2048 + 700_000) // 4096
    assert default > 20 * pages_per_job
    assert tuned < default / 10
    assert tuned < 3 * pages_per_job


def test_the_console_script_sets_them_first():
    """main() (the console script) sets them before anything else; the library never does."""
    code = """
import sys
from convfilter import allocator, cli
allocator.keep_freed_memory = lambda: print("set", flush=True) or True
sys.argv = ["convfilter", "--version"]
cli.main()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "set"
