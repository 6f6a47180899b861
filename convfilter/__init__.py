"""convfilter: a command-line image filter built on PyTorch."""

__version__ = "0.1.0"
