"""Reading and writing images: grayscale rules, orientation, bit depth, atomic writes."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import ASTRONAUT, CAMERA, SAMPLES, gray
from convfilter import imageio
from convfilter.errors import OutputError


def test_rgb_png_becomes_pillow_luma(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.open(ASTRONAUT).save(rgb)
    expected = np.asarray(Image.open(rgb).convert("L"))
    assert np.array_equal(imageio.read_image(rgb), expected)


@pytest.mark.parametrize("name", ["astronaut.jpg", "rocket.jpg"])
def test_jpeg_is_decoded_to_its_luma_channel_like_opencv(name):
    """The luma channel straight from the JPEG: the same pixels as OpenCV's IMREAD_GRAYSCALE."""
    path = SAMPLES / name
    assert np.array_equal(imageio.read_image(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))


# orientation tag -> the numpy operation that shows the stored pixels upright
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.arange(6 * 4, dtype=np.uint8).reshape(4, 6) * 10
    path = tmp_path / "oriented.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif)
    assert np.array_equal(imageio.read_image(path), ORIENTATIONS[orientation](stored))


def test_sixteen_bit_png_stays_sixteen_bit(tmp_path):
    values = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    array = imageio.read_image(path)
    assert array.dtype == np.uint16 and np.array_equal(array, values)
    for fmt, suffix in (("PNG", ".png"), ("TIFF", ".tif")):
        out = tmp_path / f"out{suffix}"
        imageio.write_image(array, out, fmt, imageio.Encoding())
        assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), values)


def test_sixteen_bit_to_jpeg_is_scaled_to_eight_bits(tmp_path):
    values = np.full((8, 8), 65535, np.uint16)
    values[0, 0] = 257 * 100
    out = tmp_path / "out.png"
    imageio.write_image(imageio.to_8bit(values), out, "PNG", imageio.Encoding())
    assert gray(out)[0, 0] == 100 and gray(out)[1, 1] == 255
    imageio.write_image(np.full((16, 16), 257 * 100, np.uint16), tmp_path / "out.jpg", "JPEG", imageio.Encoding())
    assert np.abs(gray(tmp_path / "out.jpg").astype(int) - 100).max() <= 1  # JPEG: within 1 level


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (10, 10), value) for value in (30, 200, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 3
    assert np.all(imageio.read_image(path) == 30)


def test_write_is_atomic_when_encoding_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.png"

    def half_written(array, fmt, stream, encoding):
        stream.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio, "encode", half_written)
    with pytest.raises(OutputError, match=r"^cannot write '.*out.png': No space left on device$"):
        imageio.write_image(np.zeros((4, 4), np.uint8), target, "PNG", imageio.Encoding())
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_an_existing_file_and_leaves_it(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match=r"exists \(use --overwrite or --skip-existing\)$"):
        imageio.write_image(np.zeros((4, 4), np.uint8), target, "PNG", imageio.Encoding())
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    imageio.write_image(np.zeros((4, 4), np.uint8), target, "PNG", imageio.Encoding(), overwrite=True)
    assert gray(target).shape == (4, 4)


def test_written_files_get_ordinary_permissions(tmp_path):
    target = tmp_path / "out.png"
    imageio.write_image(np.zeros((4, 4), np.uint8), target, "PNG", imageio.Encoding())
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("name, fmt", [("jpg", "JPEG"), (".PNG", "PNG"), ("tif", "TIFF"), ("webp", "WEBP"), ("bmp", "BMP")])
def test_format_names(name, fmt):
    assert imageio.format_for(name) == fmt


def test_camera_sample_is_a_grayscale_png():
    with Image.open(CAMERA) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (512, 512))


def test_common_format_table_agrees_with_pillow():
    Image.init()
    for suffix, fmt in imageio.COMMON_FORMATS.items():
        assert Image.registered_extensions()[suffix] == fmt and fmt in Image.SAVE


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA", "LA"])
def test_to_array_equals_numpy_and_is_writable(mode):
    base = np.asarray(Image.open(ASTRONAUT).convert("RGB"))[:37, :53]
    if mode == "I;16":
        image = Image.fromarray((base[..., 0].astype(np.uint16) * 251))
    else:
        image = Image.fromarray(base).convert(mode)
    assert image.mode == mode
    array = imageio.to_array(image)
    assert np.array_equal(array, np.asarray(image)) and array.flags.writeable


def test_to_array_falls_back_when_pillow_does_not_map_the_buffer(monkeypatch):
    image = Image.open(CAMERA)
    copied = imageio.to_array(image)
    monkeypatch.setattr(Image, "frombuffer", lambda *a, **k: Image.new("L", image.size))  # not mapped
    assert np.array_equal(imageio.to_array(image), copied)


def _fifo(tmp_path, name="pipe.png"):
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _in_thread(function, *args, seconds=60):
    """function(*args) in a thread that must end within `seconds` (a hang fails, not blocks CI)."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except Exception as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} still running after {seconds} s"
    return outcome


def test_a_pipe_given_by_name_is_read_like_standard_input():
    """Process substitution, <(...): a path in /dev/fd to a pipe whose writer is running. Its
    size says 0, and it holds more than the pipe's 64 KB buffer."""
    import threading

    read_end, write_end = os.pipe()

    def write():
        with open(write_end, "wb") as stream:
            stream.write(CAMERA.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        outcome = _in_thread(imageio.read_image, f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
    writer.join(60)
    assert np.array_equal(outcome["value"], np.asarray(Image.open(CAMERA)))


def test_a_fifo_nobody_writes_to_is_empty_not_a_hang(tmp_path):
    outcome = _in_thread(imageio.read_image, _fifo(tmp_path))
    assert str(outcome["error"]) == "empty input (no bytes)"


def test_a_device_is_refused():
    with pytest.raises(imageio.InputError, match="^is a device, not an image file$"):
        imageio.read_image("/dev/zero")


def test_an_endless_stream_stops_at_what_an_image_within_max_pixels_can_hold():
    import io

    limit = 8 * 1000 + (16 << 20)
    assert len(imageio.read_stream(io.BytesIO(bytes(limit)), max_pixels=1000)) == limit
    with pytest.raises(imageio.InputError, match=f"^more than {limit} bytes: larger than any image within "):
        imageio.read_stream(io.BytesIO(bytes(limit + 1)), max_pixels=1000)


def test_a_pipe_that_takes_part_of_an_image_gets_the_rest_or_an_error():
    """A pipe whose reader leaves mid-image takes part of a write, and the next write fails: that
    is an error for the input, never a silently truncated image and exit 0."""
    import io

    from convfilter.errors import OutputError

    class Pipe(io.RawIOBase):
        def __init__(self, takes: int, breaks: bool):
            self.taken, self.takes, self.breaks = bytearray(), takes, breaks

        def writable(self):
            return True

        def write(self, data):
            if self.breaks and self.taken:
                raise BrokenPipeError(32, "Broken pipe")
            self.taken += bytes(data[: self.takes])
            return min(self.takes, len(data))

    image = np.asarray(Image.open(CAMERA))
    whole = io.BytesIO()
    imageio.write_stream(image, whole, "PNG")
    patient = Pipe(65536, breaks=False)  # takes 64 KB a write, all of it in the end
    imageio.write_stream(image, patient, "PNG")
    assert bytes(patient.taken) == whole.getvalue() and len(whole.getvalue()) > 65536
    with pytest.raises(OutputError, match="^standard output was closed before the whole image was written$"):
        imageio.write_stream(image, Pipe(65536, breaks=True), "PNG")
