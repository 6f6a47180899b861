"""Property tests (hypothesis): the parser raises only KernelError on any text; the pipeline equals
a direct scipy correlation on random small images and kernels (within 1 level); pooling shapes and
values follow the formula and a numpy reference."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convfilter import kernels, pipeline
from convfilter.errors import InputError, KernelError
from convfilter.steps import conv_steps, pool_step

from test_pipeline import numpy_pool

# 300 examples a property in the suite; CONVFILTER_EXAMPLES=5000 for a long run.
EXAMPLES = settings(max_examples=int(os.environ.get("CONVFILTER_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SCIPY_MODES = {"reflect": "mirror", "replicate": "nearest", "zeros": "constant", "circular": "wrap"}

kernel_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.text(
    alphabet="0123456789 ,;/.-+eE#\n\tnaif[]=\"'weights", max_size=200
)


@EXAMPLES
@given(kernel_text)
def test_plain_and_inline_parsers_raise_only_kernel_errors(text):
    for parse in (lambda t: kernels.parse_plain(t, "kernel file 'k.txt'"), kernels.parse_inline):
        try:
            kernel = parse(text)
        except KernelError as error:
            assert "\n" not in str(error)  # one line
        else:
            assert 1 <= kernel.height <= 63 and 1 <= kernel.width <= 63
            assert all(np.isfinite(v) for row in kernel.raw_weights for v in row)


@EXAMPLES
@given(kernel_text | st.builds(lambda rows: "weights = " + repr(rows),
                               st.lists(st.lists(st.integers(-5, 5) | st.floats(), max_size=4), max_size=4)))
def test_toml_parser_raises_only_kernel_errors(text):
    try:
        kernels.parse_toml(text, "kernel file 'k.toml'")
    except KernelError as error:
        assert "\n" not in str(error)


@st.composite
def image_and_kernel(draw):
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    image = draw(arrays(np.uint8, (height, width)))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    weights = draw(arrays(np.float64, (kh, kw), elements=st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 3))))
    return image, weights


@EXAMPLES
@given(image_and_kernel(), st.sampled_from(sorted(SCIPY_MODES)), st.floats(-50, 50).map(lambda v: round(v, 2)))
def test_pipeline_equals_scipy_correlation(case, border, bias):
    image, weights = case
    spec = ";".join(",".join(repr(float(v)) for v in row) for row in weights)
    steps = conv_steps([spec], border=border, bias=bias)
    kh, kw = weights.shape
    too_small = (border == "reflect" and (image.shape[0] <= kh // 2 or image.shape[1] <= kw // 2)) or (
        border == "circular" and (image.shape[0] < kh // 2 or image.shape[1] < kw // 2))
    if too_small:
        with pytest.raises(InputError):
            pipeline.Filter(steps, "cpu")(image)
        return
    out = pipeline.Filter(steps, "cpu")(image)
    origin = [-1 if n % 2 == 0 else 0 for n in weights.shape]  # the anchor at (n - 1) // 2
    reference = ndi.correlate(image.astype(np.float64), weights, mode=SCIPY_MODES[border], origin=origin) + bias
    assert np.abs(out.astype(np.float64) - np.clip(np.round(reference), 0, 255)).max() <= 1


@EXAMPLES
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 6), st.integers(1, 6),
       st.sampled_from(["avg", "max", "min"]), st.booleans(), st.data())
def test_pool_shapes_follow_the_formula(height, width, size, stride, mode, ceil, data):
    image = data.draw(arrays(np.uint8, (height, width)))
    run = pipeline.Filter([pool_step(size=size, stride=stride, mode=mode, ceil=ceil)], "cpu")
    if size > min(height, width):
        with pytest.raises(InputError):
            run(image)
        return
    out = run(image)

    def expected(n: int) -> int:
        if not ceil:
            return (n - size) // stride + 1
        count = -(-(n - size) // stride) + 1
        return count - 1 if (count - 1) * stride >= n else count  # a window must start inside (as torch)

    assert out.shape == (expected(height), expected(width))
    assert np.array_equal(out, numpy_pool(image, size, stride, mode, ceil))
