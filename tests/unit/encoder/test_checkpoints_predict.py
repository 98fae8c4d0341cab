import threading

import pytest
import torch

from encoder.checkpoints import (
    CheckpointError,
    active_version,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    set_active,
)
from encoder.model import ScratchConfig, grow_vocabulary, new_mlm_from_scratch
from encoder.predict import encode_texts, fill_mask, fill_mask_encoded, masked_token_ranks, score_candidates
from tests.factories import tiny_bundle


def test_checkpoint_round_trip_is_bit_exact_with_lineage(tokenizer, tmp_path):
    bundle = tiny_bundle(tokenizer)
    v1 = save_checkpoint(bundle, tmp_path, parent=None, metrics={"loss": 1.5})
    v2 = save_checkpoint(bundle, tmp_path, parent=v1, metrics={})
    assert (v1, v2) == ("v0001", "v0002")
    loaded = load_checkpoint(tmp_path / v2, device="cpu")
    a, b = bundle.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.version == v2 and loaded.metadata["parent"] == v1
    assert loaded.tokenizer("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    assert [m["version"] for m in list_checkpoints(tmp_path)] == [v1, v2]
    assert list_checkpoints(tmp_path)[0]["metrics"] == {"loss": 1.5}
    # the decoder is still tied after loading
    m = loaded.model
    assert m.cls.predictions.decoder.weight.data_ptr() == m.bert.embeddings.word_embeddings.weight.data_ptr()


def test_active_pointer(tokenizer, tmp_path):
    assert active_version(tmp_path) is None
    v = save_checkpoint(tiny_bundle(tokenizer), tmp_path)
    set_active(tmp_path, v)
    assert active_version(tmp_path) == v
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        set_active(tmp_path, "v0042")
    assert active_version(tmp_path) == v


def test_damaged_checkpoint_fails_clearly(tokenizer, tmp_path):
    v = save_checkpoint(tiny_bundle(tokenizer), tmp_path)
    weights = tmp_path / v / "model.safetensors"
    original = weights.read_bytes()
    data = bytearray(original)
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / v)
    weights.write_bytes(original)
    (tmp_path / v / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / v)
    with pytest.raises(CheckpointError, match="not a kecl checkpoint"):
        load_checkpoint(tmp_path)


def test_fill_mask_batched_and_explained(tokenizer):
    bundle = tiny_bundle(tokenizer)
    texts = ["The puppy [MASK] on the mat.", "Paris is the [MASK] of [MASK].", "no mask here"]
    plain = fill_mask(bundle, texts, top_k=5)
    assert [len(r.masks) for r in plain] == [1, 2, 0]
    assert all(len(m.top_k) == 5 for r in plain for m in r.masks)
    scores = [t.score for t in plain[0].masks[0].top_k]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    enc = encode_texts(bundle, texts[:1])  # the head on mask positions only gives the full model's answer
    with torch.no_grad():
        full = bundle.model(**enc).logits[0, plain[0].masks[0].position].softmax(-1)
    assert [t.token_id for t in plain[0].masks[0].top_k] == full.topk(5).indices.tolist()
    assert scores == pytest.approx(full.topk(5).values.tolist(), rel=1e-4)
    one = fill_mask(bundle, texts[:1], top_k=5)[0]  # batching (padding) does not change the answer
    assert [t.token_id for t in one.masks[0].top_k] == [t.token_id for t in plain[0].masks[0].top_k]
    explained = fill_mask(bundle, texts[:2], top_k=5, explain=True)
    assert bundle.model.config._attn_implementation == "sdpa"  # back to SDPA after explaining
    ex = explained[1].masks[0].explanation
    n = len(explained[1].tokens)
    assert len(ex.per_head) == 2 and len(ex.per_head[0]) == 2 and len(ex.per_head[0][0]) == n
    assert abs(sum(ex.per_head[1][0]) - 1) < 1e-4 and abs(sum(ex.rollout) - 1) < 1e-4
    assert [t.token_id for t in explained[0].masks[0].top_k] == [t.token_id for t in plain[0].masks[0].top_k]


def test_fill_mask_answers_in_eval_mode_whatever_was_left_training(tokenizer):
    """Dropout never reaches an answer: a submodule left in training mode (the model itself not)
    is put in eval mode, so the same text answers the same twice."""
    bundle = tiny_bundle(tokenizer)
    bundle.model.eval()
    bundle.model.bert.encoder.layer[0].train()  # dropout on in one layer only
    texts = ["The puppy [MASK] on the mat."]
    first = fill_mask(bundle, texts, top_k=5)[0].masks[0].top_k
    assert not any(m.training for m in bundle.model.modules())
    assert [t.score for t in fill_mask(bundle, texts, top_k=5)[0].masks[0].top_k] == [t.score for t in first]


