"""Every correlation method against scipy, over kernel sizes 1-63, odd/even/rectangular shapes
and strides. The methods are exact up to float32 rounding: atol 0.02 on 0-255 values (the
contract allows 1 level after rounding). The choice of method is checked separately."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from convfilter import correlate, kernels
from convfilter.correlate import Plan

SHAPES = [(1, 1), (1, 2), (2, 1), (1, 7), (7, 1), (2, 2), (3, 3), (4, 4), (5, 5), (2, 9), (8, 8),
          (15, 15), (16, 9), (31, 31), (32, 32), (63, 5), (63, 63)]


def valid_reference(image: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """scipy's correlation of the already-padded image, cut to the valid region, then strided."""
    full = ndi.correlate(image.astype(np.float64), kernel, mode="constant")
    height, width = kernel.shape
    # scipy centres the kernel at n // 2: the valid output (r, c) sits at (r + h // 2, c + w // 2)
    top, left = height // 2, width // 2
    valid = full[top: top + image.shape[0] - height + 1, left: left + image.shape[1] - width + 1]
    return valid[::stride, ::stride]


def with_method(plan: Plan, method: str) -> Plan:
    return Plan(method, plan.height, plan.width, plan.taps, plan.column, plan.row)


@pytest.fixture(scope="module")
def image(camera) -> np.ndarray:
    return camera[100:200, 150:290].astype(np.float32)  # 100 x 140


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("method", ["mac", "fft", "conv2d"])  # matmul: rank-1 kernels only, below
@pytest.mark.parametrize("stride", [1, 3])
def test_methods_match_scipy_on_any_kernel(image, shape, method, stride):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    kernel = rng.normal(size=shape) / np.sqrt(np.prod(shape))
    plan = with_method(correlate.plan(kernel), method)
    with torch.inference_mode():
        out = correlate.correlate(torch.from_numpy(image)[None, None], torch.from_numpy(kernel).float(), plan, stride)
    np.testing.assert_allclose(out[0, 0].numpy(), valid_reference(image, kernel, stride), rtol=0, atol=0.02)


@pytest.mark.parametrize("shape", [s for s in SHAPES if min(s) > 1], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("method", ["separable", "matmul"])
def test_separable_matches_scipy_on_rank_one_kernels(image, shape, stride, method):
    rng = np.random.default_rng(shape[0] + shape[1])
    kernel = np.outer(rng.normal(size=shape[0]), rng.normal(size=shape[1])) / np.prod(shape)
    plan = correlate.plan(kernel)
    assert plan.column and plan.row, "a rank-1 kernel is found separable"
    with torch.inference_mode():
        out = correlate.correlate(torch.from_numpy(image)[None, None], torch.from_numpy(kernel).float(),
                                  with_method(plan, method), stride)
    np.testing.assert_allclose(out[0, 0].numpy(), valid_reference(image, kernel, stride), rtol=0, atol=0.02)


def test_sixteen_bit_values_through_fft_stay_within_a_level():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 65536, size=(90, 120)).astype(np.float32)
    kernel = rng.normal(size=(31, 31)) / 31
    plan = correlate.plan(kernel)
    assert plan.method == "fft"
    with torch.inference_mode():
        out = correlate.correlate(torch.from_numpy(image)[None, None], torch.from_numpy(kernel).float(), plan)
    assert np.abs(out[0, 0].numpy() - valid_reference(image, kernel, 1)).max() < 0.5


@pytest.mark.parametrize(
    "name, method",
    [("identity", "mac"), ("sharpen", "mac"), ("edge", "mac"), ("laplacian", "mac"), ("blur", "separable"),
     ("gaussian5", "separable"), ("sobel-x", "mac"), ("prewitt-y", "mac"), ("unsharp5", "mac"),
     ("motion-blur", "mac")],
)
def test_method_choice_for_the_library(name, method):
    assert correlate.plan(np.array(kernels.resolve(name).weights())).method == method


