"""kecl — knowledge-enhanced continual learning: keep a BERT-style masked-LM encoder current with an
entity graph, a FAISS passage index and scheduled update cycles.

The library API (examples in ``docs/library.md``)::

    import kecl

    k = kecl.open_home("my-home")           # creates the home if needed; settings from kecl.toml / KECL_*
    k.ingest(["corpus/", "facts.jsonl"])     # documents and fact feeds, searchable on return
    k.query("The capital of Croatia is [MASK] .").predictions
    k.search("Croatian currency", k=3)
    k.run_update()                           # one update cycle: train, evaluate, promote or reject
    k.stats(); k.store.facts(as_of=...)      # inspect
    k.close()

``kecl.Kecl`` is the running system behind the CLI and the HTTP API; ``kecl.Settings`` its settings.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kecl.settings import Settings

try:
    __version__ = version("kecl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from kecl.services import Kecl

__all__ = ["Kecl", "Settings", "__version__", "open_home"]


def open_home(home: str | Path | None = None, **settings: Any) -> Kecl:
    """The kecl system on ``home`` (default: ``KECL_HOME`` or ``./kecl-data``), created if missing.

    ``settings`` override the home's ``kecl.toml`` and ``KECL_*`` variables, by section:
    ``open_home("h", model={"device": "cpu"}, api={"api_key": "…"})``. Models load on first use,
    so opening is cheap; call ``close()`` (or use ``with``) when done. Raises pydantic's
    ValidationError for an invalid setting.
    """
    from kecl.home import ensure_home  # deferred: `import kecl` (every CLI start) stays light
    from kecl.services import Kecl  # deferred: torch loads only when the library is used

    if home is not None:
        settings["home"] = Path(home)
    config = Settings(**settings)
    ensure_home(config)
    return Kecl(config)


def __getattr__(name: str) -> Any:
    if name == "Kecl":
        from kecl.services import Kecl  # deferred: `import kecl` (every CLI start) must not pay for torch

        return Kecl
    raise AttributeError(f"module 'kecl' has no attribute {name!r}")
