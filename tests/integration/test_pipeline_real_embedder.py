"""The query pipeline with the real packaged sentence encoder: what depends on its similarities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kecl.pipeline import QueryOptions
from kecl.services import Kecl
from kecl.settings import Settings
from knowledge import DocumentRecord
from tests.factories import activate_tiny_checkpoint
from tests.unit.kecl.test_pipeline import populate


@pytest.fixture()
def kecl(tmp_path: Path) -> Iterator[Kecl]:
    k = Kecl(Settings(home=tmp_path / "home"))
    activate_tiny_checkpoint(k.settings)
    yield populate(k)
    k.close()


def test_passage_margin_leaves_out_unrelated_passages(kecl: Kecl) -> None:
    from kecl.pipeline import within_margin

    query = "The Quillon bridge is made of [MASK] ."
    kecl.ingest_documents([DocumentRecord(text="The Quillon bridge is made of copper.")])
    opts = QueryOptions(mode="concat", k_passages=3)
    hits = kecl.search("The Quillon bridge is made of", 3)
    assert len(hits) == 3 and "Quillon" in hits[0].text
    kept = within_margin(hits, 0.3)
    assert [h.passage_id for h in kept] == [hits[0].passage_id]  # the others are unrelated sentences
    assert within_margin(hits, None) == hits and within_margin(hits, 2.0) == hits
    default = kecl.settings.retrieval.passage_margin
    try:
        kecl.settings.retrieval.passage_margin = 0.3
        answer = kecl.answer([query], opts)[0]
        kecl.settings.retrieval.passage_margin = None
        unfiltered = kecl.answer([query], opts)[0]
    finally:
        kecl.settings.retrieval.passage_margin = default
    assert len(answer.evidence) == 1 and "copper" in answer.injected_input
    assert len(unfiltered.evidence) == 3
