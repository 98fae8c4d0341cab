"""Data-parallel training through torch.distributed.run (real worker processes, gloo on CPU):
two processes train as one, a run stopped by rank 0 resumes under DDP to the same weights, a
failing check stops the workers and leaves the model as it was, and `kecl train --nproc` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from encoder import TrainConfig, train_mlm, train_mlm_distributed
from encoder.reading_corpus import reading_examples
from encoder.train_state import STATE_FILE
from tests.factories import tiny_bundle

pytestmark = pytest.mark.skipif(os.cpu_count() is None or os.cpu_count() < 2, reason="needs 2 CPU cores")

DOCS = [
    "The capital of Freedonia is Zenda, a city on the river.",
    "Rivers run to the sea and the sea is deep and blue.",
    "A small town has a market, a school and a church.",
    "The weather in spring is mild and the days grow long.",
    "Trains leave the old station every hour for the coast.",
] * 4


def _config(**overrides) -> TrainConfig:  # type: ignore[no-untyped-def]
    # No dropout: each rank draws its own dropout masks, so only dropout-free runs match exactly.
    base = dict(
        steps=5, batch_size=6, max_length=32, bf16=False, attention_dropout=0.0, hidden_dropout=0.0, learning_rate=1e-3
    )
    return TrainConfig(**{**base, **overrides})


def _max_difference(a, b) -> float:  # type: ignore[no-untyped-def]
    return max((p - q).abs().max().item() for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def test_two_gloo_processes_train_as_one_on_the_same_global_batch(tokenizer, tmp_path):
    reading = reading_examples(12, seed=2, tokenizer=tokenizer)
    config = _config(grad_accum=2, injection_probability=0.3, packing="packed")
    one, two = tiny_bundle(tokenizer), tiny_bundle(tokenizer)
    before = [p.detach().clone() for p in two.model.parameters()]
    single = train_mlm(one, DOCS, DOCS[:3], config=config, progress=False, reading=reading)
    double = train_mlm_distributed(two, DOCS, DOCS[:3], config=config, nproc=2, reading=reading, work_dir=tmp_path)
    assert double.metrics["world_size"] == 2 and single.metrics["world_size"] == 1
    assert double.steps == single.steps == 5 and double.tokens == single.tokens
    assert double.losses == pytest.approx(single.losses, rel=1e-5)
    assert _max_difference(one, two) < 1e-5
    moved = max((p - q).abs().max().item() for p, q in zip(two.model.parameters(), before, strict=True))
    assert moved > 1e-3  # the weights came back from the workers
    assert list(tmp_path.iterdir()) == []  # the job folder is cleaned up


def test_a_run_stopped_by_rank_0_resumes_under_ddp_to_the_uninterrupted_weights(tokenizer, tmp_path):
    state = tmp_path / "state"
    log = tmp_path / "train.jsonl"
    # max_seconds=0: rank 0 stops every rank after the first step, whose state is saved.
    stopped = train_mlm_distributed(
        tiny_bundle(tokenizer),
        DOCS,
        config=_config(state_dir=state, save_every=1, max_seconds=0.0, log_path=log, log_every=1),
        nproc=2,
    )
    assert stopped.steps == 1 and (state / STATE_FILE).is_file()
    resumed_bundle = tiny_bundle(tokenizer, seed=7)  # other weights: the state's must be loaded
    resumed = train_mlm_distributed(
        resumed_bundle, DOCS, config=_config(state_dir=state, log_path=log, log_every=1), nproc=2, resume_from=state
    )
    assert resumed.steps == 5 and len(resumed.losses) == 4
    whole_bundle = tiny_bundle(tokenizer)
    whole = train_mlm(whole_bundle, DOCS, config=_config(), progress=False)
    assert stopped.losses + resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    assert _max_difference(resumed_bundle, whole_bundle) < 1e-5
    steps_logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps_logged == [1, 2, 3, 4, 5]  # one writer (rank 0): each step once


def test_a_failing_check_stops_the_workers_and_leaves_the_model(tokenizer):
    bundle = tiny_bundle(tokenizer)
    before = [p.detach().clone() for p in bundle.model.parameters()]

    def lost() -> None:
        raise RuntimeError("lock lost")

    with pytest.raises(RuntimeError, match="lock lost"):
        train_mlm_distributed(bundle, DOCS, config=_config(steps=500), nproc=2, check=lost)
    assert all(torch.equal(p, q) for p, q in zip(bundle.model.parameters(), before, strict=True))


def test_kecl_train_with_nproc_2_saves_an_active_checkpoint(tmp_path):
    from kecl.settings import Settings
    from tests.factories import activate_tiny_checkpoint

    home = tmp_path / "home"
    first = activate_tiny_checkpoint(Settings(home=home))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(DOCS), encoding="utf-8")
    env = {**os.environ, "KECL_HOME": str(home), "KECL_MODEL__BF16": "false", "KECL_TRAIN__BATCH_SIZE": "4"}
    kecl = [sys.executable, "-m", "kecl.cli"]
    bad = subprocess.run([*kecl, "train", str(corpus), "--nproc", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "at least one training process" in bad.stdout + bad.stderr
    done = subprocess.run(
        [*kecl, "train", str(corpus), "--steps", "3", "--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "training on 2 processes" in done.stdout and "(active)" in done.stdout
    from encoder import active_version, load_active

    version = active_version(home / "checkpoints")
    assert version is not None and version != first and version in done.stdout
    trained = load_active(home / "checkpoints", device="cpu")
    assert trained is not None and trained.metadata.get("parent") == first
