"""The block cache: a second preparation of the same corpus reads the blocks back, anything that
changes the blocks (tokenizer, length, packing, text) misses, and training is the same either way."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from encoder.block_cache import blocks_key, cached_blocks
from encoder.packing import SpanText, build_blocks
from encoder.trainer import TrainConfig, train_mlm
from tests.factories import tiny_bundle

DOCS = [
    "The capital of Freedonia is Zenda, a city on the river.",
    "Rivers run to the sea and the sea is deep and blue.",
    "A small town has a market, a school and a church.",
    "The weather in spring is mild and the days grow long.",
] * 4


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    return all(
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("input_ids", "position_ids", "segment_ids", "unit_ids", "salient")
    )


def test_second_preparation_reads_the_blocks_back(tokenizer, tmp_path):
    first, hit1 = cached_blocks(tmp_path, tokenizer, DOCS, 32, "packed")
    second, hit2 = cached_blocks(tmp_path, tokenizer, DOCS, 32, "packed")
    assert (hit1, hit2) == (False, True)
    assert _same(first, second) and _same(second, build_blocks(tokenizer, DOCS, 32, "packed"))
    assert second.salient.dtype == torch.bool
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 64},
        {"packing": "grouped"},
        {"whole_word_mask": True},
        {"texts": DOCS[:-1]},
        {"texts": [SpanText(DOCS[0], [(4, 11)]), *DOCS[1:]]},
    ],
)
def test_anything_that_changes_the_blocks_misses(tokenizer, tmp_path, change):
    base = {"texts": DOCS, "max_length": 32, "packing": "packed", "whole_word_mask": False}
    cached_blocks(tmp_path, tokenizer, **base)
    changed = {**base, **change}
    blocks, hit = cached_blocks(tmp_path, tokenizer, **changed)
    assert not hit
    expected = build_blocks(
        tokenizer, changed["texts"], changed["max_length"], changed["packing"], changed["whole_word_mask"]
    )
    assert _same(blocks, expected)


def test_a_different_tokenizer_misses(tokenizer, tmp_path):
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["freedonia"])  # splits the text differently, under the same name
    assert blocks_key(other, DOCS, 32, "packed", False) != blocks_key(tokenizer, DOCS, 32, "packed", False)
    cached_blocks(tmp_path, tokenizer, DOCS, 32, "packed")
    blocks, hit = cached_blocks(tmp_path, other, DOCS, 32, "packed")
    assert not hit and _same(blocks, build_blocks(other, DOCS, 32, "packed"))


def test_a_damaged_entry_is_rebuilt(tokenizer, tmp_path, caplog):
    cached_blocks(tmp_path, tokenizer, DOCS, 32, "packed")
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="encoder.block_cache"):
        blocks, hit = cached_blocks(tmp_path, tokenizer, DOCS, 32, "packed")
    assert not hit and "unreadable" in caplog.text
    assert _same(blocks, build_blocks(tokenizer, DOCS, 32, "packed"))
    assert cached_blocks(tmp_path, tokenizer, DOCS, 32, "packed")[1]  # rewritten whole


def test_the_oldest_entries_are_pruned(tokenizer, tmp_path):
    for n in range(1, 5):
        cached_blocks(tmp_path, tokenizer, DOCS[:n], 32, "packed", max_entries=2)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert cached_blocks(tmp_path, tokenizer, DOCS[:4], 32, "packed", max_entries=2)[1]


def test_training_reads_the_cache_on_its_second_run_and_trains_the_same(tokenizer, tmp_path, caplog):
    config = TrainConfig(steps=3, batch_size=4, max_length=32, bf16=False, block_cache_dir=tmp_path / "blocks")
    replay = [d.upper() for d in DOCS]
    losses = []
    for _ in range(2):
        with caplog.at_level(logging.INFO, logger="encoder.batches"):
            caplog.clear()
            losses.append(train_mlm(tiny_bundle(tokenizer), DOCS, replay, config=config, progress=False).losses)
    assert "from the cache" in caplog.text and "prepared and cached" not in caplog.text
    uncached = TrainConfig(steps=3, batch_size=4, max_length=32, bf16=False)
    assert (
        losses[0]
        == losses[1]
        == train_mlm(tiny_bundle(tokenizer), DOCS, replay, config=uncached, progress=False).losses
    )
