"""Shared fixtures: the sample photos, a CLI runner in this process, and a real subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from convfilter.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CAMERA = SAMPLES / "camera.png"  # 512x512 8-bit grayscale PNG photo
ASTRONAUT = SAMPLES / "astronaut.jpg"  # 512x512 RGB JPEG photo


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: str


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Run convfilter in this process (torch is imported once); `input` feeds standard input."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CONVFILTER_KERNEL_PATH", raising=False)

    def run(*args: str, input: bytes | None = None) -> Result:
        result = CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
        return Result(result.exit_code, result.stdout_bytes, result.stderr)

    return run


def run_process(*args: str, input: bytes | None = None, cwd: Path | None = None, env: dict | None = None):
    """Run `python -m convfilter ARGS` as a real process, as a shell script would."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}  # this tree's code, whatever is installed
    return subprocess.run(
        [sys.executable, "-m", "convfilter", *map(str, args)],
        input=input, capture_output=True, cwd=cwd, env=environment, timeout=300,
    )


def gray(path: Path) -> np.ndarray:
    """An image as Pillow's 8-bit grayscale, the independent reading of an input or output."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L") if image.mode != "L" else image)


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    return gray(CAMERA)


@pytest.fixture
def camera_copy(tmp_path) -> Path:
    """A copy of the grayscale sample in a scratch directory (outputs default to beside it)."""
    target = tmp_path / "photo.png"
    target.write_bytes(CAMERA.read_bytes())
    return target
