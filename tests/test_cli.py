"""The command line end to end: results against OpenCV/numpy, output names, exit codes, exact errors."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import CAMERA, ROOT, SAMPLES, gray, run_process
from convfilter import kernels
from test_pipeline import max_diff, opencv_filter

# ---------------------------------------------------------------------------- results (the "Done when")


@pytest.mark.parametrize("name", ["sharpen", "blur", "edge", "sobel-x", "gaussian5"])
def test_apply_matches_opencv_reflect101(cli, camera_copy, camera, tmp_path, name):
    out = tmp_path / "out.png"
    result = cli("apply", camera_copy, "-k", name, "-o", out)
    assert result.exit_code == 0, result.stderr
    expected = cv2.filter2D(camera, -1, np.array(kernels.resolve(name).weights(), np.float32),
                            borderType=cv2.BORDER_REFLECT_101)
    assert max_diff(gray(out), expected) <= 1


@pytest.mark.parametrize("border", ["replicate", "zeros", "circular"])
@pytest.mark.parametrize("name", ["sharpen", "blur", "edge", "sobel-x", "gaussian5"])
def test_apply_borders_match_opencv(cli, camera_copy, camera, tmp_path, name, border):
    out = tmp_path / "out.png"
    assert cli("apply", camera_copy, "-k", name, "--border", border, "-o", out).exit_code == 0
    assert max_diff(gray(out), opencv_filter(camera, kernels.resolve(name).weights(), border)) <= 1


@pytest.mark.parametrize("mode, reduce", [("avg", np.mean), ("max", np.max)])
def test_pool_matches_numpy_blocks(cli, camera_copy, camera, tmp_path, mode, reduce):
    out = tmp_path / "out.png"
    assert cli("pool", camera_copy, "--size", "2", "--mode", mode, "-o", out).exit_code == 0
    blocks = camera.reshape(256, 2, 256, 2).astype(np.float64)
    assert np.array_equal(gray(out), np.round(reduce(blocks, axis=(1, 3))).astype(np.uint8))


def test_two_kernels_run_in_order(cli, camera_copy, camera, tmp_path):
    out = tmp_path / "out.png"
    assert cli("apply", camera_copy, "-k", "blur", "-k", "sharpen", "-o", out).exit_code == 0
    blurred = cv2.filter2D(camera.astype(np.float32), -1, np.full((3, 3), 1 / 9, np.float32),
                           borderType=cv2.BORDER_REFLECT_101)
    sharpened = cv2.filter2D(blurred, -1, np.array(kernels.resolve("sharpen").weights(), np.float32),
                             borderType=cv2.BORDER_REFLECT_101)
    assert max_diff(gray(out), np.clip(np.round(sharpened), 0, 255)) <= 1


def test_flip_is_true_convolution(cli, camera_copy, camera, tmp_path):
    out = tmp_path / "out.png"
    assert cli("apply", camera_copy, "-k", "emboss", "--flip", "-o", out).exit_code == 0
    flipped = np.array(kernels.resolve("emboss").weights())[::-1, ::-1]
    assert max_diff(gray(out), opencv_filter(camera, flipped, "reflect")) <= 1


# ---------------------------------------------------------------------------- output names and safety


@pytest.mark.parametrize(
    "args, name",
    [
        (["apply", "-k", "sharpen"], "photo_sharpen.png"),
        (["apply", "-k", "blur", "-k", "edge"], "photo_blur+edge.png"),
        (["apply", "-k", "blur", "--repeat", "2", "-k", "edge"], "photo_blur+blur+edge+edge.png"),
        (["apply", "-k", "blur", "--repeat", "60", "-k", "edge"], "photo_blurx60+edgex60.png"),  # not 330 characters
        (["apply", *["-k", "motion-blur", "-k", "unsharp5"] * 12],  # 24 names, 239 characters: past 255 bytes
         "photo_" + "+".join(["motion-blur", "unsharp5"] * 4) + "+16more.png"),
        (["apply", "-k", "0,-1,0;-1,5,-1;0,-1,0"], "photo_custom.png"),
        (["apply", "-k", "sharpen", "--format", "jpg"], "photo_sharpen.jpg"),
        (["pool", "--size", "3"], "photo_pool3.png"),
    ],
)
def test_default_output_name_beside_the_input(cli, camera_copy, args, name):
    result = cli(*args[:1], camera_copy, *args[1:])
    assert result.exit_code == 0, result.stderr
    target = camera_copy.parent / name
    assert target.is_file()
    assert result.stderr == f"wrote {target}\n"
    with Image.open(target) as image:
        assert image.format == ("JPEG" if name.endswith(".jpg") else "PNG")


@pytest.mark.parametrize("output, fmt, written", [
    ("out.dat", "png", "PNG"), ("out", "jpg", "JPEG"), ("out.jpeg", "jpg", "JPEG"), ("out.TIF", "tiff", "TIFF"),
])
def test_format_with_an_output_file_of_that_format_or_no_image_suffix(cli, camera_copy, output, fmt, written):
    target = camera_copy.parent / output
    assert cli("apply", camera_copy, "-k", "sharpen", "-o", target, "--format", fmt).exit_code == 0
    with Image.open(target) as image:
        assert image.format == written


def test_format_against_the_suffix_of_an_output_file_is_a_usage_error(cli, camera_copy):
    """-o out.png --format jpg wrote JPEG data into out.png."""
    target = camera_copy.parent / "out.png"
    result = cli("apply", camera_copy, "-k", "sharpen", "-o", target, "--format", "jpg")
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: -o {str(target)!r} names a PNG file but "
                                                    "--format is 'jpg'; give -o a matching suffix, or leave out --format\n")
    assert not target.exists()


def test_a_written_name_with_a_newline_is_quoted_on_its_line(cli, camera_copy):
    """'wrote' lines printed the name raw, so a newline in it made two lines (error lines quote it)."""
    odd = camera_copy.parent / "a\nb.png"
    camera_copy.rename(odd)
    result = cli("apply", odd, "-k", "sharpen")
    written = str(odd.parent / "a\nb_sharpen.png")
    assert (result.exit_code, result.stderr) == (0, f"wrote {written!r}\n")
    again = cli("apply", odd, "-k", "sharpen")  # the error line quotes the output too: one line
    assert (again.exit_code, again.stderr) == (
        1, f"convfilter: error: {str(odd)!r}: output {written!r} exists (use --overwrite or --skip-existing)\n")
    plan = cli("apply", odd, "-k", "sharpen", "--dry-run")
    assert plan.stdout.decode() == f"{str(odd)!r} -> {written!r}\n"


def test_output_directory_takes_the_input_name(cli, camera_copy, tmp_path):
    assert cli("apply", camera_copy, "-k", "blur", "-o", f"{tmp_path}/new/").exit_code == 0
    assert (tmp_path / "new" / "photo.png").is_file()
    (tmp_path / "existing").mkdir()
    assert cli("pool", camera_copy, "-o", tmp_path / "existing", "--format", "tiff").exit_code == 0
    assert (tmp_path / "existing" / "photo.tiff").is_file()


def test_quality_sets_jpeg_quality(cli, camera_copy, tmp_path):
    low, high = tmp_path / "low.jpg", tmp_path / "high.jpg"
    assert cli("apply", camera_copy, "-k", "identity", "-o", low, "--quality", "20").exit_code == 0
    assert cli("apply", camera_copy, "-k", "identity", "-o", high).exit_code == 0
    assert low.stat().st_size < high.stat().st_size / 2


def test_png_compression_level_changes_size_not_pixels(cli, camera_copy, tmp_path):
    sizes = {}
    for level in ("0", "1", "9"):
        out = tmp_path / f"level{level}.png"
        assert cli("apply", camera_copy, "-k", "blur", "-o", out, "--png-compression", level).exit_code == 0
        sizes[level] = out.stat().st_size
    assert sizes["0"] > sizes["1"] > sizes["9"]
    assert np.array_equal(gray(tmp_path / "level0.png"), gray(tmp_path / "level9.png"))
    default = tmp_path / "default.png"
    assert cli("apply", camera_copy, "-k", "blur", "-o", default).exit_code == 0
    assert default.read_bytes() == (tmp_path / "level1.png").read_bytes()


def test_an_input_is_never_overwritten(cli, camera_copy):
    before = camera_copy.read_bytes()
    result = cli("apply", camera_copy, "-k", "blur", "-o", camera_copy, "--overwrite")
    assert result.exit_code == 2  # found while planning: nothing is written
    assert result.stderr == (f"convfilter: error: output '{camera_copy}' is the input '{camera_copy}'; "
                             "convfilter never overwrites an input\n")
    assert camera_copy.read_bytes() == before


def test_an_input_behind_another_name_is_never_overwritten(cli, camera_copy):
    before = camera_copy.read_bytes()
    link = camera_copy.parent / "link.png"
    os.link(camera_copy, link)
    result = cli("apply", camera_copy, "-k", "blur", "-o", link, "--overwrite")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{camera_copy}': output '{link}' is the input itself; "
                             "convfilter never overwrites an input\n")
    assert camera_copy.read_bytes() == before == link.read_bytes()


def test_existing_output_needs_overwrite_or_skip(cli, camera_copy):
    target = camera_copy.parent / "photo_blur.png"
    target.write_bytes(b"keep me")
    result = cli("apply", camera_copy, "-k", "blur")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{camera_copy}': output '{target}' exists "
                             "(use --overwrite or --skip-existing)\n")
    assert target.read_bytes() == b"keep me"
    result = cli("apply", camera_copy, "-k", "blur", "--skip-existing")
    assert (result.exit_code, result.stderr, target.read_bytes()) == (0, f"skipped {target} (exists)\n", b"keep me")
    assert cli("apply", camera_copy, "-k", "blur", "--overwrite").exit_code == 0
    assert gray(target).shape == (512, 512)
    assert [p.name for p in camera_copy.parent.iterdir() if p.name.startswith(".")] == []


def test_several_inputs_one_failing(cli, camera_copy, tmp_path):
    result = cli("apply", camera_copy, tmp_path / "missing.png", "-k", "blur", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert sorted(result.stderr.splitlines()[:2]) == [  # in the order they finish
        f"convfilter: error: '{tmp_path / 'missing.png'}': no such file",
        f"wrote {tmp_path / 'out' / 'photo.png'}",
    ]
    assert re.fullmatch(r"1 written, 0 skipped, 1 failed in \d+\.\d s", result.stderr.splitlines()[2])


def test_quiet_prints_only_errors(cli, camera_copy):
    result = cli("apply", camera_copy, "-k", "blur", "-q")
    assert (result.exit_code, result.stderr) == (0, "")


def test_show_displays_instead_of_writing(cli, camera_copy, monkeypatch):
    shown = []
    monkeypatch.setattr(Image.Image, "show", lambda self, *a, **k: shown.append(self.size))
    monkeypatch.setenv("DISPLAY", ":0")
    result = cli("apply", camera_copy, "-k", "blur", "--show")
    assert (result.exit_code, shown) == (0, [(512, 512)])
    assert sorted(p.name for p in camera_copy.parent.iterdir()) == ["photo.png"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux (X11, Wayland)")
def test_show_without_a_display_is_a_usage_error(cli, camera_copy, monkeypatch):
    """Without one, the viewer (ImageMagick's display, say) fails on its own after convfilter
    has exited 0."""
    shown = []
    monkeypatch.setattr(Image.Image, "show", lambda self, *a, **k: shown.append(self.size))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("apply", camera_copy, "-k", "blur", "--show")
    assert result.exit_code == 2
    assert result.stderr == ("convfilter: error: --show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY "
                             "is set; use -o FILE\n")
    result = cli("apply", camera_copy, "-k", "blur", "--show", "-o", camera_copy.parent / "out.png")
    assert (result.exit_code, result.stderr) == (
        2, "convfilter: error: --show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set; drop --show "
           "(-o writes the result)\n")  # it said "use -o FILE" to a run that gave -o
    assert shown == [] and not (camera_copy.parent / "out.png").exists()


# ---------------------------------------------------------------------------- standard input and output


def test_stdin_to_stdout(cli, camera):
    result = cli("pool", "--size", "2", "--mode", "max", input=CAMERA.read_bytes())
    assert result.exit_code == 0
    assert result.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    out = np.asarray(Image.open(__import__("io").BytesIO(result.stdout)))
    assert np.array_equal(out, camera.reshape(256, 2, 256, 2).max(axis=(1, 3)))


def test_shell_pipe_between_two_processes(tmp_path, camera):
    """cat x.png | convfilter apply -k sharpen | convfilter pool --size 2 > y.png, as a shell runs it."""
    python = shlex.quote(sys.executable)
    command = (f"cat {shlex.quote(str(CAMERA))} | {python} -m convfilter apply -k sharpen "
               f"| {python} -m convfilter pool --size 2 > y.png")
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    sharpened = opencv_filter(camera, kernels.resolve("sharpen").weights(), "reflect").astype(np.float64)
    expected = np.round(sharpened.reshape(256, 2, 256, 2).mean(axis=(1, 3)))
    assert max_diff(gray(tmp_path / "y.png"), expected) <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.png"]


# ---------------------------------------------------------------------------- errors and exit codes


def test_ragged_kernel_file_exits_2_with_file_and_line(cli, camera_copy, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 5 6\n7 8\n")
    result = cli("apply", camera_copy, "-k", bad)
    assert result.exit_code == 2
    assert result.stderr == f"convfilter: error: kernel file '{bad}', line 3: expected 3 values like the first row, got 2\n"
    assert not (tmp_path / "photo_bad.png").exists()


def test_unknown_kernel_exits_2_with_suggestions(cli, camera_copy):
    result = cli("apply", camera_copy, "-k", "sharpn")
    assert result.exit_code == 2
    assert result.stderr == "convfilter: error: unknown kernel 'sharpn'; did you mean 'sharpen' or 'unsharp5'?\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["apply", "-k", "blur", "--border", "mirror"], "unknown border 'mirror'; choose from reflect, replicate, zeros, circular"),
        (["apply", "-k", "blur", "--range", "wrap"], "unknown range 'wrap'; choose from clip, abs, stretch"),
        (["pool", "--mode", "median"], "unknown pool mode 'median'; choose from avg, max, min, stochastic"),
        (["pool", "--size", "0"], "--size must be at least 1, got 0"),
        (["apply", "-k", "blur", "--repeat", "0"], "--repeat must be at least 1, got 0"),
        (["apply"], "no kernel given; use -k NAME (see 'convfilter kernels')"),
        (["apply", "-k", "blur", "--quality", "101"], "--quality must be between 1 and 100, got 101"),
        (["apply", "-k", "blur", "--png-compression", "10"], "--png-compression must be between 0 and 9, got 10"),
        (["apply", "-k", "blur", "-o", "x.nope"], "unknown output format '.nope'; choose from"),
        (["apply", "-k", "laplacian", "--normalize"], "cannot normalize: the weights sum to 0"),
        (["apply", "-k", "blur", "--device", "tpu"], "unknown device 'tpu'; choose from auto, cpu, cuda"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(cli, camera_copy, args, message):
    result = cli(*args[:1], camera_copy, *args[1:])
    assert result.exit_code == 2
    assert result.stderr.startswith("convfilter: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in camera_copy.parent.iterdir()) == ["photo.png"]


def put(name: str, data: bytes):
    """A maker of a file `name` holding `data` in a test's directory."""

    def make(directory: Path) -> Path:
        (directory / name).write_bytes(data)
        return directory / name

    return make


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no such file"),
        (put("empty.png", b""), "empty file"),
        (put("page.jpg", b"<html>hello</html>"), "not an image (Pillow cannot identify its format)"),
        (put("cut.png", CAMERA.read_bytes()[:5000]), "truncated or corrupt image: "),
    ],
)
def test_bad_inputs_exit_1_with_one_line(cli, tmp_path, make, message):
    source = make(tmp_path)
    result = cli("apply", source, "-k", "blur", "-o", tmp_path / "out.png")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"convfilter: error: '{source}': {message}")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if source == tmp_path / "missing.png" else [source.name])


