"""The package's public names: what ``__all__`` exports is importable and what the docstring lists."""

from __future__ import annotations

import re

import retrieval


def test_docstring_lists_exactly_the_exported_names():
    assert set(re.findall(r"``(\w+)``", retrieval.__doc__ or "")) == set(retrieval.__all__)
    assert len(set(retrieval.__all__)) == len(retrieval.__all__)
    assert all(hasattr(retrieval, name) for name in retrieval.__all__)
