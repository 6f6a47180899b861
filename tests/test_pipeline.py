"""The shared torch pipeline against exact hand-made cases and independent references.

References: OpenCV `filter2D` (and `copyMakeBorder` for the wrap border, which `filter2D`
refuses), scipy.ndimage.correlate, and numpy block reductions. Tolerance: 1 level (atol=1) for
convolutions, which round a float32 sum; exact for pooling (integer window sums; the division in
float64 where they pass 2**24).
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from convfilter import borders, kernels, layers, pipeline
from convfilter.errors import InputError
from convfilter.steps import conv_steps, pool_step

from test_kernels import BUILTIN

CV_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE, "zeros": cv2.BORDER_CONSTANT}
SCIPY_MODES = {"reflect": "mirror", "replicate": "nearest", "zeros": "constant", "circular": "wrap"}


def opencv_filter(image: np.ndarray, weights, border: str) -> np.ndarray:
    """OpenCV's filter2D with the contract's anchor: the extra padding of even sizes at the bottom/right."""
    k = np.asarray(weights, dtype=np.float32)
    height, width = k.shape
    top, left = (height - 1) // 2, (width - 1) // 2
    if border == "circular":
        padded = cv2.copyMakeBorder(image, top, height - 1 - top, left, width - 1 - left, cv2.BORDER_WRAP)
        return cv2.filter2D(padded, -1, k, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[: image.shape[0], : image.shape[1]]
    return cv2.filter2D(image, -1, k, anchor=(left, top), borderType=CV_BORDERS[border])


def scipy_filter(image: np.ndarray, weights, border: str, bias: float = 0.0) -> np.ndarray:
    """scipy.ndimage.correlate in float64 (origin -1 on even axes puts the anchor at (k-1)//2), clipped."""
    k = np.asarray(weights, dtype=np.float64)
    origin = [-1 if n % 2 == 0 else 0 for n in k.shape]
    out = ndi.correlate(image.astype(np.float64), k, mode=SCIPY_MODES[border], cval=0.0, origin=origin) + bias
    return np.clip(np.round(out), 0, np.iinfo(image.dtype).max).astype(image.dtype)


def apply(image, specs, border="reflect", **options):
    return pipeline.Filter(conv_steps(specs, border=border, **options), "cpu")(image)


def max_diff(a, b) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


# ---------------------------------------------------------------------------- exact: impulses


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("flip", [False, True])
def test_impulse_response_is_the_kernel(name, flip):
    """A single 1 in zeros: correlation returns the kernel rotated 180 degrees; --flip
    (true convolution) returns the kernel as written."""
    step = conv_steps([name], border="zeros", flip=flip)[0]
    layer = layers.KernelConv2d(step.weights, 0.0, "zeros")
    impulse = torch.zeros(1, 1, 21, 21)
    impulse[0, 0, 10, 10] = 1.0
    with torch.inference_mode():
        response = layer(impulse)[0, 0].numpy()
    k = np.array(kernels.resolve(name).weights())
    height, width = k.shape
    top, left = 10 - height // 2, 10 - width // 2  # the anchor is at (k-1)//2, so the patch starts here
    patch = response[top: top + height, left: left + width]
    expected = k if flip else k[::-1, ::-1]
    np.testing.assert_allclose(patch, expected, rtol=0, atol=1e-6)
    assert np.count_nonzero(response) == np.count_nonzero(expected)


def test_even_kernel_puts_extra_padding_bottom_right():
    image = np.zeros((6, 6), np.uint8)
    image[2, 2] = 100
    out = apply(image, ["1,2;3,4"], border="zeros", normalize=False)
    # anchor (0, 0): out[y, x] = sum w[i, j] * in[y + i, x + j]
    assert out[2, 2] == 100 and out[1, 1] == 255 and out[1, 2] == 255 and out[2, 1] == 200
    assert np.count_nonzero(out) == 4


# ---------------------------------------------------------------------------- references on a real photo


@pytest.mark.parametrize("border", ["reflect", "replicate", "zeros", "circular"])
@pytest.mark.parametrize("name", ["sharpen", "blur", "edge", "sobel-x", "gaussian5", "emboss", "unsharp5", "motion-blur"])
def test_builtin_kernels_match_opencv_on_a_photo(camera, name, border):
    weights = kernels.resolve(name).weights()
    assert max_diff(apply(camera, [name], border), opencv_filter(camera, weights, border)) <= 1


@pytest.mark.parametrize("border", ["reflect", "replicate", "zeros", "circular"])
@pytest.mark.parametrize("shape", [(1, 4), (2, 2), (4, 1), (4, 6), (7, 3), (15, 15), (31, 31)])
def test_random_kernels_of_any_shape_match_scipy_and_opencv(camera, border, shape):
    rng = np.random.default_rng(sum(shape))
    weights = rng.normal(size=shape) / np.sqrt(np.prod(shape))
    spec = ";".join(",".join(repr(float(v)) for v in row) for row in weights)
    image = camera[:97, :130]  # odd and even sides
    out = apply(image, [spec], border, bias=40)
    assert max_diff(out, scipy_filter(image, weights, border, bias=40)) <= 1
    ours = apply(image, [spec], border)
    assert max_diff(ours, opencv_filter(image, weights, border)) <= 1


def _gaussian(size: int, sigma: float) -> np.ndarray:
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma * sigma))
    return np.outer(g, g) / np.outer(g, g).sum()