def test_max_pixels_refuses_a_larger_image(cli, camera_copy, tmp_path):
    result = cli("apply", camera_copy, "-k", "blur", "--max-pixels", "1000", "-o", tmp_path / "out.png")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{camera_copy}': 512x512 is 262144 pixels, "
                             "more than --max-pixels 1000\n")


def test_image_too_small_for_reflect_is_a_per_file_error(cli, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("L", (2, 2), 100).save(tiny)
    result = cli("apply", tiny, "-k", "gaussian5")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{tiny}': image is 2x2, too small: a 5x5 kernel with "
                             "--border reflect needs each side longer than 2 pixels\n")
    assert cli("apply", tiny, "-k", "gaussian5", "--border", "replicate").exit_code == 0


ROOT_WITHOUT_SETPRIV = os.geteuid() == 0 and not shutil.which("setpriv")


@pytest.mark.skipif(ROOT_WITHOUT_SETPRIV, reason="root reads any file; setpriv is needed to drop that power")
def test_unreadable_input_exits_1_in_a_real_process(tmp_path):
    source = tmp_path / "secret.png"
    source.write_bytes(CAMERA.read_bytes())
    source.chmod(0)
    command = [sys.executable, "-m", "convfilter", "apply", str(source), "-k", "blur", "-o", "-"]
    if os.geteuid() == 0:  # root reads any file: drop the capabilities that allow it
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.decode() == f"convfilter: error: '{source}': cannot read it: permission denied\n"
    assert done.stdout == b""


