"""The established tools convfilter is measured against, each as the script a user would write.

    python benchmarks/anchors.py opencv-filter IN_DIR OUT_DIR     # imread gray, filter2D, imwrite
    python benchmarks/anchors.py opencv-area IN_DIR OUT_DIR       # imread gray, resize INTER_AREA /2
    python benchmarks/anchors.py pillow-kernel IN_DIR OUT_DIR     # ImageFilter.Kernel
    python benchmarks/anchors.py codec-floor IN_DIR OUT_DIR JOBS  # decode to luma + encode only
    python benchmarks/anchors.py codec-torch IN_DIR OUT_DIR JOBS  # the same while torch imports
    python benchmarks/anchors.py codec-torch-half IN_DIR OUT_DIR JOBS  # ... writing half the size

`codec-torch` is the ceiling of any tool that must import torch: the codec floor, with
`import torch` running in a thread beside it (as convfilter imports it), and no filtering at all.
`codec-torch-half` is the same ceiling for 2x2 pooling: it writes every other pixel of every
other row (nearest neighbour, no arithmetic), half the width and height.

All read grayscale (a JPEG straight to its luma channel where the tool can), use the sharpen
kernel and write JPEG quality 90, like the convfilter runs of bench.py.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

QUALITY = 90
SHARPEN = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]


def files(directory: str) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def opencv(source: str, target: str, area: bool) -> None:
    import cv2
    import numpy as np

    kernel = np.array(SHARPEN, np.float32)
    for path in files(source):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if area:
            result = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        else:
            result = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
        out = Path(target) / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), result, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])


def pillow_kernel(source: str, target: str) -> None:
    from PIL import Image, ImageFilter

    kernel = ImageFilter.Kernel((3, 3), [v for row in SHARPEN for v in row], scale=1)
    for path in files(source):
        with Image.open(path) as image:
            image.draft("L", image.size)
            result = image.convert("L").filter(kernel)
        out = Path(target) / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.save(out, quality=QUALITY)


def codec_floor(source: str, target: str, jobs: int, half: bool = False) -> None:
    from PIL import Image

    def one(path: Path) -> None:
        with Image.open(path) as image:
            image.draft("L", image.size)
            image = image.convert("L")
        if half:
            image = image.resize((image.width // 2, image.height // 2), Image.Resampling.NEAREST)
        out = Path(target) / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, quality=QUALITY)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, files(source)))


def codec_floor_importing_torch(source: str, target: str, jobs: int, half: bool = False) -> None:
    import os
    import threading

    importing = threading.Thread(target=lambda: __import__("torch"))
    importing.start()
    codec_floor(source, target, jobs, half)
    importing.join()
    sys.stdout.flush()
    os._exit(0)  # as convfilter: no interpreter teardown once torch is loaded


def main() -> None:
    tool, source, target, *rest = sys.argv[1:]
    if tool == "opencv-filter":
        opencv(source, target, area=False)
    elif tool == "opencv-area":
        opencv(source, target, area=True)
    elif tool == "pillow-kernel":
        pillow_kernel(source, target)
    elif tool == "codec-floor":
        codec_floor(source, target, int(rest[0]))
    elif tool == "codec-torch":
        codec_floor_importing_torch(source, target, int(rest[0]))
    elif tool == "codec-torch-half":
        codec_floor_importing_torch(source, target, int(rest[0]), half=True)
    else:
        raise SystemExit(f"unknown anchor {tool!r}")


if __name__ == "__main__":
    main()
