"""Values a kernel step may hold (finite, within float32's range), empty values in kernel rows, and
an empty kernel spec: each a usage error (exit 2), one line naming where the value came from."""

from __future__ import annotations

import pytest

from convfilter import kernels
from convfilter.errors import KernelError

RANGE = "out of float32's range (magnitudes up to 3.4028235e+38)"


def error(message: str) -> str:
    return f"convfilter: error: {message}\n"


# ---------------------------------------------------------------------------- --scale, --bias and scale, bias


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--scale", "nan", "--scale: value nan is not finite"),
        ("--scale", "inf", "--scale: value inf is not finite"),
        ("--scale", "-inf", "--scale: value -inf is not finite"),
        ("--scale", "1e39", f"--scale: value 1e+39 is {RANGE}"),
        ("--bias", "nan", "--bias: value nan is not finite"),
        ("--bias", "inf", "--bias: value inf is not finite"),
        ("--bias", "-1e39", f"--bias: value -1e+39 is {RANGE}"),
    ],
)
def test_scale_and_bias_options_must_be_finite_in_float32(cli, camera_copy, option, value, message):
    out = camera_copy.parent / "out.png"
    result = cli("apply", camera_copy, "-k", "sharpen", option, value, "-o", out)
    assert (result.exit_code, result.stderr) == (2, error(message))
    assert not out.exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("scale = nan", "'scale': value nan is not finite"),
        ("scale = -inf", "'scale': value -inf is not finite"),
        ("scale = 1e39", f"'scale': value 1e+39 is {RANGE}"),
        ("bias = nan", "'bias': value nan is not finite"),
        ("bias = 1e39", f"'bias': value 1e+39 is {RANGE}"),
    ],
)
@pytest.mark.parametrize("command", ["run", "export"])
def test_scale_and_bias_in_a_pipeline_file_must_be_finite_in_float32(cli, camera_copy, command, setting, message):
    recipe = camera_copy.parent / "p.toml"
    recipe.write_text(f'[[step]]\nkernel = "identity"\n\n[[step]]\nkernel = "blur"\n{setting}\n')
    out = camera_copy.parent / ("out.png" if command == "run" else "out.pt2")
    args = ("run", recipe, camera_copy, "-o", out) if command == "run" else ("export", recipe, "-o", out)
    result = cli(*args)
    assert (result.exit_code, result.stderr) == (2, error(f"pipeline file '{recipe}', step 2 (line 4): {message}"))
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("weights = [[1]]\nscale = 1e39\n", f"line 2: 'scale': value 1e+39 is {RANGE}"),
        ("weights = [[1]]\nbias = -1e39\n", f"line 2: 'bias': value -1e+39 is {RANGE}"),
        ("weights = [[1, 1e39]]\n", f"line 1: value 1e+39 is {RANGE}"),
        ("weights = [[1, '-1e39']]\n", f"line 1: value '-1e39' is {RANGE}"),
        ("weights = [[1e30, 1]]\nscale = 1e10\n",
         f": the weight in row 1, column 1 becomes 1e+40 after scale 1e+10, {RANGE}"),
        ("weights = [[2, -1]]\nnormalize = true\nscale = 3e38\n",
         f": the weight in row 1, column 1 becomes 6e+38 after normalize (the weights sum to 1) and scale 3e+38, {RANGE}"),
        ("weights = [[1e30, -1e30, 1e-11]]\nnormalize = true\n",
         ": cannot normalize: the weights sum to 0 (1e-11, within the rounding of weights this large)"),
    ],
)
@pytest.mark.parametrize("command", ["apply", "show"])
def test_kernel_file_values_must_be_finite_in_float32(cli, camera_copy, command, text, message):
    kernel = camera_copy.parent / "k.toml"
    kernel.write_text(text)
    out = camera_copy.parent / "out.png"
    args = ("apply", camera_copy, "-k", kernel, "-o", out) if command == "apply" else ("kernels", "show", kernel)
    result = cli(*args)
    separator = "" if message.startswith(":") else ", "
    assert (result.exit_code, result.stderr) == (2, error(f"kernel file '{kernel}'{separator}{message}"))
    assert result.stdout == b""
    assert not out.exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--scale", "1e10"], f"the weight in row 1, column 2 becomes -1e+40 after scale 1e+10, {RANGE}"),
        (["--normalize", "--scale", "-2"],
         "cannot normalize: the weights sum to 0 (1e-10, within the rounding of weights this large)"),
    ],
)
def test_options_that_make_the_effective_weights_overflow(cli, camera_copy, options, message):
    out = camera_copy.parent / "out.png"
    result = cli("apply", camera_copy, "-k", "1e-10 -1e30 1e30", *options, "-o", out)
    assert (result.exit_code, result.stderr) == (2, error(f"inline kernel '1e-10 -1e30 1e30': {message}"))
    assert not out.exists()


