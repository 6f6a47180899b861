"""`learn` recovers known kernels from before/after pairs made by `apply`; the heat map of
`kernels show`; `--compare` pictures and the `kernels preview` contact sheet."""

from __future__ import annotations

import re
import tomllib

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from conftest import ASTRONAUT, CAMERA, gray
from convfilter import kernels


@pytest.fixture
def before(tmp_path):
    """A 200 x 220 crop of the grayscale sample, saved losslessly."""
    path = tmp_path / "before.png"
    Image.open(CAMERA).crop((150, 100, 370, 300)).save(path)
    return path


RANDOM5 = np.random.default_rng(2026).normal(0, 0.05, (5, 5)) + 1 / 25  # sums to about 1: stays in range


@pytest.mark.parametrize(
    "spec, options, true_weights, true_bias",
    [
        ("sharpen", [], kernels.resolve("sharpen").weights(), 0.0),
        ("gaussian5", [], kernels.resolve("gaussian5").weights(), 0.0),
        ("sobel-x", ["--scale", "0.125", "--bias", "128"], np.array(kernels.resolve("sobel-x").weights()) / 8, 128.0),
        (";".join(",".join(repr(float(v)) for v in row) for row in RANDOM5), [], RANDOM5, 0.0),
    ],
    ids=["sharpen", "gaussian5", "sobel-x", "random5"],
)
def test_learn_recovers_a_kernel_made_by_apply(cli, before, tmp_path, spec, options, true_weights, true_bias):
    after, learned, replay = tmp_path / "after.png", tmp_path / "mine.toml", tmp_path / "replay.png"
    assert cli("apply", before, "-k", spec, *options, "-o", after).exit_code == 0
    size = len(true_weights)
    result = cli("learn", before, after, "--size", str(size), "-o", learned)
    assert result.exit_code == 0, result.stderr
    report = result.stdout.decode()
    rmse = float(re.search(r"RMSE ([0-9.]+) levels", report)[1])
    fitted = tomllib.loads(learned.read_text())
    error = np.abs(np.array(fitted["weights"]) - np.array(true_weights)).max()
    print(f"{spec[:12]}: max weight error {error:.2e}, bias {fitted['bias']:.4f} (true {true_bias}), RMSE {rmse}")
    assert error <= 0.01
    assert abs(fitted["bias"] - true_bias) <= 1
    assert cli("apply", before, "-k", learned, "-o", replay).exit_code == 0
    assert np.abs(gray(replay).astype(int) - gray(after)).max() <= 1
    assert rmse <= 0.5


def test_learn_on_a_non_linear_filter_reports_a_large_error(cli, before, tmp_path):
    after = tmp_path / "median.png"
    Image.fromarray(ndi.median_filter(gray(before), size=5)).save(after)
    result = cli("learn", before, after, "--size", "5", "-o", tmp_path / "m.toml", "--steps", "30")
    assert result.exit_code == 0
    rmse = float(re.search(r"RMSE ([0-9.]+) levels", result.stdout.decode())[1])
    assert rmse > 2  # a median is no convolution: the fit says so
    assert (tmp_path / "m.toml").is_file()


def test_learn_needs_images_of_the_same_size(cli, before, tmp_path):
    Image.open(CAMERA).save(tmp_path / "other.png")
    result = cli("learn", before, tmp_path / "other.png")
    assert result.exit_code == 1
    assert result.stderr == ("convfilter: error: BEFORE is 220x200 but AFTER is 512x512; they must be the same size\n")
    missing = cli("learn", before, tmp_path / "nope.png")
    assert (missing.exit_code, missing.stderr) == (1, f"convfilter: error: AFTER '{tmp_path / 'nope.png'}': no such file\n")


def test_learn_needs_images_of_the_same_depth_and_enough_pixels(cli, before, tmp_path):
    deep = tmp_path / "deep.png"
    Image.fromarray(np.asarray(Image.open(before)).astype(np.uint16) * 257).save(deep)
    result = cli("learn", before, deep, "--size", "1")
    assert (result.exit_code, result.stderr) == (
        1, "convfilter: error: BEFORE is 8-bit but AFTER is 16-bit; they must have the same bit depth\n")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.array([[10, 200], [60, 90]], dtype=np.uint8)).save(tiny)
    result = cli("learn", tiny, tiny, "--border", "zeros")
    assert (result.exit_code, result.stderr) == (
        1, "convfilter: error: the images (2x2) have fewer pixels than the 10 unknowns of a 3x3 kernel and its bias\n")


