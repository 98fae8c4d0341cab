"""The next step's batch, built on a background thread while this step runs on the device.

Building a batch (drawing rows, masking, the attention mask, a reading exercise's tokenisation)
is CPU work; on an accelerator it would otherwise sit between two steps with the device idle.
Each batch depends only on the seed and its draw, so building it early changes nothing in it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """``get(d)`` returns ``build(d)``; with ``enabled``, ``build(d + 1)`` is started on a worker
    thread as soon as ``d`` is handed out (up to ``last``, exclusive). Use it as a context
    manager: leaving it waits for the worker and drops what it built ahead."""

    def __init__(self, build: Callable[[int], T], last: int, enabled: bool) -> None:
        self._build, self._last = build, last
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kecl-batches") if enabled else None
        self._ahead: tuple[int, Future[T]] | None = None

    def get(self, draw: int) -> T:
        """The batch of ``draw``; an exception raised while building it is raised here."""
        if self._pool is None:
            return self._build(draw)
        if self._ahead is not None and self._ahead[0] == draw:
            item = self._ahead[1].result()
        else:
            if self._ahead is not None:
                self._ahead[1].cancel()
            item = self._build(draw)
        self._ahead = (draw + 1, self._pool.submit(self._build, draw + 1)) if draw + 1 < self._last else None
        return item

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