def test_values_up_to_the_float32_maximum_are_accepted():
    largest = kernels.FLOAT32_MAX
    assert kernels.parse_number(largest, "x") == largest
    assert kernels.parse_number(-largest, "x") == -largest
    kernel = kernels.resolve("1, -1, 0.5").with_options(scale=largest, bias=-largest)
    assert kernel.weights() == ((largest, -largest, largest / 2),)
    above = largest * (1 + 2 ** -52)
    with pytest.raises(KernelError) as raised:
        kernels.parse_number(above, "x")
    assert str(raised.value) == f"x: value {above!r} is {RANGE}"


# ---------------------------------------------------------------------------- empty values in a row


@pytest.mark.parametrize(
    "spec, message",
    [
        ("1,,2", "inline kernel '1,,2', row 1: empty value at position 2"),
        ("1 2, ,3", "inline kernel '1 2, ,3', row 1: empty value at position 3"),
        ("1,2;3,,", "inline kernel '1,2;3,,', row 2: empty value at position 2"),
        (",1,2", "inline kernel ',1,2', row 1: empty value at position 1"),
        ("1;;2", "inline kernel '1;;2', row 2: empty row"),
    ],
)
def test_an_empty_value_in_an_inline_kernel_is_refused(cli, spec, message):
    result = cli("kernels", "show", spec)
    assert (result.exit_code, result.stdout, result.stderr) == (2, b"", error(message))


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,,2\n", "line 1: empty value at position 2"),
        ("# c\n1 2 3\n4,\t,5 6\n", "line 3: empty value at position 2"),
        ("1 2\n,3 4\n", "line 2: empty value at position 1"),
    ],
)
def test_an_empty_value_in_a_plain_kernel_file_is_refused(cli, tmp_path, text, message):
    path = tmp_path / "k.txt"
    path.write_text(text)
    result = cli("kernels", "show", path)
    assert (result.exit_code, result.stdout, result.stderr) == (2, b"", error(f"kernel file '{path}', {message}"))


