"""Embedders: normalised float32 vectors, versions that change with the weights."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch

from retrieval import CoalescingEmbedder, Embedder, MeanPoolingEmbedder
from retrieval.embedder import length_groups, trace_sentence_model
from tests.factories import tiny_bert


def test_mean_pooling_is_normalised_and_ignores_padding(tiny_embedder):
    texts = ["Paris is the capital of France .", "a much longer sentence about rivers " * 5]
    batch = tiny_embedder.encode(texts)
    assert batch.dtype == np.float32 and batch.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    alone = tiny_embedder.encode(texts[:1])
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-5)  # padding does not leak into the mean
    assert tiny_embedder.encode([]).shape == (0, 32)


def test_mean_pooling_accepts_masked_lm_and_versions_follow_weights(tokenizer, tiny_embedder):
    mlm = tiny_bert(0, masked_lm=True)
    mlm.bert.load_state_dict(tiny_embedder.model.state_dict(), strict=False)  # no pooler in the MLM
    same = MeanPoolingEmbedder(mlm, tokenizer, version="tiny-0")
    text = ["Dante was born in Florence ."]
    np.testing.assert_allclose(same.encode(text), tiny_embedder.encode(text), atol=1e-5)
    assert same.version == tiny_embedder.version
    with torch.no_grad():
        mlm.bert.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert MeanPoolingEmbedder(mlm, tokenizer, version="tiny-0").version != tiny_embedder.version


def test_sentence_transformers_embedder_loads_a_plain_bert_folder(tmp_path, tokenizer):
    tiny_bert(2).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    embedder = Embedder(str(tmp_path), batch_size=4, device="cpu")
    vectors = embedder.encode(["one", "two words", "three more words"])
    assert vectors.shape == (3, 32) and embedder.dim == 32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.version.startswith(str(tmp_path) + "@") and len(embedder.version.split("@")[1]) == 16


def test_sentence_transformers_embedder_runs_a_trace_that_gives_the_eager_vectors(tmp_path, tokenizer):
    """The model runs as a TorchScript trace, row for row the eager model's vectors for batches of
    any size, length and padding, in the callers' order across its batches."""
    tiny_bert(2).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    embedder = Embedder(str(tmp_path), batch_size=4, device="cpu")
    assert embedder.traced is not None
    texts = [" ".join(["word"] * n) + f" {n}" for n in (3, 40, 1, 12, 7, 25, 2, 60, 9, 5)]
    np.testing.assert_allclose(embedder.encode(texts), embedder._encode_eager(texts), atol=1e-5)
    together: dict[int, np.ndarray] = {}  # two threads in the trace at once (a server's embedder and an ingest)
    threads = [threading.Thread(target=lambda i=i: together.update({i: embedder.encode(texts[i:])})) for i in (0, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 5):
        np.testing.assert_allclose(together[i], embedder._encode_eager(texts[i:]), atol=1e-5)
    eager = Embedder(str(tmp_path), batch_size=4, device="cpu", trace=False)
    assert eager.traced is None and eager.version == embedder.version
    np.testing.assert_allclose(eager.encode(texts), embedder.encode(texts), atol=1e-5)


def test_a_bf16_embedder_traces_in_bf16_and_gives_the_float32_directions(tmp_path, tokenizer):
    """Under bf16 the trace keeps its casts (it computes in bf16 without autocast around it), agrees
    with the eager model in bf16, and points where the float32 model's vectors point."""
    tiny_bert(2).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    fp32 = Embedder(str(tmp_path), batch_size=4, device="cpu")
    bf16 = Embedder(str(tmp_path), batch_size=4, device="cpu", bf16=True)
    assert bf16.traced is not None and bf16.version == fp32.version
    texts = [" ".join(["word"] * n) + f" {n}" for n in (3, 40, 1, 12, 7)]
    vectors = bf16.encode(texts)  # the trace, called with no autocast around it
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, bf16._encode_eager(texts), atol=1e-2)
    cosines = (vectors * fp32.encode(texts)).sum(axis=1)
    # close to float32, but not float32: the casts were traced into the module
    assert cosines.min() > 0.99 and not np.allclose(vectors, fp32.encode(texts), atol=1e-6)


def test_a_trace_that_fails_or_differs_leaves_the_eager_model(tmp_path, tokenizer, monkeypatch, caplog):
    tiny_bert(2).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    embedder = Embedder(str(tmp_path), batch_size=4, device="cpu", trace=False)
    with caplog.at_level(logging.WARNING, logger="retrieval.embedder"):
        assert trace_sentence_model(embedder.model, lambda texts: embedder._encode_eager(texts) * 0.9) is None
    assert "differs" in caplog.text

    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with caplog.at_level(logging.WARNING, logger="retrieval.embedder"):
        fallback = Embedder(str(tmp_path), batch_size=4, device="cpu")
    assert fallback.traced is None and "cannot trace this model" in caplog.text
    np.testing.assert_allclose(fallback.encode(["still embeds"]), embedder.encode(["still embeds"]), atol=1e-6)


def test_missing_model_path_raises(tmp_path):
    with pytest.raises(OSError):
        Embedder(str(tmp_path / "nope"))


