"""The batch path (`--batch N`, the default on a GPU), run on the CPU as CI can: the same results
as the per-file path and OpenCV, file by file, whatever the folder holds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import ASTRONAUT, CAMERA, gray
from convfilter import batch, kernels
from test_pipeline import max_diff, opencv_filter

SHARPEN = kernels.resolve("sharpen").weights()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """JPEGs of two sizes (two stacks), a grey JPEG, a phone JPEG turned by EXIF, a CMYK JPEG, a
    PNG, a truncated JPEG and an empty file."""
    root = tmp_path_factory.mktemp("mixed") / "in"
    root.mkdir()
    astronaut = Image.open(ASTRONAUT).convert("RGB")
    for i in range(5):
        astronaut.crop((i * 7, i * 5, i * 7 + 300, i * 5 + 200)).save(root / f"wide{i}.jpg", quality=92)
    for i in range(3):
        astronaut.crop((i * 9, 0, i * 9 + 160, 240)).save(root / f"tall{i}.jpg", quality=92)
    Image.open(CAMERA).crop((0, 0, 300, 200)).save(root / "grey.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6
    astronaut.crop((0, 0, 300, 200)).save(root / "phone.jpg", exif=exif, quality=92)
    astronaut.crop((10, 10, 310, 210)).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    Image.open(CAMERA).crop((0, 0, 300, 200)).save(root / "plain.png")
    (root / "broken.jpg").write_bytes((root / "wide0.jpg").read_bytes()[:2500])
    (root / "empty.jpg").write_bytes(b"")
    return root


GOOD = ["wide0", "wide1", "wide2", "wide3", "wide4", "tall0", "tall1", "tall2", "grey", "phone", "cmyk"]


@pytest.mark.parametrize("size", [1, 3, 64])
def test_batches_give_the_per_file_results_and_the_same_errors(cli, folder, tmp_path, size):
    per_file = cli("apply", folder, "-k", "sharpen", "-o", tmp_path / "one", "--device", "cpu")
    batched = cli("apply", folder, "-k", "sharpen", "-o", tmp_path / "batch", "--device", "cpu", "--batch", size)
    assert (batched.exit_code, per_file.exit_code) == (1, 1)
    errors = sorted(line for line in batched.stderr.splitlines() if line.startswith("convfilter: error:"))
    assert errors == sorted(line for line in per_file.stderr.splitlines() if line.startswith("convfilter: error:"))
    assert len(errors) == 2 and all("broken.jpg" in e or "empty.jpg" in e for e in errors)
    assert "12 written, 0 skipped, 2 failed" in batched.stderr
    for name in [*GOOD, "plain"]:  # the same pixels, so the same JPEG bytes decoded
        suffix = ".png" if name == "plain" else ".jpg"
        result = gray(tmp_path / "batch" / f"{name}{suffix}")
        assert max_diff(result, gray(tmp_path / "one" / f"{name}{suffix}")) == 0, name
    assert gray(tmp_path / "batch" / "phone.jpg").shape == (300, 200)  # turned upright by its EXIF


def test_batch_results_equal_opencv_exactly_before_encoding(cli, folder, tmp_path):
    """PNG out (lossless): the batch path's sharpen equals OpenCV's filter2D within 1 level."""
    result = cli("apply", folder / "wide1.jpg", folder / "wide2.jpg", folder / "tall0.jpg", "-k", "sharpen",
                 "--format", "png", "-o", tmp_path / "out/", "--device", "cpu", "--batch", "4")
    assert result.exit_code == 0, result.stderr
    for name in ("wide1", "wide2", "tall0"):
        source = cv2.imread(str(folder / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
        assert max_diff(gray(tmp_path / "out" / f"{name}.png"), opencv_filter(source, SHARPEN, "reflect")) <= 1


def test_colour_batches_encoded_by_torchvision_match_the_per_file_path(cli, folder, tmp_path):
    """3-channel JPEG results are encoded by torchvision (nvjpeg on a GPU; libjpeg here): the very
    bytes Pillow writes for the per-file path. PNG results equal OpenCV per channel within 1."""
    names = [folder / f"wide{i}.jpg" for i in range(3)]
    for fmt in ("jpg", "png"):
        per_file = cli("apply", *names, "--color", "-k", "sharpen", "--format", fmt, "-o", tmp_path / f"one{fmt}/",
                       "--device", "cpu")
        batched = cli("apply", *names, "--color", "-k", "sharpen", "--format", fmt, "-o", tmp_path / f"batch{fmt}/",
                      "--device", "cpu", "--batch", "8")
        assert (per_file.exit_code, batched.exit_code) == (0, 0), batched.stderr
    grey = cli("apply", folder / "grey.jpg", "--color", "-k", "sharpen", "-o", tmp_path / "grey.jpg", "--batch", "2")
    assert grey.exit_code == 0 and Image.open(tmp_path / "grey.jpg").mode == "L"  # a grey JPEG stays grey
    for path in names:
        jpeg = path.name
        assert (tmp_path / "batchjpg" / jpeg).read_bytes() == (tmp_path / "onejpg" / jpeg).read_bytes()
        result = np.asarray(Image.open(tmp_path / "batchpng" / path.with_suffix(".png").name))
        source = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        expected = np.stack([opencv_filter(source[..., c], SHARPEN, "reflect") for c in range(3)], axis=2)
        assert result.shape == (200, 300, 3) and max_diff(result, expected) <= 1


def test_pooling_in_batches_equals_the_block_mean(cli, folder, tmp_path):
    result = cli("pool", folder / "wide0.jpg", folder / "wide3.jpg", "--size", "2", "--format", "png",
                 "-o", tmp_path / "out/", "--device", "cpu", "--batch", "2")
    assert result.exit_code == 0, result.stderr
    for name in ("wide0", "wide3"):
        source = cv2.imread(str(folder / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
        expected = np.round(source.reshape(100, 2, 150, 2).mean(axis=(1, 3)))  # half to even, as torch
        assert max_diff(gray(tmp_path / "out" / f"{name}.png"), expected) == 0


def test_stacks_are_split_to_the_pixel_budget(cli, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "BATCH_BYTES", 4 * 2 * 300 * 200)  # two wide grey images a stack, in float32
    stacks = []
    real = batch.run_tensor
    monkeypatch.setattr(batch, "run_tensor", lambda model, x: stacks.append(x.shape[0]) or real(model, x))
    names = [folder / f"wide{i}.jpg" for i in range(5)]
    result = cli("apply", *names, "-k", "sharpen", "--format", "png", "-o", tmp_path / "out/", "--device", "cpu",
                 "--batch", "8")
    assert result.exit_code == 0 and stacks == [2, 2, 1]
    for path in names:
        source = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        result = gray(tmp_path / "out" / path.with_suffix(".png").name)
        assert max_diff(result, opencv_filter(source, SHARPEN, "reflect")) <= 1


def test_an_image_too_small_for_the_kernel_fails_alone_with_the_per_file_message(cli, tmp_path):
    Image.open(CAMERA).crop((0, 0, 4, 4)).save(tmp_path / "tiny.jpg")
    Image.open(CAMERA).save(tmp_path / "big.jpg")
    big_kernel = tmp_path / "box9.txt"
    big_kernel.write_text("1 1 1 1 1 1 1 1 1\n" * 9)
    outcomes = [cli("apply", tmp_path / "tiny.jpg", tmp_path / "big.jpg", "-k", big_kernel,
                    "-o", tmp_path / f"out{n}/", "--device", "cpu", *extra)
                for n, extra in enumerate([[], ["--batch", "2"]])]
    assert outcomes[0].exit_code == outcomes[1].exit_code == 1
    # the per-file path reports files as they finish: the error line need not come first there
    errors = [[line for line in o.stderr.splitlines() if line.startswith("convfilter: error:")] for o in outcomes]
    assert errors[0] == errors[1] and len(errors[1]) == 1
    assert errors[1][0].startswith(f"convfilter: error: '{tmp_path / 'tiny.jpg'}': image is 4x4, too small")
    assert max_diff(gray(tmp_path / "out0" / "big.jpg"), gray(tmp_path / "out1" / "big.jpg")) == 0


def test_existing_outputs_and_skip_existing_as_in_the_per_file_path(cli, folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("L", (5, 5)).save(out / "wide0.jpg")
    args = ["apply", folder / "wide0.jpg", folder / "wide1.jpg", "-k", "sharpen", "-o", out, "--device", "cpu",
            "--batch", "2"]
    result = cli(*args)
    assert result.exit_code == 1 and "wide0.jpg' exists" in result.stderr
    assert gray(out / "wide0.jpg").shape == (5, 5)
    result = cli(*args, "--skip-existing")
    assert result.exit_code == 0 and "0 written, 2 skipped, 0 failed" in result.stderr
    assert gray(out / "wide0.jpg").shape == (5, 5) and gray(out / "wide1.jpg").shape == (200, 300)


@pytest.mark.parametrize("extra, message", [
    (["--batch", "0"], "--batch must be at least 1, not 0"),
    (["--batch", "2", "-o", "-"], "--batch cannot be used with standard input or output"),
    (["--batch", "2", "--compare", "c.png"], "--batch cannot be used with --compare"),
])
def test_batch_usage_errors(cli, extra, message):
    result = cli("apply", CAMERA, "-k", "sharpen", *extra)
    assert result.exit_code == 2 and result.stderr == f"convfilter: error: {message}\n"


def test_stochastic_pooling_refuses_batches(cli, tmp_path):
    result = cli("pool", CAMERA, "--mode", "stochastic", "--seed", "1", "-o", tmp_path / "x.png", "--batch", "2")
    assert result.exit_code == 2 and "stochastic pooling" in result.stderr


def test_the_cpu_default_never_takes_the_batch_path(cli, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "process", lambda *a, **k: pytest.fail("batch path taken"))
    result = cli("apply", folder / "wide0.jpg", folder / "wide1.jpg", "-k", "sharpen", "-o", tmp_path / "o/",
                 "--device", "cpu")
    assert result.exit_code == 0


def test_a_fifo_in_a_batch_is_one_error_not_a_hang(tmp_path):
    """The batch path checks JPEGs with Pillow before it reads them; a pipe must not be opened
    there (a FIFO nobody writes to would wait forever), only once, by the per-file reading."""
    import os

    from conftest import run_process

    os.mkfifo(tmp_path / "pipe.jpg")
    Image.open(ASTRONAUT).save(tmp_path / "photo.jpg")
    done = run_process("apply", tmp_path / "pipe.jpg", tmp_path / "photo.jpg", "-k", "blur", "--batch", "2",
                       "--device", "cpu", "-o", tmp_path / "out/", "-q")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[0] == f"convfilter: error: '{tmp_path / 'pipe.jpg'}': empty input (no bytes)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.jpg"]


def test_batches_refuse_results_over_max_pixels_like_the_per_file_path(cli, folder, tmp_path):
    """2x upsampling under --max-pixels 200000: the 160x240 JPEGs (153,600 pixels after) are
    written, the 300x200 ones (240,000 after) fail with the per-file path's message."""
    options = ["--factor", "2", "--max-pixels", "200000", "--device", "cpu"]
    per_file = cli("upsample", folder, *options, "-o", tmp_path / "one")
    batched = cli("upsample", folder, *options, "-o", tmp_path / "batch", "--batch", "4")
    assert (batched.exit_code, per_file.exit_code) == (1, 1)
    errors = sorted(line for line in batched.stderr.splitlines() if line.startswith("convfilter: error:"))
    assert errors == sorted(line for line in per_file.stderr.splitlines() if line.startswith("convfilter: error:"))
    assert f"convfilter: error: '{folder / 'wide0.jpg'}': the filter would make it 600x400, 240000 pixels, " \
           "more than --max-pixels 200000" in errors
    assert sorted(path.name for path in (tmp_path / "batch").iterdir()) == ["tall0.jpg", "tall1.jpg", "tall2.jpg"]
    for name in ["tall0", "tall1", "tall2"]:
        assert gray(tmp_path / "batch" / f"{name}.jpg").shape == (480, 320)


