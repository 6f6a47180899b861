"""`make bench`: convfilter against the established tools, side by side, on one machine, one run.

Builds a corpus from the sample photos (200 JPEGs of 2048x1536 = 3.1 MP, resized, flipped and
rotated copies, in 10 folders, and one 6000x4000 = 24 MP JPEG), then runs every tool as its own
process over it, interleaved over ROUNDS rounds, and prints medians: images/s, the ratio to the
OpenCV script, and peak RSS (from /usr/bin/time -v). Then single-image and start-up times.

    .venv/bin/python benchmarks/bench.py [--rounds 3] [--files 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
CONVFILTER = str(BIN / "convfilter")
ANCHORS = [sys.executable, str(HERE / "anchors.py")]
QUALITY = "90"
CORES = os.cpu_count() or 1
TIME = "/usr/bin/time"


def build_corpus(directory: Path, count: int) -> tuple[Path, Path]:
    """`count` 3.1 MP JPEGs in 10 folders, and one 24 MP JPEG, from the samples."""
    folder, big = directory / "photos", directory / "big" / "big24mp.jpg"
    samples = [Image.open(p).convert("RGB") for p in sorted((ROOT / "samples").glob("*.[jp][pn]g"))]
    bases = [ImageOps.fit(s, (2048, 1536), Image.Resampling.LANCZOS) for s in samples]
    for i in range(count):
        image = bases[i % len(bases)]
        if (i // len(bases)) % 2:
            image = ImageOps.mirror(image)
        if (i // (2 * len(bases))) % 2:
            image = ImageOps.flip(image)
        target = folder / f"set{i % 10}" / f"photo{i:04}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.rotate(i % 7 - 3, resample=Image.Resampling.BILINEAR).save(target, quality=90)
    big.parent.mkdir(parents=True, exist_ok=True)
    ImageOps.fit(samples[0], (6000, 4000), Image.Resampling.LANCZOS).save(big, quality=90)
    (directory / "gaussian31.toml").write_text(
        'description = "31x31 Gaussian, sigma 5"\nnormalize = true\nweights = [\n'
        + "".join(
            "  [" + ", ".join(f"{_gauss(i, j):.10g}" for j in range(31)) + "],\n" for i in range(31)
        ) + "]\n"
    )
    return folder, big


def _gauss(i: int, j: int, sigma: float = 5.0) -> float:
    import math

    return math.exp(-((i - 15) ** 2 + (j - 15) ** 2) / (2 * sigma * sigma))


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of one process."""
    start = time.perf_counter()
    done = subprocess.run([TIME, "-v", *command], capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) // 1024
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="convfilter-bench-"))
    try:
        run(work, args.rounds, args.files)
    finally:
        shutil.rmtree(work)


