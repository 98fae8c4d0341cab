"""A server's long-lived heap, kept out of the cyclic garbage collector's full passes.

Once its models, index and store are loaded, a server holds about half a million long-lived
Python objects (torch's and transformers' modules, SQLAlchemy's metadata, the linker's
gazetteer). A full collection walks every one of them with the interpreter lock held — ~0.4 s
on 2 cores, during which no request runs — and the collector starts one whenever enough objects
have survived since the last, which a server under load reaches every minute or two
(BENCHMARKS.md, "Middleware, the garbage collector, and the rates in turns"). Freezing what
start-up loaded takes it out of every later pass; what requests make is still collected as before.
"""

from __future__ import annotations

import gc
import logging
import threading

log = logging.getLogger("kecl.heap")

_frozen = False
_lock = threading.Lock()


def freeze_loaded() -> int:
    """Collect what loading left as garbage, then freeze every object alive now (they are never
    walked again, nor freed while frozen). Returns how many objects are frozen."""
    global _frozen
    with _lock:
        gc.collect()
        gc.freeze()
        _frozen = True
        frozen = gc.get_freeze_count()
    log.info("froze %d long-lived objects out of the garbage collector's passes", frozen)
    return frozen


def refreeze() -> None:
    """After a reload (a new checkpoint, index or embedder) in a process that froze its heap: let
    the collector see the frozen objects once, so that what the reload replaced is freed even
    where it sits in reference cycles, then freeze what is loaded now. A no-op in a process that
    never froze (one-shot commands, tests)."""
    with _lock:
        if not _frozen:
            return
        gc.unfreeze()
    freeze_loaded()
