"""Keep freed memory in the process while training on CPU (glibc only): see :func:`heap_reuse`."""

from __future__ import annotations

import contextlib
import ctypes
import platform
import threading
from collections.abc import Iterator
from typing import Any

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt parameters, <malloc.h>
_heap_lock = threading.Lock()
_heap_users = 0


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def heap_reuse(on: bool = True) -> Iterator[bool]:
    """Serve every allocation from the process heap and keep freed memory there, for the duration.

    Why: glibc hands each block above its mmap threshold (at most 32 MiB) straight to the kernel
    and returns it on free, so every step of a BERT run page-faults its vocabulary-sized tensors
    (the tied 30k x 384 embedding gradient and its bf16 copy, the masked logits) back in: a
    large share of a CPU step. Afterwards glibc's settings are put back where its
    own dynamic threshold would have taken them and the heap is trimmed (free pages go back to the
    system; free blocks stay in glibc's bins, so later allocations they can hold come from there).
    Yields whether the setting applies (glibc on Linux); nested and concurrent uses are counted.
    """
    global _heap_users
    libc = _glibc() if on else None
    if libc is None:
        yield False
        return
    with _heap_lock:
        if _heap_users == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _heap_users += 1
    try:
        yield True
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
                libc.mallopt(_M_MMAP_MAX, 65536)
                libc.malloc_trim(0)
