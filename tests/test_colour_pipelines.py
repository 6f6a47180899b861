"""Colour, pipeline files, export, and the rest of the layer family (stochastic and adaptive
pooling, transposed-convolution upsampling), against independent references:
OpenCV (per-channel filter2D, INTER_LINEAR resize), scipy and numpy. Tolerances stated per test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from conftest import ASTRONAUT, ROOT, gray, run_process
from convfilter import kernels, pipeline
from convfilter.steps import from_table, pool_step

SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)


@pytest.fixture
def rgb_png(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.open(ASTRONAUT).convert("RGB").save(path)  # lossless, so the reference reads the same pixels
    return path


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64)


# ---------------------------------------------------------------------------- colour


def test_color_sharpen_matches_opencv_per_channel(cli, rgb_png, tmp_path):
    result = cli("apply", rgb_png, "--color", "-k", "sharpen", "-o", tmp_path / "c.png")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "c.png") as out:
        assert out.mode == "RGB"
    image = np.asarray(Image.open(rgb_png))
    expected = cv2.filter2D(image, -1, SHARPEN, borderType=cv2.BORDER_REFLECT_101)  # each channel, same kernel
    assert np.abs(rgb(tmp_path / "c.png") - expected).max() <= 1


def test_color_jpeg_input_matches_opencv_on_pillows_rgb(cli, tmp_path):
    result = cli("apply", ASTRONAUT, "--color", "-k", "gaussian5", "-o", tmp_path / "c.png")
    assert result.exit_code == 0
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    weights = np.array(kernels.resolve("gaussian5").weights(), np.float32)
    assert np.abs(rgb(tmp_path / "c.png") - cv2.filter2D(image, -1, weights, borderType=cv2.BORDER_REFLECT_101)).max() <= 1


def test_alpha_is_carried_unfiltered_and_follows_the_geometry(cli, tmp_path):
    colour = np.asarray(Image.open(ASTRONAUT).convert("RGB"))[:100, :120]
    alpha = np.tile(np.arange(120, dtype=np.uint8) * 2, (100, 1))
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(tmp_path / "in.png")
    assert cli("apply", tmp_path / "in.png", "--color", "-k", "blur", "-o", tmp_path / "a.png").exit_code == 0
    out = np.asarray(Image.open(tmp_path / "a.png"))
    assert out.shape == (100, 120, 4) and np.array_equal(out[..., 3], alpha)
    box = cv2.filter2D(colour, -1, np.full((3, 3), 1 / 9, np.float32), borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(out[..., :3].astype(int) - box).max() <= 1
    assert cli("apply", tmp_path / "in.png", "--color", "-k", "blur", "--stride", "2", "-o", tmp_path / "s.png").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png"))[..., 3], alpha[::2, ::2])
    assert cli("pool", tmp_path / "in.png", "--color", "--mode", "max", "-o", tmp_path / "p.png").exit_code == 0
    pooled = np.asarray(Image.open(tmp_path / "p.png"))
    assert np.array_equal(pooled[..., :3], colour.reshape(50, 2, 60, 2, 3).max(axis=(1, 3)))
    assert np.array_equal(pooled[..., 3], alpha.reshape(50, 2, 60, 2).max(axis=(1, 3)))


def test_color_of_a_grayscale_image_stays_grayscale(cli, camera_copy, camera, tmp_path):
    assert cli("apply", camera_copy, "--color", "-k", "identity", "-o", tmp_path / "g.png").exit_code == 0
    with Image.open(tmp_path / "g.png") as out:
        assert out.mode == "L" and np.array_equal(np.asarray(out), camera)


# ---------------------------------------------------------------------------- pipeline files


EDGES = """
[[step]]
kernel = "blur"

[[step]]
pool = "max"
size = 2

