import json

import pytest
import torch

from encoder.masking import IGNORE_INDEX, mask_tokens
from encoder.packing import block_attention_mask, build_blocks
from encoder.predict import fill_mask
from encoder.trainer import TrainConfig, train_mlm
from tests.factories import mib_returned_on_freeing_64mib, tiny_bundle

DOCS = [
    "The capital of Freedonia is Zenda, a city on the river.",
    "Rivers run to the sea and the sea is deep and blue.",
    "A small town has a market, a school and a church.",
    "The weather in spring is mild and the days grow long.",
]


def test_masked_position_loss_equals_hf_labels_loss(tokenizer):
    bundle = tiny_bundle(tokenizer)
    blocks = build_blocks(tokenizer, DOCS * 3, max_length=64)
    ids, labels = mask_tokens(
        blocks.input_ids,
        blocks.unit_ids,
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        generator=torch.Generator().manual_seed(0),
    )
    mask = block_attention_mask(blocks.segment_ids, "sdpa")
    model = bundle.model.eval()
    with torch.no_grad():
        hf = model(input_ids=ids, attention_mask=mask, position_ids=blocks.position_ids, labels=labels).loss
        hidden = model.bert(input_ids=ids, attention_mask=mask, position_ids=blocks.position_ids).last_hidden_state
        sel = labels != IGNORE_INDEX
        ours = torch.nn.functional.cross_entropy(model.cls(hidden[sel]), labels[sel])
    assert torch.allclose(ours, hf, atol=1e-5)


def test_packed_blocks_see_only_their_own_document(tokenizer):
    """A block of packed documents gives each document the output it gets alone."""
    bundle = tiny_bundle(tokenizer)
    packed = build_blocks(tokenizer, DOCS[:2], max_length=64)
    assert len(packed) == 1 and packed.segment_ids.max() == 1
    model = bundle.model.eval()
    with torch.no_grad():
        together = model(
            input_ids=packed.input_ids,
            position_ids=packed.position_ids,
            attention_mask=block_attention_mask(packed.segment_ids, "sdpa"),
        ).logits[0]
        alone = model(**tokenizer(DOCS[0], return_tensors="pt")).logits[0]
    n = alone.shape[0]
    assert torch.allclose(together[:n], alone, atol=1e-4)


def test_packed_and_eager_masks_agree(tokenizer):
    sdpa, eager = tiny_bundle(tokenizer, attn="sdpa"), tiny_bundle(tokenizer, attn="eager")
    packed = build_blocks(tokenizer, DOCS, max_length=64)
    with torch.no_grad():
        a = sdpa.model(
            input_ids=packed.input_ids,
            position_ids=packed.position_ids,
            attention_mask=block_attention_mask(packed.segment_ids, "sdpa"),
        ).logits
        b = eager.model(
            input_ids=packed.input_ids,
            position_ids=packed.position_ids,
            attention_mask=block_attention_mask(packed.segment_ids, "eager"),
        ).logits
    real = packed.segment_ids >= 0
    assert torch.allclose(a[real], b[real], atol=1e-4)


def test_tiny_model_memorises_a_fact(tokenizer):
    bundle = tiny_bundle(tokenizer, dropout=0.0)
    fact = "the capital of freedonia is paris ."
    config = TrainConfig(
        steps=60,
        batch_size=8,
        max_length=32,
        learning_rate=1e-2,
        warmup_ratio=0.05,
        mlm_probability=0.3,
        bf16=False,
        packing="packed",
    )
    result = train_mlm(bundle, [fact] * 16, config=config, progress=False)
    assert result.losses[-1] < result.losses[0] / 4
    top = fill_mask(bundle, ["the capital of freedonia is [MASK] ."], top_k=3)[0].masks[0].top_k
    assert top[0].token == "paris"


def _weights(bundle):
    return {k: v.clone() for k, v in bundle.model.state_dict().items()}


