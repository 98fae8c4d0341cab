"""How many OpenMP threads each computing thread of a server uses.

torch and FAISS run their parallel loops on one OpenMP runtime, which keeps a team of worker
threads for every thread that has run parallel work, for as long as that thread lives. Once the
teams hold more threads than the process has cores, the runtime stops spinning between parallel
regions and wakes its workers through the kernel at each of the hundreds of regions of a forward
pass: on 2 cores a 12-token pass took 13 ms instead of 7 while a second thread's team existed
(BENCHMARKS.md, "Web interface"). A server computes on many threads (requests, the embedder's
batches, the modes of an Ask), so each gets a narrow team and the server's parallelism comes from
running them side by side.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from encoder import STRATEGIES

log = logging.getLogger("kecl.threads")

ASK_MODES = len(STRATEGIES)
"""Modes an Ask answers side by side (one per injection strategy); the default width lets them all
run without oversubscribing."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this OS
        return os.cpu_count() or 1


def default_width(cores: int) -> int:
    """OpenMP threads per computing thread when none is configured: the cores shared by an Ask's modes."""
    return max(1, cores // ASK_MODES)


_task_width: int | None = None
"""The width :func:`set_task_width` put in force (None: it was not called, every thread is wide)."""


def set_task_width(threads: int | None) -> int:
    """Make this thread, and every thread that first computes after this call, use ``threads``
    OpenMP threads (``None``: :func:`default_width`, unless ``OMP_NUM_THREADS`` sets one, which is
    left in force). Threads that already computed keep their width. Returns the width now in force.

    Process-wide, so only a server's start-up calls it (``create_app``'s lifespan)."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    global _task_width
    width = threads if threads is not None else default_width(available_cores())
    torch.set_num_threads(width)
    _task_width = width
    log.info("each computing thread uses %d OpenMP thread(s) of %d cores", width, available_cores())
    return width


def use_all_cores() -> None:
    """Let this thread compute with every core (an update cycle's training in a server), while
    threads that first compute later keep the task width. A no-op where no width was set.

    torch sets the width of the calling thread and the default for new threads in one call, so the
    default is put back from a short-lived thread; a thread that first computes in between gets all
    cores, which costs speed, never correctness."""
    if _task_width is None:
        return
    torch.get_num_threads()  # torch's first-call setup, which would otherwise narrow the thread again
    torch.set_num_threads(available_cores())
    restore = threading.Thread(target=torch.set_num_threads, args=(_task_width,), name="kecl-width")
    restore.start()
    restore.join()


def adopt_width() -> None:
    """Give this thread torch's width before it calls FAISS. A thread's width is set at its first
    torch call; FAISS shares the OpenMP runtime but not that call, so a thread that searches before
    it ever ran torch would keep a team as wide as the machine."""
    torch.get_num_threads()


def side_by_side(tasks: int) -> bool:
    """Whether ``tasks`` (at least two) of this thread's width fit on the cores together; at the
    width of a process that did not narrow it (all cores), they do not."""
    return tasks > 1 and 2 * torch.get_num_threads() <= available_cores()
