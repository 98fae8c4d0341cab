"""The CLI as scripts use it: `--json` on every read, validated against the HTTP API's pydantic
models (one shape for both); `--version`; read commands never create a home; runs, models, plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from encoder import save_checkpoint
from kecl import __version__
from kecl.api.resources import DocumentPage, ModelPage
from kecl.api.schemas import Entity, FactList, Run, RunList, StoreCounts
from kecl.cli import app
from kecl.models import ModelInfo, prunable
from kecl.settings import Settings
from knowledge import KnowledgeStore
from tests.factories import activate_tiny_checkpoint, save_tiny_sentence_encoder, tiny_bundle, write_jsonl

runner = CliRunner()

FEED = [
    {
        "kind": "relation",
        "id": "P286",
        "label": "head coach",
        "template": "[X] is coached by [Y] .",
        "functional": True,
    },
    {"kind": "entity", "id": "lfc", "name": "Liverpool FC", "aliases": ["the Reds"]},
    {"kind": "entity", "id": "klopp", "name": "Jürgen Klopp"},
    {"kind": "entity", "id": "slot", "name": "Arne Slot"},
    {"kind": "fact", "subject": "lfc", "relation": "P286", "object": "klopp", "valid_from": "2015-10-08"},
    {"kind": "fact", "subject": "lfc", "relation": "P286", "object": "slot", "valid_from": "2024-06-01"},
]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KECL_HOME", str(tmp_path / "home"))
    # `kecl ingest` embeds new passages: with a tiny encoder, as the unit tier asks
    monkeypatch.setenv("KECL_INDEX__EMBEDDER", str(save_tiny_sentence_encoder(tmp_path / "embedder")))
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init", "--no-adapt"]).exit_code == 0
    feed = write_jsonl(tmp_path / "feed.jsonl", FEED)
    (tmp_path / "club.txt").write_text("The Reds play at Anfield. Arne Slot coaches them.")
    assert runner.invoke(app, ["ingest", str(feed), str(tmp_path / "club.txt")]).exit_code == 0
    return tmp_path / "home"


def read_json(args: list[str]) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"kecl {__version__}"


def test_read_commands_print_the_api_shapes(home: Path) -> None:
    stats = StoreCounts.model_validate(read_json(["inspect", "stats", "--json"]))
    assert (stats.facts_current, stats.facts_closed, stats.documents) == (1, 1, 1)
    entity = Entity.model_validate(read_json(["inspect", "entity", "the reds", "--json"]))
    assert entity.key == "lfc" and [f.object for f in entity.facts] == ["Arne Slot"]
    assert [f.object for f in entity.history] == ["Jürgen Klopp"]
    facts = FactList.model_validate(read_json(["inspect", "facts", "--history", "--limit", "1", "--json"]))
    assert (facts.total, facts.limit, len(facts.facts)) == (2, 1, 1)
    past = FactList.model_validate(read_json(["inspect", "facts", "--as-of", "2020-01-01", "--json"]))
    assert [f.object for f in past.facts] == ["Jürgen Klopp"]
    docs = DocumentPage.model_validate(read_json(["inspect", "documents", "--json"]))
    assert docs.total == 1 and docs.documents[0].passages >= 1


def test_runs_list_and_show(home: Path) -> None:
    store = KnowledgeStore.open(Settings().db_url)
    first = store.start_run("cli")
    store.finish_run(
        first, status="succeeded", decision="no-op", reasons=["nothing new to learn"], timings={"ingest": 0.5}
    )
    second = store.start_run("schedule")
    store.close()
    runs = RunList.model_validate(read_json(["runs", "list", "--json", "--limit", "1"]))
    assert (runs.total, [r.id for r in runs.runs]) == (2, [second])
    run = Run.model_validate(read_json(["runs", "show", str(first), "--json"]))
    assert (run.decision, run.reasons) == ("no-op", ["nothing new to learn"])
    table = runner.invoke(app, ["runs", "show", str(first)])
    assert "nothing new to learn" in table.output and "ingest" in table.output
    missing = runner.invoke(app, ["runs", "show", "99"])
    assert missing.exit_code == 1 and "no update run 99" in missing.output


def test_models_list_rollback_prune_and_plot(home: Path) -> None:
    settings = Settings()
    first = activate_tiny_checkpoint(settings)
    child = save_checkpoint(tiny_bundle(max_positions=256), settings.checkpoints_dir, parent=first)
    assert runner.invoke(app, ["models", "activate", child]).exit_code == 0
    models = ModelPage.model_validate(read_json(["models", "list", "--json"]))
    assert [(m.version, m.active) for m in models.models] == [(first, False), (child, True)]
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0 and f"active model is now {first}" in rolled.output
    again = runner.invoke(app, ["models", "rollback"])
    assert again.exit_code == 1 and "has no parent" in again.output
    # the active v0001 is the lineage; v0002 is the newest: with --keep 0 only v0002 may go
    pruned = runner.invoke(app, ["models", "prune", "--keep", "0"])
    assert pruned.exit_code == 0 and child in pruned.output
    assert not (settings.checkpoints_dir / child).exists() and (settings.checkpoints_dir / first).exists()
    out = home / "plot.png"
    assert runner.invoke(app, ["plot", "--out", str(out)]).exit_code == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_prune_keeps_the_active_lineage_and_the_newest() -> None:
    def m(version: str, parent: str | None, active: bool = False) -> ModelInfo:
        return ModelInfo(version, "active" if active else "retired", active, parent, None, {})

    # v1 ← v2 ← v4 (active); v3 rejected off v2; v5, v6 candidates off v4
    models = [m("v1", None), m("v2", "v1"), m("v3", "v2"), m("v4", "v2", True), m("v5", "v4"), m("v6", "v4")]
    assert prunable(models, keep_last=1) == ["v3", "v5"]
    assert prunable(models, keep_last=0) == ["v3", "v5", "v6"]
    assert prunable(models, keep_last=3) == ["v3"]


def test_read_commands_never_create_a_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KECL_HOME", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    for args in (
        ["inspect", "stats"],
        ["inspect", "facts", "--json"],
        ["inspect", "entity", "x"],
        ["inspect", "documents"],
        ["runs", "list"],
        ["runs", "show", "1"],
        ["models", "list"],
        ["search", "anything"],
        ["index", "status"],
        ["plot"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert f"no kecl home at {tmp_path / 'nowhere'} " in " ".join(result.output.split()), args
    assert list(tmp_path.iterdir()) == []
