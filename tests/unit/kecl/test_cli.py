"""The ``kecl`` CLI end to end over a real store in a temporary KECL_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecl.cli import app
from tests.factories import save_tiny_sentence_encoder

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KECL_HOME", str(tmp_path / "home"))
    # `kecl ingest` embeds new passages: with a tiny encoder, as the unit tier asks
    monkeypatch.setenv("KECL_INDEX__EMBEDDER", str(save_tiny_sentence_encoder(tmp_path / "embedder")))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def _commands(typer_app) -> list[list[str]]:  # type: ignore[no-untyped-def]
    import typer.main

    group = typer.main.get_command(typer_app)
    out = []

    def walk(cmd, path):  # type: ignore[no-untyped-def]
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [name])

    walk(group, [])
    return out


def test_every_command_has_help() -> None:
    commands = _commands(app)
    assert ["ingest"] in commands and ["inspect", "entity"] in commands
    for path in commands:
        result = runner.invoke(app, path + ["--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_init_writes_settings_that_load(home: Path) -> None:
    result = runner.invoke(app, ["init", "--no-adapt"])
    assert result.exit_code == 0, result.output
    assert (home / "kecl.toml").is_file() and (home / "kecl.db").is_file()
    for folder in ("index", "checkpoints", "inbox", "runs"):
        assert (home / folder).is_dir()
    import tomllib

    config = tomllib.loads((home / "kecl.toml").read_text())
    assert config["model"]["max_length"] == 64 and config["train"]["steps"] == 640  # the written defaults
    again = runner.invoke(app, ["init", "--no-adapt"])
    assert "kept existing" in again.output


def test_settings_from_file_and_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kecl.settings import Settings

    home.mkdir(parents=True)
    (home / "kecl.toml").write_text('log_level = "DEBUG"\n[index]\nkind = "hnsw"\nhnsw_m = 16\n')
    s = Settings()
    assert (s.log_level, s.index.kind, s.index.hnsw_m) == ("DEBUG", "hnsw", 16)
    monkeypatch.setenv("KECL_INDEX__HNSW_M", "48")
    monkeypatch.setenv("KECL_DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    s = Settings()
    assert (s.index.kind, s.index.hnsw_m, s.db_url) == ("hnsw", 48, "sqlite:////tmp/elsewhere.db")


def test_ingest_then_inspect(home: Path, tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "kind": "relation",
                    "id": "P38",
                    "label": "currency",
                    "template": "The currency of [X] is the [Y] .",
                    "functional": True,
                },
                {"kind": "entity", "id": "croatia", "name": "Croatia", "aliases": ["Republic of Croatia"]},
                {"kind": "entity", "id": "kuna", "name": "kuna"},
                {"kind": "entity", "id": "euro", "name": "euro"},
                {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "kuna", "valid_from": "1994-05-30"},
                {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "euro", "valid_from": "2023-01-01"},
                {"kind": "fact", "subject": "croatia", "relation": "P99", "object": "euro"},
            ]
        )
        + "\n"
    )
    (tmp_path / "doc.txt").write_text("Croatia adopted the euro in 2023, replacing the kuna.")
    result = runner.invoke(app, ["ingest", str(feed), str(tmp_path / "doc.txt")])
    assert result.exit_code == 0, result.output
    assert "skipped (1)" in result.output and "unknown relation 'P99'" in result.output
    assert "facts added" in result.output

    entity = runner.invoke(app, ["inspect", "entity", "republic of croatia"])
    assert entity.exit_code == 0, entity.output
    assert "current facts" in entity.output and "history" in entity.output
    assert "euro" in entity.output and "kuna" in entity.output
    assert "mentions: 1" in entity.output

    past = runner.invoke(app, ["inspect", "facts", "--as-of", "2010-01-01", "--relation", "P38"])
    assert "kuna" in past.output and "euro" not in past.output.split("P38")[-1]
    now = runner.invoke(app, ["inspect", "facts", "--relation", "P38"])
    assert "euro" in now.output and "kuna" not in now.output
    bad_date = runner.invoke(app, ["inspect", "facts", "--as-of", "yesterday"])
    assert bad_date.exit_code != 0 and "not a date" in bad_date.output

    assert "doc.txt" in runner.invoke(app, ["inspect", "documents"]).output
    stats = runner.invoke(app, ["inspect", "stats"]).output
    assert "facts_closed" in stats and "facts_current" in stats
    unknown = runner.invoke(app, ["inspect", "entity", "atlantis"])
    assert unknown.exit_code == 1 and "no entity matches" in unknown.output


def test_training_and_answering_settings_reach_the_encoder(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.* dropouts and guards go into the trainer's config and model.evidence_boost into the update cycle's
    evaluation, from the defaults and from KECL_* variables."""
    from kecl.settings import Settings
    from kecl.wiring import cycle_config, train_config

    config = train_config(Settings())
    assert (config.attention_dropout, config.hidden_dropout) == (0.0, 0.0)
    monkeypatch.setenv("KECL_TRAIN__HIDDEN_DROPOUT", "0.05")
    monkeypatch.setenv("KECL_MODEL__EVIDENCE_BOOST", "2.5")
    settings = Settings()
    assert train_config(settings).hidden_dropout == 0.05
    assert cycle_config(settings).evidence_boost == 2.5
    assert cycle_config(settings).train == train_config(settings)
    # the forgetting guards: LoRA reaches the trainer, the L2 pull the cycle
    monkeypatch.setenv("KECL_TRAIN__LORA_RANK", "8")
    assert train_config(Settings()).lora_rank == 8
    monkeypatch.setenv("KECL_TRAIN__LORA_RANK", "0")
    monkeypatch.setenv("KECL_TRAIN__L2_PULL", "0.01")
    assert cycle_config(Settings()).l2_pull == 0.01
    # both at once would pull nothing (the pull anchors the weights LoRA freezes): refused, not ignored
    monkeypatch.setenv("KECL_TRAIN__LORA_RANK", "8")
    with pytest.raises(ValueError, match="l2_pull=0.01 and train.lora_rank=8"):
        Settings()
    monkeypatch.setenv("KECL_TRAIN__L2_PULL", "0")
    monkeypatch.setenv("KECL_TRAIN__LORA_RANK", "-1")
    with pytest.raises(ValueError, match="lora_rank"):
        Settings()


