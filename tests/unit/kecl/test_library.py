"""The library API a program builds on: ``import kecl``, open a home, ingest, query, search,
update, inspect — on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kecl
from tests.factories import activate_tiny_checkpoint, save_tiny_sentence_encoder


def test_version_and_public_names() -> None:
    assert kecl.__version__ and kecl.__version__ != "0+unknown"
    assert set(kecl.__all__) == {"Kecl", "Settings", "__version__", "open_home"}
    assert kecl.Kecl.__name__ == "Kecl"


def test_open_ingest_query_search_inspect(tmp_path: Path) -> None:
    embedder = save_tiny_sentence_encoder(tmp_path / "embedder")
    feed = tmp_path / "facts.jsonl"
    feed.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"kind": "relation", "id": "P36", "label": "capital", "template": "The capital of [X] is [Y] ."},
                {"kind": "entity", "id": "croatia", "name": "Croatia"},
                {"kind": "entity", "id": "zagreb", "name": "Zagreb"},
                {"kind": "fact", "subject": "croatia", "relation": "P36", "object": "zagreb"},
            ]
        )
        + "\n"
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "zagreb.txt").write_text("Zagreb is the capital of Croatia.")
    with kecl.open_home(tmp_path / "home", index={"embedder": str(embedder)}) as k:
        activate_tiny_checkpoint(k.settings)
        summary = k.ingest([feed, tmp_path / "docs"])
        assert (summary.facts_added, summary.documents_added, summary.issues) == (1, 1, [])
        assert k.stats()["facts_current"] == 1
        hits = k.search("capital of Croatia", k=1)
        assert hits[0].text == "Zagreb is the capital of Croatia."
        answer = k.query("The capital of Croatia is [MASK] .", top_k=3)
        assert len(answer.predictions[0]) == 3 and [f["object"] for f in answer.facts] == ["Zagreb"]
        with pytest.raises(ValueError, match="no \\[MASK\\]"):
            k.query("no mask here")
    assert (tmp_path / "home" / "kecl.db").is_file()