def test_kernels_show_heat_map_and_properties(cli):
    result = cli("kernels", "show", "sobel-x")
    assert result.exit_code == 0
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "sobel-x: 3x3, sum 0"
    assert lines[1] == "separable (rank 1): yes; symmetric (equals its transpose): no; unchanged by --flip: no"
    assert [line.split() for line in lines[-3:]] == [["-1", "0", "1"], ["-2", "0", "2"], ["-1", "0", "1"]]
    laplacian = cli("kernels", "show", "laplacian").stdout.decode().splitlines()[1]
    assert laplacian == "separable (rank 1): no; symmetric (equals its transpose): yes; unchanged by --flip: yes"


def test_heat_map_colours_negative_blue_and_positive_red(monkeypatch, capsys):
    from rich.console import Console

    from convfilter import cli

    console = Console(force_terminal=True, color_system="truecolor", width=80)
    monkeypatch.setattr("rich.console.Console", lambda *a, **k: console)
    cli._print_matrix(None, ((-2.0, 0.0, 1.0),))
    out = capsys.readouterr().out
    assert "48;2;30;30;220m-2" in out  # the strongest negative: blue
    assert "48;2;130;30;30m1" in out  # half as strong, positive: red
    assert "48;2;40;40;40m0" in out


def test_compare_writes_input_and_result_side_by_side(cli, camera_copy, tmp_path):
    picture = tmp_path / "compare.png"
    result = cli("pool", camera_copy, "--size", "2", "-o", tmp_path / "out.png", "--compare", picture)
    assert result.exit_code == 0
    assert f"wrote {picture}" in result.stderr
    with Image.open(picture) as image:
        assert image.width >= 2 * 512 and image.height > 512  # two 512-high panels and the labels
        array = np.asarray(image.convert("L"))
    panel = array[-512:, :512]
    assert np.array_equal(panel, gray(camera_copy))  # the input, unchanged, on the left
    several = cli("apply", camera_copy, camera_copy.parent / "x.png", "-k", "blur", "--compare", picture, "--overwrite")
    assert several.exit_code == 2 and "--compare writes one picture" in several.stderr