def test_resumed_run_equals_uninterrupted(tokenizer, tmp_path):
    config = TrainConfig(
        steps=6, batch_size=4, max_length=32, learning_rate=1e-3, bf16=False, state_dir=tmp_path / "a", save_every=3
    )
    full = tiny_bundle(tokenizer, seed=1)
    r_full = train_mlm(full, DOCS, replay=DOCS[:2], config=config, progress=False)

    class Stop(Exception):
        pass

    def interrupt(step, metrics):
        if step == 3:
            raise Stop

    first = tiny_bundle(tokenizer, seed=1)
    cfg_b = TrainConfig(**{**config.__dict__, "state_dir": tmp_path / "b"})
    with pytest.raises(Stop):
        train_mlm(first, DOCS, replay=DOCS[:2], config=cfg_b, progress=False, on_step=interrupt)
    resumed = tiny_bundle(tokenizer, seed=99)  # different init: everything must come from the state
    r_res = train_mlm(resumed, DOCS, replay=DOCS[:2], config=cfg_b, resume_from=tmp_path / "b", progress=False)
    assert r_res.losses == r_full.losses[3:]
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_log_and_bad_input(tokenizer, tmp_path):
    bundle = tiny_bundle(tokenizer)
    before = _weights(bundle)
    with pytest.raises(ValueError, match="no trainable text"):
        train_mlm(bundle, ["   "], config=TrainConfig(steps=2), progress=False)
    with pytest.raises(TypeError):
        train_mlm(bundle, "a single string", config=TrainConfig(steps=2), progress=False)
    with pytest.raises(TypeError):
        train_mlm(bundle, ["ok", 3], config=TrainConfig(steps=2), progress=False)
    assert all(torch.equal(before[k], v) for k, v in _weights(bundle).items())
    log = tmp_path / "train.jsonl"
    train_mlm(
        bundle,
        DOCS,
        config=TrainConfig(steps=4, batch_size=2, max_length=32, log_path=log, log_every=2),
        progress=False,
    )
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all({"loss", "lr", "tokens_per_s"} <= set(r) for r in rows)


def test_replay_mix_and_grouped_and_nsp(tokenizer):
    bundle = tiny_bundle(tokenizer)
    config = TrainConfig(
        steps=2, batch_size=4, max_length=32, replay_ratio=0.5, packing="grouped", nsp=True, whole_word_mask=True
    )
    result = train_mlm(bundle, DOCS * 4, replay=DOCS[:1] * 4, config=config, progress=False)
    assert result.metrics["blocks_replay"] > 0 and len(result.losses) == 2


def test_bf16_autocast_loss_parity(tokenizer):
    """Two short runs from the same weights, bf16 autocast vs float32, end at nearly the same loss."""
    from encoder.trainer import bf16_supported

    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    results = []
    for bf16 in (False, True):
        bundle = tiny_bundle(tokenizer, seed=3)
        config = TrainConfig(steps=8, batch_size=4, max_length=32, learning_rate=1e-3, bf16=bf16)
        results.append(train_mlm(bundle, DOCS * 2, config=config, progress=False))
    assert results[1].bf16 and not results[0].bf16
    assert abs(results[0].losses[0] - results[1].losses[0]) < 0.05
    assert abs(results[0].losses[-1] - results[1].losses[-1]) < 0.1


def test_head_learning_rate_applies_to_the_head_only(tokenizer):
    """``head_learning_rate`` moves the head's own layers at their own rate; the decoder is tied to
    the word embeddings and trains with the encoder."""
    bundle = tiny_bundle(tokenizer, seed=4)
    before = _weights(bundle)
    config = TrainConfig(
        steps=3, batch_size=4, max_length=32, learning_rate=1e-3, head_learning_rate=0.0, weight_decay=0.0, bf16=False
    )
    train_mlm(bundle, DOCS * 2, config=config, progress=False)
    after = _weights(bundle)
    head = [k for k in after if k.startswith("cls.") and k != "cls.predictions.decoder.weight"]
    assert head and all(torch.equal(before[k], after[k]) for k in head)
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        after["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert not torch.equal(before["cls.predictions.decoder.weight"], after["cls.predictions.decoder.weight"])


@pytest.mark.parametrize(
    "attn, train_attention, during",
    [
        ("sdpa", "eager", "eager"),
        ("sdpa", None, "sdpa"),
        ("eager", "sdpa", "sdpa"),
        ("eager", None, "eager"),
    ],
)
def test_trainer_switches_attention_only_for_the_run(tokenizer, attn, train_attention, during):
    """train_attention is used for the run (None: the model's own, as bf16=False here) and the
    model's backend is restored afterwards."""
    bundle = tiny_bundle(tokenizer, attn=attn)
    seen = []

    def hook(batch, step):
        seen.append(bundle.model.config._attn_implementation)
        return batch

    result = train_mlm(
        bundle,
        DOCS,
        config=TrainConfig(steps=2, batch_size=2, max_length=32, bf16=False, train_attention=train_attention),
        progress=False,
        batch_hook=hook,
    )
    assert seen == [during, during] and all(map(torch.isfinite, map(torch.tensor, result.losses)))
    assert bundle.model.config._attn_implementation == attn


def test_training_attention_changes_no_float32_result(tokenizer):
    """Eager and SDPA compute the same attention (packed blocks, so with the block-diagonal mask in
    each backend's form): in float32 the choice changes speed, not the run."""
    runs = [
        train_mlm(
            tiny_bundle(tokenizer, seed=6),
            DOCS * 2,
            progress=False,
            config=TrainConfig(
                steps=4,
                batch_size=4,
                max_length=32,
                learning_rate=1e-3,
                bf16=False,
                packing="packed",
                train_attention=attn,
            ),
        ).losses
        for attn in ("sdpa", "eager")
    ]
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)