def test_no_traceback_for_an_internal_error_without_debug(cli, camera_copy, monkeypatch):
    from convfilter import imageio

    monkeypatch.setattr(imageio, "read_image", lambda *a, **k: 1 / 0)
    result = cli("apply", camera_copy, "-k", "blur")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{camera_copy}': internal error: ZeroDivisionError: "
                             "division by zero (rerun as convfilter --debug COMMAND ... for the traceback)\n")
    debugged = cli("--debug", "apply", camera_copy, "-k", "blur")
    assert debugged.exit_code == 1
    assert debugged.stderr.startswith("Traceback (most recent call last):\n")
    assert "ZeroDivisionError: division by zero\n" in debugged.stderr
    assert debugged.stderr.endswith("convfilter: error: internal error: ZeroDivisionError: division by zero "
                                    "(rerun as convfilter --debug COMMAND ... for the traceback)\n")


def test_debug_shows_the_traceback_and_keeps_the_exit_code(cli, camera_copy):
    result = cli("--debug", "apply", camera_copy, "-k", "sharpn")
    assert result.exit_code == 2
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert result.stderr.endswith("\nconvfilter: error: unknown kernel 'sharpn'; did you mean 'sharpen' or 'unsharp5'?\n")


def test_interrupt_exits_130_and_leaves_nothing(cli, camera_copy, monkeypatch):
    from convfilter import imageio

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio, "encode", interrupted)
    result = cli("apply", camera_copy, "-k", "blur")
    assert (result.exit_code, result.stderr) == (130, "convfilter: interrupted\n")
    assert sorted(p.name for p in camera_copy.parent.iterdir()) == ["photo.png"]