@pytest.mark.parametrize("border", ["reflect", "replicate", "zeros", "circular"])
@pytest.mark.parametrize("weights", [_gaussian(31, 5.0), _gaussian(63, 10.0), np.ones((15, 41)) / 615,
                                     np.outer(np.arange(1, 12) - 6.0, np.ones(13)) / 100],
                         ids=["gaussian31", "gaussian63", "box15x41", "ramp11x13"])
def test_large_rank_one_kernels_by_matrix_products_match_opencv_and_scipy(camera, border, weights):
    """Large separable kernels (as written in a kernel file: 10 significant digits, stored as
    float32) take the matrix-product method, on a photo, 8-bit and 16-bit."""
    spec = ";".join(",".join(f"{v:.10g}" for v in row) for row in weights)
    model = pipeline.build(conv_steps([spec], border=border))
    assert pipeline._single_convolution(model)[0].plan("cpu").method == "matmul"
    image = camera[:180, :250]
    ours = apply(image, [spec], border)
    assert max_diff(ours, opencv_filter(image, weights, border)) <= 1
    assert max_diff(ours, scipy_filter(image, weights, border)) <= 1
    deep = image.astype(np.uint16) * 257 + np.arange(image.shape[1], dtype=np.uint16)
    assert max_diff(apply(deep, [spec], border), scipy_filter(deep, weights, border)) <= 1


def test_sixteen_bit_stays_sixteen_bit_and_matches_scipy(camera):
    image = camera.astype(np.uint16) * 257 + np.arange(camera.shape[1], dtype=np.uint16)
    out = apply(image, ["sharpen"])
    assert out.dtype == np.uint16
    assert max_diff(out, scipy_filter(image, kernels.resolve("sharpen").weights(), "reflect")) <= 1


def test_bias_is_in_0_255_units_for_16_bit():
    image = np.full((5, 5), 1000, np.uint16)
    assert apply(image, ["identity"], bias=1)[0, 0] == 1000 + 257


def test_repeat_equals_giving_the_kernel_twice_and_chains_unrounded(camera):
    twice = apply(camera, ["blur"], repeat=2)
    assert np.array_equal(twice, apply(camera, ["blur", "blur"]))
    # between steps values are float32, not rounded: compare with scipy run twice in float64
    once = ndi.correlate(camera.astype(np.float64), np.full((3, 3), 1 / 9), mode="mirror")
    reference = np.round(ndi.correlate(once, np.full((3, 3), 1 / 9), mode="mirror"))
    assert max_diff(twice, reference.astype(np.uint8)) <= 1


