import torch

from encoder.masking import IGNORE_INDEX, mask_tokens
from encoder.packing import SpanText, build_blocks


def _blocks(tokenizer, texts, **kw):
    return build_blocks(tokenizer, texts, max_length=64, **kw)


TEXTS = [
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Ouagadougou is the capital of Burkina Faso and its largest city.",
    "Unbelievably, photosynthesis converts sunlight into chemical energy.",
] * 20


def test_proportions_over_many_draws(tokenizer):
    blocks = _blocks(tokenizer, TEXTS)
    gen = torch.Generator().manual_seed(0)
    chosen = masked = randomised = kept = candidates = 0
    for _ in range(200):
        ids, labels = mask_tokens(
            blocks.input_ids,
            blocks.unit_ids,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            generator=gen,
        )
        sel = labels != IGNORE_INDEX
        chosen += int(sel.sum())
        candidates += int((blocks.unit_ids >= 0).sum())
        masked += int((ids[sel] == tokenizer.mask_token_id).sum())
        same = ids[sel] == blocks.input_ids[sel]
        kept += int(same.sum())
        randomised += int((~same & (ids[sel] != tokenizer.mask_token_id)).sum())
    assert abs(chosen / candidates - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.015
    # a random draw can hit the original token, so "kept" is slightly above 10%
    assert abs(kept / chosen - 0.1) < 0.015
    assert abs(randomised / chosen - 0.1) < 0.015


def test_specials_and_padding_never_masked(tokenizer):
    blocks = _blocks(tokenizer, ["short one.", "a slightly longer sentence with more words in it."])
    special = torch.isin(blocks.input_ids, torch.tensor(tokenizer.all_special_ids))
    assert special.any() and (blocks.input_ids == tokenizer.pad_token_id).any()
    gen = torch.Generator().manual_seed(1)
    for _ in range(300):
        ids, labels = mask_tokens(
            blocks.input_ids,
            blocks.unit_ids,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            mlm_probability=0.9,
            generator=gen,
        )
        assert not (labels[special] != IGNORE_INDEX).any()
        assert torch.equal(ids[special], blocks.input_ids[special])


def _word_of_each_token(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False)
    return enc.word_ids()


def test_whole_word_masking_covers_whole_words(tokenizer):
    text = "Unbelievably, photosynthesis converts sunlight into chemical energy."
    blocks = _blocks(tokenizer, [text], whole_word_mask=True)
    words = _word_of_each_token(tokenizer, text)
    assert len(set(words)) < len(words), "test needs words split into several pieces"
    gen = torch.Generator().manual_seed(2)
    body = slice(1, 1 + len(words))
    for _ in range(100):
        _, labels = mask_tokens(
            blocks.input_ids,
            blocks.unit_ids,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            mlm_probability=0.3,
            generator=gen,
        )
        chosen = (labels[0, body] != IGNORE_INDEX).tolist()
        by_word = {}
        for w, c in zip(words, chosen):
            by_word.setdefault(w, set()).add(c)
        assert all(len(v) == 1 for v in by_word.values())


def test_salient_span_masks_whole_entity(tokenizer):
    text = "Ouagadougou is the capital of Burkina Faso and its largest city."
    span = (0, len("Ouagadougou"))
    blocks = _blocks(tokenizer, [SpanText(text, [span])])
    assert blocks.salient.sum() >= 3  # "ouagadougou" is several word pieces
    gen = torch.Generator().manual_seed(3)
    hits = 0
    for _ in range(200):
        _, labels = mask_tokens(
            blocks.input_ids,
            blocks.unit_ids,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            salient=blocks.salient,
            salient_probability=0.5,
            generator=gen,
        )
        states = set((labels[blocks.salient] != IGNORE_INDEX).tolist())
        assert len(states) == 1  # all of the mention or none of it
        hits += states == {True}
    assert 70 < hits < 130  # chosen with the salient probability


def test_bad_spans_and_probabilities_raise(tokenizer):
    import pytest

    with pytest.raises(ValueError, match="outside"):
        _blocks(tokenizer, [SpanText("abc", [(2, 10)])])
    blocks = _blocks(tokenizer, ["hello world"])
    with pytest.raises(ValueError):
        mask_tokens(blocks.input_ids, blocks.unit_ids, mask_token_id=103, vocab_size=10, mlm_probability=1.5)
