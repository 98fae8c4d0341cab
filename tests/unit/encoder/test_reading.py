"""Reading exercises and training on injected inputs (the trainer's injection_probability)."""

import pytest
import torch

from encoder.masking import IGNORE_INDEX
from encoder.reading_corpus import reading_examples
from encoder.trainer import TrainConfig, train_mlm
from tests.factories import tiny_bundle

DOCS = ["Rivers run to the sea and the sea is deep and blue.", "A small town has a market, a school and a church."]


def test_exercises_are_deterministic_and_state_the_answer(tokenizer):
    a = reading_examples(200, seed=3, tokenizer=tokenizer)
    assert a == reading_examples(200, seed=3, tokenizer=tokenizer)
    assert a != reading_examples(200, seed=4, tokenizer=tokenizer)
    as_fact = 0
    for ex in a:
        ((start, end),) = ex.text.salient_spans
        assert ex.text.text[start:end] == ex.answer
        knowledge = [f.text for f in ex.facts] + [p.text for p in ex.passages]
        # The answer is stated in the knowledge next to the subject's name (the query's words around it).
        assert any(ex.answer.lower() in k.lower() for k in knowledge)
        as_fact += any(ex.answer.lower() in f.text.lower() for f in ex.facts)
        assert sum(k.count(" .") for k in knowledge) >= 2  # the fact plus distractors
    assert 0.1 < as_fact / len(a) < 0.6  # stated as a fact about 30% of the time, as a passage otherwise
    filler = ["An unrelated passage about " + w + " and nothing else ." for w in ("rain", "ships", "bread")]
    with_filler = reading_examples(200, seed=3, tokenizer=tokenizer, filler=filler)
    injected = [p.text for ex in with_filler for p in ex.passages]
    assert sum(t in filler for t in injected) > 100  # ~1.5 filler passages per exercise
    assert [ex.text for ex in with_filler] == [ex.text for ex in a]  # the same queries, only more noise


def test_injection_probability_mixes_reading_batches(tokenizer):
    reading = reading_examples(64, seed=0, tokenizer=tokenizer)
    seen = []

    def hook(batch, step):
        injected = "token_type_ids" in batch and bool((batch["token_type_ids"] == 1).any())
        if injected:  # only the answer is labelled, and it is in the text segment
            labelled = batch["labels"] != IGNORE_INDEX
            assert not (labelled & (batch["token_type_ids"] == 1)).any()
            assert (labelled.sum(1) >= 1).all()
        seen.append(injected)
        return batch

    config = TrainConfig(
        steps=40,
        batch_size=4,
        max_length=32,
        bf16=False,
        injection_probability=0.5,
        injection_strategy="mixed",
        injection_max_length=96,
    )
    train_mlm(tiny_bundle(tokenizer), DOCS, config=config, progress=False, batch_hook=hook, reading=reading)
    assert 10 <= sum(seen) <= 30
    seen.clear()
    train_mlm(
        tiny_bundle(tokenizer),
        DOCS,
        config=TrainConfig(**{**config.__dict__, "injection_probability": 0.0}),
        progress=False,
        batch_hook=hook,
        reading=reading,
    )
    assert not any(seen)
    with pytest.raises(ValueError, match="injection_strategy"):
        train_mlm(tiny_bundle(tokenizer), DOCS, config=TrainConfig(injection_strategy="sideways"), reading=reading)


def _dropouts(model):
    """(attention-probability dropouts, every other dropout) of the model, as sets of p."""
    attention, hidden = set(), set()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout):
            (attention if name.endswith("attention.self.dropout") else hidden).add(m.p)
    return attention, hidden


@pytest.mark.parametrize(
    "attention, hidden, expected",
    [
        (0.0, None, ({0.0}, {0.1})),
        (None, 0.0, ({0.1}, {0.0})),
        (0.0, 0.0, ({0.0}, {0.0})),
        (None, None, ({0.1}, {0.1})),
    ],
)
def test_dropout_is_set_for_training_and_restored(tokenizer, attention, hidden, expected):
    bundle = tiny_bundle(tokenizer, dropout=0.1)
    seen = []

    def hook(batch, step):
        seen.append(_dropouts(bundle.model))
        return batch

    train_mlm(
        bundle,
        DOCS,
        config=TrainConfig(steps=1, batch_size=2, max_length=32, attention_dropout=attention, hidden_dropout=hidden),
        progress=False,
        batch_hook=hook,
    )
    assert seen == [expected]
    assert _dropouts(bundle.model) == ({0.1}, {0.1})
    for bad in ({"attention_dropout": 1.5}, {"hidden_dropout": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            train_mlm(bundle, DOCS, config=TrainConfig(steps=1, **bad), progress=False)


def test_resume_with_reading_steps_equals_uninterrupted(tokenizer, tmp_path):
    reading = reading_examples(40, seed=2, tokenizer=tokenizer)
    base = dict(
        steps=6,
        batch_size=4,
        max_length=32,
        learning_rate=1e-3,
        bf16=False,
        injection_probability=0.5,
        injection_max_length=96,
        save_every=3,
    )

    def weights(bundle):
        return {k: v.clone() for k, v in bundle.model.state_dict().items()}

    full = tiny_bundle(tokenizer, seed=1)
    r_full = train_mlm(
        full, DOCS, config=TrainConfig(**base, state_dir=tmp_path / "a"), progress=False, reading=reading
    )

    class Stop(Exception):
        pass

    def interrupt(step, metrics):
        if step == 3:
            raise Stop

    config = TrainConfig(**base, state_dir=tmp_path / "b")
    with pytest.raises(Stop):
        train_mlm(
            tiny_bundle(tokenizer, seed=1), DOCS, config=config, progress=False, on_step=interrupt, reading=reading
        )
    resumed = tiny_bundle(tokenizer, seed=7)
    r_res = train_mlm(resumed, DOCS, config=config, resume_from=tmp_path / "b", progress=False, reading=reading)
    assert r_res.losses == r_full.losses[3:]
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
