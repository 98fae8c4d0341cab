"""Runs a killed cycle left behind: marked failed, and what they ingested handed to the next cycle.

A cycle's row says "running" until it finishes; a cycle killed mid-way leaves it so, with its
input already in the store (moved out of the inbox, ingested) but never trained on. Only a cycle
that holds the update lock can see such a row and know its writer is dead, so the next cycle
does this first.
"""

from __future__ import annotations

import datetime as dt
import logging

from knowledge import IngestSummary, KnowledgeStore

log = logging.getLogger(__name__)


def recover_abandoned(store: KnowledgeStore) -> tuple[list[int], IngestSummary]:
    """Mark runs left "running" as failed; returns their ids and what the store took in since the
    oldest of them started (its new current facts, closed facts and passages), for this cycle to
    learn. Returns ``([], empty summary)`` when no run was left behind.

    Call only while holding the update lock.
    """
    stale = store.abandon_running_runs("abandoned: its process stopped before the cycle finished")
    if not stale:
        return [], IngestSummary()
    since = min(dt.datetime.fromisoformat(r["started_at"]) for r in stale)
    new_facts, closed, passages = store.changed_since(since)
    ids = [r["id"] for r in stale]
    log.warning(
        "runs %s were left running by a stopped process: marked failed; their %d new facts, %d closed facts "
        "and %d passages are learnt by this cycle",
        ids,
        len(new_facts),
        len(closed),
        len(passages),
    )
    return ids, IngestSummary(new_fact_ids=new_facts, closed_fact_ids=closed, new_passage_ids=passages)
