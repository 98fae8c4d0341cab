import pytest
import torch

from encoder.injection import InjectedFact, InjectedPassage, injected_training_batch
from encoder.masked_forward import hidden_at, last_hidden, supports_masked_forward
from encoder.packing import block_attention_mask, build_blocks
from encoder.trainer import TrainConfig, train_mlm
from tests.factories import tiny_bundle

from .test_trainer import DOCS


def _full(model, batch, predicted):
    return last_hidden(model, batch)[predicted]


def _batches(tokenizer, attn):
    """Every form of input the trainer feeds: one full document per row (no mask), padded rows (2-D
    mask), packed documents (block-diagonal 4-D mask) and tree-injected knowledge (4-D visibility
    with its own position and token-type ids)."""
    gen = torch.Generator().manual_seed(3)
    packed = build_blocks(tokenizer, DOCS * 2, max_length=24, packing="packed")
    single = build_blocks(tokenizer, DOCS, max_length=12, packing="grouped")
    padded = tokenizer(DOCS[:3], padding=True, return_tensors="pt")
    text = "Zenda lies in Freedonia."
    fact = InjectedFact("Zenda is the capital of Freedonia .", "capital Freedonia", (0, 5))
    tree = injected_training_batch(
        tokenizer,
        [text] * 2,
        [[fact]] * 2,
        [[InjectedPassage("Zenda is a city on the river.")]] * 2,
        strategy="tree",
        max_length=48,
        mlm_probability=0.3,
        attn_implementation=attn,
        generator=gen,
    )
    yield "one document per row", {"input_ids": single.input_ids, "attention_mask": None}
    yield "padded", {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}
    yield (
        "packed",
        {
            "input_ids": packed.input_ids,
            "position_ids": packed.position_ids,
            "attention_mask": block_attention_mask(packed.segment_ids, attn),
        },
    )
    yield "tree", {k: v for k, v in tree.items() if k != "labels"}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_last_layer_at_masked_positions_equals_the_full_forward(tokenizer, attn):
    """Same hidden states at the chosen positions and the same gradient for every weight, whatever
    the mask form; a row with nothing chosen is fine."""
    bundle = tiny_bundle(tokenizer, attn=attn, dropout=0.0)
    model = bundle.model
    for name, batch in _batches(tokenizer, attn):
        predicted = torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(1)) < 0.3
        predicted[0] = False
        assert predicted.any(), name
        grads = []
        for forward in (_full, hidden_at):
            model.zero_grad()
            out = forward(model, batch, predicted)
            model.cls(out).logsumexp(-1).sum().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            if forward is _full:
                expected = out.detach()
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-5), name
        assert grads[0].keys() == grads[1].keys()
        for n in grads[0]:
            assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5), (name, n)


def test_last_layer_feeds_forward_only_the_masked_rows(tokenizer):
    model = tiny_bundle(tokenizer, dropout=0.0).model
    seen = []
    model.bert.encoder.layer[-1].intermediate.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    ids = build_blocks(tokenizer, DOCS * 3, max_length=32).input_ids
    predicted = torch.zeros(ids.shape, dtype=torch.bool)
    predicted[:, 3] = True
    predicted[0, 5] = True  # the busiest row has two
    with torch.no_grad():
        out = hidden_at(model, {"input_ids": ids}, predicted)
    assert out.shape == (ids.shape[0] + 1, model.config.hidden_size)
    assert seen == [torch.Size([ids.shape[0], 2, model.config.hidden_size])]  # not [rows, 32, hidden]


def test_other_models_take_the_full_forward(tokenizer):
    bundle = tiny_bundle(tokenizer, dropout=0.0)
    assert supports_masked_forward(bundle.model)
    decoder = tiny_bundle(tokenizer, dropout=0.0)
    decoder.model.config.is_decoder = True
    assert not supports_masked_forward(decoder.model) and not supports_masked_forward(torch.nn.Linear(2, 2))
    ids = build_blocks(tokenizer, DOCS, max_length=16).input_ids
    predicted = ids != tokenizer.cls_token_id
    with torch.no_grad():
        assert torch.allclose(
            hidden_at(decoder.model, {"input_ids": ids}, predicted), _full(decoder.model, {"input_ids": ids}, predicted)
        )


@pytest.mark.parametrize("packing", ["grouped", "packed"])
def test_training_with_the_sparse_last_layer_is_the_same_run(tokenizer, packing):
    """In float32 the cut changes speed, not the run: the same losses step by step."""
    runs = [
        train_mlm(
            tiny_bundle(tokenizer, seed=4, dropout=0.0),
            DOCS * 2,
            progress=False,
            config=TrainConfig(
                steps=5,
                batch_size=4,
                max_length=32,
                learning_rate=1e-3,
                bf16=False,
                packing=packing,
                sparse_last_layer=sparse,
            ),
        ).losses
        for sparse in (True, False)
    ]
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)