def test_large_kernels_go_to_fft_unless_rank_one():
    rng = np.random.default_rng(1)
    assert correlate.plan(rng.normal(size=(31, 31))).method == "fft"
    gaussian = np.outer(*[np.exp(-np.linspace(-3, 3, 31) ** 2)] * 2)
    assert correlate.plan(gaussian).method == "matmul"
    assert correlate.plan(gaussian[:, :5]).method == "matmul"  # 31 taps down, 5 across
    assert correlate.plan(gaussian[:9, :9]).method == "separable"
    assert correlate.plan(rng.normal(size=(31, 31)), "cuda").method == "fft"
    assert correlate.plan(gaussian[:15, :15], "cuda").method == "fft"  # conv2d computes all 225 taps
    assert correlate.plan(rng.normal(size=(3, 3)), "cuda").method == "conv2d"


def test_rank_one_up_to_float32_storage_but_not_beyond():
    """A Gaussian as a layer stores it (float32) is rank 1 only to ~1e-7: still separable. A kernel
    further from rank 1 than RANK1_LEVELS (16-bit grey levels) is not, and the plan keeps every tap."""
    g = np.exp(-((np.arange(31) - 15) ** 2) / 50.0)
    stored = np.outer(g, g).astype(np.float32).astype(np.float64)
    stored /= stored.sum()
    singular = np.linalg.svd(stored, compute_uv=False)
    assert singular[1] > 1e-9 * singular[0]  # not rank 1 to float64 precision
    assert correlate.plan(stored).method == "matmul"
    noisy = stored + np.random.default_rng(2).normal(size=stored.shape) * 1e-5 * stored.max()
    assert np.abs(noisy - stored).sum() * 65535 > correlate.RANK1_LEVELS
    assert correlate.plan(noisy).method == "fft"


def _cancelling_kernel() -> np.ndarray:
    """Smoothing x derivative (weights up to 175, sum 0) plus a part that is not rank 1, a millionth
    of the weights' absolute sum: tiny against the weights, hundreds of levels on a flat 16-bit image."""
    column = np.array([1, 4, 10, 20, 30, 35, 30, 20, 10, 4, 1], float)
    kernel = np.outer(column, np.arange(-5, 6, dtype=float))
    extra = np.zeros(11)
    extra[0], extra[5] = 1, -column[0] / column[5]
    part = np.outer(extra, np.ones(11))
    return kernel + 0.9e-6 * np.abs(kernel).sum() / np.abs(part).sum() * part


def test_a_kernel_near_rank_one_by_a_relative_measure_is_not_separable():
    kernel = _cancelling_kernel()
    assert correlate.plan(kernel).method == "fft"
    image = np.full((40, 40), 60000, np.float32)
    with torch.inference_mode():
        out = correlate.correlate(torch.from_numpy(image)[None, None], torch.from_numpy(kernel).float(),
                                  correlate.plan(kernel))
    assert np.abs(out[0, 0].numpy() - valid_reference(image, kernel, 1)).max() < 0.5


def test_matrix_products_do_not_depend_on_the_thread_count():
    """The same image gives the same values with 1 and 2 torch threads (float32 BLAS products did
    not: roundings moved by a level between -j 1 and -j 2)."""
    g = np.exp(-((np.arange(31) - 15) ** 2) / 50.0)
    plan = correlate.plan(np.outer(g, g).astype(np.float32).astype(np.float64) / np.outer(g, g).sum())
    assert plan.method == "matmul"
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    try:
        for _ in range(20):
            height, width = rng.integers(40, 130, size=2)
            x = torch.from_numpy(rng.integers(0, 65536, (1, 3, height, width)).astype(np.float32))
            torch.set_num_threads(2)
            two = correlate.matmul(x, plan)
            torch.set_num_threads(1)
            assert torch.equal(correlate.matmul(x, plan), two)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("n, expected", [(1, 1), (7, 8), (97, 100), (1081, 1125), (1500, 1500), (2049, 2160)])
def test_fast_length(n, expected):
    assert correlate.fast_length(n) == expected
