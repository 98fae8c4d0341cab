"""Retrieval tests: tiny random BERT embedders (seconds, not minutes)."""

from __future__ import annotations

import pytest

from retrieval import MeanPoolingEmbedder
from tests.factories import tiny_bert


@pytest.fixture(scope="session")
def tiny_embedder(tokenizer) -> MeanPoolingEmbedder:  # type: ignore[no-untyped-def]
    return MeanPoolingEmbedder(tiny_bert(0), tokenizer, version="tiny-0", batch_size=16)


@pytest.fixture(scope="session")
def other_embedder(tokenizer) -> MeanPoolingEmbedder:  # type: ignore[no-untyped-def]
    return MeanPoolingEmbedder(tiny_bert(1), tokenizer, version="tiny-1", batch_size=16)
