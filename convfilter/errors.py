"""The one exception tree of convfilter; the CLI turns it into exit codes (CONTRACT §7)."""


class ConvfilterError(Exception):
    """Base of every error convfilter reports to a user. The message is one line."""

    exit_code = 1


class UsageError(ConvfilterError):
    """A bad option or configuration: nothing is written (exit 2)."""

    exit_code = 2


class KernelError(UsageError):
    """A kernel spec that cannot be turned into weights: malformed file, bad values."""


class KernelNotFoundError(KernelError):
    """A kernel name that is on no search path and no file."""


class InputError(ConvfilterError):
    """One input image cannot be used: missing, unreadable, not an image, too big or too small."""


class OutputError(ConvfilterError):
    """One output cannot be written: it exists, it is an input, or the disk refused."""


def internal_error(error: BaseException) -> str:
    """The one line for an error that is a bug, not the user's. --debug is an option of
    convfilter itself, so it goes before the command."""
    return f"internal error: {type(error).__name__}: {error} (rerun as convfilter --debug COMMAND ... for the traceback)"
