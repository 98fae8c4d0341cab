"""Readiness: does this process serve the current knowledge state? (``GET /readyz``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kecl.services import Kecl

log = logging.getLogger("kecl")


@dataclass
class Readiness:
    """The checks ``/readyz`` reports; ``ready`` when every one passed (see ``problems``)."""

    store_writable: bool
    index_loaded: bool
    index_vectors: int | None
    sql_passages: int
    passages_behind: int | None
    active_checkpoint: str | None
    serving_checkpoint: str | None
    checkpoint_loaded: bool
    event_watermark: int
    snapshot_lag_seconds: float
    publisher: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def check_readiness(kecl: Kecl) -> Readiness:
    """Store writable, index loaded and within ``processes.ready_max_lag_passages`` of SQL, the
    active checkpoint loaded, and how old the oldest passage event not yet applied is."""
    problems: list[str] = []
    try:
        kecl.store.check_writable()
        writable = True
    except Exception as exc:  # noqa: BLE001 - any failure to write is the answer, not an error of the probe
        writable = False
        problems.append(f"the database is not writable: {type(exc).__name__}: {exc}")
    sql_passages = kecl.store.passage_count()
    vectors = len(kecl.index.index) if kecl.index_loaded else None
    behind = None if vectors is None else abs(sql_passages - vectors)
    limit = kecl.settings.processes.ready_max_lag_passages
    if vectors is None:
        problems.append("the passage index is not loaded yet")
    elif behind is not None and behind > limit:
        problems.append(f"the index holds {vectors} passages, SQL {sql_passages} (more than {limit} apart)")
    active = kecl.store.active_checkpoint()
    serving = kecl.serving_checkpoint()
    loaded = serving is not None and (active is None or serving == active)
    if not loaded:
        problems.append(f"serving checkpoint {serving!r}, SQL's active one is {active!r}")
    lag = kecl.follower.pending_since() if kecl.follower is not None else None
    if kecl.follower is not None and kecl.follower.last_error:
        problems.append(f"following SQL fails: {kecl.follower.last_error}")
    return Readiness(
        store_writable=writable,
        index_loaded=vectors is not None,
        index_vectors=vectors,
        sql_passages=sql_passages,
        passages_behind=behind,
        active_checkpoint=active,
        serving_checkpoint=serving,
        checkpoint_loaded=loaded,
        event_watermark=kecl.watermark(),
        snapshot_lag_seconds=round(lag or 0.0, 3),
        publisher=kecl.publisher is not None and kecl.publisher.holding,
        problems=problems,
    )
