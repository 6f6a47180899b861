"""Every kind of image, kernel and output a user can throw at convfilter: a sensible result or one
clear error line with the documented exit code, and never a partial or temporary file.

Each case makes its own real file. Reference values come from numpy (ITU-R 601-2 luma:
L = R * 299/1000 + G * 587/1000 + B * 114/1000) or scipy, with the tolerance stated."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from conftest import ASTRONAUT, CAMERA, gray, run_process


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def rgb() -> np.ndarray:
    """A 40 x 48 RGB crop of a real photo."""
    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))[100:140, 200:248]


def run_identity(cli, source: Path, out: Path, *options: str):
    result = cli("apply", source, "-k", "identity", "-o", out, *options)
    assert result.exit_code == 0, result.stderr
    return Image.open(out)


# ---------------------------------------------------------------------------- image modes


def test_mode_1_bit(cli, tmp_path):
    bits = (np.indices((20, 30)).sum(axis=0) % 3 == 0)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    out = run_identity(cli, tmp_path / "bits.png", tmp_path / "out.png")
    assert out.mode == "L" and np.array_equal(np.asarray(out), bits * 255)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_ignored_unless_background(cli, tmp_path, rgb, mode):
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    if mode == "LA":
        base = np.asarray(Image.fromarray(rgb).convert("L"))
        Image.fromarray(np.dstack([base, alpha]), "LA").save(tmp_path / "in.png")
        color = base.astype(np.float64)
    else:
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "in.png")
        color = luma(rgb)
    assert Image.open(tmp_path / "in.png").mode == mode
    ignored = np.asarray(run_identity(cli, tmp_path / "in.png", tmp_path / "ignored.png"))
    assert np.abs(ignored - color).max() <= 1  # luma of the colour, alpha dropped
    white = np.asarray(run_identity(cli, tmp_path / "in.png", tmp_path / "white.png", "--background", "white"))
    a = alpha / 255.0
    assert np.abs(white - (color * a + 255 * (1 - a))).max() <= 1.5  # composited on white, two roundings
    assert white[:, 0].min() == 255  # fully transparent: the background


@pytest.mark.parametrize("value", ["x", "\u00b2", "\u0663", "256", "#12", "9" * 5000])
def test_an_unknown_background_colour_is_a_usage_error(cli, tmp_path, value):
    """'²' (and other digits outside ASCII) passed str.isdigit() and reached int(): an internal error."""
    Image.fromarray(np.full((8, 8, 4), 100, np.uint8)).save(tmp_path / "a.png")
    result = cli("apply", tmp_path / "a.png", "-k", "identity", "--background", value, "-o", tmp_path / "bg.png")
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: unknown --background colour {value!r}; give a name like white, #rrggbb or 0-255\n")
    assert listing(tmp_path) == ["a.png"]


def test_a_grey_level_background_takes_leading_zeros_and_spaces():
    from convfilter.imageio import parse_background

    assert [parse_background(v) for v in ("0255", " 7 ", "0")] == [(255,) * 3, (7,) * 3, (0,) * 3]


def test_a_grey_image_with_a_transparent_colour_takes_the_background(cli, tmp_path):
    """A grey PNG whose transparency is one grey level (tRNS), not an alpha channel."""
    grey = np.random.default_rng(4).integers(0, 256, (20, 30), dtype=np.uint8)
    clear = int(grey[0, 0])
    Image.fromarray(grey).save(tmp_path / "in.png", transparency=clear)
    assert Image.open(tmp_path / "in.png").info["transparency"] == clear
    ignored = np.asarray(run_identity(cli, tmp_path / "in.png", tmp_path / "ignored.png"))
    assert np.array_equal(ignored, grey)
    white = np.asarray(run_identity(cli, tmp_path / "in.png", tmp_path / "white.png", "--background", "white"))
    assert np.array_equal(white, np.where(grey == clear, 255, grey))


def test_a_16_bit_grey_image_with_a_transparent_colour_takes_the_background_in_16_bits(cli, tmp_path):
    """It went through Pillow's RGBA, which clips 16-bit values to 255: every pixel came out 255.
    Grey backgrounds keep 16 bits (the background's level x 257); a colour one with --color gives
    8-bit RGB, round(v / 257) where opaque."""
    grey = np.random.default_rng(6).integers(0, 65536, (20, 30), dtype=np.uint16)
    clear = int(grey[0, 0])
    Image.fromarray(grey).save(tmp_path / "in.png", transparency=clear)
    assert Image.open(tmp_path / "in.png").info["transparency"] == clear
    for background, level in [("0", 0), ("white", 65535), ("#ff0000", 76 * 257)]:  # red: luma 76 (ITU-R 601-2)
        out = run_identity(cli, tmp_path / "in.png", tmp_path / f"{level}.png", "--background", background)
        assert out.mode == "I;16" and np.array_equal(np.asarray(out), np.where(grey == clear, level, grey))
    coloured = run_identity(cli, tmp_path / "in.png", tmp_path / "red.png", "--background", "#ff0000", "--color")
    eight = np.round(grey / 257).astype(np.uint8)
    expected = np.where((grey == clear)[..., None], np.array([255, 0, 0], np.uint8), np.dstack([eight] * 3))
    assert coloured.mode == "RGB" and np.array_equal(np.asarray(coloured), expected)


def test_with_color_a_grey_image_keeps_its_transparent_colour_as_alpha(cli, tmp_path):
    grey = np.random.default_rng(7).integers(0, 256, (20, 30), dtype=np.uint8)
    clear = int(grey[0, 0])
    Image.fromarray(grey).save(tmp_path / "in.png", transparency=clear)
    out = run_identity(cli, tmp_path / "in.png", tmp_path / "out.png", "--color")
    assert out.mode == "LA"
    assert np.array_equal(np.asarray(out), np.dstack([grey, np.where(grey == clear, 0, 255).astype(np.uint8)]))


def test_with_color_an_rgb_image_keeps_its_transparent_colour_as_alpha(cli, tmp_path):
    """It was dropped (the pixel came out opaque), though --background took it as transparent;
    Pillow's convert("RGBA") and OpenCV's IMREAD_UNCHANGED give alpha 0 there."""
    rgb = np.random.default_rng(7).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    clear = tuple(int(v) for v in rgb[0, 0])
    Image.fromarray(rgb).save(tmp_path / "in.png", transparency=clear)
    out = run_identity(cli, tmp_path / "in.png", tmp_path / "out.png", "--color")
    assert out.mode == "RGBA"
    alpha = np.where((rgb == clear).all(axis=2), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(out), np.dstack([rgb, alpha]))
    reference = cv2.imread(str(tmp_path / "in.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(alpha, reference[..., 3])


def test_a_16_bit_rgb_png_s_transparent_colour_is_dropped(cli, tmp_path):
    """Pillow reads the pixels' high bytes but keeps the transparent colour's 16 bits: the pixel
    (0x12, 0x34, 0x56), which is the transparent one, came out opaque and the pixel (0x1200,
    0x3400, 0x5600), opaque, transparent; --background replaced the wrong one too."""
    pixels = np.array([[[0x12, 0x34, 0x56], [0x1200, 0x3400, 0x5600]]], dtype=">u2")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "in.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
        + chunk(b"tRNS", struct.pack(">HHH", 0x12, 0x34, 0x56))
        + chunk(b"IDAT", zlib.compress(b"\0" + pixels[0].tobytes())) + chunk(b"IEND", b""))
    high_bytes = (pixels >> 8).astype(np.uint8)  # as the README says Pillow reads 16-bit colour
    for options in (["--color"], ["--color", "--background", "red"]):
        out = run_identity(cli, tmp_path / "in.png", tmp_path / "out.png", "--overwrite", *options)
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), high_bytes), options


def test_with_color_a_grey_image_on_a_grey_background_stays_grey(cli, tmp_path):
    """Composited on white, grey + alpha is grey: out = g * a + 255 * (1 - a), within 1 level
    (Pillow's integer rounding). On red it is colour."""
    grey = np.random.default_rng(8).integers(0, 256, (20, 30), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (20, 1))
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "in.png")
    out = run_identity(cli, tmp_path / "in.png", tmp_path / "white.png", "--color", "--background", "white")
    expected = grey * (alpha / 255) + 255 * (1 - alpha / 255)
    assert out.mode == "L" and np.abs(np.asarray(out) - expected).max() <= 1
    red = run_identity(cli, tmp_path / "in.png", tmp_path / "red.png", "--color", "--background", "red")
    assert red.mode == "RGB" and np.abs(np.asarray(red)[..., 1] - grey * (alpha / 255)).max() <= 1


def test_palette_with_and_without_transparency(cli, tmp_path, rgb):
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = np.asarray(run_identity(cli, tmp_path / "p.png", tmp_path / "p_out.png"))
    assert np.abs(out - luma(np.asarray(palette.convert("RGB")))).max() <= 1
    index = int(np.asarray(palette)[0, 0])
    palette.save(tmp_path / "pt.png", transparency=index)
    assert "transparency" in Image.open(tmp_path / "pt.png").info
    ignored = np.asarray(run_identity(cli, tmp_path / "pt.png", tmp_path / "pt_out.png"))
    assert np.array_equal(ignored, out)
    black = np.asarray(run_identity(cli, tmp_path / "pt.png", tmp_path / "pt_black.png", "--background", "0"))
    hidden = np.asarray(palette) == index
    assert np.all(black[hidden] == 0) and np.array_equal(black[~hidden], out[~hidden])


def test_cmyk_jpeg(cli, tmp_path, rgb):
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=98)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = np.asarray(run_identity(cli, tmp_path / "cmyk.jpg", tmp_path / "out.png"))
    assert out.shape == rgb.shape[:2]
    assert np.abs(out - luma(rgb)).mean() < 3  # JPEG is lossy: close to the colour's luma on average


