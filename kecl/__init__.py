"""kecl — knowledge-enhanced continual learning: keep a BERT-style masked-LM encoder current with an
entity graph, a FAISS passage index and scheduled update cycles.

``kecl.Kecl`` is the running system (open a home from ``kecl.Settings``); see the README.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from kecl.settings import Settings

try:
    __version__ = version("kecl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from kecl.services import Kecl

__all__ = ["Kecl", "Settings", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Kecl":
        from kecl.services import Kecl  # deferred: `import kecl` (every CLI start) must not pay for torch

        return Kecl
    raise AttributeError(f"module 'kecl' has no attribute {name!r}")