def test_fill_mask_encoded_with_4d_visibility(tokenizer):
    bundle = tiny_bundle(tokenizer)
    enc = encode_texts(bundle, ["the puppy [MASK] on the mat ."])
    n = enc["input_ids"].shape[1]
    full = torch.ones(1, 1, n, n, dtype=torch.bool)
    a = fill_mask_encoded(bundle, {**enc, "attention_mask": full}, top_k=3)[0]
    b = fill_mask_encoded(bundle, enc, top_k=3)[0]
    assert [t.token_id for t in a.masks[0].top_k] == [t.token_id for t in b.masks[0].top_k]
    # hiding every token but [CLS] and the mask from the masked position changes the answer's scores
    blind = full.clone()
    pos = int((enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0])
    blind[0, 0, pos, :] = False
    blind[0, 0, pos, pos] = True
    c = fill_mask_encoded(bundle, {**enc, "attention_mask": blind}, top_k=3, explain=True)[0]
    assert c.masks[0].top_k[0].score != pytest.approx(b.masks[0].top_k[0].score, rel=1e-7, abs=0)
    weights = c.masks[0].explanation.per_head[0][0]
    assert weights[pos] == pytest.approx(1.0) and sum(weights) == pytest.approx(1.0)


def test_masked_token_ranks(tokenizer):
    bundle = tiny_bundle(tokenizer)
    texts = ["the puppy [MASK] on the mat .", "the cat [MASK] here ."]
    top = fill_mask(bundle, texts, top_k=3)
    gold = [top[0].masks[0].top_k[0].token_id, top[1].masks[0].top_k[2].token_id]
    ranks = masked_token_ranks(bundle, texts, gold)
    assert [r.rank for r in ranks] == [1, 3]
    with pytest.raises(ValueError, match="2 \\[MASK\\]"):
        masked_token_ranks(bundle, ["[MASK] [MASK]"], [5])
    probs = score_candidates(bundle, texts[0], ["sat", "ran"])
    assert set(probs) == {"sat", "ran"} and all(0 < p < 1 for p in probs.values())


def test_vocabulary_growth_keeps_old_predictions(tokenizer):
    from transformers import AutoTokenizer

    bundle = tiny_bundle(tokenizer)
    bundle.tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)  # a copy we may grow
    probes = ["the puppy [MASK] on the mat .", "paris is the capital of [MASK] ."]
    before = bundle.model(**encode_texts(bundle, probes)).logits.detach()
    old_ids = encode_texts(bundle, probes)["input_ids"]
    old_size = before.shape[-1]
    emb = bundle.model.get_input_embeddings().weight
    pieces = bundle.tokenizer("ouagadougou", add_special_tokens=False)["input_ids"]
    expected = emb[pieces].mean(0).detach().clone()

    added = grow_vocabulary(bundle, ["Ouagadougou", "Zelenskyy", "paris", "Ouagadougou"])
    assert added == ["ouagadougou", "zelenskyy"]  # "paris" is already one token
    assert bundle.tokenizer.tokenize("Ouagadougou is far") == ["ouagadougou", "is", "far"]
    new_id = bundle.tokenizer.convert_tokens_to_ids("ouagadougou")
    assert torch.equal(bundle.model.get_input_embeddings().weight[new_id], expected)
    assert torch.equal(encode_texts(bundle, probes)["input_ids"], old_ids)
    after = bundle.model(**encode_texts(bundle, probes)).logits.detach()
    assert after.shape[-1] == old_size + 2
    assert torch.equal(after[..., :old_size], before)


def test_from_scratch_trains_tokenizer(tmp_path):
    corpus = ["the river flows to the sea", "the sea is wide and the river is long"] * 50
    bundle = new_mlm_from_scratch(
        corpus,
        ScratchConfig(vocab_size=200, num_hidden_layers=1, hidden_size=32, num_attention_heads=2, max_length=32),
        device="cpu",
    )
    assert 20 < len(bundle.tokenizer) <= 200
    assert bundle.tokenizer.tokenize("the river") == ["the", "river"]
    assert bundle.model.config.vocab_size == len(bundle.tokenizer)
    result = fill_mask(bundle, ["the [MASK] flows"], top_k=2)
    assert len(result[0].masks[0].top_k) == 2
    v = save_checkpoint(bundle, tmp_path)
    assert load_checkpoint(tmp_path / v).tokenizer.tokenize("the sea") == ["the", "sea"]
    with pytest.raises(ValueError, match="empty"):
        new_mlm_from_scratch(["  "])


