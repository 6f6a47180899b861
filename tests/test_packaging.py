"""The built-in kernels travel inside the package: a wheel built from the repository holds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import ROOT
from test_kernels import BUILTIN


def test_wheel_contains_every_builtin_kernel(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()
    [wheel] = tmp_path.glob("convfilter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kernel in BUILTIN:
        assert f"convfilter/builtin_kernels/{kernel}.toml" in names
    assert "convfilter/cli.py" in names and "convfilter/pipeline.py" in names
    assert "convfilter/data/camera.png" in names  # the default photo of `kernels preview`
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "convfilter = convfilter.console:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_kernel_files_on_disk_are_the_library():
    on_disk = {p.stem for p in (ROOT / "kernels").glob("*.toml")}
    assert on_disk == set(BUILTIN)