# ---------------------------------------------------------------------------- kernels command, imports


def test_an_unknown_output_format_lists_only_formats_that_write_a_grey_image(cli, tmp_path):
    """The list offered .h5 .grib .bufr .wmf .emf (stub writers: 'save handler not installed') and
    .xbm .msp .palm (1-bit only), each of which was then refused."""
    from convfilter.imageio import check_holds

    Image.open(CAMERA).crop((0, 0, 32, 24)).save(tmp_path / "a.png")
    result = cli("apply", tmp_path / "a.png", "-k", "blur", "-o", tmp_path / "x.nope")
    assert result.exit_code == 2
    offered = result.stderr.rstrip("\n").split("choose from ")[1].split()
    assert {".png", ".jpg", ".tif", ".pgm", ".webp"} <= set(offered)
    assert not {".h5", ".grib", ".bufr", ".wmf", ".emf", ".xbm", ".msp", ".palm"} & set(offered)
    for suffix in offered:
        check_holds(suffix)  # every one offered writes a grayscale image


def test_kernels_lists_the_library(cli):
    result = cli("kernels")
    assert result.exit_code == 0
    table = result.stdout.decode()
    for name in ("identity", "sharpen", "sobel-x", "motion-blur"):
        assert name in table
    assert "built-in" in table


def test_kernels_lists_a_broken_user_kernel_with_its_error(cli, tmp_path, monkeypatch):
    """Not to a terminal: one table row a line, whole (at 80 columns the file was cut short)."""
    monkeypatch.setenv("COLUMNS", "80")
    user = tmp_path / "config" / "convfilter" / "kernels"
    user.mkdir(parents=True)
    (user / "mine.txt").write_text("1 2\n3\n")
    result = cli("kernels")
    assert result.exit_code == 0
    table = result.stdout.decode()
    [row] = [line for line in table.splitlines() if " mine " in line]
    assert f"kernel file '{user / 'mine.txt'}', line 2: expected 2 values like the first row, got 1" in row