def test_sixteen_bit_png_stays_sixteen_bit_through_the_cli(cli, tmp_path):
    values = (np.arange(30 * 40).reshape(30, 40) * 53 % 65536).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    for suffix in (".png", ".tif"):
        out = run_identity(cli, tmp_path / "deep.png", tmp_path / f"out{suffix}")
        assert out.mode.startswith("I;16") and np.array_equal(np.asarray(out).astype(np.uint16), values)
    jpeg = run_identity(cli, tmp_path / "deep.png", tmp_path / "out.jpg")
    assert jpeg.mode == "L"
    blurred = run_identity(cli, tmp_path / "deep.png", tmp_path / "blur.png")
    assert blurred.mode.startswith("I;16")


def test_sixteen_bit_pgm_stays_sixteen_bit(cli, tmp_path):
    """A 16-bit PGM (maxval 65535) was written back with maxval 255. Reference: OpenCV's reading."""
    values = (np.arange(30 * 40).reshape(30, 40) * 53 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.pgm"), values)
    result = cli("apply", tmp_path / "deep.pgm", "-k", "identity")
    assert result.exit_code == 0, result.stderr
    written = cv2.imread(str(tmp_path / "deep_identity.pgm"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and np.array_equal(written, values)


def test_thirty_two_bit_integers_are_clamped_to_sixteen_bits(cli, tmp_path):
    Image.fromarray(np.array([[-5, 0, 7], [1000, 65535, 70000]], np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    out = run_identity(cli, tmp_path / "i.tif", tmp_path / "out.png")
    assert np.array_equal(np.asarray(out), [[0, 0, 7], [1000, 65535, 65535]])


@pytest.mark.parametrize(
    "values, expected, depth",
    [
        ([[0.0, 0.25], [1.0, np.nan]], [[0, 16384], [65535, 0]], "I;16"),  # 0-1 floats: x 65535, NaN -> 0
        ([[0.0, 12.4], [254.6, 255.0]], [[0, 12], [255, 255]], "L"),  # grey levels
        ([[-3.0, 300.0], [1e6, 2.0]], [[0, 300], [65535, 2]], "I;16"),  # beyond 8 bits: 16-bit levels
    ],
)
def test_float_tiff(cli, tmp_path, values, expected, depth):
    Image.fromarray(np.array(values, np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    out = run_identity(cli, tmp_path / "f.tif", tmp_path / "out.png")
    assert out.mode == depth and np.array_equal(np.asarray(out), expected)


def test_rotated_phone_photo_comes_out_upright(cli, tmp_path):
    stored = np.full((60, 100, 3), 20, np.uint8)
    stored[:20, :30] = 250  # a bright block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = np.asarray(run_identity(cli, tmp_path / "phone.jpg", tmp_path / "out.png"))
    assert out.shape == (100, 60)  # portrait, as shown
    assert out[:30, -20:].mean() > 200 and out[-30:, :20].mean() < 60  # the block is now top-right


def test_animated_webp_gives_its_first_frame(cli, tmp_path):
    frames = [Image.new("RGB", (12, 10), (v, v, v)) for v in (40, 220, 90)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert Image.open(tmp_path / "anim.webp").n_frames == 3
    out = run_identity(cli, tmp_path / "anim.webp", tmp_path / "out.png")
    assert np.all(np.asarray(out) == 40)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("border, mode", [("replicate", "nearest"), ("zeros", "constant"), ("circular", "wrap")])
def test_tiny_images_with_every_border(cli, tmp_path, shape, border, mode):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "tiny.png")
    kernel = "1,2,1;2,4,2;1,2,1" if border == "circular" else "gaussian5"
    weights = np.outer([1, 2, 1], [1, 2, 1]) / 16 if border == "circular" else np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256
    result = cli("apply", tmp_path / "tiny.png", "-k", kernel, "--border", border, "-o", tmp_path / "out.png",
                 *(["--normalize"] if border == "circular" else []))
    assert result.exit_code == 0, result.stderr
    expected = np.round(ndi.correlate(image.astype(np.float64), weights, mode=mode))
    assert np.abs(gray(tmp_path / "out.png") - expected).max() <= 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (2, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiny_images_under_reflect_are_a_per_file_error(cli, tmp_path, shape):
    Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "tiny.png")
    result = cli("apply", tmp_path / "tiny.png", "-k", "gaussian5", "-o", tmp_path / "out" / "x.png")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{tmp_path / 'tiny.png'}': image is {shape[1]}x{shape[0]}, too "
                             "small: a 5x5 kernel with --border reflect needs each side longer than 2 pixels\n")
    assert listing(tmp_path) == ["tiny.png"]


def test_one_by_one_with_a_one_by_one_kernel_under_reflect(cli, tmp_path):
    Image.fromarray(np.array([[77]], np.uint8)).save(tmp_path / "dot.png")
    out = run_identity(cli, tmp_path / "dot.png", tmp_path / "out.png", "--scale", "2")
    assert np.asarray(out).tolist() == [[154]]


# ---------------------------------------------------------------------------- broken inputs


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_from_its_header(cli, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))
    out = tmp_path / "out"
    result = cli("apply", bomb, "-k", "blur", "-o", out / "bomb.png")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{bomb}': 100000x100000 is 10000000000 pixels, more than "
                             "--max-pixels 89478485\n")
    assert not out.exists()


def test_max_pixels_raises_the_limit(cli, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_header_only(10_000, 10_000))  # 100 MP claimed, data missing
    result = cli("apply", big, "-k", "blur", "-o", tmp_path / "out.png", "--max-pixels", "200000000")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"convfilter: error: '{big}': truncated or corrupt image")  # decoded, then found short
    assert listing(tmp_path) == ["big.png"]


def test_png_named_jpg_works_and_truncated_files_fail(cli, tmp_path, camera):
    (tmp_path / "really_png.jpg").write_bytes(CAMERA.read_bytes())
    out = run_identity(cli, tmp_path / "really_png.jpg", tmp_path / "ok.png")
    assert np.array_equal(np.asarray(out), camera)
    (tmp_path / "cut.jpg").write_bytes(ASTRONAUT.read_bytes()[: ASTRONAUT.stat().st_size // 2])
    result = cli("apply", tmp_path / "cut.jpg", "-k", "blur", "-o", tmp_path / "cut_out.png")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"convfilter: error: '{tmp_path / 'cut.jpg'}': truncated or corrupt image: ")
    assert not (tmp_path / "cut_out.png").exists()


def test_a_directory_where_a_file_is_needed(cli, tmp_path, camera_copy):
    """A directory as a --from list or as a kernel: a usage error (exit 2), nothing written."""
    folder = tmp_path / "folder"
    folder.mkdir()
    result = cli("apply", "--from", folder, "-k", "blur", "-o", tmp_path / "out")
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: --from '{folder}': cannot read it: Is a directory\n")
    result = cli("apply", camera_copy, "-k", folder)
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: kernel '{folder}' is a directory, not a kernel file\n")
    assert not (tmp_path / "out").exists() and listing(camera_copy.parent) == ["folder", "photo.png"]


def test_broken_files_in_a_batch_do_not_stop_the_others(cli, tmp_path, camera):
    source = tmp_path / "in"
    source.mkdir()
    (source / "good.png").write_bytes(CAMERA.read_bytes())
    (source / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (source / "html.jpg").write_text("<!doctype html><title>404</title>")
    (source / "cut.png").write_bytes(CAMERA.read_bytes()[:2000])
    (source / "empty.gif").write_bytes(b"")
    result = cli("apply", source, "-k", "identity", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert result.stderr.count("convfilter: error:") == 4
    assert listing(tmp_path / "out") == ["good.png"]
    assert np.array_equal(gray(tmp_path / "out" / "good.png"), camera)


# ---------------------------------------------------------------------------- broken kernels (exit 2)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("ragged.txt", "1 2 3\n1 2\n", "kernel file '{p}', line 2: expected 3 values like the first row, got 2"),
        ("empty.txt", "", "kernel file '{p}': no weights (it is empty or holds only comments)"),
        ("comments.txt", "# nothing\n\n# here\n", "kernel file '{p}': no weights (it is empty or holds only comments)"),
        ("words.txt", "1 2\nthree 4\n", "kernel file '{p}', line 2: 'three' is not a number"),
        ("nan.txt", "nan 1\n", "kernel file '{p}', line 1: value 'nan' is not finite"),
        ("inf.txt", "1 inf\n", "kernel file '{p}', line 1: value 'inf' is not finite"),
        ("zero.toml", "weights = [[]]\n", "kernel file '{p}', line 1: empty row"),
        ("huge.txt", "\n".join([" ".join(["1"] * 65)] * 65), "kernel file '{p}', line 1: 65 values in a row; the most allowed is 63"),
        ("bad.toml", "weights = [[1, 2]]\nscale = = 2\n", "kernel file '{p}', line 2: invalid TOML: Invalid value (column 9)"),
        ("types.toml", "weights = [[1, 2]]\nbias = [1]\n", "kernel file '{p}', line 2: 'bias': expected a number, got list [1]"),
        ("range.toml", "weights = [[1]]\nrange = 'mirror'\n", "kernel file '{p}', line 2: unknown range 'mirror'; choose from clip, abs, stretch"),
    ],
)
def test_broken_kernel_files_exit_2_with_file_and_line(cli, camera_copy, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    result = cli("apply", camera_copy, "-k", path, "-o", tmp_path / "out.png")
    assert result.exit_code == 2
    assert result.stderr == f"convfilter: error: {message.format(p=path)}\n"
    assert not (tmp_path / "out.png").exists()


def test_zero_sum_kernel_with_normalize_exits_2(cli, camera_copy):
    result = cli("apply", camera_copy, "-k", "sobel-x", "--normalize")
    assert result.exit_code == 2
    assert result.stderr.endswith("sobel-x.toml': cannot normalize: the weights sum to 0\n")
    assert listing(camera_copy.parent) == ["photo.png"]


# ---------------------------------------------------------------------------- outputs


def test_output_directory_that_cannot_be_created(cli, camera_copy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    result = cli("apply", camera_copy, "-k", "blur", "-o", blocker / "out.png")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{camera_copy}': cannot write '{blocker / 'out.png'}': "
                             f"'{blocker}' is not a directory\n")


def test_format_that_cannot_hold_grayscale_is_refused_clearly(cli, camera_copy, tmp_path):
    """Known from the plan, before the input is read: a usage error (exit 2), one line."""
    result = cli("apply", camera_copy, "-k", "blur", "-o", tmp_path / "out.xbm")
    assert result.exit_code == 2
    assert result.stderr == ("convfilter: error: output format '.xbm' (XBM) cannot hold a grayscale image: "
                             "cannot write mode L as XBM\n")
    assert listing(tmp_path) == ["photo.png"]


@pytest.mark.parametrize("suffix, kept", [
    (".png", "alpha"), (".tif", "alpha"), (".tga", "alpha"), (".webp", "alpha"), (".ico", "alpha"),
    (".qoi", "alpha"), (".sgi", "alpha"), (".gif", "on/off"),
    (".bmp", "dropped"), (".ppm", "dropped"), (".pcx", "dropped"), (".jpg", "dropped"),
])
@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_written_where_the_format_holds_it_and_dropped_elsewhere(cli, tmp_path, rgb, suffix, kept, mode):
    """Alpha of many levels, 0 in a grid. BMP and PPM took RGBA and silently lost alpha but
    refused grey + alpha (exit 1); GIF kept it on/off for RGBA only, and with many levels not at
    all (Pillow's palette merged the clear pixels with a colour)."""
    alpha = np.tile((np.arange(rgb.shape[1]) * 5).astype(np.uint8), (rgb.shape[0], 1))  # 0, 5, 10, ...
    alpha[::7, ::5] = 0
    colour = np.asarray(Image.fromarray(rgb).convert("L")) if mode == "LA" else rgb
    Image.fromarray(np.dstack([colour, alpha]), mode).save(tmp_path / "in.png")
    out = run_identity(cli, tmp_path / "in.png", tmp_path / f"out{suffix}", "--color")
    back = np.asarray(out.convert("RGBA"))
    if kept == "alpha":
        assert np.array_equal(back[..., 3], alpha)
    elif kept == "on/off":
        assert np.array_equal(back[..., 3], np.where(alpha == 0, 0, 255))
    else:
        assert out.mode in ("L", "RGB") and (back[..., 3] == 255).all()
        if suffix != ".jpg":  # lossless: the colour itself is written
            assert np.array_equal(np.asarray(out), colour)


def test_gif_hidden_colours_take_no_palette_entries():
    """250 opaque colours and transparent pixels of random colours: the opaque ones stay exact
    (the hidden ones took palette entries: off by up to 14)."""
    from convfilter import imageio

    rng = np.random.default_rng(9)
    palette = rng.integers(0, 256, (250, 3), dtype=np.uint8)
    rgba = np.dstack([palette[rng.integers(0, 250, (40, 60))], np.full((40, 60), 255, np.uint8)])
    clear = rng.random((40, 60)) < 0.3
    rgba[clear] = np.concatenate([rng.integers(0, 256, (clear.sum(), 3)), np.zeros((clear.sum(), 1))], axis=1)
    stream = io.BytesIO()
    imageio.encode(rgba, "GIF", stream)
    back = np.asarray(Image.open(stream).convert("RGBA"))
    assert np.array_equal(back[..., 3], np.where(clear, 0, 255))
    assert np.array_equal(back[~clear][:, :3], rgba[~clear][:, :3])


def test_ico_keeps_the_size_and_refuses_what_it_cannot_hold(cli, tmp_path):
    """Pillow's default scaled the image down to its icon sizes (96x80 became 64x53)."""
    Image.fromarray(np.full((80, 96), 9, np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.full((300, 200), 9, np.uint8)).save(tmp_path / "large.png")
    assert run_identity(cli, tmp_path / "small.png", tmp_path / "small.ico").size == (96, 80)
    result = cli("apply", tmp_path / "large.png", "-k", "identity", "-o", tmp_path / "large.ico")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{tmp_path / 'large.png'}': cannot write '{tmp_path / 'large.ico'}' "
                             "as ICO: ICO holds images up to 256x256 pixels, this one is 200x300\n")
    assert not (tmp_path / "large.ico").exists()


@pytest.mark.parametrize("suffix, fmt, side", [("jpg", "JPEG", 65500), ("pdf", "PDF", 65500), ("tga", "TGA", 65535),
                                               ("gif", "GIF", 65535), ("pcx", "PCX", 65534), ("sgi", "SGI", 65535)])
def test_an_image_wider_than_the_format_holds_is_one_line(tmp_path, suffix, fmt, side):
    """JPEG and PDF: libjpeg printed a line of its own before convfilter's; TGA, GIF, PCX and SGI
    keep sizes in 16-bit fields: an internal error (OverflowError, struct.error)."""
    Image.fromarray(np.full((4, 70000), 100, np.uint8)).save(tmp_path / "wide.png")
    done = run_process("apply", "wide.png", "-k", "identity", "-o", f"out.{suffix}", cwd=tmp_path)
    assert (done.returncode, done.stderr.decode()) == (
        1, f"convfilter: error: 'wide.png': cannot write 'out.{suffix}' as {fmt}: {fmt} holds images up to "
           f"{side}x{side} pixels, this one is 70000x4\n")
    assert listing(tmp_path) == ["wide.png"]


def test_an_image_wider_than_the_format_holds_is_one_line_on_standard_output_too(tmp_path):
    Image.fromarray(np.full((4, 70000), 100, np.uint8)).save(tmp_path / "wide.png")
    done = run_process("apply", "wide.png", "-k", "identity", "-o", "-", "--format", "jpg", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr.decode()) == (
        1, b"", "convfilter: error: 'wide.png': cannot write to standard output as JPEG: JPEG holds images up to "
                "65500x65500 pixels, this one is 70000x4\n")


@pytest.mark.parametrize("suffix, start", [(".j2k", b"\xffO\xffQ"), (".J2C", b"\xffO\xffQ"), (".jpc", b"\xffO\xffQ"),
                                           (".jp2", b"\0\0\0\x0cjP  ")])
def test_jpeg2000_codestream_suffixes_get_a_bare_codestream(cli, tmp_path, suffix, start):
    """Pillow tells a codestream from a JP2 file by the file's name, and convfilter encodes into a
    stream: every .j2k was a JP2 file."""
    picture = np.random.default_rng(3).integers(0, 256, (12, 10), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    assert cli("apply", tmp_path / "in.png", "-k", "identity", "-o", tmp_path / f"out{suffix}").exit_code == 0
    assert (tmp_path / f"out{suffix}").read_bytes()[:len(start)] == start
    assert np.array_equal(gray(tmp_path / f"out{suffix}"), picture)  # lossless, Pillow's default


def test_a_one_bit_image_keeps_its_transparent_colour_as_alpha_with_color(cli, tmp_path):
    """It was dropped: the transparent half of a 1-bit PNG came out opaque (an L image)."""
    bits = np.zeros((8, 8), bool)
    bits[:, 4:] = True
    Image.fromarray(bits).save(tmp_path / "bw.png", transparency=0)
    assert cli("apply", tmp_path / "bw.png", "--color", "-k", "identity", "-o", tmp_path / "out.png").exit_code == 0
    with Image.open(tmp_path / "out.png") as written, Image.open(tmp_path / "bw.png") as original:
        assert written.mode == "LA"
        assert np.array_equal(np.asarray(written), np.asarray(original.convert("LA")))
        assert np.array_equal(np.asarray(written)[..., 1], np.where(bits, 255, 0))


def test_a_lab_image_is_read_as_grey_through_rgb(cli, tmp_path):
    """Pillow converts LAB to RGB but not to L: 'truncated or corrupt image: conversion from LAB to
    RGB not supported' in grey, while --color read it."""
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("LAB").save(tmp_path / "lab.tif")
    result = cli("apply", tmp_path / "lab.tif", "-k", "identity", "-o", tmp_path / "grey.png")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "lab.tif") as lab:
        assert np.array_equal(gray(tmp_path / "grey.png"), np.asarray(lab.convert("RGB").convert("L")))


@pytest.mark.parametrize("suffix, why", [
    (".pbm", "Pillow writes 8-bit PGM data under it, and PBM is 1-bit"),
    (".pfm", "Pillow writes 8-bit PGM data under it, and PFM is floating point"),
    (".icns", "Pillow scales the image to fixed icon sizes"),
])
def test_suffixes_pillow_would_write_as_something_else_are_refused(cli, camera_copy, tmp_path, suffix, why):
    result = cli("apply", camera_copy, "-k", "blur", "-o", tmp_path / f"out{suffix}")
    assert result.exit_code == 2
    assert result.stderr == f"convfilter: error: output format '{suffix}' is not written: {why}; use .png, .tif or .pgm\n"
    assert listing(tmp_path) == ["photo.png"]


def test_an_input_whose_suffix_is_not_written_gets_a_png_beside_it(cli, tmp_path):
    bits = np.indices((12, 16)).sum(axis=0) % 2 == 0
    Image.fromarray(bits).save(tmp_path / "bits.pbm")
    result = cli("apply", tmp_path / "bits.pbm", "-k", "identity")
    assert result.exit_code == 0, result.stderr
    assert listing(tmp_path) == ["bits.pbm", "bits_identity.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "bits_identity.png")), bits * 255)


def test_full_disk_leaves_no_partial_file_and_the_input_untouched(cli, camera_copy, monkeypatch):
    from convfilter import imageio

    before = camera_copy.read_bytes()

    def disk_full(array, fmt, stream, encoding):
        stream.write(b"\x89PNG\r\n\x1a\n half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio, "encode", disk_full)
    result = cli("apply", camera_copy, "-k", "blur")
    assert result.exit_code == 1
    assert result.stderr == (f"convfilter: error: '{camera_copy}': cannot write "
                             f"'{camera_copy.parent / 'photo_blur.png'}': No space left on device\n")
    assert listing(camera_copy.parent) == ["photo.png"]
    assert camera_copy.read_bytes() == before


@pytest.mark.parametrize("command", [["upsample", "--factor", "16"], ["pool", "--to", "100000x100000"]])
def test_a_result_over_max_pixels_is_refused_before_it_takes_the_memory(cli, tmp_path, command):
    """A 3000x2000 image is within the default limit; 16x upsampled (48000x32000) or pooled to a
    set size it would need gigabytes. It fails on its own (exit 1): the small image is upsampled;
    pooled to that size, it fails too, and nothing is written."""
    Image.fromarray(np.zeros((2000, 3000), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    result = cli(command[0], tmp_path / "big.png", tmp_path / "small.png", *command[1:], "-o", out)
    size = "48000x32000, 1536000000" if command[0] == "upsample" else "100000x100000, 10000000000"
    assert result.exit_code == 1
    assert (f"convfilter: error: '{tmp_path / 'big.png'}': the filter would make it {size} pixels, more than "
            "--max-pixels 89478485\n") in result.stderr
    assert (listing(out) if out.exists() else []) == (["small.png"] if command[0] == "upsample" else [])


def test_an_output_written_by_another_run_meanwhile_is_skipped_with_skip_existing(cli, camera_copy, monkeypatch):
    """Two runs resuming one folder at once: the output appeared between the check at the start
    and the final link, and the input failed as 'exists' (exit 1) despite --skip-existing."""
    from convfilter import files

    target = camera_copy.parent / "photo_blur.png"
    make_temporary = files._temporary_beside

    def other_run_first(path):
        target.write_bytes(b"the other run's")
        return make_temporary(path)

    monkeypatch.setattr(files, "_temporary_beside", other_run_first)
    result = cli("apply", camera_copy, "-k", "blur", "--skip-existing")
    assert (result.exit_code, result.stderr) == (0, f"skipped {target} (exists)\n")
    assert target.read_bytes() == b"the other run's"
    assert listing(camera_copy.parent) == ["photo.png", "photo_blur.png"]
    target.unlink()
    result = cli("apply", camera_copy, "-k", "blur")  # without it, still an error
    assert (result.exit_code, result.stderr) == (
        1, f"convfilter: error: '{camera_copy}': output '{target}' exists (use --overwrite or --skip-existing)\n")


def test_temporary_files_are_removed_at_an_exit_that_does_not_wait_for_the_writers(tmp_path, monkeypatch):
    """A second Ctrl-C left the temporary files of the writes under way (`.a.png.x8f2.tmp`)."""
    from convfilter import errors, files

    monkeypatch.setattr(files, "_closing", False)
    descriptor, temporary = files._temporary_beside(tmp_path / "a.png")
    os.close(descriptor)
    assert listing(tmp_path) == [Path(temporary).name]
    files.remove_temporaries()
    assert listing(tmp_path) == []
    with pytest.raises(errors.OutputError, match="convfilter is stopping"):
        files.atomic_write(tmp_path / "b.png", lambda stream: stream.write(b"x"))
    assert listing(tmp_path) == []


def test_an_output_name_of_255_bytes_is_written(cli, camera_copy, tmp_path):
    """The temporary name adds 14 bytes to the output's: names of 242-255 bytes were 'File name too long'."""
    name = "é" * 100 + "a" * 51 + ".png"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    result = cli("apply", camera_copy, "-k", "blur", "-o", tmp_path / "out" / name)
    assert result.exit_code == 0, result.stderr
    assert cli("apply", camera_copy, "-k", "blur", "-o", tmp_path / "short.png").exit_code == 0
    assert np.array_equal(gray(tmp_path / "out" / name), gray(tmp_path / "short.png"))
    assert listing(tmp_path / "out") == [name]


def test_an_image_variant_pillow_does_not_implement_is_a_per_file_error(cli, tmp_path):
    """A DDS with unknown pixel format flags: NotImplementedError was an internal error."""
    data = io.BytesIO()
    Image.new("RGBA", (8, 8), "red").save(data, format="DDS")
    damaged = bytearray(data.getvalue())
    damaged[80:84] = (0x2000).to_bytes(4, "little")  # the pixel format's flags
    (tmp_path / "flags.dds").write_bytes(bytes(damaged))
    result = cli("apply", tmp_path / "flags.dds", "-k", "sharpen", "-o", tmp_path / "out.png")
    assert (result.exit_code, result.stderr) == (1, f"convfilter: error: '{tmp_path / 'flags.dds'}': unsupported or "
                                                    "corrupt image: Unknown pixel format flags 8192\n")
    assert listing(tmp_path) == ["flags.dds"]


def test_a_damaged_tiff_is_one_error_line_without_libtiff_s_own(tmp_path):
    """libtiff printed 'tempfile.tif: Using code not yet in table.' (and the like) on standard
    error itself, before the error line. A real process: those lines bypass Python's streams."""
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "lzw.tif", compression="tiff_lzw")
    data = bytearray((tmp_path / "lzw.tif").read_bytes())
    data[8:40] = b"\xff" * 32
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    result = run_process("apply", "bad.tif", "-k", "sharpen", "-o", "out.png", cwd=tmp_path)
    assert (result.returncode, result.stderr.decode()) == (
        1, "convfilter: error: 'bad.tif': truncated or corrupt image: decoder error -2\n")


def test_the_exit_removes_the_temporaries_of_writers_it_does_not_wait_for(monkeypatch):
    """The wiring of the test above: cli._exit (the end of every run, a second Ctrl-C included)
    calls remove_temporaries before exiting."""
    from convfilter import cli, files

    removed = []
    monkeypatch.setattr(files, "remove_temporaries", lambda: removed.append(True))
    with pytest.raises(SystemExit):
        cli._exit("stop")  # not an int: sys.exit, not os._exit
    assert removed == [True]