@pytest.mark.parametrize("stride", [2, 3])
def test_stride_keeps_every_nth_pixel(camera, stride):
    image = camera[:101, :100]
    out = apply(image, ["sharpen"], stride=stride)
    assert out.shape == (-(-101 // stride), -(-100 // stride))
    assert np.array_equal(out, apply(image, ["sharpen"])[::stride, ::stride])


# ---------------------------------------------------------------------------- range modes


@pytest.fixture
def step_edge():
    image = np.full((8, 10), 50, np.uint8)
    image[:, 5:] = 200
    return image


def test_range_clip_abs_stretch_on_a_step_edge(step_edge):
    raw = ndi.correlate(step_edge.astype(np.float64), np.array(kernels.resolve("laplacian").weights()), mode="mirror")
    assert raw.min() == -150 and raw.max() == 150  # the Laplacian of the edge is negative on one side
    clip = apply(step_edge, ["laplacian"], range="clip")
    assert np.array_equal(clip, np.clip(raw, 0, 255).astype(np.uint8))
    assert clip[:, 5].max() == 0 and clip[:, 4].min() == 150
    absolute = apply(step_edge, ["laplacian"], range="abs")
    assert np.array_equal(absolute, np.abs(raw).astype(np.uint8))
    assert absolute[:, 5].min() == 150
    stretch = apply(step_edge, ["laplacian"], range="stretch")
    assert np.array_equal(stretch, np.round((raw + 150) * 255 / 300).astype(np.uint8))
    assert stretch.min() == 0 and stretch.max() == 255


def test_stretch_leaves_a_constant_image_and_values_never_wrap():
    flat = np.full((6, 6), 77, np.uint8)
    assert np.array_equal(apply(flat, ["identity"], range="stretch"), flat)
    bright = np.full((6, 6), 250, np.uint8)
    assert apply(bright, ["identity"], scale=3)[0, 0] == 255  # not (750 mod 256)
    assert apply(bright, ["identity"], scale=-1)[0, 0] == 0


@pytest.mark.parametrize("value, dtype", [(100, np.uint8), (1000, np.uint16)])
def test_stretch_leaves_a_constant_result_computed_inexactly_as_it_is(value, dtype):
    """An 11x11 kernel that is not rank 1 goes to the FFT, whose float32 result on a constant
    image varied by 1e-3 from pixel to pixel; stretch made that 0, 85, 170 and 255."""
    weights = np.ones((11, 11))
    weights[5, 5] = 2
    spec = ";".join(",".join(str(int(v)) for v in row) for row in weights)
    assert pipeline.build(conv_steps([spec]))[1].plan("cpu").method == "fft"
    flat = np.full((7, 7), value, dtype)
    assert np.array_equal(apply(flat, [spec], normalize=True, range="stretch"), flat)


def test_stretch_of_a_symmetric_blur_of_alternating_rows_is_constant():
    """A symmetric 62x1 kernel on rows alternating 0/255: its even and odd taps have the same sum,
    so every output is the same (127.5000255, exactly); float32 rounding made them differ by
    1e-5, and stretch brought the alternation back as 0/255."""
    x = np.arange(62) - 30.5
    taps = np.round(np.exp(-x * x / 162) / np.exp(-x * x / 162).sum(), 7)
    assert np.isclose(taps[::2].sum(), taps[1::2].sum(), rtol=0, atol=1e-12)  # the symmetry the claim rests on
    spec = ";".join(f"{t:.7f}" for t in taps)
    rows = (np.arange(32) % 2 * 255).astype(np.uint8).reshape(32, 1)
    assert np.array_equal(apply(rows, [spec], range="stretch"), np.full((32, 1), 128, np.uint8))


def test_stretch_of_a_low_contrast_16_bit_image_is_within_a_level():
    """A span of 69 levels near 32768, stretched about 950 times: float32 rounding of the blur
    became 6 levels. Reference: scipy in float64, stretched; tolerance 1 level."""
    image = (32768 + np.random.default_rng(0).integers(0, 101, (64, 64))).astype(np.uint16)
    raw = ndi.correlate(image.astype(np.float64), np.full((3, 3), 1 / 9), mode="mirror")
    expected = np.round((raw - raw.min()) * 65535 / (raw.max() - raw.min()))
    assert max_diff(apply(image, ["blur"], range="stretch"), expected) <= 1


@pytest.mark.parametrize("then", [[], ["identity"]], ids=["one-step", "two-steps"])
def test_16_bit_image_with_integer_weights_in_the_hundreds_is_exact(then):
    """Sums past 2**24 ran in float32, whose partial sums near 10**8 round to 8: 3 levels off.
    One step runs on int32 sums, several in float64. Reference: scipy on int64 (exact)."""
    weights = np.array([[88, -98, 197, -22, -9], [2, 33, 21, 4, 199], [123, 117, 80, 49, -64],
                        [196, -14, -114, 138, -136], [143, 45, -154, -183, -22]])
    image = np.random.default_rng(0).integers(0, 65536, (150, 200)).astype(np.uint16)
    spec = ";".join(",".join(map(str, row)) for row in weights)
    expected = np.clip(np.abs(ndi.correlate(image.astype(np.int64), weights, mode="mirror")), 0, 65535)
    assert np.array_equal(apply(image, [spec, *then], range="abs"), expected)


def test_kernel_file_range_is_the_default(tmp_path, step_edge):
    path = tmp_path / "lap.toml"
    path.write_text('range = "abs"\nweights = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]\n')
    assert apply(step_edge, [str(path)])[:, 5].min() == 150
    assert apply(step_edge, [str(path)], range="clip")[:, 5].max() == 0


# ---------------------------------------------------------------------------- pooling


def numpy_pool(image: np.ndarray, size: int, stride: int, mode: str, ceil: bool) -> np.ndarray:
    """Windows by explicit slicing; a partial window (ceil) reduces over the pixels that exist.
    As in torch's ceil_mode, a window must start inside the image."""
    height, width = image.shape
    count = (lambda n: -(-(n - size) // stride) + 1) if ceil else (lambda n: (n - size) // stride + 1)
    rows = [r for r in range(count(height)) if r * stride < height]
    cols = [c for c in range(count(width)) if c * stride < width]
    reduce = {"avg": np.mean, "max": np.max, "min": np.min}[mode]
    out = np.array([[reduce(image[r * stride: r * stride + size, c * stride: c * stride + size].astype(np.float64))
                     for c in cols] for r in rows])
    return np.round(out).astype(image.dtype)


def pool(image, **options):
    return pipeline.Filter([pool_step(**options)], "cpu")(image)


def test_pool_2x2_avg_and_max_equal_block_mean_and_max(camera):
    blocks = camera.reshape(256, 2, 256, 2).astype(np.float64)
    assert np.array_equal(pool(camera, size=2, stride=None, mode="avg", ceil=False),
                          np.round(blocks.mean(axis=(1, 3))).astype(np.uint8))
    assert np.array_equal(pool(camera, size=2, stride=None, mode="max", ceil=False), blocks.max(axis=(1, 3)))
    assert np.array_equal(pool(camera, size=2, stride=None, mode="min", ceil=False), blocks.min(axis=(1, 3)))


@pytest.mark.parametrize("mode", ["avg", "max", "min"])
@pytest.mark.parametrize("size, stride", [(2, 2), (3, 3), (3, 2), (2, 3), (5, 4)])
@pytest.mark.parametrize("ceil", [False, True])
def test_pool_matches_numpy(camera, mode, size, stride, ceil):
    image = camera[:53, :47]
    out = pool(image, size=size, stride=stride, mode=mode, ceil=ceil)
    expected = numpy_pool(image, size, stride, mode, ceil)
    assert out.shape == expected.shape
    assert np.array_equal(out, expected)


def test_pool_output_shape_formula():
    image = np.zeros((10, 7), np.uint8)
    assert pool(image, size=3, stride=2, mode="avg", ceil=False).shape == ((10 - 3) // 2 + 1, (7 - 3) // 2 + 1)
    assert pool(image, size=3, stride=2, mode="avg", ceil=True).shape == (-(-(10 - 3) // 2) + 1, -(-(7 - 3) // 2) + 1)


# ---------------------------------------------------------------------------- too small, devices


@pytest.mark.parametrize(
    "shape, border, message",
    [
        ((2, 9), "reflect", "image is 9x2, too small: a 5x5 kernel with --border reflect needs each side longer than 2 pixels"),
        ((9, 1), "circular", "image is 1x9, too small: a 5x5 kernel with --border circular needs each side at least 2 pixels"),
    ],
)
def test_image_too_small_for_the_border_is_an_input_error(shape, border, message):
    with pytest.raises(InputError) as raised:
        apply(np.zeros(shape, np.uint8), ["gaussian5"], border)
    assert str(raised.value) == message


@pytest.mark.parametrize("border", ["replicate", "zeros"])
def test_tiny_images_work_with_replicate_and_zeros(border):
    image = np.array([[10, 200, 30]], np.uint8)
    weights = kernels.resolve("gaussian5").weights()
    assert max_diff(apply(image, ["gaussian5"], border), scipy_filter(image, weights, border)) <= 1


@pytest.mark.parametrize("tables, message", [
    ([{"pool": "max", "size": 6}, {"kernel": "gaussian5"}],
     "image is 2x2 after pool6, too small: a 5x5 kernel with --border reflect needs each side longer than 2 pixels"),
    ([{"kernel": "gaussian5", "stride": 2, "repeat": 4}],
     "image is 2x2 after gaussian5+gaussian5+gaussian5, too small: a 5x5 kernel with --border reflect needs "
     "each side longer than 2 pixels"),
    ([{"kernel": "blur", "stride": 5}, {"pool": "avg", "size": 4}],
     "image is 3x3 after blur, too small: --size 4 pooling needs at least 4x4 pixels"),
])
def test_a_later_step_too_large_for_the_image_says_after_which_steps(tables, message):
    """The input (12x12) is large enough; the image the earlier steps make is not."""
    from convfilter.steps import from_table

    with pytest.raises(InputError) as raised:
        pipeline.Filter([from_table(table) for table in tables], "cpu")(np.zeros((12, 12), np.uint8))
    assert str(raised.value) == message


def test_pool_larger_than_image_is_an_input_error():
    with pytest.raises(InputError, match=r"^image is 3x3, too small: --size 4 pooling needs at least 4x4 pixels$"):
        pool(np.zeros((3, 3), np.uint8), size=4, stride=None, mode="max", ceil=True)


def test_layers_are_frozen_conv2d_modules():
    model = pipeline.build(conv_steps(["sharpen", "blur"], border="reflect", repeat=2))
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    assert all(not p.requires_grad for p in model.parameters())
    assert not model.training


# A rank-1 11x11 integer kernel: computed by matrix products (correlate.matmul), and exact in
# float32 whatever the order of the sums, so a band edge cannot change a single value.
_FACTOR = (1, 0, -2, 0, 1, 0, 3, 0, 0, -1, 1)
MATMUL_SPEC = ";".join(",".join(str(a * b) for b in _FACTOR) for a in _FACTOR)


@pytest.mark.parametrize("border", ["reflect", "replicate", "zeros", "circular"])
@pytest.mark.parametrize("spec", ["sharpen", "gaussian5", "1,2;3,-4", "motion-blur", MATMUL_SPEC],
                         ids=["sharpen", "gaussian5", "2x2", "motion-blur", "rank1-11x11"])
@pytest.mark.parametrize("band_rows", [3, 20])
@pytest.mark.parametrize("channels", [1, 3])
def test_banded_cpu_path_equals_the_whole_image_path(camera, monkeypatch, border, spec, band_rows, channels):
    """The single-convolution fast path works band by band, in buffers each thread reuses; with 3-
    and 20-row bands every band edge (and a partial block of the matrix products) is exercised, and
    the result must be identical to running the layers on the whole image."""
    image = np.stack([camera[:61, :83], camera[1:62, 3:86], 255 - camera[:61, :83]])[:channels]
    steps = conv_steps([spec], border=border)
    model = pipeline.build(steps, channels=channels)
    single = pipeline._single_convolution(model)
    assert single is not None
    assert (single[0].plan("cpu").method == "matmul") == (spec == MATMUL_SPEC)
    whole = model.float()
    with torch.inference_mode():
        expected = whole(torch.from_numpy(image.astype(np.float32))[None]).round_()[0].numpy()
    itemsize = (single[0].integer_dtype(255.0) or torch.float32).itemsize  # int16 bands for sharpen, 2x2
    row_bytes = itemsize * (83 + len(steps[0].weights[0]) - 1) * channels
    monkeypatch.setattr(pipeline, "BAND_BYTES", {method: row_bytes * band_rows for method in pipeline.BAND_BYTES})
    assert np.array_equal(pipeline.run(model, image[None])[0], expected.astype(np.uint8))
    assert np.array_equal(pipeline.run(model, image[None])[0], expected.astype(np.uint8))  # reused buffers


@pytest.mark.parametrize("deep", [False, True], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize("value_range", ["clip", "abs"])
@pytest.mark.parametrize("bias", [0.0, 3.0, 0.5])
@pytest.mark.parametrize(
    "spec, dtype_8, dtype_16",
    [("sharpen", torch.int16, torch.int32), ("1,2;3,-4", torch.int16, torch.int32),
     ("300,0,0;0,0,0;0,0,-300", torch.int32, torch.int32), ("0.5,0.5", None, None),
     ("0,0;0,0", torch.int16, torch.int32)],
    ids=["sharpen", "2x2", "large-integers", "halves", "zeros"],
)
def test_integer_bands_give_exactly_the_float_values(camera, deep, value_range, bias, spec, dtype_8, dtype_16):
    """Integer weights and bias with sums that fit in int32: the banded path works in int16/int32
    and must give exactly the exact sums, those of the layers in float64 on the whole image (the
    float32 ones below 2**24; past it float32 rounds partial sums); otherwise it stays float32."""
    image = camera[:70, :90].astype(np.uint16) * 257 + 3 if deep else camera[:70, :90]
    model = pipeline.build(conv_steps([spec], bias=bias, range=value_range), 65535.0 if deep else 255.0)
    conv = pipeline._single_convolution(model)[0]
    expected_dtype = (dtype_16 if deep else dtype_8) if bias != 0.5 else None
    assert conv.integer_dtype(65535.0 if deep else 255.0) == expected_dtype
    in_float64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        exact = in_float64(torch.from_numpy(image.astype(np.float64))[None, None])
    result = pipeline.run(model, image[None, None])[0, 0]
    if expected_dtype is None:  # float32 bands: within the contract's level of the exact values
        assert np.abs(result.astype(np.int64) - exact.round()[0, 0].numpy()).max() <= 1
    else:
        assert np.array_equal(result, exact.round()[0, 0].numpy().astype(image.dtype))


def test_integer_sums_are_used_up_to_int32():
    from convfilter.layers import exact_integer_dtype

    assert [exact_integer_dtype(b) for b in (2 ** 15 - 1, 2 ** 15, 2 ** 31 - 1, 2 ** 31)] == [
        torch.int16, torch.int32, torch.int32, None]


@pytest.mark.parametrize("mode", ["avg", "max", "min"])
@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2), (4, 4), (5, 3)])
@pytest.mark.parametrize("deep", [False, True], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize("band_rows", [1, 7])
def test_banded_integer_pooling_equals_the_float_layer(camera, monkeypatch, mode, size, stride, deep, band_rows):
    """A single pooling layer runs band by band on the integers (avg: an exact integer sum, then one
    float32 division): every value must equal the float32 layer's on the whole image, for
    overlapping windows, 16-bit values and 3 channels, with bands of 1 and 7 output rows."""
    planes = np.stack([camera[:67, :91], camera[2:69, 5:96], 255 - camera[:67, :91]])
    image = planes.astype(np.uint16) * 257 + np.arange(91, dtype=np.uint16) if deep else planes
    model = pipeline.build([pool_step(size=size, stride=stride, mode=mode)], channels=3)
    assert pipeline._single_pool(model, 67, 91) is not None
    with torch.inference_mode():
        expected = model(torch.from_numpy(image.astype(np.float32))[None]).round_()[0].numpy()
    monkeypatch.setattr(pipeline, "BAND_BYTES", {**pipeline.BAND_BYTES, "mac": 4 * 91 * 3 * stride * band_rows})
    assert np.array_equal(pipeline.run(model, image[None])[0], expected.astype(image.dtype))


def test_pooling_with_partial_windows_is_not_banded():
    model = pipeline.build([pool_step(size=2, mode="avg", ceil=True)])
    assert pipeline._single_pool(model, 10, 10) is not None
    assert pipeline._single_pool(model, 11, 10) is None  # ceil mode adds a partial window: torch's layer
    assert pipeline._single_pool(pipeline.build([pool_step(size=2, mode="stochastic", seed=1)]), 10, 10) is None


def test_input_gradients_flow_through_every_method(camera):
    """With an input that wants gradients the layer takes torch's own convolution (differentiable),
    also after an inference run has filled the matrix cache of the matmul method."""
    g = np.exp(-((np.arange(15) - 7) ** 2) / 8.0)
    spec = ";".join(",".join(f"{v:.10g}" for v in row) for row in np.outer(g, g) / np.outer(g, g).sum())
    model = pipeline.build(conv_steps([spec, "sharpen"], border="reflect"))
    image = camera[:40, :50]
    pipeline.run(model, image[None, None])  # inference first
    x = torch.from_numpy(image.astype(np.float32) * 0.2 + 100)[None, None].requires_grad_()
    model(x).sum().backward()
    reference = x.detach().clone().requires_grad_()
    y = reference
    for layer in model:
        if isinstance(layer, torch.nn.Conv2d):
            y = torch.nn.functional.conv2d(torch.nn.functional.pad(y, layer.padding_lrtb, mode="reflect"), layer.weight)
    y.sum().backward()  # values stay inside 0-255 here, so the range layers pass the gradient through
    assert torch.allclose(x.grad, reference.grad, atol=1e-4)


@pytest.mark.parametrize("spec", ["sharpen", "gaussian31", "pool"])
def test_images_that_run_backwards_are_filtered_like_copies(camera, spec):
    """A numpy view with negative strides (image[::-1]) is copied first: torch takes none."""
    if spec == "pool":
        steps = [pool_step(size=2, mode="avg")]
    else:
        weights = _gaussian(31, 5.0) if spec == "gaussian31" else None
        steps = conv_steps([spec if weights is None else ";".join(",".join(f"{v:.10g}" for v in row) for row in weights)])
    flipped = camera[:120, :90].copy()[::-1, ::-1]  # writable: np.require would not copy it
    filter_ = pipeline.Filter(steps, "cpu")
    assert np.array_equal(filter_(flipped), filter_(flipped.copy()))


@pytest.mark.parametrize("border", ["reflect", "replicate", "zeros", "circular"])
@pytest.mark.parametrize("margins", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 3, 1), (5, 5, 5, 5), (0, 3, 0, 6)])
def test_a_band_padded_alone_equals_the_rows_of_the_padded_image(border, margins):
    """borders.pad gives numpy's np.pad (reflect = OpenCV's BORDER_REFLECT_101), and pad_band gives
    exactly its rows for every band start and height, bands that lie in the margins included (the
    banded path pads each band on its own)."""
    left, right, top, bottom = margins
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 2, 9, 11)).astype(np.int16))
    whole = borders.pad(x, left, right, top, bottom, border)
    numpy_mode = {"reflect": "reflect", "replicate": "edge", "zeros": "constant", "circular": "wrap"}[border]
    assert np.array_equal(whole.numpy(), np.pad(x.numpy(), ((0, 0), (0, 0), (top, bottom), (left, right)), numpy_mode))
    for first in range(whole.shape[-2]):
        for count in range(1, whole.shape[-2] - first + 1):
            band = torch.full((1, 2, count, whole.shape[-1]), -1, dtype=torch.int16)
            borders.pad_band(x, first, band, left, right, top, border)
            assert torch.equal(band, whole[..., first: first + count, :]), (first, count)


# ---------------------------------------------------------------------------- results larger than --max-pixels

SIZE_STEPS = [
    {"kernel": "sharpen"}, {"kernel": "gaussian5", "stride": 3, "border": "replicate"},
    {"kernel": "blur", "stride": 2, "repeat": 3, "border": "zeros"},
    {"pool": "avg", "size": 3, "stride": 2}, {"pool": "max", "size": 3, "stride": 2, "ceil": True},
    {"pool": "max", "size": 2, "stride": 5, "ceil": True}, {"pool": "min", "size": 5, "stride": 4, "ceil": True},
    {"pool": "avg", "to": "13x4"}, {"upsample": "nearest", "factor": 3}, {"upsample": "bilinear", "factor": 2},
]


@pytest.mark.parametrize("shape", [(37, 29), (40, 41), (25, 18)])
@pytest.mark.parametrize("first, second", [(a, b) for a in range(len(SIZE_STEPS)) for b in (0, 3, 4, 8)])
def test_largest_size_is_that_of_the_images_the_layers_make(shape, first, second):
    """Against torch's own layers: each step's image, one step at a time."""
    from convfilter.steps import from_table, largest_size

    steps = [from_table(SIZE_STEPS[first]), from_table(SIZE_STEPS[second])]
    image, sizes = np.zeros(shape, np.uint8), []
    for step in steps:
        image = pipeline.Filter([step], "cpu")(image)
        sizes.append(image.shape)
    assert largest_size(steps, *shape) == max(sizes, key=lambda size: size[0] * size[1])


def test_an_image_the_steps_would_make_too_large_is_refused_before_running():
    from convfilter.steps import from_table

    steps = [from_table({"upsample": "nearest", "factor": 4}), from_table({"pool": "avg", "size": 4})]
    image = np.arange(60, dtype=np.uint8).reshape(6, 10)
    assert np.array_equal(pipeline.Filter(steps, "cpu", max_pixels=960)(image), image)  # 40x24 on the way
    with pytest.raises(InputError) as raised:
        pipeline.Filter(steps, "cpu", max_pixels=959)(image)
    assert str(raised.value) == "the filter would make it 40x24, 960 pixels, more than --max-pixels 959"


@pytest.mark.parametrize("size", [17, 64])
def test_average_pooling_of_16_bit_images_is_exact_past_float32_sums(size):
    """Window sums past 2**24 (16-bit, 17x17 and up) were divided in float32: on this image 5
    (17x17) and 1 (64x64) pixels off by 1. Reference: numpy block sums on int64, divided and
    rounded (half to even, as torch)."""
    image = np.random.default_rng(4).integers(0, 65536, (1000, 1000)).astype(np.uint16)
    result = pipeline.Filter([pool_step(size=size, mode="avg")], "cpu")(image)
    side = 1000 // size
    sums = image[:side * size, :side * size].astype(np.int64).reshape(side, size, side, size).sum(axis=(1, 3))
    assert np.array_equal(result, np.round(sums / (size * size)).astype(np.uint16))


@pytest.mark.parametrize("value, dtype, to", [(40001, np.uint16, "8x6"), (201, np.uint8, "4x4")])
def test_adaptive_average_pooling_of_a_constant_image_is_exact(value, dtype, to):
    """nn.AdaptiveAvgPool2d sums its windows in float32: a constant 16-bit 40001 pooled from
    4000x3000 to 8x6 gave 39957, an 8-bit 201 from 6000x4000 to 4x4 gave 203."""
    shape = (3000, 4000) if dtype == np.uint16 else (4000, 6000)
    result = pipeline.Filter([pool_step(to=to, mode="avg")], "cpu")(np.full(shape, value, dtype))
    assert np.array_equal(result, np.full(result.shape, value, dtype))