def test_inference_under_bf16_autocast(tokenizer):
    """``inference_bf16`` runs the encoder's matmuls in bf16 (where native) and gives the same answers."""
    from encoder.trainer import bf16_supported

    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    bundle = tiny_bundle(tokenizer)
    texts = ["The puppy [MASK] on the mat.", "Paris is the [MASK] of France."]
    seen = []
    hook = bundle.model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype)
    )
    try:
        fp32 = fill_mask(bundle, texts, top_k=3)
        bundle.inference_bf16 = True
        bf16 = fill_mask(bundle, texts, top_k=3, explain=True)
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    for a, b in zip(fp32, bf16):
        assert a.masks[0].top_k[0].token_id == b.masks[0].top_k[0].token_id
        assert a.masks[0].top_k[0].score == pytest.approx(b.masks[0].top_k[0].score, abs=0.02)
    assert abs(sum(bf16[0].masks[0].explanation.rollout) - 1) < 1e-2


def test_loads_that_overlap_in_one_process_give_whole_models(tokenizer, tmp_path):
    """A promotion's reload and a follower's background load can run at once in a server: each
    must get a model whose every parameter holds data (never left on the meta device)."""
    version = save_checkpoint(tiny_bundle(tokenizer), tmp_path)
    expected = load_checkpoint(tmp_path / version).model.state_dict()
    outcomes: list[object] = []

    def load() -> None:
        try:
            model = load_checkpoint(tmp_path / version).model
            whole = not any(p.is_meta for p in model.parameters())
            same = all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
            outcomes.append(whole and same)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            outcomes.append(exc)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes == [True] * 6, outcomes


def test_explaining_and_plain_passes_run_side_by_side_on_one_model(tokenizer):
    """Threads share one model: passes that keep their attentions (eager attention) and passes that
    do not run at the same time, each answering as it does alone. Switching the shared model's
    attention backend for the length of a pass let one thread's switch-back strip another's
    attentions mid-pass."""
    bundle = tiny_bundle(tokenizer)
    texts = ["The puppy [MASK] on the mat .", "Paris is the capital of [MASK] ."]
    alone = {explain: fill_mask(bundle, texts, top_k=5, explain=explain) for explain in (False, True)}
    failures: list[BaseException] = []
    mismatches: list[bool] = []
    start = threading.Barrier(4)

    def hammer(explain: bool) -> None:
        start.wait()
        for _ in range(40):
            try:
                got = fill_mask(bundle, texts, top_k=5, explain=explain)
            except BaseException as e:  # noqa: BLE001 - the failure itself is what is counted
                failures.append(e)
                continue
            for g, a in zip(got, alone[explain]):
                same = [t.token_id for t in g.masks[0].top_k] == [t.token_id for t in a.masks[0].top_k]
                explained = g.masks[0].explanation is not None
                mismatches.append(not same or explained != explain)

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and not any(mismatches) and len(mismatches) == 4 * 40 * 2
    assert bundle.model.config._attn_implementation == "sdpa"  # the served model's backend never moved


def test_the_explaining_model_shares_the_weights_and_follows_a_grown_vocabulary(tokenizer):
    from transformers import AutoTokenizer

    bundle = tiny_bundle(tokenizer)
    bundle.tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)  # a copy we may grow, not the shared one
    twin = bundle.explaining_model()
    assert twin is not bundle.model and twin.config._attn_implementation == "eager"
    assert all(a is b for a, b in zip(twin.parameters(), bundle.model.parameters()))
    with torch.no_grad():
        bundle.model.bert.embeddings.word_embeddings.weight[5] += 1.0  # an update in place reaches both
    assert torch.equal(
        twin.bert.embeddings.word_embeddings.weight[5], bundle.model.bert.embeddings.word_embeddings.weight[5]
    )
    assert bundle.explaining_model() is twin
    grow_vocabulary(bundle, ["zorblax"])
    grown = bundle.explaining_model()
    assert grown is not twin
    assert grown.bert.embeddings.word_embeddings.weight is bundle.model.bert.embeddings.word_embeddings.weight
