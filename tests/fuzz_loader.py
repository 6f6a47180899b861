"""Fuzz smoke run of the image loader: mutated PNG, JPEG, GIF, TIFF and WebP files must each
either load or raise convfilter's own InputError — no other exception, no hang.

    .venv/bin/python tests/fuzz_loader.py [COUNT] [SEED]     # default 3000 cases, seed 0

Mutations: flipped bytes, overwritten runs, truncation, a duplicated or deleted span, and
header fields set to extreme values. Each load runs under a 5 s alarm. A deterministic slice
runs in the test suite (tests/test_fuzz.py).
"""

from __future__ import annotations

import io
import random
import signal
import sys
from collections import Counter

import numpy as np
from PIL import Image

from convfilter.errors import InputError
from convfilter.imageio import read_image

TIME_LIMIT = 5  # seconds a load may take


def seeds() -> dict[str, bytes]:
    """Small valid files of each format, from a real photo crop (made in memory)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "samples"
    photo = Image.open(root / "astronaut.jpg").convert("RGB").resize((48, 40))
    files = {}
    for fmt, options in (("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("TIFF", {}), ("WEBP", {"quality": 80})):
        buffer = io.BytesIO()
        photo.save(buffer, format=fmt, **options)
        files[fmt] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30).save(buffer, format="PNG")
    files["PNG16"] = buffer.getvalue()
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        position = rng.randrange(len(data)) if data else 0
        if kind == 0:  # flip a few bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # overwrite a run with one value
            value = rng.choice([0, 255, rng.randrange(256)])
            data[position: position + rng.randint(1, 64)] = bytes([value]) * len(data[position: position + 64])
        elif kind == 2:  # truncate
            del data[position:]
        elif kind == 3:  # duplicate a span
            data[position:position] = data[position: position + rng.randint(1, 200)]
        elif kind == 4:  # delete a span
            del data[position: position + rng.randint(1, 200)]
        else:  # an extreme value in the first 64 bytes (sizes, lengths, counts live there)
            spot = rng.randrange(min(64, len(data))) if data else 0
            data[spot: spot + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(data)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def fuzz(count: int, seed: int = 0) -> Counter:
    """Run `count` mutated files through read_image; count the outcomes; raise on any other error."""
    rng = random.Random(seed)
    originals = seeds()
    outcomes: Counter = Counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(count):
            fmt = rng.choice(sorted(originals))
            data = mutate(originals[fmt], rng)
            signal.alarm(TIME_LIMIT)
            try:
                array = read_image(data, max_pixels=10_000_000)
                assert array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
                outcomes["loaded"] += 1
            except InputError:
                outcomes["refused (InputError)"] += 1
            except Hang:
                raise AssertionError(f"case {case} ({fmt}, seed {seed}): no result within {TIME_LIMIT} s") from None
            except Exception as error:
                raise AssertionError(f"case {case} ({fmt}, seed {seed}): {type(error).__name__}: {error}") from error
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return outcomes


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    result = fuzz(count, seed)
    print(f"{count} mutated files, seed {seed}: " + ", ".join(f"{n} {what}" for what, n in sorted(result.items())))