def test_kernels_lists_names_and_descriptions_as_text_one_line_a_row(cli, tmp_path):
    """A description with '[/]' ended the listing with an internal error (Rich markup); '[b]x.toml'
    was listed as 'x', which -k did not know; a description over two lines took two lines."""
    user = tmp_path / "config" / "convfilter" / "kernels"
    user.mkdir(parents=True)
    (user / "br.toml").write_text('weights = [[1]]\ndescription = """\nBrightness [/] test,\n[bold]kept[/bold]\n"""\n')
    (user / "[b]x.toml").write_text("weights = [[2]]\n")
    result = cli("kernels")
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.decode().splitlines()
    [br] = [line for line in rows if " br " in line]
    assert "Brightness [/] test, [bold]kept[/bold]" in br
    [bx] = [line for line in rows if " [b]x " in line]
    assert str(user / "[b]x.toml") in bx
    assert kernels.resolve("[b]x").weights() == ((2.0,),)


def test_kernels_show_prints_the_matrix(cli):
    result = cli("kernels", "show", "sobel-x")
    assert result.exit_code == 0
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "sobel-x: 3x3, sum 0"
    assert [line.split() for line in lines[-3:]] == [["-1", "0", "1"], ["-2", "0", "2"], ["-1", "0", "1"]]
    missing = cli("kernels", "show", "sobelx")
    assert (missing.exit_code, missing.stderr) == (
        2, "convfilter: error: unknown kernel 'sobelx'; did you mean 'sobel-x' or 'sobel-y'?\n")


@pytest.mark.parametrize("size", [19, 63])
def test_kernels_show_prints_every_value_of_a_large_kernel(cli, tmp_path, size):
    """Past about 80 characters Rich squeezed the columns: 31x31 showed 18 columns, 63x63 only
    spaces, 19x19 values cut to '1.…'."""
    weights = np.round(np.random.default_rng(size).uniform(-1, 1, (size, size)), 4)
    (tmp_path / "big.txt").write_text("\n".join(" ".join(f"{v:.4f}" for v in row) for row in weights))
    result = cli("kernels", "show", tmp_path / "big.txt")
    assert result.exit_code == 0, result.stderr
    shown = [[float(v) for v in line.split()] for line in result.stdout.decode().splitlines()[-size:]]
    assert np.array_equal(np.array(shown), weights)


@pytest.mark.parametrize("command", [[], ["apply"], ["pool"], ["upsample"], ["run"], ["export"], ["learn"],
                                     ["kernels"], ["kernels", "show"], ["kernels", "preview"]])
def test_every_help_shows_an_example_of_its_command(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.decode().split())
    assert f"Example: convfilter {' '.join(command)}".rstrip() in text


def test_help_keeps_square_brackets_of_toml_tables(cli):
    words = cli("run", "--help").stdout.decode().split()
    text = " ".join(word for word in words if word != "│")  # the panel's border where a line wraps
    assert "A pipeline file (TOML): [[step]] tables run in order." in text


@pytest.mark.parametrize("args", [["--help"], ["kernels"], ["kernels", "show", "sobel-x"], ["apply", "--help"]])
def test_help_and_kernels_do_not_import_torch(args):
    code = (
        "import sys\n"
        f"sys.argv = ['convfilter', *{args!r}]\n"
        "from convfilter.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def test_python_dash_m_and_the_console_script(tmp_path):
    done = run_process("--version")
    assert (done.returncode, done.stdout.decode().split()[0]) == (0, "convfilter")
    script = Path(sys.executable).parent / "convfilter"
    done = subprocess.run([script, "pool", CAMERA, "-o", tmp_path / "x.png"], capture_output=True, timeout=300)
    assert done.returncode == 0 and gray(tmp_path / "x.png").shape == (256, 256)


def test_a_real_process_flushes_its_output_and_keeps_the_exit_code_once_torch_is_loaded(tmp_path):
    """main() skips the interpreter's teardown once torch is loaded (os._exit): standard output
    must still arrive whole, stderr lines too, and the exit codes stay those of the contract."""
    done = run_process("apply", CAMERA, "-k", "sharpen", "-o", "-")
    assert done.returncode == 0, done.stderr.decode()
    expected = opencv_filter(gray(CAMERA), kernels.resolve("sharpen").weights(), "reflect")
    assert max_diff(np.asarray(Image.open(io.BytesIO(done.stdout))), expected) <= 1
    done = run_process("apply", CAMERA, tmp_path / "missing.png", "-k", "sharpen", "-o", tmp_path / "out/")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[0] == f"convfilter: error: '{tmp_path / 'missing.png'}': no such file"
    assert "1 written, 0 skipped, 1 failed" in done.stderr.decode()
    assert max_diff(gray(tmp_path / "out" / "camera.png"), expected) <= 1


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_the_cpu_path_never_imports_torchvision(tmp_path, device):
    """torchvision (about 3 s to import here) is for the batch path only; on a machine without an
    NVIDIA device (as CI: made so here on any machine), `auto` is the CPU path."""
    code = (
        "import sys\n"
        "from convfilter import cli\n"
        "cli._nvidia_present = lambda: False\n"
        "app = cli.app\n"
        f"try:\n    app(['apply', {str(CAMERA)!r}, '-k', 'sharpen', '-o', {str(tmp_path / 'x.png')!r}, "
        f"'--device', {device!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' in sys.modules and 'torchvision' not in sys.modules, 'torchvision was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert max_diff(gray(tmp_path / "x.png"), opencv_filter(gray(CAMERA), kernels.resolve("sharpen").weights(),
                                                            "reflect")) <= 1


