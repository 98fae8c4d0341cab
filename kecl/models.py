"""The encoder's checkpoints as a client sees them: list, activate, roll back, prune.

One place for what ``kecl models …`` and ``/v1/models`` both do, so the two cannot drift: a
checkpoint's files (manifest, weights) come from ``encoder``; its status and lineage from SQL.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Any

from encoder import CheckpointError, list_checkpoints
from kecl.settings import Settings
from kecl.wiring import active_checkpoint, promote_checkpoint
from knowledge import KnowledgeStore

log = logging.getLogger("kecl")


class ModelError(ValueError):
    """A request about checkpoints that cannot be honoured; ``status`` is 404 (unknown) or 409."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelInfo:
    version: str
    status: str
    active: bool
    parent: str | None
    created_at: str | None
    metrics: dict[str, Any]


def list_models(settings: Settings, store: KnowledgeStore) -> list[ModelInfo]:
    """Every checkpoint on disk, oldest first, with its SQL status (the active one says "active")."""
    rows = {c["version"]: c for c in store.checkpoints()}
    active = active_checkpoint(settings, store)  # SQL decides; the ACTIVE file is only its cache
    out = []
    for manifest in list_checkpoints(settings.checkpoints_dir):
        version = manifest["version"]
        row = rows.get(version, {})
        out.append(
            ModelInfo(
                version=version,
                status="active" if version == active else row.get("status", "candidate"),
                active=version == active,
                parent=manifest.get("parent") or row.get("parent"),
                created_at=manifest.get("created") or row.get("created_at"),
                metrics=dict(manifest.get("metrics") or row.get("metrics") or {}),
            )
        )
    return out


def get_model(settings: Settings, store: KnowledgeStore, version: str) -> ModelInfo:
    """One checkpoint; raises ModelError (404) for an unknown version."""
    for model in list_models(settings, store):
        if model.version == version:
            return model
    raise ModelError(f"no checkpoint {version!r} in {settings.checkpoints_dir}", status=404)


def activate_model(settings: Settings, store: KnowledgeStore, version: str) -> ModelInfo:
    """Verify ``version``'s files, make it the active checkpoint and record that in SQL.

    Raises ModelError: 404 for an unknown version, 409 when its files fail verification.
    """
    get_model(settings, store, version)
    try:
        promote_checkpoint(settings, store, version)
    except (CheckpointError, FileNotFoundError) as exc:
        raise ModelError(f"cannot activate {version}: {exc}") from exc
    log.info("active model is now %s", version)
    return get_model(settings, store, version)


def rollback_model(settings: Settings, store: KnowledgeStore) -> ModelInfo:
    """Activate the active checkpoint's parent; raises ModelError (409) when there is none."""
    active = next((m for m in list_models(settings, store) if m.active), None)
    if active is None:
        raise ModelError("no active checkpoint to roll back from")
    if active.parent is None:
        raise ModelError(f"the active checkpoint {active.version} has no parent to roll back to")
    return activate_model(settings, store, active.parent)


def prunable(models: list[ModelInfo], keep_last: int) -> list[str]:
    """Versions to delete: all but the active lineage (the active one and its ancestors) and the
    newest ``keep_last`` checkpoints."""
    by_version = {m.version: m for m in models}
    keep = {m.version for m in models[-keep_last:]} if keep_last > 0 else set()
    node = next((m for m in models if m.active), None)
    lineage: set[str] = set()
    while node is not None and node.version not in lineage:  # a corrupt parent loop ends here
        lineage.add(node.version)
        node = by_version.get(node.parent) if node.parent else None
    keep |= lineage
    return [m.version for m in models if m.version not in keep]


def prune_models(settings: Settings, store: KnowledgeStore, keep_last: int, dry_run: bool = False) -> list[str]:
    """Delete the checkpoints :func:`prunable` names (files, and their SQL rows marked "pruned")."""
    doomed = prunable(list_models(settings, store), keep_last)
    if not dry_run:
        for version in doomed:
            shutil.rmtree(settings.checkpoints_dir / version, ignore_errors=True)
            store.set_checkpoint_status(version, "pruned")
            log.info("pruned checkpoint %s", version)
    return doomed
