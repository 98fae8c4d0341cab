"""The micro-batcher answers each request on its own merits: a request that fails in a batch
fails alone, and a query longer than the encoder reads is cut around its mask, not refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from kecl.batching import MicroBatcher
from kecl.pipeline import Prepared, QueryError, QueryOptions, fit_to_budget, retrieve
from kecl.services import Kecl
from knowledge import DocumentRecord
from tests.factories import activate_tiny_checkpoint, packaged_tokenizer, tiny_settings


@pytest.fixture()
def kecl(tmp_path: Path, tiny_embedder_dir: Path) -> Iterator[Kecl]:
    k = Kecl(tiny_settings(tmp_path / "home", tiny_embedder_dir))
    activate_tiny_checkpoint(k.settings)
    k.ingest_documents([DocumentRecord(text="Paris is the capital of France.")])
    yield k
    k.close()


def test_a_long_query_is_cut_around_its_mask() -> None:
    tok = packaged_tokenizer()
    text = "word " * 400 + "The capital of France is [MASK] . " + "tail " * 300
    cut = fit_to_budget(tok, text, 254)
    assert "The capital of France is [MASK] ." in cut
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 254
    assert fit_to_budget(tok, "short [MASK] .", 254) == "short [MASK] ."
    with pytest.raises(QueryError, match="masks span"):
        fit_to_budget(tok, "[MASK] " + "word " * 300 + "[MASK]", 254)


def test_one_bad_query_does_not_break_the_others(kecl: Kecl) -> None:
    """The reproduction: valid queries batched with a 400-word one all succeed, and a query that
    fails by itself (masks too far apart) fails alone with a QueryError."""
    # a long wait gathers every request into one batch, as under load
    batcher = MicroBatcher(kecl, max_batch=16, max_wait_ms=300)
    opts = QueryOptions(mode="concat", k_passages=1)
    texts = ["The capital of France is [MASK] ."] * 6 + ["word " * 400 + "[MASK] ."]
    texts.append("[MASK] " + "word " * 400 + "[MASK] .")
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            results[i] = batcher.submit(texts[i], opts)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batcher.close()
    assert all(not isinstance(results[i], Exception) for i in range(7)), results
    assert isinstance(results[7], QueryError)
    long_answer = results[6]
    assert long_answer.text.endswith("[MASK] .") and len(long_answer.predictions) == 1  # type: ignore[attr-defined]


def test_a_batch_that_fails_is_answered_request_by_request(kecl: Kecl) -> None:
    """A failure that only one request causes inside the forward pass (here: a prepared text the
    encoder refuses, queued as it is, past the budget check) costs the others nothing."""
    batcher = MicroBatcher(kecl, max_batch=16, max_wait_ms=300)
    opts = QueryOptions(mode="closed-book")
    good = [retrieve(kecl, "The capital of France is [MASK] .", opts) for _ in range(4)]
    bad = Prepared("word " * 400 + "[MASK] .", [], [], [], [], 0.0)
    futures: list[Future] = [Future() for _ in range(5)]
    for prepared, future in zip([*good, bad], futures):
        batcher._queue.put((prepared, opts, future))
    answers = [f.result(timeout=60) for f in futures[:4]]
    with pytest.raises(ValueError, match="max_length"):
        futures[4].result(timeout=60)
    batcher.close()
    assert all(a.predictions and a.timings_ms["batch_size"] == 1 for a in answers)
