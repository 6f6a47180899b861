"""The batch path (`--device cuda`, or `--batch N`): JPEGs decoded a batch at a time on the device
(nvjpeg, through torchvision, on a GPU), same-size images stacked into one (N, C, H, W) tensor and
filtered at once, results encoded on the device (3-channel JPEG: nvjpeg on a GPU) or by Pillow in
CPU threads. Disk reads and Pillow's encodes go on in threads while the device works.

Whatever is not a plain JPEG (PNG, CMYK, alpha, too many pixels) is decoded by Pillow as in the
per-file path and filtered alone on the same device; so is each file of a batch that torchvision
cannot decode, one by one, so that a damaged file fails alone with Pillow's error. The same code
runs on the CPU (`--device cpu --batch N`): that is how CI tests it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from convfilter import files, imageio
from convfilter.outputs import Job
from convfilter.pipeline import Filter, run_tensor, working_dtype
from convfilter.process import (
    FAILED, WRITTEN, JobResult, Loaded, Summary, WriteOptions, check_target, decode_job, failure, guarded,
)

DEFAULT_BATCH = 64  # images a batch on a GPU
BATCH_BYTES = 1 << 30  # at most this much for one copy of a group in the pipeline's type (float32 or float64)


@dataclass(frozen=True)
class Fetched:
    """A JPEG read from disk, its bytes not decoded yet."""

    job: Job
    data: torch.Tensor  # uint8, 1-D
    orientation: int = 1  # as Pillow reads it (EXIF, or XMP where EXIF has none), 1 to 8


ORIENTATION = 0x0112  # the EXIF tag
# Each EXIF orientation as operations on a (C, H, W) tensor: what Pillow's exif_transpose does
# (2: mirror; 3: rotate 180; 4: flip; 5: transpose; 6: rotate 90 clockwise; 7: transverse;
# 8: rotate 90 counterclockwise). Done here rather than by torchvision's apply_exif_orientation,
# which its GPU decoder ignores (torchvision 0.29's decode_jpeg passes it to the CPU decoder only,
# so nvjpeg's images would stay sideways) and which reads no XMP orientation.
_UPRIGHT: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    1: lambda x: x,
    2: lambda x: x.flip(-1),
    3: lambda x: x.flip(-2, -1),
    4: lambda x: x.flip(-2),
    5: lambda x: x.transpose(-2, -1),
    6: lambda x: torch.rot90(x, -1, (-2, -1)),
    7: lambda x: x.transpose(-2, -1).flip(-2, -1),
    8: lambda x: torch.rot90(x, 1, (-2, -1)),
}


def _plain_jpeg(path: str, options: WriteOptions) -> int | None:
    """The orientation of a JPEG that torchvision decodes exactly as the per-file path would
    (Pillow's luma, or RGB); None for any other file."""
    with Image.open(path) as image:
        width, height = image.size
        modes = ("RGB", "YCbCr") if options.color else ("L", "RGB", "YCbCr")  # --color keeps a grey JPEG 2-D
        if image.format != "JPEG" or image.mode not in modes or width * height > options.max_pixels:
            return None
        orientation = image.getexif().get(ORIENTATION, 1)
        return orientation if orientation in _UPRIGHT else 1  # other values: none, as Pillow's exif_transpose


def fetch(job: Job, options: WriteOptions) -> Fetched | Loaded | JobResult:
    """Read one job's input: a plain JPEG's bytes, anything else decoded by Pillow."""
    checked = check_target(job, options)
    if checked is not None:
        return checked
    try:
        orientation = _plain_jpeg(job.source, options) if Path(job.source).is_file() else None  # a pipe: Pillow's path
        if orientation is not None:
            data = Path(job.source).read_bytes()
            # whole (ending in the end-of-image marker): torchvision's nvjpeg path has no check for a
            # file cut short, as its CPU decoder has; anything else is Pillow's to decode or refuse
            if data.rstrip(b"\0")[-2:] == b"\xff\xd9":
                return Fetched(job, torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation)
    except Exception:  # not readable or not an image: Pillow's path says why, in its words
        pass
    return decode_job(job, options, stdin=None)


def _decode(items: list[Fetched], options: WriteOptions, device: torch.device) -> list[torch.Tensor | Loaded | JobResult]:
    """(C, H, W) uint8 tensors on the device, turned upright by their orientation; a file
    torchvision refuses goes through Pillow instead."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if options.color else ImageReadMode.GRAY
    # Colour is decoded on the CPU: nvjpeg (as torchvision sets it up) upsamples the chroma by
    # repeating it, where libjpeg, as Pillow and OpenCV use it, interpolates; grey takes the luma
    # alone, the same from both.
    on = torch.device("cpu") if options.color else device
    if on.type == "cuda":  # nvjpeg may write into memory still used by work queued before it
        torch.cuda.current_stream(on).synchronize()
    try:
        decoded = list(decode_jpeg([item.data for item in items], mode=mode, device=on))
    except RuntimeError:
        decoded = []
        for item in items:
            try:
                decoded.append(decode_jpeg(item.data, mode=mode, device=on))
            except RuntimeError:
                decoded.append(decode_job(item.job, options, None))  # its target was checked in fetch
    return [_UPRIGHT[item.orientation](image.to(device)) if isinstance(image, torch.Tensor) else image
            for item, image in zip(items, decoded)]


def _groups(images: list[tuple[Job, torch.Tensor]], item_bytes: int = 4) -> list[list[tuple[Job, torch.Tensor]]]:
    """Same-shape images together, each group's values (C x H x W each) at most BATCH_BYTES in
    the pipeline's type (`item_bytes` a value). Every channel counts: colour groups of 3000x4000
    photos were sized as grey ones, 3 GiB a copy instead of 1."""
    by_shape: dict[tuple, list] = {}
    for job, image in images:
        by_shape.setdefault(tuple(image.shape), []).append((job, image))
    groups = []
    for shape, members in by_shape.items():
        size = max(1, BATCH_BYTES // (item_bytes * shape[0] * shape[1] * shape[2]))
        groups.extend(members[i:i + size] for i in range(0, len(members), size))
    return groups


class BatchRunner:
    """Runs jobs through a `pipeline.Filter`, `batch` JPEGs at a time; see the module's text."""

    def __init__(self, pipeline: Filter, options: WriteOptions, batch: int, record: Callable[[JobResult], None],
                 stop: threading.Event):
        self.pipeline, self.options, self.batch = pipeline, options, batch
        self.record, self.stop = record, stop
        self.device = pipeline.device
        self.writes: deque[Future] = deque()
        self.writer = ThreadPoolExecutor(options.workers, thread_name_prefix="convfilter-write")

    def run(self, jobs: list[Job]) -> None:
        reader = ThreadPoolExecutor(self.options.workers, thread_name_prefix="convfilter-read")
        todo = deque(jobs)
        reads: deque[Future] = deque()
        try:
            while todo or reads:
                while todo and len(reads) < 2 * self.batch and not self.stop.is_set():
                    reads.append(reader.submit(fetch, todo.popleft(), self.options))
                if self.stop.is_set():
                    break
                chunk = [reads.popleft().result() for _ in range(min(self.batch, len(reads)))]
                self._chunk(chunk)
                self._collect(keep=2 * self.batch)  # bounded memory: results waiting to be written
            self._collect(keep=0)
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True)
            self._collect(keep=0)

    def _chunk(self, chunk: list[Fetched | Loaded | JobResult]) -> None:
        fetched = [item for item in chunk if isinstance(item, Fetched)]
        decoded = _decode(fetched, self.options, self.device) if fetched else []
        tensors = []
        for item, image in zip(fetched, decoded):
            if isinstance(image, torch.Tensor):
                tensors.append((item.job, image))
            else:
                chunk.append(image)  # decoded by Pillow, or failed there
        for item in chunk:
            if isinstance(item, JobResult):
                self.record(item)
            elif isinstance(item, Loaded):
                self._filter_one(item)
        channels = tensors[0][1].shape[0] if tensors else 1
        item_bytes = working_dtype(self.pipeline.model(255.0, channels), 255.0).itemsize
        for group in _groups(tensors, item_bytes):
            self._filter_group(group)

    def _filter_one(self, loaded: Loaded) -> None:
        """One image decoded by Pillow: the per-file filter, on the same device."""
        result = guarded(loaded.job, self.options, lambda: self.pipeline(loaded.image))
        if isinstance(result, JobResult):
            self.record(result)
        else:
            self._write(loaded.job, result)

    def _filter_group(self, group: list[tuple[Job, torch.Tensor]]) -> None:
        stacked = torch.stack([image for _, image in group])  # (N, C, H, W) uint8, on the device
        try:
            self.pipeline.check_size(*stacked.shape[-2:])
            result = run_tensor(self.pipeline.model(255.0, stacked.shape[1]), stacked)
        except Exception as error:  # e.g. too small for the kernel: the same for every image
            for job, _ in group:
                self.record(failure(job, self.options, error))
            return
        if result.shape[1] == 3 and all(job.format == "JPEG" for job, _ in group):
            from torchvision.io import encode_jpeg

            # On the device: nvjpeg on a GPU (which encodes 3 channels only), libjpeg on the CPU.
            try:
                encoded = encode_jpeg(list(result), quality=self.options.encoding.quality)
            except RuntimeError:  # nvjpeg refused ("image encoding failed"): Pillow encodes them below
                pass
            else:
                for (job, _), data in zip(group, encoded):
                    self._submit(job, _write_bytes, data.cpu().numpy().tobytes(), job.target, self.options.overwrite)
                return
        planes = result.cpu().numpy()
        for (job, _), image in zip(group, planes):
            self._write(job, image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))

    def _write(self, job: Job, image: np.ndarray) -> None:
        if job.target is None:  # --show only is not taken by the batch path
            return
        self._submit(job, imageio.write_image, image, Path(job.target), job.format, self.options.encoding,
                     self.options.overwrite)

    def _submit(self, job: Job, write: Callable, *arguments) -> None:
        future = self.writer.submit(_written, job, self.options, write, *arguments)
        self.writes.append(future)

    def _collect(self, keep: int) -> None:
        """Record finished writes, in order, waiting until at most `keep` are unfinished."""
        while self.writes and (self.writes[0].done() or len(self.writes) > keep):
            result = self.writes[0].result()  # still queued if Ctrl-C comes meanwhile: recorded after it
            self.writes.popleft()
            self.record(result)


def _written(job: Job, options: WriteOptions, write: Callable, *arguments) -> JobResult:
    return guarded(job, options, lambda: write(*arguments) or JobResult(job, WRITTEN))


def _write_bytes(data: bytes, target: str, overwrite: bool) -> None:
    files.atomic_write(Path(target), lambda stream: stream.write(data), overwrite)


def process(jobs: list[Job], pipeline: Filter, options: WriteOptions, batch: int, *,
            on_result: Callable[[JobResult], None]) -> Summary:
    """Every job through the batch path; like `process.process`, one result for each job (files
    only: no standard input or output)."""
    summary = Summary()
    start = time.monotonic()
    stop = threading.Event()

    def record(result: JobResult) -> None:
        summary.add(result)
        on_result(result)
        if result.status == FAILED and options.fail_fast:
            stop.set()

    try:
        BatchRunner(pipeline, options, batch, record, stop).run(jobs)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.monotonic() - start
    return summary