XMP6 = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("color", [False, True], ids=["grey", "colour"])
def test_every_orientation_is_applied_as_pillow_does_in_batches(cli, tmp_path, color):
    """The batch path turns JPEGs upright itself, from the orientation Pillow reads: torchvision's
    GPU decoder ignores apply_exif_orientation (phone photos came out sideways on a GPU), and an
    orientation in XMP only was not applied at all. Reference: Pillow's exif_transpose of the
    decoded JPEG; identity kernel, PNG out: within 1 level (decoders' rounding)."""
    source = tmp_path / "in"
    source.mkdir()
    photo = Image.open(ASTRONAUT).convert("RGB").crop((0, 0, 60, 40))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        photo.save(source / f"o{orientation}.jpg", exif=exif, quality=95)
    photo.save(source / "xmp6.jpg", xmp=XMP6, quality=95)
    colour = ["--color"] if color else []
    result = cli("apply", source, "-k", "identity", "--format", "png", "-o", tmp_path / "out", "--device", "cpu",
                 "--batch", "4", *colour)
    assert result.exit_code == 0, result.stderr
    for path in sorted(source.iterdir()):
        with Image.open(path) as image:
            if not color:
                image.draft("L", image.size)  # the JPEG's own luma, as OpenCV's and convfilter's grey read
            expected = np.asarray(ImageOps.exif_transpose(image))
        assert (path.stem, np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png")).shape) == (
            path.stem, expected.shape)
        assert max_diff(np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png")), expected) <= 1, path.stem


def test_a_group_counts_every_channel_and_the_pipeline_s_type():
    """Colour groups were sized as grey ones: 22 images of 3000x4000 in one group, 3 GiB a copy
    in float32 (6 GiB in float64) where the budget is 1 GiB."""
    import torch

    assert batch.BATCH_BYTES == 1 << 30
    for channels, item_bytes, per_group in ((1, 4, 22), (3, 4, 7), (3, 8, 3)):  # 1 GiB // (bytes x C x 12 MP)
        images = [(None, torch.empty(channels, 3000, 4000, dtype=torch.uint8)) for _ in range(64)]
        sizes = [len(group) for group in batch._groups(images, item_bytes)]
        assert sum(sizes) == 64 and max(sizes) == per_group, (channels, item_bytes)


def test_a_colour_group_nvjpeg_cannot_encode_is_encoded_by_pillow(cli, folder, tmp_path, monkeypatch):
    """An encode error ("image encoding failed") was an internal error that ended the run with
    no output at all. Now those images are written by Pillow, as on the per-file path."""
    import torchvision.io

    def refuse(*arguments, **options):
        raise RuntimeError("image encoding failed: 8")

    monkeypatch.setattr(torchvision.io, "encode_jpeg", refuse)
    names = [folder / f"wide{i}.jpg" for i in range(3)]
    per_file = cli("apply", *names, "--color", "-k", "sharpen", "-o", tmp_path / "one/", "--device", "cpu")
    batched = cli("apply", *names, "--color", "-k", "sharpen", "-o", tmp_path / "batch/", "--device", "cpu",
                  "--batch", "4")
    assert (per_file.exit_code, batched.exit_code) == (0, 0), batched.stderr
    for path in names:
        assert (tmp_path / "batch" / path.name).read_bytes() == (tmp_path / "one" / path.name).read_bytes()


def test_a_jpeg_without_its_end_marker_goes_to_pillow(tmp_path):
    """torchvision's GPU decoder has no check for a file cut short (its CPU decoder has): only
    whole JPEGs, ending in FF D9, are decoded in batches; others fail or pass as on the per-file path."""
    from convfilter import imageio
    from convfilter.outputs import Job
    from convfilter.process import WriteOptions

    options = WriteOptions(encoding=imageio.Encoding())
    Image.open(ASTRONAUT).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    assert data.endswith(b"\xff\xd9")
    (tmp_path / "padded.jpg").write_bytes(data + b"\0\0")
    (tmp_path / "cut.jpg").write_bytes(data[:-2])
    fetched = {name: batch.fetch(Job(str(tmp_path / f"{name}.jpg"), str(tmp_path / f"{name}_out.jpg"), "JPEG"), options)
               for name in ("whole", "padded", "cut")}
    assert [type(fetched[name]).__name__ for name in ("whole", "padded", "cut")] == ["Fetched", "Fetched", "JobResult"]
    assert "truncated" in fetched["cut"].error  # Pillow's verdict, as on the per-file path