@pytest.mark.parametrize("how", [["-o", "out/", "--format", "xbm"], ["-o", "-", "--format", "xbm"], ["-o", "x.xbm"],
                                 ["-o", "out/", "--format", "msp"]])
def test_a_format_that_cannot_hold_grayscale_is_refused_before_anything_is_made(cli, camera_copy, how):
    fmt = how[-1].split(".")[-1]
    result = cli("apply", camera_copy, camera_copy.parent / "other.png", "-k", "blur", *how) if how[1] == "out/" \
        else cli("apply", camera_copy, "-k", "blur", *how)
    assert result.exit_code == 2
    assert re.fullmatch(rf"convfilter: error: output format '\.?{fmt}' \(\w+\) cannot hold a grayscale image: .+\n",
                        result.stderr)
    assert result.stdout == b""
    assert not (camera_copy.parent / "out").exists() and not (camera_copy.parent / "x.xbm").exists()


def test_standard_output_that_is_the_input_file_is_refused(tmp_path):
    """`-o - >> photo.png`: the shell opens the input as standard output; nothing is appended."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(CAMERA.read_bytes())
    for arguments, stdin, message in [
        (["apply", photo, "-k", "blur", "-o", "-"], None, f"the input '{photo}'"),
        (["apply", "-k", "blur"], photo, "the same file as standard input"),
    ]:
        with open(photo, "ab") as stdout, open(stdin or os.devnull, "rb") as source:
            done = subprocess.run([sys.executable, "-m", "convfilter", *map(str, arguments)], stdin=source,
                                  stdout=stdout, stderr=subprocess.PIPE, timeout=300)
        assert done.returncode == 2
        assert done.stderr.decode() == (f"convfilter: error: standard output is {message}; "
                                        "convfilter never overwrites an input\n")
        assert photo.read_bytes() == CAMERA.read_bytes()


def test_a_reader_that_stops_early_is_one_error_line(tmp_path):
    """`convfilter ... -o - | true`: the pipe closes before the image is written."""
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (400, 400), dtype=np.uint8)).save(big)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write breaks the pipe
    with open(write_end, "wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "convfilter", "apply", str(big), "-k", "identity", "-o", "-"],
                              stdout=stdout, stderr=subprocess.PIPE, timeout=300)
    assert done.returncode == 1
    assert done.stderr.decode() == (f"convfilter: error: '{big}': standard output was closed before the whole "
                                    "image was written\n")


def test_a_format_for_colour_only_takes_grey_as_rgb(cli, tmp_path):
    """QOI holds RGB and RGBA only: a grey result is written as RGB with three equal channels (it
    was a usage error, and with --color on a grey input a per-file error after reading)."""
    photo = tmp_path / "rocket.jpg"
    photo.write_bytes((CAMERA.parent / "rocket.jpg").read_bytes())
    colour = cli("apply", photo, "--color", "-k", "blur", "-o", tmp_path / "c.qoi")
    assert colour.exit_code == 0, colour.stderr
    with Image.open(tmp_path / "c.qoi") as image:
        assert (image.format, image.mode, image.size) == ("QOI", "RGB", Image.open(photo).size)
    for options in ([], ["--color"]):
        for suffix in (".qoi", ".png"):
            result = cli("apply", CAMERA, "-k", "blur", *options, "-o", tmp_path / f"g{len(options)}{suffix}")
            assert result.exit_code == 0, result.stderr
        with Image.open(tmp_path / f"g{len(options)}.qoi") as image:
            rgb = np.asarray(image)
        assert image.mode == "RGB" and all(np.array_equal(rgb[..., i], gray(tmp_path / f"g{len(options)}.png"))
                                           for i in range(3))


def test_a_reader_that_leaves_a_plan_early_is_quiet_like_a_tool_stopped_by_sigpipe(tmp_path):
    """`convfilter ... --dry-run | head`: exit 141, as the shell reports a tool that SIGPIPE
    stopped, and nothing on standard error."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(CAMERA.read_bytes())
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "convfilter", "apply", str(photo), "-k", "blur", "--dry-run"],
                              stdout=stdout, stderr=subprocess.PIPE, timeout=300)
    assert (done.returncode, done.stderr) == (141, b"")


