"""The real packaged MiniLM: its embeddings rank a paraphrase first, the encoder's SDPA and eager
attention agree on injected inputs (the 4-D masks reach both backends in their form), and the
adaptation shipped for it makes a fresh home's first checkpoint without training."""

from __future__ import annotations

import numpy as np
import pytest

from encoder import ADAPT_RECIPE, adaptation_data, load_checkpoint
from encoder.injection import InjectedFact, build_injected_inputs
from encoder.metrics import masked_token_accuracy
from encoder.predict import fill_mask_encoded
from kecl.home import resolve_model_path
from kecl.settings import DEFAULT_MODEL, Settings
from kecl.wiring import ensure_default_checkpoint
from retrieval import Embedder


def test_packaged_minilm_ranks_paraphrase_first():
    embedder = Embedder(resolve_model_path(DEFAULT_MODEL), device="cpu", name=DEFAULT_MODEL)
    assert embedder.dim == 384 and embedder.version.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    docs = embedder.encode(
        [
            "Dante Alighieri was born in Florence in 1265.",
            "The Nile is the longest river in Africa.",
            "Bitcoin is a cryptocurrency.",
        ]
    )
    query = embedder.encode(["Where was Dante born?"])
    assert int(np.argmax(docs @ query[0])) == 0


def test_real_packaged_model_sdpa_matches_eager_on_injected_inputs(tokenizer):
    from encoder.model import load_mlm, set_attention

    bundle = load_mlm(resolve_model_path(DEFAULT_MODEL), device="cpu", attn_implementation="sdpa")
    text = "Tim Cook is the CEO of [MASK] ."
    facts = [[InjectedFact("Tim Cook CEO Apple", "CEO Apple", (0, 8))]]
    for strategy in ("concat", "tree"):
        x = build_injected_inputs(bundle.tokenizer, [text, "Paris is in [MASK] ."], facts + [[]], strategy=strategy)
        set_attention(bundle, "sdpa")
        a = fill_mask_encoded(bundle, x.to_dict(), top_k=5)
        set_attention(bundle, "eager")
        b = fill_mask_encoded(bundle, x.to_dict(), top_k=5)
        for ra, rb in zip(a, b):
            assert [t.token_id for t in ra.masks[0].top_k] == [t.token_id for t in rb.masks[0].top_k]
            assert ra.masks[0].top_k[0].score == pytest.approx(rb.masks[0].top_k[0].score, rel=1e-3, abs=1e-5)


def test_a_fresh_home_gets_the_shipped_adaptation_of_the_packaged_model(tmp_path):
    """The first run applies the adaptation shipped with kecl instead of training for 10-20 minutes;
    the result predicts held-out words as well as it did when the delta was made, and is not cached
    (applying it again is as quick as copying it)."""
    settings = Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache")
    version = ensure_default_checkpoint(settings)
    bundle = load_checkpoint(settings.checkpoints_dir / version, device="cpu")
    metrics = bundle.metadata["metrics"]
    assert metrics["kind"] == "default-adaptation" and metrics["recipe"] == ADAPT_RECIPE
    assert metrics["shipped"]["file"].endswith(".safetensors"), metrics
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    top1 = masked_token_accuracy(bundle, adaptation_data(bundle.tokenizer, reading=False).heldout)
    # the interpreter's own docstrings are part of the held-out text, so another Python moves it a
    # little; an untrained head predicts almost nothing (top-1 ~0.0), the trained adaptation 0.47-0.48
    assert top1 >= 0.45 and abs(top1 - metrics["heldout_top1"]) < 0.03, (top1, metrics["heldout_top1"])
