"""The torch pipeline, built in a background thread while the inputs are planned and the first
images decoded: importing torch takes over a second here, and decoding does not need it (Pillow
decodes with the GIL released, so both go on at once)."""

from __future__ import annotations

import threading

import numpy as np

from convfilter.steps import Step


class BackgroundFilter:
    """Call it like `pipeline.Filter`; the first calls wait until torch is imported and the
    pipeline built. `start(threads)` says how many torch threads each caller gets."""

    def __init__(self, steps: list[Step], device: str):
        self._planned = threading.Event()
        self._ready = threading.Event()
        self._threads: int | None = None
        self._filter = None
        self._error: BaseException | None = None
        threading.Thread(target=self._build, args=(steps, device), name="convfilter-torch", daemon=True).start()

    def _build(self, steps: list[Step], device: str) -> None:
        try:
            from convfilter.pipeline import Filter, set_threads  # imports torch

            self._filter = Filter(steps, device)
            self._planned.wait()
            set_threads(self._threads)
        except BaseException as error:  # handed to the callers
            self._error = error
        finally:
            self._ready.set()

    def start(self, threads: int | None) -> None:
        """The plan is made: each thread that filters runs `threads` torch threads (None: torch's
        default, every core)."""
        self._threads = threads
        self._planned.set()

    @property
    def built(self) -> threading.Event:
        """Set once calls no longer wait (the pipeline is built, or failed to build)."""
        return self._ready

    def ready(self):
        """The built `pipeline.Filter`, once there; its build error, if it failed."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._filter

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.ready()(image)
