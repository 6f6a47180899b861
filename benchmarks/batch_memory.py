"""Peak memory of a batch run against the number of files: memory must stay bounded.

Builds folders of N photos (resized, flipped and rotated copies of the samples, 1600x1200 JPEG,
nested in subfolders), runs `convfilter apply DIR -r -k sharpen -o OUT` on each under
`/usr/bin/time -v`, and prints the peak RSS and wall time per run.

    .venv/bin/python benchmarks/batch_memory.py            # 100 and 1000 files
    .venv/bin/python benchmarks/batch_memory.py 50 200     # other sizes
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.[jp][pn]g"))
SIZE = (1600, 1200)


def corpus(directory: Path, count: int) -> Path:
    """`count` JPEGs in 10 subfolders, each a distinct variant of a sample photo."""
    bases = [ImageOps.fit(Image.open(p).convert("RGB"), SIZE) for p in SAMPLES]
    for i in range(count):
        image = bases[i % len(bases)].rotate((i // len(bases)) % 360, expand=False)
        if i % 2:
            image = ImageOps.mirror(image)
        folder = directory / f"set{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"photo{i:05}.jpg", quality=90)
    return directory


def measure(source: Path, out: Path) -> tuple[int, float, str]:
    """(peak RSS in KiB, wall seconds, the summary line) of one run."""
    convfilter = Path(sys.executable).parent / "convfilter"
    command = ["/usr/bin/time", "-v", str(convfilter), "apply", str(source), "-r", "-k", "sharpen", "-o", str(out), "-q"]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - start
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    if done.returncode != 0:
        raise SystemExit(f"convfilter failed ({done.returncode}):\n{done.stderr}")
    return peak, seconds, str(len(list(out.rglob("*.jpg"))))


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000]
    work = Path(tempfile.mkdtemp(prefix="convfilter-memory-"))
    try:
        print(f"{'files':>6} {'peak RSS MiB':>13} {'wall s':>8} {'files/s':>8}  written")
        for count in sizes:
            source = corpus(work / f"in{count}", count)
            peak, seconds, written = measure(source, work / f"out{count}")
            print(f"{count:>6} {peak / 1024:>13.0f} {seconds:>8.1f} {count / seconds:>8.1f}  {written}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
