"""The compiled path (torch.compile of the encoder layers, CPU inductor) trains with the same loss
as eager on a tiny model."""

from __future__ import annotations

import shutil

import pytest

from encoder import TrainConfig, train_mlm
from tests.factories import tiny_bundle

DOCS = [
    "The capital of Freedonia is Zenda, a city on the river.",
    "Rivers run to the sea and the sea is deep and blue.",
    "A small town has a market, a school and a church.",
] * 4


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_compiled_layers_give_the_eager_loss(tokenizer, monkeypatch):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor, "compile_threads", 1)  # compile in this process
    config = dict(steps=3, batch_size=4, max_length=32, bf16=False, attention_dropout=0.0, hidden_dropout=0.0)
    eager_bundle, compiled_bundle = tiny_bundle(tokenizer), tiny_bundle(tokenizer)
    eager = train_mlm(eager_bundle, DOCS, config=TrainConfig(**config, compile=False), progress=False)
    compiled = train_mlm(compiled_bundle, DOCS, config=TrainConfig(**config, compile=True), progress=False)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
    assert compiled.metrics["compiled"] and not eager.metrics["compiled"]
    # afterwards the layers run eager again
    assert all(layer._compiled_call_impl is None for layer in compiled_bundle.model.bert.encoder.layer)