def test_kernels_preview_contact_sheet(cli, tmp_path):
    sheet = tmp_path / "sheet.png"
    result = cli("kernels", "preview", "-o", sheet, "--size", "64", "--columns", "4")
    assert result.exit_code == 0, result.stderr
    tiles = 1 + len(kernels.available())
    rows = -(-tiles // 4)
    with Image.open(sheet) as image:
        assert image.size == (4 * (64 + 8) + 8, rows * (64 + 28 + 8) + 8)
    colour = cli("kernels", "preview", ASTRONAUT, "-o", tmp_path / "c.jpg", "--color", "--size", "64")
    assert colour.exit_code == 0


@pytest.mark.parametrize("label, width", [("gaussian3", 64), ("motion-blur", 64), ("sharpen+blur+" * 8, 300),
                                          ("sobel-x", 16)])
def test_a_label_is_drawn_whole_or_cut_short_inside_its_tile(label, width):
    """Text in the label band, none in the 2 pixels at either side (a label wider than its
    tile ran off both sides of a 64-pixel preview tile)."""
    from convfilter import visuals

    tile = visuals._labelled(Image.new("RGB", (width, 20)), label, width, 20)
    band = np.asarray(tile.convert("L"))[: visuals.LABEL_HEIGHT]
    assert (band < 128).any()
    assert (band[:, :visuals.LABEL_MARGIN] == 255).all() and (band[:, -visuals.LABEL_MARGIN:] == 255).all()


def test_kernels_left_out_of_a_preview_make_it_exit_1(cli, tmp_path):
    """A 3x3 photo is too small for the larger kernels under reflect: the sheet is written with
    the others, each left-out kernel is an error line, and the exit code says so."""
    small = tmp_path / "small.png"
    Image.fromarray((np.arange(9, dtype=np.uint8) * 20).reshape(3, 3)).save(small)
    result = cli("kernels", "preview", small, "-o", tmp_path / "sheet.png", "--size", "16")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == f"wrote {tmp_path / 'sheet.png'}"
    assert lines[:-1] and all(re.match(r"convfilter: error: kernel '[\w-]+' left out: ", line) for line in lines[:-1])
    assert (tmp_path / "sheet.png").is_file()


def test_learn_and_export_refuse_an_existing_output_before_working(cli, before, tmp_path):
    taken = tmp_path / "taken.toml"
    taken.write_text("keep")
    result = cli("learn", before, before, "-o", taken)
    assert (result.exit_code, result.stderr) == (1, f"convfilter: error: output '{taken}' exists (use --overwrite)\n")
    recipe = tmp_path / "p.toml"
    recipe.write_text('[[step]]\nkernel = "blur"\n')
    result = cli("export", recipe, "-o", taken)
    assert (result.exit_code, result.stderr) == (1, f"convfilter: error: output '{taken}' exists (use --overwrite)\n")
    assert taken.read_text() == "keep"


def test_preview_refuses_an_existing_output_before_working(cli, tmp_path):
    """It filtered first: on a photo too small for some kernels, their 'left out' lines came
    before the 'exists' refusal."""
    Image.fromarray(np.full((3, 3), 7, np.uint8)).save(tmp_path / "tiny.png")
    taken = tmp_path / "sheet.png"
    taken.write_text("keep")
    result = cli("kernels", "preview", tmp_path / "tiny.png", "-o", taken, "--size", "16")
    assert (result.exit_code, result.stderr) == (1, f"convfilter: error: output '{taken}' exists (use --overwrite)\n")
    assert taken.read_text() == "keep"


@pytest.mark.parametrize("options, message", [
    (["-o", "mine.txt"], "-o 'mine.txt': learn writes a TOML kernel file; give it the suffix .toml"),
    (["-o", "mine"], "-o 'mine': learn writes a TOML kernel file; give it the suffix .toml"),
    (["--seed", str(-2 ** 63 - 1)], f"--seed must be from -9223372036854775808 to 18446744073709551615, got {-2 ** 63 - 1}"),
    (["--seed", str(2 ** 64)], f"--seed must be from -9223372036854775808 to 18446744073709551615, got {2 ** 64}"),
])
def test_learn_refuses_what_it_could_not_use_before_working(cli, before, tmp_path, monkeypatch, options, message):
    """A kernel file named .txt was written as TOML, which `apply -k` then read as a plain matrix
    and refused; a seed past 64 bits was an internal error."""
    monkeypatch.chdir(tmp_path)
    result = cli("learn", before, before, "--size", "3", *options)
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.png"]


def test_an_existing_compare_picture_fails_the_input_before_the_filter(cli, camera_copy, tmp_path):
    """It blocked the main output after the filter had run, named as 'output', even with
    --skip-existing; --overwrite replaces it."""
    picture, out = tmp_path / "compare.png", tmp_path / "out.png"
    picture.write_bytes(b"keep")
    result = cli("apply", camera_copy, "-k", "sharpen", "-o", out, "--compare", picture, "--skip-existing")
    assert (result.exit_code, result.stderr) == (
        1, f"convfilter: error: {str(camera_copy)!r}: --compare '{picture}' exists (use --overwrite)\n")
    assert picture.read_bytes() == b"keep" and not out.exists()
    assert cli("apply", camera_copy, "-k", "sharpen", "-o", out, "--compare", picture, "--overwrite").exit_code == 0
    with Image.open(picture) as image:
        assert image.width > 2 * 512


def test_commands_that_write_one_file_take_quiet(cli, before, tmp_path):
    recipe = tmp_path / "p.toml"
    recipe.write_text('[[step]]\nkernel = "blur"\n')
    for arguments, written in [
        (["export", recipe, "-o", tmp_path / "p.pt2"], tmp_path / "p.pt2"),
        (["learn", before, before, "--size", "1", "--steps", "1", "-o", tmp_path / "k.toml"], tmp_path / "k.toml"),
        (["kernels", "preview", before, "-o", tmp_path / "s.png", "--size", "16"], tmp_path / "s.png"),
    ]:
        result = cli(*arguments, "-q")
        assert (result.exit_code, result.stderr) == (0, ""), arguments
        assert written.is_file()


@pytest.mark.parametrize("arguments, message", [
    (["learn", "-", "{before}"], "learn reads BEFORE and AFTER from files; '-' (standard input) is not taken"),
    (["learn", "{before}", "-"], "learn reads BEFORE and AFTER from files; '-' (standard input) is not taken"),
    (["kernels", "preview", "-", "-o", "s.png"],
     "kernels preview reads the photo from a file; '-' (standard input) is not taken"),
])
def test_standard_input_is_refused_where_a_file_is_read_twice(cli, before, tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    result = cli(*[a.format(before=before) for a in arguments])
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: {message}\n")
