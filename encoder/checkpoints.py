"""Versioned encoder checkpoints: ``<checkpoints_dir>/<version>/`` holds safetensors weights, the
tokenizer, the config, ``metrics.json`` and a ``checkpoint.json`` manifest (version, parent,
SHA-256 of every file). ``ACTIVE`` names the version in use and is replaced atomically.

A checkpoint folder is built under a temporary name and renamed into place, so a crash never
leaves a half-written version behind; loading re-hashes every file and refuses a damaged one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from transformers import BertForMaskedLM

from encoder.bundle import MODEL_LOAD_LOCK, MLMBundle, load_tokenizer, move_to, resolve_device

log = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
ACTIVE = "ACTIVE"
_VERSION = re.compile(r"^v(\d{4,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or damaged.

    ``version`` and ``parent`` are set when the active checkpoint failed to load: the parent is
    the version to fall back to (``None`` when there is none).
    """

    def __init__(self, message: str, version: str | None = None, parent: str | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.parent = parent


def temp_name() -> str:
    """``.tmp-<host>-<pid>-<random>``: a folder being written, named after its writer so that a
    start-up janitor can tell a dead writer's leftovers from a live writer's work."""
    return f".tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_checkpoints(checkpoints_dir: str | Path) -> list[dict[str, Any]]:
    """Manifests of all versions in ``checkpoints_dir``, oldest first (empty if none)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if _VERSION.match(child.name) and (child / MANIFEST).is_file():
            try:
                out.append(json.loads((child / MANIFEST).read_text()))
            except json.JSONDecodeError:
                log.warning("%s: unreadable manifest, skipped", child / MANIFEST)
    return out


def _next_version(root: Path) -> str:
    numbers = [int(m.group(1)) for c in root.iterdir() if (m := _VERSION.match(c.name))]
    return f"v{(max(numbers) + 1 if numbers else 1):04d}"


def save_checkpoint(
    bundle: MLMBundle,
    checkpoints_dir: str | Path,
    parent: str | None = None,
    metrics: dict[str, Any] | None = None,
    watermark: dict[str, Any] | None = None,
) -> str:
    """Write ``bundle`` as a new version; returns the version name (``v0001``, ``v0002``, ...).

    ``parent`` records lineage (the version it was trained from). ``watermark`` is how far into the
    knowledge store the weights were trained (``knowledge.Watermark.to_dict()``); without it the
    bundle's own watermark carries over, since a model trained further still knows what its parent
    knew. The bundle's ``version`` is set to the new name. Raises ``TypeError`` if metrics are not
    JSON-serialisable.
    """
    if watermark is None:
        watermark = bundle.metadata.get("watermark")
    root = Path(checkpoints_dir)
    root.mkdir(parents=True, exist_ok=True)
    metrics_text = json.dumps(metrics or {}, indent=2, default=float)
    tmp = root / temp_name()
    tmp.mkdir()
    try:
        bundle.model.save_pretrained(tmp, safe_serialization=True)
        bundle.tokenizer.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(metrics_text)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        for attempt in range(100):
            version = _next_version(root)
            manifest = {
                "version": version,
                "parent": parent,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": bundle.metadata.get("name_or_path"),
                "files": files,
                "metrics": metrics or {},
                "watermark": watermark,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=float))
            try:
                os.rename(tmp, root / version)  # fails if another writer took this version
                break
            except OSError:
                if attempt == 99:
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.version = version
    bundle.metadata.update(parent=parent, version=version, watermark=watermark, metrics=metrics or {})
    log.info("saved checkpoint %s (parent %s) in %s", version, parent, root)
    return version


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file of a checkpoint against its manifest; returns the manifest.

    Raises :class:`CheckpointError` naming the missing or damaged file.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{folder}: not a kecl checkpoint ({MANIFEST} is missing)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{manifest_path}: damaged manifest ({exc})") from exc
    for name, digest in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{folder}: file {name} is missing; the checkpoint is incomplete")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file}: contents do not match the manifest (damaged checkpoint)")
    if "model.safetensors" not in manifest.get("files", {}):
        raise CheckpointError(f"{folder}: the manifest lists no model.safetensors")
    return manifest


def load_checkpoint(
    path: str | Path, device: str | torch.device = "auto", attn_implementation: str = "sdpa"
) -> MLMBundle:
    """Load a saved version after verifying its files.

    Raises :class:`CheckpointError` on a missing or damaged checkpoint.
    """
    folder = Path(path)
    manifest = verify_checkpoint(folder)
    with MODEL_LOAD_LOCK:
        try:
            model = BertForMaskedLM.from_pretrained(folder, attn_implementation=attn_implementation)
            tokenizer = load_tokenizer(str(folder))
        except Exception as exc:  # a verified folder that still fails to load is damaged in kind
            raise CheckpointError(f"{folder}: could not load the checkpoint: {exc}") from exc
        move_to(model, resolve_device(device))
    model.eval()
    metadata = {"name_or_path": str(folder), **{k: v for k, v in manifest.items() if k != "files"}}
    return MLMBundle(model, tokenizer, manifest["version"], metadata)


def set_active(checkpoints_dir: str | Path, version: str) -> None:
    """Point ``ACTIVE`` at ``version`` (write a temporary file, then rename: atomic).

    Raises :class:`CheckpointError` if the version does not exist.
    """
    root = Path(checkpoints_dir)
    if not (root / version / MANIFEST).is_file():
        raise CheckpointError(f"cannot activate {version!r}: no such checkpoint in {root}")
    tmp = root / f".{ACTIVE}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / ACTIVE)


def active_version(checkpoints_dir: str | Path) -> str | None:
    """The active version's name, or ``None`` when none is set."""
    pointer = Path(checkpoints_dir) / ACTIVE
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def fallback_version(checkpoints_dir: str | Path, version: str) -> str | None:
    """The version to use instead of a damaged ``version``: its recorded parent if that one
    verifies, else the newest older version that verifies; ``None`` if there is none."""
    root = Path(checkpoints_dir)
    candidates: list[str] = []
    try:
        parent = json.loads((root / version / MANIFEST).read_text()).get("parent")
        if parent:
            candidates.append(parent)
    except (OSError, json.JSONDecodeError):
        pass  # the manifest itself is damaged: fall back by version order
    candidates += [m["version"] for m in reversed(list_checkpoints(root)) if m["version"] < version]
    for candidate in dict.fromkeys(candidates):
        try:
            verify_checkpoint(root / candidate)
            return candidate
        except CheckpointError:
            continue
    return None


def load_active(checkpoints_dir: str | Path, device: str | torch.device = "auto") -> MLMBundle | None:
    """Load the active checkpoint, or ``None`` when no version is active.

    Raises :class:`CheckpointError` with ``version`` and ``parent`` (a version that verifies,
    see :func:`fallback_version`) when the active one is missing or damaged.
    """
    version = active_version(checkpoints_dir)
    if not version:
        return None
    try:
        return load_checkpoint(Path(checkpoints_dir) / version, device=device)
    except CheckpointError as exc:
        raise CheckpointError(str(exc), version, fallback_version(checkpoints_dir, version)) from exc
