"""One thread for a process's OpenMP work: the encoder's forward passes, the embedder's, FAISS's.

Why one thread: torch and FAISS parallelise with OpenMP (here one libgomp, which FAISS's calls bind
to once torch has loaded it), and libgomp gives every thread that starts parallel work a team of
worker threads of its own, kept while that thread lives. As soon as a process holds more OpenMP
threads than the machine has cores (on 2 cores: a request thread and the embedder's thread that
have each run one forward pass), libgomp stops spinning between parallel regions and wakes its
workers through the kernel for each of the hundreds of regions in a forward pass. Measured on 2
cores (``benchmarks/bench_web.py``, BENCHMARKS.md "Web interface"): a 12-token forward pass took
8.9 ms instead of 3.9 ms and a 190-token one 18.7 ms instead of 9.8 ms, for as long as the other
thread lived. Work handed to :func:`call` runs on the one thread, so a serving process keeps one
team, and concurrent requests still share the cores through batching (:mod:`kecl.batching`, the
coalescing embedder) rather than by oversubscribing them.

Only leaf work goes here (a batch's forward passes, an embedding batch, an index search or
update): a job never waits for a lock or for another job, so a caller holding a lock while it
waits cannot deadlock the thread. A thread that does its own OpenMP work and then exits (a
training cycle, a background checkpoint load) takes its team with it and needs none of this.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_thread_id: int | None = None


def _mark() -> None:
    global _thread_id
    _thread_id = threading.get_ident()


def _get() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="kecl-compute", initializer=_mark)
        return _executor


def _forget_after_fork() -> None:
    # a forked child has no compute thread (only the forking thread survives a fork)
    global _executor, _thread_id, _lock
    _executor, _thread_id, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def on_compute_thread() -> bool:
    """Whether the caller is the compute thread."""
    return _thread_id is not None and threading.get_ident() == _thread_id


def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` run on the compute thread (directly when already on it), with the
    caller's context variables (the request id in log lines); returns its result or raises its
    exception."""
    if on_compute_thread():
        return fn(*args, **kwargs)
    context = contextvars.copy_context()
    return _get().submit(lambda: context.run(fn, *args, **kwargs)).result()


def run(fn: Callable[[], T], /) -> T:
    """``fn()`` on the compute thread: :func:`call` in the form the ``retrieval`` components take
    (``IndexHandle(run=…)``, ``CoalescingEmbedder(run=…)``)."""
    return call(fn)
