"""The allowed values of every choice option, each in one place, checked at the door."""

from convfilter.errors import UsageError

BORDERS = ("reflect", "replicate", "zeros", "circular")
POOL_MODES = ("avg", "max", "min", "stochastic")
ADAPTIVE_POOL_MODES = ("avg", "max", "min")
UPSAMPLE_MODES = ("nearest", "bilinear")
RANGES = ("clip", "abs", "stretch")
DEVICES = ("auto", "cpu", "cuda")

DEFAULT_BORDER = "reflect"
DEFAULT_POOL_MODE = "avg"
DEFAULT_POOL_SIZE = 2
DEFAULT_RANGE = "clip"
DEFAULT_QUALITY = 95
DEFAULT_PNG_COMPRESSION = 1
# -j: worker threads. torch's own threads never exceed the cores (process.torch_threads); this
# bounds the workers, each a Python thread (libgomp failed to start threads near 20,000).
MAX_JOBS = 1024
MAX_COLUMNS = 64  # kernels preview: tiles a row of the contact sheet


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices`, else raise a UsageError naming them."""
    if value not in choices:
        raise UsageError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value
