"""The GPU figures of the speed issue, in one run (prepared for a machine with an NVIDIA GPU; it
prints a Markdown report for benchmarks/RESULTS.md and exits 1 without a GPU).

    .venv/bin/python benchmarks/gpu.py [--files 2000] [--frames 64] [--device cpu]

`--device cpu` (with small numbers) runs the same steps on the CPU: a check of the script itself.

1. Start-up: `import torch`, `import torchvision`, CUDA's first context, each a process.
2. `convfilter apply DIR -r -k sharpen --device cuda` over FILES 1920x1080 JPEGs (made from the
   samples), grayscale and --color: images/s from convfilter's own --json "seconds" (first file
   read to last file written; import and CUDA start-up excluded), and the whole process.
3. A 31x31 Gaussian on a batch of FRAMES 1080p frames on the GPU: frames/s for each method
   (conv2d, separable, matmul, FFT; the one `correlate.plan` picks is marked), exact against the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
CONVFILTER = str(Path(sys.executable).parent / "convfilter")


def corpus(directory: Path, count: int) -> Path:
    """`count` 1920x1080 JPEGs (quality 90) in 20 folders."""
    samples = [Image.open(p).convert("RGB") for p in sorted((ROOT / "samples").glob("*.[jp][pn]g"))]
    bases = [ImageOps.fit(s, (1920, 1080), Image.Resampling.LANCZOS) for s in samples]

    def one(i: int) -> None:
        image = bases[i % len(bases)]
        image = ImageOps.mirror(image) if (i // len(bases)) % 2 else image
        target = directory / f"set{i % 20}" / f"frame{i:05}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.rotate(i % 11 - 5, resample=Image.Resampling.BILINEAR).save(target, quality=90)

    with ThreadPoolExecutor() as pool:
        list(pool.map(one, range(count)))
    return directory


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def gaussian31(path: Path) -> Path:
    """A normalized 31x31 Gaussian (sigma 5) kernel file."""
    rows = (", ".join(f"{math.exp(-((i - 15) ** 2 + (j - 15) ** 2) / 50.0):.10g}" for j in range(31)) for i in range(31))
    path.write_text("normalize = true\nweights = [\n" + "".join(f"  [{row}],\n" for row in rows) + "]\n")
    return path


def batch_runs(photos: Path, out: Path, count: int, kernel: str, label: str, device: str, colour: bool,
               rounds: int = 3) -> list[str]:
    rows = []
    device_options = ["--device", device] + (["--batch", "16"] if device == "cpu" else [])
    for extra in ([], ["--color"]) if colour else ([],):
        seconds, walls = [], []
        for _ in range(rounds):
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            done = subprocess.run([CONVFILTER, "apply", str(photos), "-r", "-k", kernel, "-o", str(out), *device_options,
                                   "--quality", "90", "--json", "-q", *extra], capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"convfilter failed:\n{done.stderr[-3000:]}")
            report = json.loads(done.stdout)
            assert report["written"] == count, report
            seconds.append(report["seconds"])
        rows.append(f"| {label}{' --color' if extra else ''} | {count / statistics.median(seconds):.0f} | {count / statistics.median(walls):.0f} "
                    f"| {statistics.median(walls):.2f} |")
    return rows


def frames_per_second(frames: int, kernel_file: Path, device: str) -> list[str]:
    import torch

    from convfilter.pipeline import Filter, run_tensor
    from convfilter.steps import from_table

    step = from_table({"kernel": str(kernel_file)})
    model = Filter([step], device).model(255.0, 1)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    conv = next(layer for layer in model if hasattr(layer, "plan"))
    torch.manual_seed(0)
    x = torch.randint(0, 256, (frames, 1, 1080, 1920), dtype=torch.uint8, device=device)
    reference = Filter([step], "cpu").model(255.0, 1)
    expected = run_tensor(reference, x[:2].cpu())
    chosen = conv.plan(device).method
    rows = []
    for method in ("conv2d", "separable", "matmul", "fft"):
        plan = dataclasses.replace(conv.plan(device), method=method)
        if method in ("separable", "matmul") and not plan.column:
            continue
        conv._plan, conv._plan_key = plan, (device, conv.weight._version)
        result = run_tensor(model, x)  # warm-up (cuDNN / cuFFT plans)
        synchronize()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = run_tensor(model, x)
            synchronize()
            times.append(time.perf_counter() - start)
        worst = int((result[:2].cpu().int() - expected.int()).abs().max())
        mark = " (chosen)" if method == chosen else ""
        rows.append(f"| {method}{mark} | {frames / statistics.median(times):.0f} | {worst} |")
    conv._plan_key = None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: nothing to measure")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (a check of this script)"
    print(f"# GPU run, {time.strftime('%Y-%m-%d %H:%M')}: {name}, torch {torch.__version__}")
    python = sys.executable
    print("\n| start-up (one process each, median of 3) | s |\n|---|---:|")
    startups = [("import torch", "import torch"), ("import torch, torchvision", "import torch, torchvision")]
    if args.device == "cuda":
        startups.append(("import torch + first CUDA context", "import torch; torch.zeros(1, device='cuda')"))
    for label, code in startups:
        print(f"| {label} | {statistics.median(wall([python, '-c', code]) for _ in range(3)):.2f} |")
    work = Path(tempfile.mkdtemp(prefix="convfilter-gpu-"))
    try:
        start = time.perf_counter()
        photos = corpus(work / "frames", args.files)
        print(f"\n{args.files} JPEGs of 1920x1080 made in {time.perf_counter() - start:.1f} s.\n")
        kernel = gaussian31(work / "gaussian31.toml")
        print(f"| --device {args.device}, batch path | images/s (convfilter's seconds) | images/s (whole process) "
              "| wall s |\n|---|---:|---:|---:|")
        for row in [*batch_runs(photos, work / "out", args.files, "sharpen", "sharpen", args.device, colour=True),
                    *batch_runs(photos, work / "out", args.files, str(kernel), "31x31 Gaussian", args.device,
                                colour=False)]:
            print(row)
        print(f"\n31x31 Gaussian on {args.frames} random 1080p frames (max difference from the CPU result, "
              "levels):\n\n| method | frames/s | max diff |\n|---|---:|---:|")
        for row in frames_per_second(args.frames, kernel, args.device):
            print(row)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