[[step]]
kernel = "edge"
range = "abs"
"""


def edges_reference(image: np.ndarray) -> np.ndarray:
    """blur -> clip, 2x2 max -> edge -> |.| -> clip, in float64, rounded once at the end."""
    blurred = np.clip(ndi.correlate(image.astype(np.float64), np.full((3, 3), 1 / 9), mode="mirror"), 0, 255)
    h, w = blurred.shape[0] // 2, blurred.shape[1] // 2
    pooled = blurred[: 2 * h, : 2 * w].reshape(h, 2, w, 2).max(axis=(1, 3))
    edge = np.full((3, 3), -1 / 9)
    edge[1, 1] = 1
    return np.round(np.clip(np.abs(ndi.correlate(pooled, edge, mode="mirror")), 0, 255))


@pytest.fixture
def folder(tmp_path) -> Path:
    source = tmp_path / "photos"
    (source / "sub").mkdir(parents=True)
    photo = Image.open(ASTRONAUT).convert("L")
    photo.crop((0, 0, 301, 250)).save(source / "a.png")
    photo.crop((100, 50, 400, 451)).save(source / "sub" / "b.png")
    return source


def test_three_step_pipeline_over_a_folder_matches_a_float_reference(cli, folder, tmp_path):
    recipe = tmp_path / "edges.toml"
    recipe.write_text(EDGES)
    out = tmp_path / "out"
    result = cli("run", recipe, folder, "-r", "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    for name in ("a.png", "sub/b.png"):
        expected = edges_reference(gray(folder / name))
        assert gray(out / name).shape == expected.shape
        assert np.abs(gray(out / name).astype(int) - expected).max() <= 1, name


def test_exported_program_runs_without_convfilter(cli, folder, tmp_path):
    recipe = tmp_path / "edges.toml"
    recipe.write_text(EDGES)
    assert cli("run", recipe, folder / "a.png", "-o", tmp_path / "cli.png").exit_code == 0
    assert cli("export", recipe, "-o", tmp_path / "edges.pt2").exit_code == 0
    script = f"""
import sys
sys.modules["convfilter"] = None  # any import of convfilter now fails
try:
    import convfilter
except ImportError:
    pass
else:
    raise SystemExit("convfilter could be imported")