def run(work: Path, rounds: int, count: int) -> None:
    photos, big = build_corpus(work / "corpus", count)
    out = work / "out"
    mogrify = shutil.which("mogrify") if Path("/usr/bin/mogrify").exists() else None
    batch = {
        "convfilter apply -k sharpen (default jobs)": [CONVFILTER, "apply", str(photos), "-r", "-k", "sharpen",
                                                        "-o", "{out}", "--quality", QUALITY, "-q"],
        "convfilter apply -k sharpen -j 1": [CONVFILTER, "apply", str(photos), "-r", "-k", "sharpen", "-o", "{out}",
                                             "--quality", QUALITY, "-q", "-j", "1"],
        "OpenCV imread/filter2D/imwrite script": [*ANCHORS, "opencv-filter", str(photos), "{out}"],
        f"codec floor, Pillow decode+encode, {CORES} threads": [*ANCHORS, "codec-floor", str(photos), "{out}", str(CORES)],
        "codec floor, Pillow decode+encode, 1 thread": [*ANCHORS, "codec-floor", str(photos), "{out}", "1"],
        f"codec floor while importing torch, {CORES} threads": [*ANCHORS, "codec-torch", str(photos), "{out}",
                                                                str(CORES)],
        "codec floor while importing torch, 1 thread": [*ANCHORS, "codec-torch", str(photos), "{out}", "1"],
        "Pillow ImageFilter.Kernel": [*ANCHORS, "pillow-kernel", str(photos), "{out}"],
        "convfilter pool --size 2 (default jobs)": [CONVFILTER, "pool", str(photos), "-r", "--size", "2",
                                                    "-o", "{out}", "--quality", QUALITY, "-q"],
        "OpenCV resize INTER_AREA script": [*ANCHORS, "opencv-area", str(photos), "{out}"],
        f"codec floor at half size while importing torch, {CORES} threads": [*ANCHORS, "codec-torch-half", str(photos),
                                                                             "{out}", str(CORES)],
    }
    if mogrify:
        batch["ImageMagick mogrify -morphology Convolve"] = [
            "bash", "-c", f"mkdir -p {{out}} && {mogrify} -path {{out}} -colorspace Gray -morphology Convolve "
            f"'3x3: 0,-1,0 -1,5,-1 0,-1,0' -quality {QUALITY} {photos}/*/*.jpg"]
    single = {
        "24 MP sharpen: convfilter": [CONVFILTER, "apply", str(big), "-k", "sharpen", "-o", "{out}/a.jpg", "-q"],
        "24 MP sharpen: OpenCV": [sys.executable, "-c", _OPENCV_ONE.format(big=big, kernel="SHARPEN")],
        "24 MP gaussian31: convfilter": [CONVFILTER, "apply", str(big), "-k", str(work / "corpus" / "gaussian31.toml"),
                                         "-o", "{out}/a.jpg", "-q"],
        "24 MP gaussian31: OpenCV": [sys.executable, "-c", _OPENCV_ONE.format(big=big, kernel="GAUSS31")],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "convfilter --help": [CONVFILTER, "--help"],
        "convfilter kernels": [CONVFILTER, "kernels"],
        "2 MP image end to end (sharpen)": [CONVFILTER, "apply", str(ROOT / "samples" / "camera.png"), "-k", "sharpen",
                                            "-o", "{out}/small.png", "-q"],
    }
    # convfilter's own time for one image, torch imported first in the same process (the issue's
    # "excluding torch's import"): the seconds after the import, as the process prints them.
    after_import = {
        "24 MP sharpen: convfilter after import torch": ["apply", str(big), "-k", "sharpen", "-o", "{out}/a.jpg", "-q"],
        "24 MP gaussian31: convfilter after import torch": ["apply", str(big), "-k",
                                                            str(work / "corpus" / "gaussian31.toml"), "-o",
                                                            "{out}/a.jpg", "-q"],
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in [*batch, *single, *after_import]}
    for round_ in range(rounds):
        for name, command in [*batch.items(), *single.items()]:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            results[name].append(timed([part.replace("{out}", str(out)) for part in command]))
        for name, arguments in after_import.items():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            done = subprocess.run([sys.executable, "-c", _AFTER_IMPORT, *[a.replace("{out}", str(out)) for a in arguments]],
                                  capture_output=True, text=True, check=True)
            results[name].append((float(done.stdout.split()[-1]), 0))
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)

    print(f"# convfilter benchmark, {time.strftime('%Y-%m-%d')}, {platform.node() or 'this machine'}: "
          f"{CORES} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"\n{count} JPEGs of 2048x1536 (3.1 MP), grayscale, JPEG quality {QUALITY} out; medians of {rounds} "
          "interleaved rounds.\n")
    reference = statistics.median(s for s, _ in results["OpenCV imread/filter2D/imwrite script"])
    print("| tool | images/s | vs OpenCV script | peak RSS MiB |\n|---|---:|---:|---:|")
    for name in batch:
        seconds = statistics.median(s for s, _ in results[name])
        peak = statistics.median(p for _, p in results[name])
        print(f"| {name} | {count / seconds:.1f} | {reference / seconds:.2f}x | {peak} |")
    print("\n| single run | wall s (median) | peak RSS MiB |\n|---|---:|---:|")
    for name in single:
        print(f"| {name} | {statistics.median(s for s, _ in results[name]):.3f} | "
              f"{statistics.median(p for _, p in results[name])} |")
    for name in after_import:
        print(f"| {name} | {statistics.median(s for s, _ in results[name]):.3f} | – |")


_AFTER_IMPORT = """
import sys, time
import torch
start = time.perf_counter()
from convfilter.cli import app
app(sys.argv[1:], prog_name="convfilter", standalone_mode=False)
print(time.perf_counter() - start)
"""

_OPENCV_ONE = """
import cv2, numpy as np, sys
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
g = np.exp(-((np.arange(31) - 15) ** 2) / 50.0); GAUSS31 = np.outer(g, g).astype(np.float32); GAUSS31 /= GAUSS31.sum()
image = cv2.imread("{big}", cv2.IMREAD_GRAYSCALE)
cv2.imwrite("/tmp/convfilter-bench-opencv.jpg", cv2.filter2D(image, -1, {kernel}, borderType=cv2.BORDER_REFLECT_101),
            [cv2.IMWRITE_JPEG_QUALITY, 95])
"""

if __name__ == "__main__":
    main()