def test_an_empty_string_in_a_toml_row_is_an_empty_value(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text('weights = [\n  [1, 2],\n  [3, ""],\n]\n')
    with pytest.raises(KernelError) as raised:
        kernels.resolve(str(path))
    assert str(raised.value) == f"kernel file '{path}', line 3: empty value at position 2"


@pytest.mark.parametrize(
    "spec, weights",
    [
        ("1 2  3", ((1, 2, 3),)),
        ("1,2,3,", ((1, 2, 3),)),  # one trailing comma, as in a Python list
        ("1, 2, 3, ", ((1, 2, 3),)),
        ("1 ,2\t, 3", ((1, 2, 3),)),
        ("1,2,; 3,4,;", ((1, 2), (3, 4))),
    ],
)
def test_separators_that_stay_valid(spec, weights):
    assert kernels.resolve(spec).weights() == weights


def test_plain_file_rows_with_trailing_commas_and_runs_of_spaces(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("1,  2,\t3,\n4    5 6  # comment\n,\n")  # a lone comma is a blank row
    assert kernels.resolve(str(path)).weights() == ((1, 2, 3), (4, 5, 6))


# ---------------------------------------------------------------------------- an empty spec


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_kernel_spec(cli, camera_copy, spec):
    message = error(f"empty kernel spec {spec!r}; give a kernel name, file or inline matrix (see 'convfilter kernels')")
    out = camera_copy.parent / "out.png"
    result = cli("apply", camera_copy, "-k", spec, "-o", out)
    assert (result.exit_code, result.stderr) == (2, message)
    assert not out.exists()
    result = cli("kernels", "show", spec)
    assert (result.exit_code, result.stdout, result.stderr) == (2, b"", message)


# ---------------------------------------------------------------------------- outputs within float32


@pytest.mark.parametrize("spec, extra, cause", [
    ("3e38,-3e38", [], ""), ("1e37,1e37", ["--range", "stretch"], ""), ("1, 1", ["--bias", "1e26"], " with --bias 1e+26"),
    ("1e24, 1e24", [], ""), ("sharpen", ["--scale", "1e30"], " with --scale 1e+30"),
    ("1, 2", ["--scale", "1e20", "--bias", "-1e27"], " with --scale 1e+20 and --bias -1e+27"),
])
def test_weights_whose_outputs_could_overflow_float32_are_refused(cli, camera_copy, spec, extra, cause):
    """Each weight fits in float32, but their sums would not: once inf - inf = NaN, a silent
    black or white image. The message names --scale and --bias where given: the kernel file is
    not to blame."""
    from convfilter import kernels

    out = camera_copy.parent / "out.png"
    result = cli("apply", camera_copy, "-k", spec, *extra, "-o", out)
    assert result.exit_code == 2
    origin = kernels.resolve(spec).origin
    assert result.stderr.startswith(f"convfilter: error: {origin}{cause}: outputs could reach ")
    assert result.stderr.endswith(", more than 1e+28, the room float32 leaves for the sums\n")
    assert not out.exists()


def test_large_weights_whose_outputs_fit_still_filter(cli, tmp_path):
    """Just inside the limit: 65535 x 2e23 = 1.3e28 would be over, 65535 x 1e23 = 6.6e27 is not.
    (Positive weights: with weights this large, float32's rounding of the products is far more
    than a level, so a difference of two pixels would not cancel exactly.)"""
    import numpy as np
    from PIL import Image

    source = np.random.default_rng(5).integers(0, 3, (40, 50), dtype=np.uint8)  # many 0s side by side
    Image.fromarray(source).save(tmp_path / "in.png")
    result = cli("apply", tmp_path / "in.png", "-k", "5e22, 5e22", "--border", "replicate", "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.stderr
    following = np.concatenate([source[:, 1:], source[:, -1:]], axis=1)
    expected = np.where(source.astype(int) + following > 0, 255, 0)  # 0 only where both pixels are 0
    assert (expected == 0).any() and (expected == 255).any()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), expected)


@pytest.mark.parametrize("text, where", [
    ("weights = [[1%s]]\n", "kernel file '{file}', line 1"),
    ("weights = [[-1%s]]\n", "kernel file '{file}', line 1"),
    ("weights = [[1]]\nscale = 1%s\n", "kernel file '{file}', line 2: 'scale'"),
])
def test_an_integer_too_large_for_a_float_is_a_kernel_error(cli, camera_copy, tmp_path, text, where):
    """TOML integers have no limit; float() of one with 400 digits raised OverflowError: an
    internal error, exit 1."""
    kernel = tmp_path / "big.toml"
    kernel.write_text(text % ("0" * 400))
    result = cli("apply", camera_copy, "-k", kernel, "-o", tmp_path / "out.png")
    assert (result.exit_code, result.stdout) == (2, b"")
    shown = "-10000000000" if "-1" in text else "100000000000"
    assert result.stderr == (f"convfilter: error: {where.format(file=kernel)}: value {shown}... (401 digits) "
                             "is out of float32's range (magnitudes up to 3.4028235e+38)\n")


@pytest.mark.parametrize("place", ["option", "file"])
def test_a_stochastic_seed_past_64_bits_is_a_usage_error(cli, camera_copy, tmp_path, place):
    """It was a per-file internal error (torch: 'Overflow when unpacking long long'), exit 1."""
    seed = 10 ** 20
    if place == "option":
        result = cli("pool", camera_copy, "--mode", "stochastic", "--seed", seed, "-o", tmp_path / "out.png")
        named = "--seed"
    else:
        (tmp_path / "p.toml").write_text(f'[[step]]\npool = "stochastic"\nseed = {seed}\n')
        result = cli("run", tmp_path / "p.toml", camera_copy, "-o", tmp_path / "out.png")
        named = f"pipeline file '{tmp_path / 'p.toml'}', step 1 (line 1): 'seed'"
    assert result.exit_code == 2
    assert result.stderr == f"convfilter: error: {named} must be from -9223372036854775808 to 18446744073709551615, got {seed}\n"
    assert not (tmp_path / "out.png").exists()


def test_a_negative_seed_is_taken_as_torch_takes_it(cli, camera_copy, tmp_path):
    """torch wraps it modulo 2**64: -5 draws as 2**64 - 5 does (it was refused for a while)."""
    for seed, name in ((-5, "a.png"), (2 ** 64 - 5, "b.png")):
        result = cli("pool", camera_copy, "--mode", "stochastic", "--seed", seed, "-o", tmp_path / name)
        assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("kind", ["kernel", "pipeline"])
def test_an_integer_past_pythons_digit_limit_is_out_of_range_on_its_line(cli, camera_copy, tmp_path, kind):
    """tomllib refuses integers of more than 4300 digits with a ValueError: it was an internal error."""
    if kind == "kernel":
        path = tmp_path / "k.toml"
        path.write_text(f"weights = [[1]]\nscale = -1{'0' * 5000}\n")
        result = cli("apply", camera_copy, "-k", path, "-o", tmp_path / "out.png")
    else:
        path = tmp_path / "p.toml"
        path.write_text(f'[[step]]\nkernel = "blur"\nbias = 1{"0" * 5000}\n')
        result = cli("run", path, camera_copy, "-o", tmp_path / "out.png")
    line, shown = (2, "-10000000000") if kind == "kernel" else (3, "100000000000")
    where = f"{kind} file '{path}', line {line}"
    assert (result.exit_code, result.stderr) == (
        2, f"convfilter: error: {where}: value {shown}... (5001 digits) is {RANGE}\n")