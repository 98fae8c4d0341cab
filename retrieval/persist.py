"""Saving and loading a passage index: atomic files and a verified manifest.

A folder holds one generation of files (``index-<gen>.faiss``, for HNSW ``extras-<gen>.npz``)
and ``manifest.json`` naming them with their sha256, the embedder version, the count and the
highest id. Every file is written under a temporary name, flushed to disk and renamed; the
manifest is renamed last, so it is the commit point. A crash at any moment leaves either the old
manifest (pointing at the old files, which are deleted only after the new manifest is in place)
or the new one: never a manifest pointing at a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.index import IndexState, PassageIndex

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class IndexLoadError(RuntimeError):
    """The index folder cannot be loaded: no manifest, a missing file, a checksum or count
    mismatch. The message names the folder and what to do (rebuild: ``kecl index build``)."""


@dataclass
class Manifest:
    """What ``manifest.json`` records about the saved index."""

    format_version: int
    kind: str
    dim: int
    embedder_version: str | None
    count: int
    max_id: int
    generation: int
    files: dict[str, str]  # file name -> sha256
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(tmp: Path, final: Path) -> None:
    _fsync_path(tmp)
    os.replace(tmp, final)


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest in ``folder``. Raises IndexLoadError when it is missing or unreadable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise IndexLoadError(f"no index manifest at {path}; build the index first (kecl index build)")
    try:
        return Manifest(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise IndexLoadError(f"unreadable index manifest {path}: {e}; rebuild the index (kecl index build)") from e


def save_index(index: PassageIndex, folder: str | Path) -> Manifest:
    """Write ``index`` into ``folder`` atomically (temp files + rename, manifest last) and delete
    the previous generation's files. Returns the manifest written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        generation = read_manifest(folder).generation + 1
    except IndexLoadError:
        generation = 1
    files: dict[str, str] = {}

    state = index.state()
    name = f"index-{generation}.faiss"
    tmp = folder / f".{name}.tmp"
    faiss.write_index(state.faiss_index, str(tmp))
    files[name] = _sha256(tmp)
    _replace(tmp, folder / name)

    if state.extras:
        name = f"extras-{generation}.npz"
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            # each key of extras names an array, never savez's allow_pickle: bool, which mypy cannot tell
            np.savez(f, **state.extras)  # type: ignore[arg-type]
        files[name] = _sha256(tmp)
        _replace(tmp, folder / name)

    ids = index.ids()
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        kind=index.kind,
        dim=index.dim,
        embedder_version=state.embedder_version,
        count=len(ids),
        max_id=int(ids[-1]) if len(ids) else -1,
        generation=generation,
        files=files,
        meta=state.meta,
        created_at=time.time(),
    )
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(asdict(manifest), indent=2))
    _replace(tmp, folder / MANIFEST)  # the commit point
    for stale in folder.iterdir():
        if stale.name != MANIFEST and stale.name not in files and not stale.name.startswith("."):
            if stale.name.startswith(("index-", "extras-")):
                stale.unlink(missing_ok=True)
    log.info("saved %s index (%d vectors, generation %d) to %s", index.kind, len(ids), generation, folder)
    return manifest


def verify_files(folder: str | Path) -> list[str]:
    """Check each file the manifest in ``folder`` names against its sha256 without loading the
    index; returns one line per missing or damaged file ([] when all match). Raises
    :class:`IndexLoadError` when the manifest itself is missing or unreadable."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = []
    for name, checksum in manifest.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif _sha256(path) != checksum:
            problems.append(f"{name} does not match its checksum")
    return problems


def load_index(folder: str | Path, verify_checksum: bool = True) -> PassageIndex:
    """Load the index the manifest in ``folder`` names, checking every file's sha256 and that
    the loaded index has the recorded count and highest id. Raises IndexLoadError otherwise."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.format_version != FORMAT_VERSION:
        raise IndexLoadError(
            f"{folder}: index format {manifest.format_version}, this kecl reads "
            f"{FORMAT_VERSION}; rebuild the index (kecl index build)"
        )
    for name, checksum in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise IndexLoadError(f"{path} named by the manifest is missing; rebuild the index (kecl index build)")
        if verify_checksum and _sha256(path) != checksum:
            raise IndexLoadError(
                f"{path} does not match the manifest's checksum (corrupt or replaced); "
                "rebuild the index (kecl index build)"
            )
    faiss_index = faiss.read_index(str(folder / f"index-{manifest.generation}.faiss"))
    extras: dict[str, np.ndarray] = {}
    extras_name = f"extras-{manifest.generation}.npz"
    if extras_name in manifest.files:
        with np.load(folder / extras_name) as data:
            extras = {k: data[k] for k in data.files}
    index = PassageIndex.from_state(IndexState(manifest.meta, faiss_index, extras, manifest.embedder_version))
    ids = index.ids()
    max_id = int(ids[-1]) if len(ids) else -1
    if len(ids) != manifest.count or max_id != manifest.max_id:
        raise IndexLoadError(
            f"{folder}: index holds {len(ids)} vectors (max id {max_id}), manifest says "
            f"{manifest.count} (max id {manifest.max_id}); rebuild the index (kecl index build)"
        )
    return index
