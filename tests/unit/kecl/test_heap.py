"""Freezing a server's loaded heap out of the garbage collector, and letting go of it on reload."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from kecl import heap


class Node:
    """Something that lives in a reference cycle (as parts of a loaded model can)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (pytest's own objects included)."""
    gc.unfreeze()
    heap._frozen = False
    yield
    gc.unfreeze()
    heap._frozen = False


def test_frozen_objects_are_out_of_collections_until_a_reload_refreezes(thawed: None) -> None:
    loaded = Node()
    alive = weakref.ref(loaded)
    assert heap.freeze_loaded() > 0 and gc.get_freeze_count() > 0
    del loaded  # replaced, say, by a new checkpoint: garbage, but only a cycle holds it
    gc.collect()
    assert alive() is not None, "a frozen cycle is never walked, so never freed"
    heap.refreeze()
    assert alive() is None, "a reload lets the collector free what it replaced"
    assert gc.get_freeze_count() > 0, "and freezes what is loaded now"


def test_a_process_that_never_froze_is_left_alone(thawed: None) -> None:
    heap.refreeze()
    assert gc.get_freeze_count() == 0
    garbage = Node()
    alive = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert alive() is None