@pytest.mark.parametrize(
    "train_attention, bf16, device, expected",
    [
        (None, True, "cpu", "eager"),  # bf16 matmuls beat both fused CPU kernels
        (None, False, "cpu", "sdpa"),  # float32: the fused kernel is the faster one
        (None, True, "cuda", "sdpa"),  # GPUs have fast fused bf16 kernels
        ("sdpa", True, "cpu", "sdpa"),  # an explicit setting wins
    ],
)
def test_which_attention_trains(tokenizer, train_attention, bf16, device, expected):
    from encoder.trainer import _training_attention

    model = tiny_bundle(tokenizer).model
    assert (
        _training_attention(TrainConfig(train_attention=train_attention), model, bf16, torch.device(device)) == expected
    )


def test_trainer_keeps_freed_memory_only_during_a_cpu_run(tokenizer):
    """train_mlm on CPU runs inside heap_reuse (reuse_heap=None), not with reuse_heap=False."""
    import encoder.heap as heap

    def during(reuse_heap):
        seen = []

        def hook(batch, step):
            seen.append((heap._heap_users, mib_returned_on_freeing_64mib()))
            return batch

        train_mlm(
            tiny_bundle(tokenizer),
            DOCS,
            progress=False,
            batch_hook=hook,
            config=TrainConfig(steps=2, batch_size=2, max_length=32, bf16=False, reuse_heap=reuse_heap),
        )
        return seen

    applies = int(heap._glibc() is not None)  # elsewhere heap_reuse is a no-op
    assert heap._heap_users == 0
    assert [users for users, _ in during(False)] == [0, 0]
    on = during(None)
    assert [users for users, _ in on] == [applies, applies] and (not applies or max(r for _, r in on) < 8)
    assert heap._heap_users == 0


def test_lora_run_updates_linear_layers_only_and_merges(tokenizer):
    """A LoRA run (``lora_rank``) changes the linear layers' weights only (adapters merged into
    them), plus the embedding rows it is told to train; the model keeps its own modules and every
    parameter trainable afterwards. A run stopped by an error leaves the weights as they were."""
    bundle = tiny_bundle(tokenizer, dropout=0.0)
    before = _weights(bundle)
    rows = tokenizer.convert_tokens_to_ids(["paris", "capital"])
    config = TrainConfig(
        steps=40,
        batch_size=8,
        max_length=32,
        learning_rate=5e-2,
        mlm_probability=0.3,
        bf16=False,
        packing="packed",
        lora_rank=8,
        trainable_tokens=tuple(rows),
    )
    result = train_mlm(bundle, ["the capital of freedonia is paris ."] * 16, config=config, progress=False)
    assert result.losses[-1] < result.losses[0] * 0.8
    after = _weights(bundle)
    assert set(after) == set(before)
    assert isinstance(bundle.model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)
    assert all(p.requires_grad for p in bundle.model.parameters())
    assert "peft_config" not in vars(bundle.model)  # a second LoRA run starts clean
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert changed - {embeddings, "cls.predictions.decoder.weight"} == {
        k for k in after if k.endswith(".weight") and ("dense" in k or k.split(".")[-2] in ("query", "key", "value"))
    }
    moved = (before[embeddings] != after[embeddings]).any(dim=1).nonzero().flatten().tolist()
    assert moved == sorted(rows)
    assert torch.equal(after["cls.predictions.decoder.weight"], after[embeddings])  # still tied

    def stop(step: int, metrics: dict) -> None:
        if step == 3:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        train_mlm(bundle, ["the capital of freedonia is paris ."] * 16, config=config, progress=False, on_step=stop)
    assert all(torch.equal(after[k], v) for k, v in _weights(bundle).items())
    with pytest.raises(ValueError, match="lora_rank"):
        train_mlm(bundle, ["a b c"], config=TrainConfig(lora_rank=-1), progress=False)
