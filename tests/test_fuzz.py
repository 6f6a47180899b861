"""A deterministic slice of the loader fuzz run (tests/fuzz_loader.py): 300 mutated files."""

from fuzz_loader import fuzz


def test_mutated_files_load_or_raise_input_error():
    outcomes = fuzz(300, seed=1)
    assert sum(outcomes.values()) == 300
    assert outcomes["loaded"] > 0 and outcomes["refused (InputError)"] > 0  # both paths were exercised


def test_a_damaged_file_that_makes_pillow_warn_still_gives_one_line(tmp_path):
    """Pillow warns (and logs) about some damaged files; convfilter's stderr stays one line each."""
    import random
    import subprocess
    import sys
    import warnings

    from fuzz_loader import mutate, seeds

    from convfilter.errors import InputError
    from convfilter.imageio import read_image

    rng, tiff = random.Random(3), seeds()["TIFF"]
    for _ in range(2000):
        data = mutate(tiff, rng)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                read_image(data)
            except InputError:
                pass
        if caught:
            break
    assert caught, "no mutated TIFF made Pillow warn"
    (tmp_path / "damaged.tif").write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "convfilter", "apply", str(tmp_path / "damaged.tif"), "-k", "blur",
                           "-o", str(tmp_path / "out.png")], capture_output=True, timeout=120)
    lines = done.stderr.decode().splitlines()
    assert done.returncode in (0, 1)
    assert len(lines) == 1 and (lines[0].startswith("convfilter: error: ") or lines[0].startswith("wrote "))