def test_image_data_to_a_closed_standard_output_is_a_usage_error(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(CAMERA.read_bytes())
    code = ("import os, sys\nos.close(1)\nsys.stdout = None\nfrom convfilter.cli import main\n"
            f"sys.argv = ['convfilter', 'apply', {str(photo)!r}, '-k', 'blur', '-o', '-']\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], stderr=subprocess.PIPE, timeout=300)
    assert (done.returncode, done.stderr) == (2, b"convfilter: error: standard output is closed; use -o FILE\n")


@pytest.mark.parametrize("arguments", [
    ["apply", "{photo}", "-k", "sharpen", "-o", "{dir}/out.png", "--compare", "{photo}", "--overwrite"],
    ["kernels", "preview", "{photo}", "-o", "{photo}", "--overwrite"],
    ["learn", "{photo}", "{photo}", "-o", "{photo}", "--overwrite"],
])
def test_single_file_outputs_never_overwrite_an_input(cli, camera_copy, arguments):
    """--compare, kernels preview -o and learn -o write one file of their own: never an input,
    not even with --overwrite."""
    before = camera_copy.read_bytes()
    result = cli(*[a.format(photo=camera_copy, dir=camera_copy.parent) for a in arguments])
    assert result.exit_code == 2
    assert result.stderr.endswith(f" '{camera_copy}' is the input '{camera_copy}'; convfilter never overwrites an input\n")
    assert camera_copy.read_bytes() == before


def test_export_never_overwrites_its_pipeline_file(cli, tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[[step]]\nkernel = "blur"\n')
    result = cli("export", pipeline, "-o", pipeline, "--overwrite")
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: -o '{pipeline}' is the input '{pipeline}'; convfilter never overwrites an input\n")
    assert pipeline.read_text() == '[[step]]\nkernel = "blur"\n'


@pytest.mark.parametrize("compare, message", [
    ("{dir}/photo_sharpen.png", "--compare '{dir}/photo_sharpen.png' is also the output of the filter"),
    ("-", "--compare takes a file name, got '-'"),
    ("{dir}/sub/", "--compare takes a file name, got '{dir}/sub/'"),
])
def test_compare_must_be_a_file_of_its_own(cli, camera_copy, monkeypatch, compare, message):
    folder = camera_copy.parent
    monkeypatch.chdir(folder)  # where a file named '-' would land if the check failed
    result = cli("apply", camera_copy, "-k", "sharpen", "--compare", compare.format(dir=folder))
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: {message.format(dir=folder)}\n")
    assert sorted(p.name for p in folder.iterdir()) == ["photo.png"]


@pytest.mark.parametrize("arguments, message", [
    (["apply", "{photo}", "-k", "blur", "--repeat", "1001"], "--repeat must be at most 1000, got 1001"),
    (["upsample", "{photo}", "--factor", "17"], "--factor must be at most 16, got 17"),
    (["kernels", "preview", "{photo}", "-o", "{dir}/s.png", "--size", "100000"],
     "--size must be 16 to 2048 pixels, got 100000"),
    (["kernels", "preview", "{photo}", "-o", "{dir}/s.png", "--columns", str(10 ** 20)],
     f"--columns must be 1 to 64, got {10 ** 20}"),
    (["apply", "{photo}", "-k", "sharpen", "--stride", str(10 ** 17)], f"--stride must be at most 1000000, got {10 ** 17}"),
    (["pool", "{photo}", "--stride", "1000001"], "--stride must be at most 1000000, got 1000001"),
    (["apply", "{photo}", "-k", "sharpen", "-j", "100000"], "--jobs must be 1 to 1024, got 100000"),
])
def test_sizes_that_would_take_all_memory_are_usage_errors(cli, camera_copy, arguments, message):
    """A billion repeats is a billion layers; a factor of 20,000 a 10 TB image: refused, not killed."""
    result = cli(*[a.format(photo=camera_copy, dir=camera_copy.parent) for a in arguments])
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: {message}\n")


@pytest.mark.parametrize("arguments, message", [
    (["apply", "", "-k", "sharpen"], "an input is an empty name ''; give an image file, a folder, a glob or -"),
    (["apply", "", "{photo}", "-k", "sharpen"], "an input is an empty name ''; give an image file, a folder, a glob or -"),
    (["apply", "{photo}", "-k", "sharpen", "-o", ""], "-o is empty; give a file, a folder or -"),
    (["apply", "{photo}", "-k", "sharpen", "--format", ""], "--format is empty; give a format like png, jpg or tiff"),
    (["apply", "{photo}", "-k", "sharpen", "--shard", ""], "--shard is empty; give K/N, like 2/8"),
    (["apply", "{photo}", "-k", "sharpen", "--compare", ""], "--compare is empty; give a file name"),
    (["export", "{pipeline}", "-o", ""], "-o takes a file name, got ''"),
    (["kernels", "preview", "{photo}", "-o", ""], "-o takes a file name, got ''"),
    (["learn", "{photo}", "{photo}", "-o", ""], "-o takes a file name, got ''"),
    (["kernels", "preview", "", "-o", "s.png"], "IMAGE is empty; give a photo file, or leave it out for the sample photo"),
    (["learn", "", "{photo}"], "BEFORE is empty; give an image file"),
    (["learn", "{photo}", ""], "AFTER is empty; give an image file"),
    (["run", "", "{photo}"], "the pipeline file is an empty name ''; give a .toml file"),
    (["export", "", "-o", "e.pt2"], "the pipeline file is an empty name ''; give a .toml file"),
])
def test_empty_values_are_usage_errors(cli, camera_copy, monkeypatch, arguments, message):
    """An unset variable in a script ("$f", -o "$OUT", --shard "$SHARD") crashed the planning, wrote
    into the current folder, or processed every file: now exit 2 and nothing written."""
    folder = camera_copy.parent
    monkeypatch.chdir(folder)
    pipeline = str(SAMPLES / "edges.toml")
    result = cli(*[a.format(photo=camera_copy, pipeline=pipeline) for a in arguments])
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: {message}\n")
    assert sorted(p.name for p in folder.iterdir()) == ["photo.png"]


def shell(command: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`command` in bash in tmp_path, with `convfilter` standing for this Python's module."""
    convfilter = f"{shlex.quote(sys.executable)} -m convfilter"
    return subprocess.run(["bash", "-c", command.replace("convfilter", convfilter)], cwd=tmp_path,
                          capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("name", ["x.jpg", "x.bmp", "x.tiff", "x.pgm"])
def test_an_output_cut_short_by_the_file_size_limit_is_an_error_and_not_left(tmp_path, name):
    """Pillow writes these formats straight to the file's descriptor and ignored the short write:
    `wrote x.jpg`, exit 0, and a cut-off image under its final name (a full disk did the same)."""
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 100), dtype=np.uint8)).save(tmp_path / "noise.png")
    result = shell(f"ulimit -f 8; convfilter apply noise.png -k sharpen -o {name}", tmp_path)  # 8 KiB; the image is more
    assert (result.returncode, result.stderr.decode()) == (
        1, f"convfilter: error: 'noise.png': cannot write '{name}': File too large\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.png"]


def test_closed_standard_streams_break_only_the_runs_that_need_them(tmp_path):
    """`<&-` and `>&-` gave an internal error (AttributeError on None) even with files in and out."""
    Image.open(CAMERA).crop((0, 0, 64, 48)).save(tmp_path / "a.png")
    done = shell("convfilter apply a.png -k blur -o in_closed.png <&- >&-", tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    expected = opencv_filter(gray(tmp_path / "a.png"), kernels.resolve("blur").weights(), "reflect")
    assert max_diff(gray(tmp_path / "in_closed.png"), expected) <= 1
    done = shell("convfilter apply - -k blur -o dash.png <&-", tmp_path)
    assert (done.returncode, done.stderr) == (2, b"convfilter: error: standard input is closed; give image files "
                                                 b"or directories\n")
    done = shell("convfilter apply a.png -k blur -o - >&-", tmp_path)
    assert (done.returncode, done.stderr) == (2, b"convfilter: error: standard output is closed; use -o FILE\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "in_closed.png"]


@pytest.mark.parametrize("command, message", [
    ("apply a.png -k blur -o - > /dev/full", "'a.png': cannot write to standard output: No space left on device"),
    ("apply a.png -k blur -o out/ --dry-run > /dev/full", "cannot write to standard output: No space left on device"),
    ("kernels > /dev/full", "cannot write to standard output: No space left on device"),
])
def test_a_full_standard_output_is_one_error_line(tmp_path, command, message):
    """It was an internal error, or for --help a traceback."""
    Image.open(CAMERA).crop((0, 0, 64, 48)).save(tmp_path / "a.png")
    done = shell(f"convfilter {command}", tmp_path)
    assert (done.returncode, done.stderr.decode()) == (1, f"convfilter: error: {message}\n")


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGTERM"])
def test_an_interrupt_while_the_command_line_loads_is_one_line_and_exit_130(how):
    """Ctrl-C inside `import typer` printed a traceback; SIGTERM then killed convfilter by the
    signal (143 in a shell) with no word. The interrupt is made to come at that import."""
    code = (
        "import importlib.abc, os, signal, sys\n"
        "class Interrupt(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'typer':\n"
        f"            {'raise KeyboardInterrupt' if how == 'KeyboardInterrupt' else 'os.kill(os.getpid(), signal.SIGTERM)'}\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['convfilter', '--help']\n"
        "from convfilter.console import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (130, b"convfilter: interrupted\n", b"")


@pytest.mark.parametrize("command, message", [
    ("apply a.png -k blur -o o.png --json >&-", "standard output is closed; --json prints to it"),
    ("apply a.png -k blur -o o/ --dry-run >&-", "standard output is closed; --dry-run prints to it"),
    ("kernels >&-", "standard output is closed; the list of kernels prints to it"),
    ("apply -k blur --from - -o o/ 0>written", "--from -: cannot read standard input: Bad file descriptor"),
])
def test_standard_streams_a_run_cannot_use_are_usage_errors(tmp_path, command, message):
    """A closed standard output lost the report or list without a word (exit 0); standard input
    open for writing only gave 'cannot write to standard output'."""
    Image.open(CAMERA).crop((0, 0, 64, 48)).save(tmp_path / "a.png")
    done = shell(f"convfilter {command}", tmp_path)
    assert (done.returncode, done.stderr.decode()) == (2, f"convfilter: error: {message}\n")
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o").exists()


def test_standard_input_open_for_writing_only_is_a_per_file_error(tmp_path):
    done = shell("convfilter apply - -k blur -o out.png 0>written", tmp_path)
    assert (done.returncode, done.stderr.decode()) == (
        1, "convfilter: error: standard input: cannot read it: Bad file descriptor\n")


@pytest.mark.parametrize("command, message", [
    ("kernels show sobel-x 1</dev/null", "cannot write to standard output: Bad file descriptor"),
    ("--version 1</dev/null", "cannot write to standard output: Bad file descriptor"),
    ("apply /dev/stdin -k blur -o x.png <&-", "standard input is closed; give image files or directories"),
])
def test_standard_streams_that_fail_are_one_line(tmp_path, command, message):
    """Standard output open for reading only gave an internal error, or for --version a traceback;
    a closed standard input named /dev/stdin was 'is a device'."""
    done = shell(f"convfilter {command}", tmp_path)
    assert done.returncode in (1, 2) and done.stderr.decode() == f"convfilter: error: {message}\n"