def test_coalescing_embedder_merges_concurrent_calls(tiny_embedder):
    """Concurrent one-text calls share forward passes and each gets its own row back; a large call
    goes straight through; an error reaches every waiting caller; the idle worker exits."""
    texts = [f"query number {i} about rivers and towns" for i in range(24)]
    direct = tiny_embedder.encode(texts)
    calls = []

    class Slow:
        """The real tiny embedder, slowed so that callers pile up while one batch runs."""

        version, dim = tiny_embedder.version, tiny_embedder.dim

        def encode(self, batch):
            calls.append(len(batch))
            threading.Event().wait(0.05)
            return tiny_embedder.encode(batch)

    co = CoalescingEmbedder(Slow(), max_batch=8)
    assert co.version == tiny_embedder.version and co.dim == tiny_embedder.dim
    out = [None] * len(texts)

    def worker(i):
        out[i] = co.encode([texts[i]])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(texts)):
        np.testing.assert_allclose(out[i][0], direct[i], atol=1e-5)
    assert co.batches < len(texts) and max(calls) <= 8 and sum(calls) == len(texts)

    calls.clear()
    assert co.encode(texts).shape == direct.shape and calls == [len(texts)]  # > max_batch: direct

    class Broken:
        version, dim = "broken", 4

        def encode(self, batch):
            raise RuntimeError("embedder down")

    bad = CoalescingEmbedder(Broken())
    with pytest.raises(RuntimeError, match="embedder down"):
        bad.encode(["x"])
    with pytest.raises(RuntimeError, match="embedder down"):  # the worker survives an error
        bad.encode(["y"])
    bad.close()
    co.idle_seconds = 0.01
    co.encode(["wake the worker with the short idle time"])
    deadline = time.monotonic() + 5
    while co._worker is not None and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    assert co._worker is None
    np.testing.assert_allclose(co.encode([texts[0]])[0], direct[0], atol=1e-5)  # restarts on demand
    co.close()


def test_length_groups_split_where_padding_costs_more_than_a_pass():
    assert length_groups([7] * 8, 48) == [list(range(8))]  # equal lengths: one pass
    groups = length_groups([7, 7, 35, 7, 7, 7, 7, 7], 48)  # a passage among queries: two passes
    assert groups == [[0, 1, 3, 4, 5, 6, 7], [2]]
    assert length_groups([7, 7, 35, 7], 1000) == [[0, 1, 3, 2]]  # passes dear: padding is cheaper
    assert sorted(i for g in length_groups([3, 90, 12, 40, 41, 5, 88], 10) for i in g) == list(range(7))
    assert length_groups([], 48) == []


def test_coalescing_embedder_embeds_mixed_lengths_in_separate_passes(tiny_embedder):
    """One gathered batch of short queries and a long passage: two forward passes, each row the
    wrapped embedder's own vector for its text, in the callers' order."""
    texts = ["river town"] * 3 + ["a long passage about rivers, towns and their bridges " * 6] + ["old castle"] * 3
    sizes = []

    class Counting:
        version, dim, tokenizer = tiny_embedder.version, tiny_embedder.dim, tiny_embedder.tokenizer

        def encode(self, batch):
            sizes.append(len(batch))
            return tiny_embedder.encode(batch)

    co = CoalescingEmbedder(Counting(), forward_cost_tokens=16)
    out = co.encode(texts)
    assert sorted(sizes) == [1, 6] and co.batches == 2
    np.testing.assert_allclose(out, tiny_embedder.encode(texts), atol=1e-5)
    co.close()


def test_queries_gathered_with_a_long_passage_do_not_wait_for_its_pass(tiny_embedder):
    """In one gathered batch the short texts' pass runs first and their callers get their rows
    then, while the passage's pass is still running; every row is the wrapped embedder's own."""
    passage = "a long passage about rivers, towns and their bridges " * 6
    holding, first_pass, passage_pass = threading.Event(), threading.Event(), threading.Event()

    class Gated:
        version, dim, tokenizer = tiny_embedder.version, tiny_embedder.dim, tiny_embedder.tokenizer

        def encode(self, batch):
            if batch == ["the first call holds the worker"]:
                holding.set()
                first_pass.wait(10)  # the calls below queue up meanwhile and are gathered together
            if passage in batch:
                passage_pass.wait(10)
            return tiny_embedder.encode(batch)

    co = CoalescingEmbedder(Gated(), forward_cost_tokens=16)
    out: dict[str, np.ndarray] = {}

    def call(text):
        out[text] = co.encode([text])[0]

    holder = threading.Thread(target=call, args=("the first call holds the worker",))
    holder.start()
    assert holding.wait(10)  # the worker is in the first call's pass
    callers = [threading.Thread(target=call, args=(t,)) for t in ("river town", passage, "old castle")]
    for t in callers:
        t.start()
    while co._queue.qsize() < 3:
        time.sleep(0.005)
    first_pass.set()
    deadline = time.monotonic() + 10
    while not {"river town", "old castle"} <= out.keys() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert {"river town", "old castle"} <= out.keys() and passage not in out  # the passage's pass still runs
    passage_pass.set()
    for t in [holder, *callers]:
        t.join(10)
    for text, vector in out.items():
        np.testing.assert_allclose(vector, tiny_embedder.encode([text])[0], atol=1e-5)
    co.close()
