import pytest

from encoder.packing import SpanText, build_blocks


def _doc(n: int, word: str) -> str:
    return " ".join([word] * n)  # one WordPiece token per word


def _documents(blocks, tokenizer):
    """Each document of each block as (block, its token ids without specials), checking on the way
    that it starts at position 0 with [CLS], ends with [SEP] and has its own segment id."""
    out = []
    for b in range(len(blocks)):
        seg, ids, pos = blocks.segment_ids[b].tolist(), blocks.input_ids[b].tolist(), blocks.position_ids[b].tolist()
        for s in sorted(set(seg) - {-1}):
            where = [i for i, x in enumerate(seg) if x == s]
            assert where == list(range(where[0], where[-1] + 1))  # contiguous
            assert [pos[i] for i in where] == list(range(len(where)))
            assert ids[where[0]] == tokenizer.cls_token_id and ids[where[-1]] == tokenizer.sep_token_id
            out.append((b, tuple(ids[where[0] + 1 : where[-1]])))
        assert all(x == -1 for x in seg[len([x for x in seg if x >= 0]) :])  # padding only at the end
    return out


def test_best_fit_fills_blocks_that_documents_in_order_leave_half_empty(tokenizer):
    # [CLS] + n + [SEP]: pieces of 10, 10, 6, 6 tokens into blocks of 16. In order: [10] [10 6] [6];
    # best fit: [10 6] [10 6] — one block fewer, no padding.
    texts = [_doc(8, "cat"), _doc(8, "dog"), _doc(4, "sun"), _doc(4, "sea")]
    sequential = build_blocks(tokenizer, texts, max_length=16, packing="packed", fit="sequential")
    best = build_blocks(tokenizer, texts, max_length=16, packing="packed", fit="best")
    assert len(sequential) == 3 and len(best) == 2
    assert int((best.segment_ids == -1).sum()) == 0
    docs = _documents(best, tokenizer)
    assert sorted(d for _, d in docs) == sorted(d for _, d in _documents(sequential, tokenizer))
    assert [d for _, d in _documents(sequential, tokenizer)] == [
        tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
    ]  # in order


def test_best_fit_keeps_every_token_once_on_mixed_lengths(tokenizer):
    texts = [
        _doc(n, w) for n, w in zip([3, 40, 7, 70, 12, 1, 25, 33, 5, 60, 9, 18] * 3, ["cat", "dog", "sun", "sea"] * 9)
    ]
    texts.append(SpanText("Zenda is the capital of Freedonia.", [(0, 5)]))
    for fit in ("best", "sequential"):
        blocks = build_blocks(tokenizer, texts, max_length=32, packing="packed", fit=fit)
        docs = _documents(blocks, tokenizer)
        # a document longer than a block is cut into pieces of 30 tokens, every token kept once
        tokens = sorted(t for _, d in docs for t in d)
        expected = sorted(
            t
            for text in texts
            for t in tokenizer(text.text if isinstance(text, SpanText) else text, add_special_tokens=False)["input_ids"]
        )
        assert tokens == expected
        assert bool(blocks.salient.any())  # spans travel with their tokens
    best = build_blocks(tokenizer, texts, max_length=32, packing="packed")
    seq = build_blocks(tokenizer, texts, max_length=32, packing="packed", fit="sequential")
    assert len(best) < len(seq)


def test_bad_fit_raises(tokenizer):
    with pytest.raises(ValueError, match="fit"):
        build_blocks(tokenizer, ["a b c"], max_length=16, fit="first")
