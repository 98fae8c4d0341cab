"""What the store refuses or defers: facts dated in the future wait for their day, self-loops and
blank documents are refused with an issue, and an over-long "word" cannot make a huge passage."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from knowledge import DocumentRecord, EntityRecord, FactRecord, KnowledgeStore, ReadBatch, chunk_text
from knowledge.chunking import MAX_WORD_CHARS
from knowledge.models import ScheduledFact
from tests.unit.knowledge.test_store import BASE_FEED, write_feed

TODAY = dt.date.today()


def _currency(store: KnowledgeStore) -> list[str]:
    return [f.object for f in store.facts(subject=store.entity_id("croatia"), relation="P38")]


def test_a_fact_dated_in_the_future_is_scheduled_not_current(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    far = dt.date(9999, 12, 31)
    summary = store.add_facts([FactRecord("croatia", "P38", object="kuna", valid_from=far)])
    assert summary.facts_scheduled == 1 and summary.facts_added == 0 and summary.facts_closed == 0
    assert _currency(store) == ["kuna"]
    assert [(r.subject, r.valid_from) for r in store.scheduled_facts()] == [("croatia", far)]
    # the same announcement again is unchanged, not a second schedule
    again = store.add_facts([FactRecord("croatia", "P38", object="kuna", valid_from=far)])
    assert again.facts_unchanged == 1 and len(store.scheduled_facts()) == 1


def test_a_scheduled_fact_becomes_current_on_its_day(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    tomorrow = TODAY + dt.timedelta(days=1)
    store.add_documents([DocumentRecord(text="Croatia announced the euro.")])
    store.upsert_entities([EntityRecord("euro", "euro")])
    assert store.add_facts([FactRecord("croatia", "P38", object="euro", valid_from=tomorrow)]).facts_scheduled == 1
    assert _currency(store) == ["kuna"] and store.apply_due_facts().facts_added == 0
    # its day comes: as if it had been announced for yesterday
    with store.session() as s, s.begin():
        s.query(ScheduledFact).update({ScheduledFact.valid_from: TODAY - dt.timedelta(days=1)})
    applied = store.apply_due_facts()
    assert applied.facts_added == 1 and applied.facts_closed == 1 and applied.new_fact_ids
    assert _currency(store) == ["euro"] and store.scheduled_facts() == []


def test_self_loops_and_blank_documents_are_refused(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    summary = store.add_facts([FactRecord("croatia", "P36", object="croatia")])
    assert summary.facts_added == 0
    assert [i.reason for i in summary.issues] == [
        "'croatia' P36 'croatia' relates an entity to itself; check the object"
    ]
    docs = store.ingest_batch(ReadBatch(documents=[DocumentRecord(text=" \n\t "), DocumentRecord(text="Real text.")]))
    assert docs.documents_added == 1 and docs.documents_unchanged == 0
    assert [i.reason for i in docs.issues] == ["the document has no text (only whitespace)"]


def test_an_over_long_word_is_cut_into_bounded_passages() -> None:
    word = "x" * 990_000
    chunks = chunk_text(f"Start. {word} end.", max_tokens=96)
    assert max(len(c.text) for c in chunks) <= 96 * (MAX_WORD_CHARS + 1)
    assert "".join(c.text for c in chunks if c.text.startswith("x")).replace(" end.", "") == word
    assert all(c.token_count <= 96 for c in chunks)
    # ordinary text is chunked as before
    assert [c.text for c in chunk_text("One. Two.", max_tokens=96)] == ["One. Two."]
