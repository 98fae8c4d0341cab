"""The first-run adaptation, on a tiny model and a few steps (the real run takes minutes)."""

from dataclasses import replace

import pytest
import torch

from encoder import load_mlm, make_delta, save_delta, weights_fingerprint
from encoder.checkpoints import active_version, load_checkpoint
from encoder.default import ADAPT_PHASES, ADAPT_RECIPE, adapt_default, apply_shipped_adaptation
from tests.factories import tiny_bundle


@pytest.fixture()
def tiny_model_dir(tokenizer, tmp_path):
    """A tiny random MLM saved as a base model folder."""
    tiny = tiny_bundle(tokenizer)
    tiny.model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def adapt_tiny(model_dir, checkpoints, phases, eval_every=2, **kw):
    """``adapt_default`` on the tiny model, quickly: small held-out sets, on the CPU, quiet."""
    return adapt_default(
        checkpoints,
        str(model_dir),
        phases=phases,
        eval_every=eval_every,
        heldout_passages=20,
        progress=False,
        device="cpu",
        **kw,
    )


def test_adapt_default_saves_an_active_checkpoint_with_its_curve(tiny_model_dir, tmp_path):
    phases = [
        replace(c, steps=4, batch_size=4, max_length=32, injection_max_length=64, bf16=False) for c in ADAPT_PHASES
    ]
    version, _ = adapt_tiny(tiny_model_dir, tmp_path / "ckpts", phases)
    assert active_version(tmp_path / "ckpts") == version
    metrics = load_checkpoint(tmp_path / "ckpts" / version).metadata["metrics"]
    # one curve across both phases: plain MLM, then reading exercises
    assert [p["step"] for p in metrics["curve"]] == [0, 2, 4, 6, 8] and metrics["steps"] == 8
    assert [p["reading"] for p in metrics["phases"]] == [False, True]
    assert metrics["heldout_top1"] == metrics["phases"][-1]["heldout_top1"]
    assert metrics["train_seconds"] == pytest.approx(sum(p["train_seconds"] for p in metrics["phases"]), abs=0.2)
    by_source = metrics["heldout_top1_by_source"]
    assert set(by_source) <= {"everyday", "docstrings"} and by_source
    assert all(0.0 <= v <= 1.0 for v in by_source.values())
    assert set(metrics["reading_top1"]) == {"closed-book", "concat", "tree"}
    again, _ = adapt_default(tmp_path / "ckpts", str(tiny_model_dir), phases=phases, progress=False)
    assert again == version  # an active checkpoint is reused, not trained again


def test_adapt_default_refuses_no_phases(tmp_path):
    with pytest.raises(ValueError, match="no phases"):
        adapt_default(tmp_path / "ckpts", str(tmp_path / "tiny"), phases=[], progress=False)


def test_adapt_default_trains_in_float32_when_bf16_is_off(tiny_model_dir, tmp_path):
    """``model.bf16 = false`` holds for the first-run adaptation too (it took bf16 wherever native)."""
    phases = [replace(c, steps=2, batch_size=2, max_length=32, injection_max_length=64) for c in ADAPT_PHASES]
    assert all(c.bf16 is None for c in phases)  # "where native" by default
    version, _ = adapt_tiny(tiny_model_dir, tmp_path / "ckpts", phases, bf16=False)
    assert load_checkpoint(tmp_path / "ckpts" / version).metadata["metrics"]["bf16"] is False


def test_adapt_default_measures_only_each_phase_by_default(tiny_model_dir, tmp_path):
    """The product's first run draws no learning curve (``kecl init`` waits for every point of it):
    each phase is still measured on all held-out passages."""
    phases = [replace(c, steps=2, batch_size=2, max_length=32, injection_max_length=64) for c in ADAPT_PHASES]
    version, _ = adapt_tiny(tiny_model_dir, tmp_path / "ckpts", phases, eval_every=None)
    metrics = load_checkpoint(tmp_path / "ckpts" / version).metadata["metrics"]
    assert metrics["curve"] == []
    assert [0.0 <= p["heldout_top1"] <= 1.0 for p in metrics["phases"]] == [True, True]


def test_a_shipped_adaptation_stands_in_for_training_only_for_its_own_weights_and_recipe(tiny_model_dir, tmp_path):
    phases = [replace(c, steps=2, batch_size=2, max_length=32, injection_max_length=64) for c in ADAPT_PHASES]
    _, trained = adapt_tiny(tiny_model_dir, tmp_path / "made", phases, eval_every=None)
    base = load_mlm(str(tiny_model_dir), device="cpu")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "a-broken.safetensors").write_bytes(b"not a delta")  # skipped with a warning, not fatal
    info = {"recipe": ADAPT_RECIPE, "rank": 8, "metrics": {"heldout_top1": 0.5}}
    delta = make_delta(base.model, trained.model, rank=10_000, quantise=False)
    save_delta(shipped / "tiny.safetensors", delta, weights_fingerprint(base.model), info)

    version, bundle = adapt_default(
        tmp_path / "ckpts", str(tiny_model_dir), progress=False, device="cpu", shipped_dir=shipped
    )
    assert active_version(tmp_path / "ckpts") == version
    metrics = load_checkpoint(tmp_path / "ckpts" / version).metadata["metrics"]
    assert metrics["kind"] == "default-adaptation" and metrics["recipe"] == ADAPT_RECIPE
    assert metrics["heldout_top1"] == 0.5  # as measured when the delta was made
    assert metrics["shipped"] == {"recipe": ADAPT_RECIPE, "rank": 8, "file": "tiny.safetensors"}
    want = dict(trained.model.named_parameters())
    for name, value in bundle.model.named_parameters():  # the trained weights, not a new training run
        torch.testing.assert_close(value, want[name], rtol=0, atol=2e-3)

    other = tiny_bundle(seed=5)
    assert apply_shipped_adaptation(other, shipped) is None  # other pretrained weights: trained as before
    save_delta(
        shipped / "tiny.safetensors", delta, weights_fingerprint(base.model), {**info, "recipe": ADAPT_RECIPE + 1}
    )
    fresh = load_mlm(str(tiny_model_dir), device="cpu")
    assert apply_shipped_adaptation(fresh, shipped) is None  # another recipe's result is not this one's
