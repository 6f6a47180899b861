"""The torch pipeline, built in a background thread while the inputs are planned and the first
images decoded: importing torch takes over a second here, and decoding does not need it (Pillow
decodes with the GIL released, so both go on at once)."""

from __future__ import annotations

import threading

import numpy as np

from convfilter.steps import Step


_UNSET = object()


class BackgroundFilter:
    """Call it like `pipeline.Filter`; the first calls wait until torch is imported and the
    pipeline built. `start(threads)` says how many torch threads each thread that filters runs."""

    def __init__(self, steps: list[Step], device: str, max_pixels: int | None = None):
        self._ready = threading.Event()
        self._threads: int | None = None
        self._applied = threading.local()  # the number each calling thread has set for itself
        self._filter = None
        self._error: BaseException | None = None
        threading.Thread(target=self._build, args=(steps, device, max_pixels), name="convfilter-torch", daemon=True).start()

    def _build(self, steps: list[Step], device: str, max_pixels: int | None) -> None:
        try:
            from convfilter.pipeline import Filter  # imports torch

            self._filter = Filter(steps, device, max_pixels)
        except BaseException as error:  # handed to the callers
            self._error = error
        finally:
            self._ready.set()

    def start(self, threads: int | None) -> None:
        """From now on each thread that filters runs `threads` torch threads (None: torch's
        default, every core)."""
        self._threads = threads

    @property
    def built(self) -> threading.Event:
        """Set once calls no longer wait (the pipeline is built, or failed to build)."""
        return self._ready

    def ready(self):
        """The built `pipeline.Filter`, once there, with the calling thread's torch threads set as
        `start` said (torch keeps the number per thread once a thread has run an operation, so
        each thread sets its own); its build error, if it failed."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        if getattr(self._applied, "threads", _UNSET) != self._threads:
            from convfilter.pipeline import set_threads  # torch is there by now

            set_threads(self._threads)
            self._applied.threads = self._threads
        return self._filter

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.ready()(image)
