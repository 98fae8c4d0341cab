"""What crashes leave on disk: temporaries removed at the next start once their writer is gone,
and an index whose files were damaged is reported as such by `kecl index status`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecl.cli import app
from kecl.home import ensure_home
from kecl.janitor import sweep
from kecl.services import Kecl
from knowledge import DocumentRecord
from tests.factories import tiny_settings

runner = CliRunner()


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temporaries_of_stopped_writers_are_swept_and_live_ones_kept(tmp_path: Path, tiny_embedder_dir: Path) -> None:
    settings = tiny_settings(tmp_path / "home", tiny_embedder_dir, cache_dir=tmp_path / "cache")
    ensure_home(settings)
    host = socket.gethostname()
    dead = settings.checkpoints_dir / f".tmp-{host}-{_exited_pid()}-{uuid.uuid4().hex}"
    live = settings.checkpoints_dir / f".tmp-{host}-{os.getpid()}-{uuid.uuid4().hex}"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    old_index_tmp = settings.index_dir / ".index-3.faiss.tmp"
    fresh_index_tmp = settings.index_dir / ".manifest.json.tmp"
    old_index_tmp.write_bytes(b"partial")
    fresh_index_tmp.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(old_index_tmp, (an_hour_ago, an_hour_ago))
    kept = settings.checkpoints_dir / "v0001"
    kept.mkdir()

    removed = sweep(settings)
    assert sorted(removed) == sorted([dead, old_index_tmp])
    assert not dead.exists() and not old_index_tmp.exists()
    assert live.exists() and fresh_index_tmp.exists() and kept.exists()
    # ensure_home (every start) sweeps too
    dead.mkdir()
    ensure_home(settings)
    assert not dead.exists()


def test_index_status_verifies_checksums(
    tmp_path: Path, tiny_embedder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("KECL_HOME", str(home))
    monkeypatch.setenv("KECL_INDEX__EMBEDDER", str(tiny_embedder_dir))
    k = Kecl(tiny_settings(home, tiny_embedder_dir))
    k.ingest_documents([DocumentRecord(text=f"Passage number {i} about rivers.") for i in range(5)])
    k.close()  # saves the index

    ok = runner.invoke(app, ["index", "status", "--json"])
    assert ok.exit_code == 0, ok.output
    status = json.loads(ok.output)
    assert status["files"] == "verified (sha256)" and status["in_step"] == "yes"

    faiss_file = next((home / "index").rglob("*.faiss"))  # inside the published generation's folder
    faiss_file.write_bytes(faiss_file.read_bytes()[:-16])  # truncated, as by a full disk
    bad = runner.invoke(app, ["index", "status", "--json"])
    assert bad.exit_code == 1
    status = json.loads(bad.output)
    assert status["damaged"] == [f"{faiss_file.name} does not match its checksum"]
    assert status["in_step"] == "no: run `kecl index build`"
    unchecked = runner.invoke(app, ["index", "status", "--json", "--no-verify"])
    assert unchecked.exit_code == 0 and json.loads(unchecked.output)["files"] == "not verified (--no-verify)"