import numpy as np, torch
from PIL import Image
image = np.asarray(Image.open({str(folder / 'a.png')!r}), dtype=np.float32)
program = torch.export.load({str(tmp_path / 'edges.pt2')!r}).module()
out = program(torch.from_numpy(image)[None, None]).round().clamp(0, 255)[0, 0].numpy().astype(np.uint8)
Image.fromarray(out).save({str(tmp_path / 'exported.png')!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    exported, from_cli = gray(tmp_path / "exported.png"), gray(tmp_path / "cli.png")
    assert exported.shape == from_cli.shape and np.abs(exported.astype(int) - from_cli).max() <= 1


@pytest.mark.parametrize("recipe, size", [
    # a stretch of a nearly flat image: `run` computes it in float64, the program did in float32 (3 levels off)
    ('[[step]]\nkernel = "gaussian5"\nrepeat = 20\n[[step]]\nkernel = "laplacian"\nrange = "stretch"\n', (64, 64)),
    # a 50x50 pooling needs more than the 96x128 input the program was recorded with: an internal error
    ('[[step]]\npool = "max"\nsize = 50\n[[step]]\nkernel = "gaussian5"\n', (400, 500)),
    # a result 1 pixel wide: torch.export assumed that no size is 1, and the program refused the input
    ('[[step]]\npool = "avg"\nsize = 4\n', (4, 7)),
    # a pooling that just fits the 96x128 input it was recorded with: the program took only 1-row results
    ('[[step]]\npool = "avg"\nsize = 96\n', (200, 300)),
    # a strided convolution, then a ceil-mode pooling: about 200 lines of torch's warnings, even with -q
    ('[[step]]\nkernel = "blur"\nstride = 4\n[[step]]\npool = "avg"\nsize = 3\nstride = 2\nceil = true\n', (37, 53)),
])
def test_exported_program_gives_what_run_gives(cli, tmp_path, recipe, size):
    import torch

    pipeline_file = tmp_path / "p.toml"
    pipeline_file.write_text(recipe)
    rng = np.random.default_rng(5)
    pixels = (100 + rng.integers(0, 2, size)) if size == (64, 64) else rng.integers(0, 256, size)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "in.png")
    assert cli("run", pipeline_file, tmp_path / "in.png", "-o", tmp_path / "run.png").exit_code == 0
    done = run_process("export", pipeline_file, "-o", tmp_path / "p.pt2", "-q")
    assert (done.returncode, done.stderr) == (0, b"")
    program = torch.export.load(str(tmp_path / "p.pt2")).module()
    image = torch.from_numpy(gray(tmp_path / "in.png").astype(np.float32))[None, None]
    exported = program(image).round().clamp(0, 255)[0, 0].numpy()
    from_run = gray(tmp_path / "run.png")
    assert exported.shape == from_run.shape and np.abs(exported - from_run).max() <= 1


@pytest.mark.parametrize("border", ["reflect", "replicate", "zeros", "circular"])
def test_exported_program_takes_one_image_and_several_with_every_border(cli, tmp_path, border):
    """With torch.export's no-size-of-one assumption dropped, a circular border's program refused
    a batch of one image ("Guard failed: input.size()[0] >= 2")."""
    import torch

    pipeline_file = tmp_path / "p.toml"
    pipeline_file.write_text(f'[[step]]\nkernel = "sharpen"\nborder = "{border}"\n[[step]]\npool = "avg"\nsize = 2\n')
    pixels = np.random.default_rng(6).integers(0, 256, (37, 50), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert cli("run", pipeline_file, tmp_path / "in.png", "-o", tmp_path / "run.png").exit_code == 0
    assert cli("export", pipeline_file, "-o", tmp_path / "p.pt2", "-q").exit_code == 0
    program = torch.export.load(str(tmp_path / "p.pt2")).module()
    image = torch.from_numpy(pixels.astype(np.float32))[None, None]
    for batch in (image, image.expand(3, 1, -1, -1)):
        exported = program(batch).round().clamp(0, 255).numpy()
        assert all(np.abs(one[0] - gray(tmp_path / "run.png")).max() <= 1 for one in exported)


def test_apply_is_a_one_step_pipeline(cli, camera_copy, tmp_path):
    recipe = tmp_path / "one.toml"
    recipe.write_text('[[step]]\nkernel = "sharpen"\nborder = "replicate"\n')
    assert cli("run", recipe, camera_copy, "-o", tmp_path / "run.png").exit_code == 0
    assert cli("apply", camera_copy, "-k", "sharpen", "--border", "replicate", "-o", tmp_path / "apply.png").exit_code == 0
    assert np.array_equal(gray(tmp_path / "run.png"), gray(tmp_path / "apply.png"))
    assert cli("run", recipe, camera_copy).exit_code == 0
    assert (camera_copy.parent / "photo_one.png").is_file()  # outputs are named after the pipeline


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[step]]\nkernel = "blur"\nsize = 3\n', "step 1 (line 1): unknown setting 'size' for a kernel step; "
         "allowed: kernel, border, normalize, scale, bias, flip, repeat, stride, range"),
        ('[[step]]\nkernel = "blur"\npool = "max"\n', "step 1 (line 1): a step is exactly one of kernel, pool, "
         "upsample; got kernel, pool"),
        ('[[step]]\nkernel = "blur"\n\n[[step]]\npool = "max"\nsize = "2"\n', "step 2 (line 4): 'size' must be an "
         "integer, got '2'"),
        ('[[step]]\nupsample = "cubic"\n', "step 1 (line 1): unknown upsample mode 'cubic'; choose from nearest, bilinear"),
        ('[[step]]\nkernel = "sharpn"\n', "step 1 (line 1): unknown kernel 'sharpn'; did you mean 'sharpen' or 'unsharp5'?"),
        ('colour = true\n[[step]]\nkernel = "blur"\n', "unknown key 'colour'; allowed at the top: step, color, description"),
        ("color = true\n", "no steps; give one or more [[step]] tables"),
        ('[[step]]\nkernel = "blur"\nrepeat = 0\n', "step 1 (line 1): 'repeat' must be at least 1, got 0"),
        ('[[step]]\nkernel = blur\n', "line 2: invalid TOML: Invalid value"),
        ('[step]\nkernel = "blur"\n', "'step' must be an array of tables, [[step]] with two brackets, got [step]"),
        ('description = 5\n[[step]]\nkernel = "blur"\n', "'description' must be a string, got 5"),
    ],
)
def test_pipeline_file_errors_exit_2_naming_file_step_and_key(cli, camera_copy, tmp_path, text, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    result = cli("run", recipe, camera_copy, "-o", tmp_path / "out.png")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"convfilter: error: pipeline file '{recipe}'")
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("name", ["edges", "thumbnail", "relief"])
def test_sample_pipelines_run(cli, name, tmp_path):
    result = cli("run", ROOT / "samples" / f"{name}.toml", ASTRONAUT, "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == ("RGB" if name == "thumbnail" else "L")
        assert out.size == {"edges": (256, 256), "thumbnail": (128, 128), "relief": (512, 512)}[name]


# ---------------------------------------------------------------------------- stochastic pooling


def test_stochastic_pooling_picks_in_proportion_to_magnitude():
    window = np.array([[10, 20], [30, 40]], np.uint8)  # probabilities 0.1, 0.2, 0.3, 0.4
    image = np.tile(window, (100, 100))  # 10,000 windows
    out = pipeline.Filter([pool_step(size=2, mode="stochastic", seed=5)], "cpu")(image)
    frequencies = [np.mean(out == v) for v in (10, 20, 30, 40)]
    np.testing.assert_allclose(frequencies, [0.1, 0.2, 0.3, 0.4], atol=0.02)  # binomial sd <= 0.005
    zeros = pipeline.Filter([pool_step(size=2, mode="stochastic", seed=5)], "cpu")(np.zeros((8, 8), np.uint8))
    assert not zeros.any()


def test_stochastic_pooling_is_reproducible_with_a_seed(cli, camera_copy, tmp_path):
    for name in ("a", "b"):
        assert cli("pool", camera_copy, "--mode", "stochastic", "--seed", "7", "-o", tmp_path / f"{name}.png").exit_code == 0
    assert cli("pool", camera_copy, "--mode", "stochastic", "--seed", "8", "-o", tmp_path / "c.png").exit_code == 0
    a, b, c = (gray(tmp_path / f"{n}.png") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    blocks = gray(camera_copy).reshape(256, 2, 256, 2).transpose(0, 2, 1, 3).reshape(256, 256, 4)
    assert np.all((blocks == a[..., None]).any(axis=-1))  # every output is one of its window's values


def test_a_seed_picks_the_same_pixels_when_a_later_step_stretches(cli, camera_copy, tmp_path):
    """A pipeline with a stretch step runs in float64, and the draws were made in that type: 676
    of 1024 picks changed. Here the stretch maps the pooled image's 0..255 to itself."""
    noise = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    noise[:2, :2], noise[:2, 2:4] = 0, 255  # windows that can only give 0 and 255
    Image.fromarray(noise).save(tmp_path / "noise.png")
    for name, value_range in (("a", "clip"), ("b", "stretch")):
        (tmp_path / f"{name}.toml").write_text(f'[[step]]\npool = "stochastic"\nsize = 2\nseed = 1\n\n'
                                               f'[[step]]\nkernel = "identity"\nrange = "{value_range}"\n')
        assert cli("run", tmp_path / f"{name}.toml", tmp_path / "noise.png", "-o", tmp_path / f"{name}.png").exit_code == 0
    pooled = cli("pool", tmp_path / "noise.png", "--mode", "stochastic", "--seed", "1", "-o", tmp_path / "p.png")
    assert pooled.exit_code == 0
    a, b, p = (gray(tmp_path / f"{n}.png") for n in "abp")
    assert a.min() == 0 and a.max() == 255  # so that the stretch changes nothing
    assert np.array_equal(a, p) and np.array_equal(b, p)


def test_seed_is_only_for_stochastic(cli, camera_copy):
    result = cli("pool", camera_copy, "--seed", "1")
    assert (result.exit_code, result.stderr) == (2, "convfilter: error: --seed is for stochastic pooling only\n")


# ---------------------------------------------------------------------------- adaptive pooling


def adaptive_reference(image: np.ndarray, height: int, width: int, reduce) -> np.ndarray:
    """Window i spans [floor(i * H / h), ceil((i + 1) * H / h)), as in nn.AdaptiveAvgPool2d."""
    rows = [(i * image.shape[0] // height, -(-(i + 1) * image.shape[0] // height)) for i in range(height)]
    cols = [(j * image.shape[1] // width, -(-(j + 1) * image.shape[1] // width)) for j in range(width)]
    return np.array([[reduce(image[r0:r1, c0:c1].astype(np.float64)) for c0, c1 in cols] for r0, r1 in rows])


@pytest.mark.parametrize("mode, reduce", [("avg", np.mean), ("max", np.max)])
def test_adaptive_pooling_gives_the_exact_size(cli, camera_copy, camera, tmp_path, mode, reduce):
    result = cli("pool", camera_copy, "--to", "320x240", "--mode", mode, "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.stderr
    out = gray(tmp_path / "a.png")
    assert out.shape == (240, 320)
    assert np.array_equal(out, np.round(adaptive_reference(camera, 240, 320, reduce)).astype(np.uint8))


@pytest.mark.parametrize("args, message", [
    (["--to", "320"], "--to must be WIDTHxHEIGHT like 320x240, got '320'"),
    (["--to", "32x24", "--size", "3"], "--to gives the output size; it cannot be used with --size"),
    (["--to", "32x24", "--mode", "stochastic"], "unknown adaptive pool mode 'stochastic'; choose from avg, max, min"),
])
def test_adaptive_pooling_errors(cli, camera_copy, args, message):
    result = cli("pool", camera_copy, *args)
    assert (result.exit_code, result.stderr) == (2, f"convfilter: error: {message}\n")


# ---------------------------------------------------------------------------- upsampling


def test_upsample_nearest_is_numpy_repeat(cli, camera_copy, camera, tmp_path):
    assert cli("upsample", camera_copy, "--factor", "3", "-o", tmp_path / "n.png").exit_code == 0
    assert np.array_equal(gray(tmp_path / "n.png"), np.repeat(np.repeat(camera, 3, axis=0), 3, axis=1))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsample_bilinear_matches_opencv(cli, camera_copy, camera, tmp_path, factor):
    assert cli("upsample", camera_copy, "--factor", str(factor), "--mode", "bilinear", "-o", tmp_path / "b.png").exit_code == 0
    expected = cv2.resize(camera, (512 * factor, 512 * factor), interpolation=cv2.INTER_LINEAR)
    out = gray(tmp_path / "b.png").astype(int)
    assert np.abs(out - expected)[factor:-factor, factor:-factor].max() <= 1  # away from the borders
    assert np.abs(out - expected).max() <= 1  # and, with replicated edges, at them too


def test_upsample_is_a_transposed_convolution_and_inverts_pooling():
    from torch import nn

    model = pipeline.build([from_table({"upsample": "nearest", "factor": 2})])
    assert isinstance(model[0], nn.ConvTranspose2d) and model[0].stride == (2, 2)
    image = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    up = pipeline.Filter([from_table({"upsample": "nearest", "factor": 2})], "cpu")(image)
    assert np.array_equal(pipeline.Filter([pool_step(size=2, mode="max")], "cpu")(up), image)


def test_new_commands_and_modes_are_in_the_help(cli):
    top = cli("--help").stdout.decode()
    assert all(command in top for command in ("run", "upsample", "export"))
    pool_help = cli("pool", "--help").stdout.decode()
    assert "stochastic" in pool_help and "--to" in pool_help and "--seed" in pool_help


def test_a_pipeline_file_with_a_byte_order_mark_is_read():
    """It was 'invalid TOML: Invalid statement (column 1)'."""
    import tempfile

    from convfilter import pipelines

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.toml"
        path.write_text('\ufeff[[step]]\nkernel = "blur"\n', encoding="utf-8")
        loaded = pipelines.load(str(path))
    assert [step.name for step in loaded.steps] == ["blur"]


def test_an_image_given_as_the_pipeline_file_says_so(cli, camera_copy, tmp_path):
    """`run photo.jpg edges.toml` gave the codec's "'utf-8' codec can't decode byte 0xff"."""
    recipe = tmp_path / "p.toml"
    recipe.write_text('[[step]]\nkernel = "blur"\n')
    result = cli("run", ASTRONAUT, recipe, "-o", tmp_path / "out.png")
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: pipeline file '{ASTRONAUT}' is an image; give the pipeline file first, "
           "then the images\n")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'description = "d\xe9tail"\n[[step]]\nkernel = "blur"\n')
    result = cli("run", latin1, ASTRONAUT, "-o", tmp_path / "out.png")
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: pipeline file '{latin1}': not UTF-8 text: byte 0xe9 at position 16\n")


def test_a_step_header_inside_a_multi_line_string_does_not_shift_the_lines(cli, camera_copy, tmp_path):
    """The error named line 6 (step 1's) for step 2 on line 9."""
    recipe = tmp_path / "p.toml"
    recipe.write_text('description = """\nnotes\n[[step]]\n"""\n\n[[step]]\nkernel = "blur"\n\n'
                      '[[step]]\nkernel = "blurr"\n')
    result = cli("run", recipe, camera_copy, "-o", tmp_path / "out.png")
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: pipeline file '{recipe}', step 2 (line 9): unknown kernel 'blurr'; did you mean 'blur'?\n")


def test_export_refuses_stochastic_pooling_naming_the_file_and_step(cli, tmp_path):
    recipe = tmp_path / "p.toml"
    recipe.write_text('[[step]]\nkernel = "blur"\n\n[[step]]\npool = "stochastic"\nseed = 3\n')
    result = cli("export", recipe, "-o", tmp_path / "p.pt2")
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: pipeline file '{recipe}', step 2: stochastic pooling draws random numbers per call; "
           "it cannot be exported reproducibly\n")
    assert not (tmp_path / "p.pt2").exists()


def test_a_quoted_step_header_is_found_and_one_inside_a_string_is_not(cli, camera_copy, tmp_path):
    recipe = tmp_path / "p.toml"
    recipe.write_text('[["step"]]\nkernel = "blurr"\ndescription2 = """\n[[step]]\n"""\n')
    result = cli("run", recipe, camera_copy, "-o", tmp_path / "out.png")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"convfilter: error: pipeline file '{recipe}', step 1 (line 1): ")


def test_step_lines_of_a_long_pipeline_with_a_multi_line_description():
    """Each header was checked by parsing the text before it: 5000 steps took 76 s."""
    from convfilter.pipelines import _step_lines

    text = 'description = """\n[[step]]\n"""\n' + "".join('[[step]]\nkernel = "blur"\n\n' for _ in range(5000))
    assert _step_lines(text) == [4 + 3 * i for i in range(5000)]
    assert _step_lines("d = '''\n[[step]]\n'''\n[[step]]\n") == [4]
    assert _step_lines('d = "x\\"[[step]]"\n[[step]]\n# [[step]]\n') == [2]
    assert _step_lines('d = """a\\"""\n[[step]]\n"""\n[[step]]\n') == [4]
