"""Batches built ahead on a background thread: the same batches, in order, errors surfaced."""

from __future__ import annotations

import threading

import pytest

from encoder.prefetch import Prefetcher
from encoder.reading_corpus import reading_examples
from encoder.trainer import TrainConfig, train_mlm
from tests.factories import tiny_bundle

DOCS = [
    "The capital of Freedonia is Zenda, a city on the river.",
    "Rivers run to the sea and the sea is deep and blue.",
    "A small town has a market, a school and a church.",
] * 3


def test_the_next_draw_is_built_on_another_thread():
    threads: dict[int, str] = {}

    def build(draw: int) -> int:
        threads[draw] = threading.current_thread().name
        return draw * 10

    with Prefetcher(build, last=4, enabled=True) as batches:
        assert [batches.get(d) for d in range(4)] == [0, 10, 20, 30]
    assert threads[0] == threading.current_thread().name  # nothing built ahead of the first draw
    assert all(threads[d].startswith("kecl-batches") for d in (1, 2, 3))
    assert sorted(threads) == [0, 1, 2, 3]  # nothing past the last draw


def test_an_out_of_order_draw_is_built_then_and_errors_reach_the_caller():
    def build(draw: int) -> int:
        if draw == 3:
            raise ValueError("bad draw 3")
        return draw

    with Prefetcher(build, last=10, enabled=True) as batches:
        assert batches.get(5) == 5 and batches.get(0) == 0 and batches.get(1) == 1
        batches.get(2)
        with pytest.raises(ValueError, match="bad draw 3"):
            batches.get(3)


@pytest.mark.parametrize("injection", [0.0, 0.5])
def test_training_with_prefetch_is_bit_identical(tokenizer, injection):
    reading = reading_examples(8, seed=1, tokenizer=tokenizer)

    def run(prefetch: bool) -> list[float]:
        config = TrainConfig(
            steps=4,
            batch_size=3,
            max_length=32,
            bf16=False,
            grad_accum=2,
            prefetch=prefetch,
            injection_probability=injection,
        )
        return train_mlm(tiny_bundle(tokenizer), DOCS, DOCS[:2], config=config, progress=False, reading=reading).losses

    assert run(True) == run(False)
