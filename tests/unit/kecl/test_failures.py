"""A failing command prints one line that says what to do (the traceback only with --debug);
settings that cannot work are refused before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from encoder import CheckpointError, load_active, save_checkpoint, set_active
from kecl.cli import app
from kecl.commands.failures import describe_failure
from kecl.settings import Settings
from tests.factories import save_tiny_sentence_encoder, tiny_bundle

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KECL_HOME", str(tmp_path / "home"))
    # `kecl ingest` embeds new passages: with a tiny encoder, as the unit tier asks
    monkeypatch.setenv("KECL_INDEX__EMBEDDER", str(save_tiny_sentence_encoder(tmp_path / "embedder")))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("key", "problem"),
    [("   \t  ", "printable ASCII"), ("clé-secrète-très-longue", "printable ASCII"), ("short", "at least 16")],
)
def test_unusable_api_keys_are_refused_at_start_up(
    home: Path, monkeypatch: pytest.MonkeyPatch, key: str, problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(api={"api_key": key})
    monkeypatch.setenv("KECL_API__API_KEY", key)
    result = runner.invoke(app, ["inspect", "stats"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings: api.api_key") and problem in lines[0]
    assert Settings(api={"api_key": "a" * 16}).api.api_key == "a" * 16


def test_a_read_only_database_is_one_line_and_debug_shows_the_traceback(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("Croatia adopted the euro in 2023.")
    assert runner.invoke(app, ["ingest", str(doc)]).exit_code == 0
    db = home / "kecl.db"
    assert db.is_file()
    # SQLite's own read-only mode: chmod does not stop root, this does
    monkeypatch.setenv("KECL_DATABASE_URL", f"sqlite:///file:{db}?mode=ro&uri=true")
    doc.write_text("Zagreb is the capital of Croatia.")
    result = runner.invoke(app, ["ingest", str(doc)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: the database is read-only") and "writable" in lines[-1]
    assert "Traceback" not in result.output
    debug = runner.invoke(app, ["--debug", "ingest", str(doc)])
    assert debug.exit_code == 1 and "readonly" in str(debug.exception)


def test_a_damaged_active_checkpoint_names_the_command_that_activates_its_parent(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    first = save_checkpoint(tiny_bundle(), root)
    second = save_checkpoint(tiny_bundle(seed=1), root, parent=first)
    set_active(root, second)
    weights = root / second / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as caught:
        load_active(root)
    assert caught.value.version == second and caught.value.parent == first
    message = describe_failure(caught.value)
    assert f"the active checkpoint {second} is damaged" in message
    assert f"`kecl models activate {first}`" in message
    # a damaged manifest still finds the previous version that verifies
    (root / second / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError) as caught:
        load_active(root)
    assert caught.value.parent == first
    # and with no sound version left, it says how to start again
    (root / first / "checkpoint.json").write_text(json.dumps({"version": first, "files": {"x": "0"}}))
    with pytest.raises(CheckpointError) as caught:
        load_active(root)
    assert caught.value.parent is None and "kecl train" in describe_failure(caught.value)
