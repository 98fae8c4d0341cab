"""A trained model as a delta from its pretrained model: exact at full rank, the best low-rank
approximation below it, and refused by any other model."""

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from encoder import apply_delta, make_delta, save_delta, weights_fingerprint
from encoder.delta import pretrained_names, read_delta_header
from tests.factories import tiny_mlm


def trained_copy(base, seed=1, scale=0.05):
    """``base`` changed everywhere, as training changes it (encoder and head)."""
    trained = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return trained


def parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_a_full_rank_delta_turns_the_pretrained_model_into_the_trained_one(tmp_path):
    base = tiny_mlm(seed=0)
    trained = trained_copy(base)
    file = tmp_path / "delta.safetensors"
    save_delta(
        file,
        make_delta(base, trained, rank=10_000, dtype=torch.float32, quantise=False),
        weights_fingerprint(base),
        {"a": 1},
    )
    fresh = tiny_mlm(seed=0)
    assert apply_delta(fresh, file) == {"a": 1}
    want = parameters(trained)
    for name, value in parameters(fresh).items():
        torch.testing.assert_close(value, want[name], rtol=0, atol=1e-6)
    # the tied decoder follows the word embeddings it shares
    assert fresh.cls.predictions.decoder.weight.data_ptr() == fresh.bert.embeddings.word_embeddings.weight.data_ptr()


def test_a_low_rank_change_is_recovered_by_factors_of_that_rank(tmp_path):
    base = tiny_mlm(seed=0)
    trained = copy.deepcopy(base)
    word = "bert.embeddings.word_embeddings.weight"
    params = dict(trained.named_parameters())
    rows, cols = params[word].shape
    generator = torch.Generator().manual_seed(3)
    change = torch.randn(rows, 2, generator=generator) @ torch.randn(2, cols, generator=generator)
    with torch.no_grad():
        params[word].add_(0.01 * change)
    tensors = make_delta(base, trained, rank=2, dtype=torch.float32)
    assert tensors[word + ".lora_B"].shape == (rows, 2) and tensors[word + ".lora_A"].shape == (2, cols)
    assert word + ".diff" not in tensors and word not in tensors
    # vectors and the fresh head are whole; nothing but the pretrained matrices is factored
    assert all(not k.endswith((".lora_A", ".lora_B", ".diff")) for k in tensors if not k.startswith("bert."))
    file = tmp_path / "delta.safetensors"
    save_delta(file, tensors, weights_fingerprint(base), {})
    fresh = tiny_mlm(seed=0)
    apply_delta(fresh, file)
    torch.testing.assert_close(dict(fresh.named_parameters())[word], params[word], rtol=0, atol=1e-5)
    # one rank fewer than the change has cannot hold it
    short = make_delta(base, trained, rank=1, energy=0.0, dtype=torch.float32)
    approx = short[word + ".lora_B"] @ short[word + ".lora_A"]
    assert (approx - 0.01 * change).abs().max() > 1e-3


def test_half_precision_factors_stay_close(tmp_path):
    base = tiny_mlm(seed=0)
    trained = trained_copy(base, scale=0.02)
    file = tmp_path / "delta.safetensors"
    save_delta(file, make_delta(base, trained, rank=10_000, quantise=False), weights_fingerprint(base), {})
    assert {str(t.dtype) for t in load_file(str(file)).values()} == {"torch.float16"}
    fresh = tiny_mlm(seed=0)
    apply_delta(fresh, file)
    want = parameters(trained)
    worst = max(float((value - want[name]).abs().max()) for name, value in parameters(fresh).items())
    assert worst < 2e-3


def test_a_delta_refuses_other_weights_and_leaves_the_model_untouched(tmp_path):
    base = tiny_mlm(seed=0)
    file = tmp_path / "delta.safetensors"
    save_delta(file, make_delta(base, trained_copy(base), rank=4), weights_fingerprint(base), {})
    other = tiny_mlm(seed=7)
    before = parameters(other)
    with pytest.raises(ValueError, match="other pretrained weights"):
        apply_delta(other, file)
    assert all(torch.equal(v, before[k]) for k, v in parameters(other).items())

    # a tensor naming no parameter, or of the wrong shape, is refused before anything changes
    tensors = make_delta(base, trained_copy(base), rank=4)
    bad_name = dict(tensors, **{"bert.nonexistent.weight": torch.zeros(3)})
    bad_shape = dict(tensors, **{"cls.predictions.bias": torch.zeros(3, dtype=torch.float16)})
    for bad in (bad_name, bad_shape):
        save_delta(file, bad, weights_fingerprint(base), {})
        fresh = tiny_mlm(seed=0)
        before = parameters(fresh)
        with pytest.raises(ValueError, match="names no parameter|shape"):
            apply_delta(fresh, file)
        assert all(torch.equal(v, before[k]) for k, v in parameters(fresh).items())


def test_the_fingerprint_covers_the_pretrained_encoder_only():
    base = tiny_mlm(seed=0)
    assert pretrained_names(base) and all(n.startswith("bert.") for n in pretrained_names(base))
    fingerprint = weights_fingerprint(base)
    headless = copy.deepcopy(base)
    with torch.no_grad():
        headless.cls.predictions.bias.add_(1.0)  # a fresh head is random: it must not matter
    assert weights_fingerprint(headless) == fingerprint
    with torch.no_grad():
        dict(headless.named_parameters())["bert.encoder.layer.0.output.dense.bias"][0] += 1e-3
    assert weights_fingerprint(headless) != fingerprint


def test_a_file_that_is_not_a_delta_is_refused(tmp_path):
    file = tmp_path / "model.safetensors"
    save_file({"x": torch.zeros(2)}, str(file))
    with pytest.raises(ValueError, match="not a kecl delta"):
        read_delta_header(file)
    with pytest.raises(ValueError, match="rank must be at least 1"):
        make_delta(tiny_mlm(seed=0), tiny_mlm(seed=0), rank=0)
    with pytest.raises(ValueError, match="differ"):
        make_delta(tiny_mlm(seed=0), tiny_mlm(seed=0, layers=1), rank=2)


def test_a_change_spread_over_many_directions_is_kept_in_four_bits_within_half_a_step(tmp_path):
    base = tiny_mlm(seed=0)
    trained = trained_copy(base, scale=0.05)  # random: no few directions hold most of it
    tensors = make_delta(base, trained, rank=2, energy=0.95, dtype=torch.float32)
    name = "bert.embeddings.word_embeddings.weight"  # 30522 × 32
    assert tensors[name + ".diff_int4"].dtype == torch.uint8
    assert tensors[name + ".diff_int4"].shape == (30522, 16) and tensors[name + ".diff_scale"].shape == (30522, 1)
    file = tmp_path / "delta.safetensors"
    save_delta(file, tensors, weights_fingerprint(base), {})
    fresh = tiny_mlm(seed=0)
    apply_delta(fresh, file)
    got, old, want = (dict(m.named_parameters())[name].detach() for m in (fresh, base, trained))
    change = want - old
    half_step = change.abs().amax(dim=1, keepdim=True) / 14
    assert bool(((got - want).abs() <= half_step + 1e-6).all())
    assert float((got - want).abs().max()) > 0  # really quantised, not stored whole
    # with energy 0 the same change is stored as factors of rank 2, however little of it they keep
    assert name + ".lora_A" in make_delta(base, trained, rank=2, energy=0.0)