def test_ingest_stores_the_vectors_its_passages_are_searched_by(home: Path, tmp_path: Path) -> None:
    """`kecl ingest` embeds new passages with the index's embedder and stores each vector with its
    passage, so the processes that index them read it; `--no-vectors` leaves that to them."""
    import numpy as np

    from kecl.home import open_store
    from kecl.settings import Settings
    from kecl.wiring import make_embedder

    (tmp_path / "a.txt").write_text("Croatia adopted the euro in 2023.\n\nZagreb is its capital.")
    (tmp_path / "b.txt").write_text("Slovenia adopted the euro in 2007.")
    assert runner.invoke(app, ["ingest", str(tmp_path / "a.txt")]).exit_code == 0
    result = runner.invoke(app, ["ingest", "--no-vectors", str(tmp_path / "b.txt")])
    assert result.exit_code == 0, result.output
    settings = Settings()
    store, embedder = open_store(settings), make_embedder(settings)
    try:
        texts = store.passage_texts(list(range(1, store.max_passage_id() + 1)))
        stored = store.passage_vectors(embedder.version, sorted(texts))
        with_vectors = {texts[pid] for pid in stored}
        assert any("Croatia" in t for t in with_vectors) and not any("Slovenia" in t for t in with_vectors)
        for pid, raw in stored.items():
            np.testing.assert_allclose(np.frombuffer(raw, dtype="<f4"), embedder.encode([texts[pid]])[0], atol=1e-5)
    finally:
        embedder.close()
        store.close()
