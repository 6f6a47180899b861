"""The kernel parser, the search path and the folding of options (no torch involved)."""

from __future__ import annotations

import numpy as np
import pytest

from convfilter import kernels
from convfilter.errors import KernelError, KernelNotFoundError
from convfilter.steps import conv_steps

BUILTIN = [
    "identity", "sharpen", "blur", "gaussian3", "gaussian5", "edge", "laplacian", "sobel-x", "sobel-y",
    "prewitt-x", "prewitt-y", "emboss", "outline", "unsharp5", "motion-blur",
]


@pytest.fixture(autouse=True)
def isolated_search_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CONVFILTER_KERNEL_PATH", raising=False)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- the built-in library


def test_every_contract_kernel_is_built_in_with_a_description():
    found = kernels.available()
    assert set(BUILTIN) <= set(found)
    for name in BUILTIN:
        kernel = kernels.load_file(found[name])
        assert kernel.description, name
        assert found[name].parent == kernels.builtin_dir()


def test_seed_edge_kernel_is_centre_one_others_minus_a_ninth():
    weights = np.array(kernels.resolve("edge").weights())
    expected = np.full((3, 3), -1 / 9)
    expected[1, 1] = 1
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sharpen", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        ("blur", np.full((3, 3), 1 / 9)),
        ("gaussian3", np.outer([1, 2, 1], [1, 2, 1]) / 16),
        ("gaussian5", np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256),
        ("sobel-x", [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
        ("sobel-y", [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
        ("laplacian", [[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        ("motion-blur", np.eye(9) / 9),
    ],
)
def test_builtin_weights(name, expected):
    np.testing.assert_allclose(np.array(kernels.resolve(name).weights()), expected, rtol=0, atol=1e-12)


def test_unsharp5_is_identity_plus_image_minus_gaussian():
    gaussian = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256
    identity = np.zeros((5, 5))
    identity[2, 2] = 1
    np.testing.assert_allclose(
        np.array(kernels.resolve("unsharp5").weights()), 2 * identity - gaussian, rtol=0, atol=1e-12
    )


# ---------------------------------------------------------------------------- formats


def test_toml_file_with_every_key(tmp_path):
    path = write(tmp_path, "k.toml", 'description = "mine"\nscale = 2\nbias = "1/2"\nrange = "abs"\n'
                 'weights = [[1, "1/4"], [0.5, -1]]\n')
    kernel = kernels.resolve(str(path))
    assert (kernel.name, kernel.description, kernel.bias, kernel.range) == ("k", "mine", 0.5, "abs")
    assert kernel.weights() == ((2.0, 0.5), (1.0, -2.0))


def test_plain_matrix_with_comments_commas_tabs_and_fractions(tmp_path):
    path = write(tmp_path, "k.txt", "# a comment\n\n1, 2\t3  # trailing\n\n-1/2 0 1e1\n")
    assert kernels.resolve(str(path)).weights() == ((1, 2, 3), (-0.5, 0, 10))


def test_inline_matrix():
    kernel = kernels.resolve("0,-1,0; -1,5,-1; 0,-1,0")
    assert kernel.name == "custom"
    assert kernel.weights() == ((0, -1, 0), (-1, 5, -1), (0, -1, 0))
    assert kernels.resolve("1/9 1/9").weights() == ((1 / 9, 1 / 9),)
    assert kernels.resolve("2").weights() == ((2.0,),)


def test_even_and_rectangular_sizes_up_to_63(tmp_path):
    path = write(tmp_path, "wide.txt", "\n".join([" ".join(["1"] * 63)] * 2))
    kernel = kernels.resolve(str(path))
    assert (kernel.height, kernel.width) == (2, 63)


# ---------------------------------------------------------------------------- folding options


def test_normalize_scale_and_flip_fold_into_the_weights():
    kernel = kernels.resolve("1,2;3,4").with_options(normalize=True, scale=10)
    assert kernel.weights() == ((1.0, 2.0), (3.0, 4.0))
    assert kernel.weights(flip=True) == ((4.0, 3.0), (2.0, 1.0))
    step = conv_steps(["1,2;3,4"], border="reflect", normalize=True, scale=10, bias=5, flip=True)[0]
    assert step.weights == ((4.0, 3.0), (2.0, 1.0))
    assert step.bias == 5


def test_command_line_overrides_the_file(tmp_path):
    path = write(tmp_path, "k.toml", 'normalize = true\nrange = "abs"\nweights = [[1, 3]]\n')
    assert conv_steps([str(path)], border="reflect")[0].weights == ((0.25, 0.75),)
    step = conv_steps([str(path)], border="reflect", normalize=False, range="stretch")[0]
    assert (step.weights, step.range) == (((1.0, 3.0),), "stretch")


def test_zero_sum_kernel_cannot_be_normalized():
    with pytest.raises(KernelError, match=r"^kernel file '.*laplacian.toml': cannot normalize: the weights sum to 0$"):
        conv_steps(["laplacian"], border="reflect", normalize=True)


@pytest.mark.parametrize("spec, factor", [("1e-13,1e-13", 5e12), ("1e-300, 3e-300", 2.5e299), ("2,-1", 1.0)])
def test_normalize_takes_any_sum_that_is_not_zero_up_to_rounding(spec, factor):
    """The test was an absolute sum < 1e-12: '1e-13,1e-13' (sum 2e-13) was 'sums to 0'."""
    weights = conv_steps([spec], border="reflect", normalize=True)[0].weights
    assert weights[0] == pytest.approx(tuple(factor * float(v) for v in spec.split(",")), rel=1e-12)


def test_a_sum_that_is_zero_but_for_rounding_cannot_be_normalized():
    with pytest.raises(KernelError, match=r"^inline kernel '0.1,0.2,-0.3': cannot normalize: the weights sum to 0 "
                                          r"\(2.77556e-17, within the rounding of weights this large\)$"):
        conv_steps(["0.1,0.2,-0.3"], border="reflect", normalize=True)


def test_files_that_start_with_a_byte_order_mark_are_read(tmp_path):
    """Windows Notepad saves UTF-8 with a BOM: it was "'\\ufeff0' is not a number" or invalid TOML."""
    write(tmp_path, "k.txt", "\ufeff0 -1 0\n-1 5 -1\n0 -1 0\n")
    write(tmp_path, "k.toml", "\ufeffweights = [[1, 2]]\n")
    assert kernels.resolve(str(tmp_path / "k.txt")).weights() == kernels.resolve("sharpen").weights()
    assert kernels.resolve(str(tmp_path / "k.toml")).weights() == ((1.0, 2.0),)


# ---------------------------------------------------------------------------- the search path


def test_search_path_order_env_then_user_then_builtin(tmp_path, monkeypatch):
    env_dir, config = tmp_path / "env", tmp_path / "config"
    user_dir = config / "convfilter" / "kernels"
    env_dir.mkdir()
    user_dir.mkdir(parents=True)
    write(user_dir, "sharpen.toml", "weights = [[2]]")
    write(user_dir, "mine.txt", "3")
    assert kernels.resolve("sharpen").weights() == ((2.0,),)  # the user directory shadows the built-in
    assert kernels.resolve("mine").weights() == ((3.0,),)
    write(env_dir, "sharpen.txt", "4")
    monkeypatch.setenv("CONVFILTER_KERNEL_PATH", f"{tmp_path / 'missing'}:{env_dir}")
    assert kernels.resolve("sharpen").weights() == ((4.0,),)
    assert kernels.available()["sharpen"] == env_dir / "sharpen.txt"
    assert kernels.available()["blur"].parent == kernels.builtin_dir()


@pytest.mark.parametrize("name", ["schärfen", "my kernel", "k+1.v2", "a\\b"])
def test_every_name_that_kernels_lists_can_be_used(tmp_path, monkeypatch, name):
    """Names with letters beyond ASCII or spaces were listed, then 'unknown kernel ...; did you mean'
    the same name."""
    write(tmp_path, f"{name}.toml", "weights = [[3]]")
    monkeypatch.setenv("CONVFILTER_KERNEL_PATH", str(tmp_path))
    assert name in kernels.available()
    assert kernels.resolve(name).weights() == ((3.0,),)


def test_an_existing_file_comes_before_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "sharpen", "7")
    assert kernels.resolve("sharpen").weights() == ((7.0,),)


# ---------------------------------------------------------------------------- errors: exact messages


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("k.txt", "1 2 3\n4 5\n", "kernel file '{p}', line 2: expected 3 values like the first row, got 2"),
        ("k.txt", "# c\n1 2\n\n1 x\n", "kernel file '{p}', line 4: 'x' is not a number"),
        ("k.txt", "1 nan\n", "kernel file '{p}', line 1: value 'nan' is not finite"),
        ("k.txt", "1 2\n-inf 1\n", "kernel file '{p}', line 2: value '-inf' is not finite"),
        ("k.txt", "1 1/0\n", "kernel file '{p}', line 1: '1/0' divides by zero"),
        ("k.txt", "", "kernel file '{p}': no weights (it is empty or holds only comments)"),
        ("k.txt", "# only\n# comments\n", "kernel file '{p}': no weights (it is empty or holds only comments)"),
        ("k.txt", "\n".join(["1"] * 64), "kernel file '{p}', line 64: more than 63 rows; the most allowed is 63"),
        ("k.txt", " ".join(["1"] * 64), "kernel file '{p}', line 1: 64 values in a row; the most allowed is 63"),
        ("k.toml", "weights = [\n  [1, 2],\n  [3],\n]\n",
         "kernel file '{p}', line 3: expected 2 values like the first row, got 1"),
        ("k.toml", "weights = [[1, nan]]\n", "kernel file '{p}', line 1: value nan is not finite"),
        ("k.toml", "weights = [[]]\n", "kernel file '{p}', line 1: empty row"),
        ("k.toml", "weights = []\n", "kernel file '{p}', line 1: no weights (it is empty or holds only comments)"),
        ("k.toml", "description = 'x'\n", "kernel file '{p}': missing the required key 'weights' (a list of rows)"),
        ("k.toml", "weights = [[1]]\nsize = 3\n",
         "kernel file '{p}', line 2: unknown key 'size'; allowed keys: weights, description, scale, bias, normalize, range"),
        ("k.toml", "weights = [[1]]\n\n[extra]\na = 1\n",
         "kernel file '{p}', line 3: unknown key 'extra'; allowed keys: weights, description, scale, bias, normalize, range"),
        ("k.toml", "weights = [[1]]\nrange = 'wrap'\n",
         "kernel file '{p}', line 2: unknown range 'wrap'; choose from clip, abs, stretch"),
        ("k.toml", "weights = [[1]]\nnormalize = 'yes'\n", "kernel file '{p}', line 2: 'normalize' must be true or false"),
        ("k.toml", "weights = [[1]]\nscale = 'big'\n", "kernel file '{p}', line 2: 'scale': 'big' is not a number"),
        ("k.toml", "weights = [[true]]\n", "kernel file '{p}', line 1: expected a number, got true"),
        ("k.toml", "weights = 3\n", "kernel file '{p}', line 1: 'weights' must be a list of rows, e.g. [[0, -1, 0], ...]"),
        ("k.toml", "weights = [[1, 2]]\nscale = \n", "kernel file '{p}', line 2: invalid TOML: Invalid value (column 9)"),
        ("k.toml", "weights = [[1, 2]\n", "kernel file '{p}': invalid TOML: Unclosed array (at end of document)"),
    ],
)
def test_kernel_file_errors_name_file_and_line(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(KernelError) as raised:
        kernels.resolve(str(path))
    assert str(raised.value) == message.format(p=path)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("1,2;3", "inline kernel '1,2;3', row 2: expected 2 values like the first row, got 1"),
        ("1,a;3,4", "inline kernel '1,a;3,4', row 1: 'a' is not a number"),
        ("1, nan", "inline kernel '1, nan', row 1: value 'nan' is not finite"),
    ],
)
def test_inline_errors_name_the_row(spec, message):
    with pytest.raises(KernelError) as raised:
        kernels.resolve(spec)
    assert str(raised.value) == message


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KernelNotFoundError) as raised:
        kernels.resolve("sobelx")
    assert str(raised.value) == "unknown kernel 'sobelx'; did you mean 'sobel-x' or 'sobel-y'?"


def test_unknown_name_without_close_match_lists_the_names():
    with pytest.raises(KernelNotFoundError) as raised:
        kernels.resolve("zzzz")
    assert str(raised.value).startswith("unknown kernel 'zzzz'; known kernels: blur, edge, emboss,")


def test_missing_kernel_file():
    with pytest.raises(KernelNotFoundError, match=r"^kernel file 'nope/k.toml' not found$"):
        kernels.resolve("nope/k.toml")


def test_line_numbers_after_blank_lines(tmp_path):
    path = write(tmp_path, "k.toml", "description = 'x'\n\n\nscale = 'big'\nweights = [[1]]\n")
    with pytest.raises(KernelError, match=r"line 4: 'scale': 'big' is not a number$"):
        kernels.resolve(str(path))


@pytest.mark.parametrize("value", ["rel", ""])
def test_a_relative_or_empty_xdg_config_home_is_ignored(tmp_path, monkeypatch, value):
    """The XDG spec: a relative path is invalid and is ignored (it was read from the current folder)."""
    home = tmp_path / "home"
    for base, text in ((tmp_path / "rel", "9"), (home / ".config", "8")):
        (base / "convfilter" / "kernels").mkdir(parents=True)
        write(base / "convfilter" / "kernels", "nine.txt", text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", value)
    assert kernels.resolve("nine").weights() == ((8.0,),)


# ---------------------------------------------------------------------------- from an audit of kernel specs


def test_an_inline_matrix_over_several_lines_keeps_its_rows():
    """-k "$(cat k.txt)": line ends were spaces, and three lines ran as one row of nine values."""
    sharpen = kernels.resolve("sharpen").weights()
    for spec in ("0 -1 0\n-1 5 -1\n0 -1 0", "0 -1 0\n\n-1 5 -1\n0 -1 0\n", "0 -1 0\r\n-1 5 -1\r\n0 -1 0",
                 "0,-1,0;\n-1,5,-1;\n\n0,-1,0\n"):
        assert kernels.resolve(spec).weights() == sharpen, repr(spec)
    assert kernels.resolve("1 2 3 4\n5 6; 1 2 3 4 5 6").weights() == ((1, 2, 3, 4, 5, 6),) * 2  # with ';', rows wrap
    with pytest.raises(KernelError, match=r"row 2: empty row"):
        kernels.resolve("1,2;;\n3,4")  # two ';' still leave a row out


@pytest.mark.parametrize("spec", ["~nobody-such-user/k.txt", "~x"])
def test_a_tilde_with_no_such_home_is_not_an_internal_error(spec, monkeypatch):
    """Path.expanduser raised RuntimeError ('Could not determine home directory')."""
    with pytest.raises(KernelNotFoundError):
        kernels.resolve(spec)
    monkeypatch.setenv("CONVFILTER_KERNEL_PATH", "~nobody-such-user/kernels")
    assert kernels.resolve("sharpen").name == "sharpen"


def test_a_kernel_named_with_a_tilde_is_found(tmp_path):
    folder = tmp_path / "config" / "convfilter" / "kernels"
    folder.mkdir(parents=True)
    write(folder, "~tilde.toml", "weights = [[0.5]]\n")
    assert kernels.resolve("~tilde").weights() == ((0.5,),)


def test_a_form_feed_is_not_a_line_end(tmp_path):
    """str.splitlines() split at \\x0c: a comment's rest became a row, and line numbers moved."""
    path = write(tmp_path, "ff.txt", "# see page 2\x0c 7 7 7\n1 2\n3\n")
    with pytest.raises(KernelError, match=r"ff.txt', line 3: expected 2 values like the first row, got 1$"):
        kernels.resolve(str(path))


def test_a_pipe_is_read_as_a_kernel_file_and_a_device_is_refused(tmp_path):
    """-k <(printf ...) said "kernel file '/dev/fd/63' not found"."""
    import os
    import threading

    fifo = tmp_path / "k.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("0 1 0\n1 1 1\n0 1 0\n"), daemon=True)
    writer.start()
    try:
        kernel = kernels.resolve(str(fifo))
        assert (kernel.name, kernel.weights()) == ("custom", ((0, 1, 0), (1, 1, 1), (0, 1, 0)))  # not 'k'
    finally:
        if writer.is_alive():  # not read: open it for reading so that the writer gets its reader
            descriptor = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            writer.join(5)
            os.close(descriptor)
    writer.join(5)
    with pytest.raises(KernelError, match=r"^kernel file '/dev/null' is not a regular file$"):
        kernels.resolve("/dev/null")
    lonely = tmp_path / "no-writer.fifo"  # opening it to read waited for a writer, for ever
    os.mkfifo(lonely)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(KernelError, kernels.resolve, str(lonely))),
                              daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive() and "no weights (it is empty or holds only comments)" in str(outcome[0].value)


def test_suggestions_ignore_case_and_a_typeset_minus_is_a_minus(tmp_path):
    with pytest.raises(KernelNotFoundError, match=r"did you mean 'blur'"):
        kernels.resolve("BLUR")
    folder = tmp_path / "config" / "convfilter" / "kernels"
    folder.mkdir(parents=True)
    write(folder, "Blur.txt", "1\n")
    with pytest.raises(KernelNotFoundError, match=r"did you mean 'Blur' or 'blur'\?"):  # both, not one
        kernels.resolve("BLUR")
    with pytest.raises(KernelNotFoundError, match=r"did you mean 'sobel-x' or 'sobel-y'\?"):
        kernels.resolve("Sobel-X")
    assert kernels.resolve("\u22121, 2").weights() == ((-1.0, 2.0),)
    assert kernels.resolve("\u22121/9 2").weights() == ((-1 / 9, 2.0),)
