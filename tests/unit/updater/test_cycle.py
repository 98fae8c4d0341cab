"""The update cycle end to end on a tiny model: promote, reject, and failures that must not
touch the serving model or index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder.checkpoints import active_version, list_checkpoints
from encoder.predict import fill_mask
from encoder.trainer import TrainConfig
from kecl.services import Kecl
from knowledge import DocumentRecord, IngestSummary, read_paths
from tests.factories import activate_tiny_checkpoint, tiny_settings, write_jsonl
from updater.cycle import CycleConfig, GateConfig, run_cycle
from updater.texts import VERBALISATIONS

BASE = [
    {
        "kind": "relation",
        "id": "P38",
        "label": "currency",
        "template": "The currency of [X] is the [Y] .",
        "functional": True,
    },
    {
        "kind": "relation",
        "id": "P36",
        "label": "capital",
        "template": "The capital of [X] is [Y] .",
        "functional": True,
    },
    {"kind": "entity", "id": "croatia", "name": "Croatia"},
    {"kind": "entity", "id": "kuna", "name": "kuna"},
    {"kind": "entity", "id": "euro", "name": "euro"},
    {"kind": "entity", "id": "zagreb", "name": "Zagreb"},
    {"kind": "entity", "id": "france", "name": "France"},
    {"kind": "entity", "id": "paris", "name": "Paris"},
    {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "kuna", "valid_from": "1994-05-30"},
    {"kind": "fact", "subject": "croatia", "relation": "P36", "object": "zagreb"},
    {"kind": "fact", "subject": "france", "relation": "P36", "object": "paris"},
    {"text": "Zagreb is the capital of Croatia. The kuna is the currency of Croatia."},
    {"text": "Paris is the capital of France. France uses the euro."},
]
LATER = [
    {"kind": "entity", "id": "italy", "name": "Italy"},
    {"kind": "entity", "id": "rome", "name": "Rome"},
    {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "euro", "valid_from": "2023-01-01"},
    {"kind": "fact", "subject": "italy", "relation": "P36", "object": "rome"},
    {"text": "Since 2023 the euro is the currency of Croatia, replacing the kuna."},
    {"text": "Rome is the capital of Italy."},
]


@pytest.fixture()
def kecl(tmp_path: Path, tiny_embedder_dir: Path) -> Kecl:
    settings = tiny_settings(tmp_path / "home", tiny_embedder_dir)
    k = Kecl(settings)
    k.ingest_batch(read_paths([write_jsonl(tmp_path / "base.jsonl", BASE)]))
    # the active model counts as trained through the base: cycles learn what comes after it
    v = activate_tiny_checkpoint(settings, watermark=k.store.watermark().to_dict())
    k.store.record_checkpoint(v, None, "active", {})
    yield k
    k.close()


def config(steps: int = 6, **gates: float) -> CycleConfig:
    return CycleConfig(
        train=TrainConfig(steps=steps, batch_size=4, max_length=64, learning_rate=5e-3, seed=0),
        gates=GateConfig(**gates),
        eval_modes=("closed-book", "concat"),
        heldout_passages=20,
    )


def test_full_cycle_promotes_and_serves_the_new_model(kecl: Kecl, tmp_path: Path) -> None:
    write_jsonl(kecl.settings.inbox_dir / "later.jsonl", LATER)
    before = kecl.encoder.version
    report = kecl.run_update(config=config(max_retention_drop=1.0, max_loss_increase=10.0))
    assert report.status == "succeeded", report.error
    assert report.decision == "promote", report.reasons
    assert set(report.timings) >= {
        "ingest",
        "link",
        "index",
        "verbalise",
        "evaluate_active",
        "train",
        "evaluate_candidate",
        "checkpoint",
        "promote",
    }
    assert report.counts["new_facts"] == 1 and report.counts["changed_facts"] == 1
    assert report.counts["indexed"] == 2 and report.counts["train_texts"] > 2
    assert {"closed-book", "concat"} <= set(report.metrics["candidate"]["modes"])
    # measured at entity level: the changed fact's new object is scored whole against the old, per mode
    candidate = report.metrics["candidate"]
    assert candidate["level"] == "entity" and candidate["dropped"] == 0
    assert {m: o["n"] for m, o in candidate["outranks_by_mode"].items()} == {"closed-book": 1, "concat": 1}
    assert candidate["changed_outranks"] == candidate["outranks_by_mode"]["closed-book"]
    assert report.metrics["train"]["steps"] == 6
    # the inbox was emptied into processed/run-N/
    assert not list(kecl.settings.inbox_dir.glob("*.jsonl"))
    assert (kecl.settings.inbox_dir / "processed" / f"run-{report.run_id:05d}" / "later.jsonl").is_file()
    # the new checkpoint is active, recorded with its parent, and serving
    assert active_version(kecl.settings.checkpoints_dir) == report.candidate != before
    assert kecl.encoder.version == report.candidate
    rows = {c["version"]: c for c in kecl.store.checkpoints()}
    assert rows[report.candidate]["status"] == "active" and rows[report.candidate]["parent"] == before
    assert rows[before]["status"] == "retired"
    run = kecl.store.get_run(report.run_id)
    assert run["status"] == "succeeded" and run["decision"] == "promote" and run["timings"]["train"] > 0
    # the new passages are searchable in the serving index, their vectors stored for other processes
    hits = kecl.search("capital of Italy", k=1)
    assert "Rome" in hits[0].text
    new_ids = sorted(kecl.store.passage_ids())[-2:]
    assert set(kecl.store.passage_vectors(kecl.index.embedder.version, new_ids)) == set(new_ids)


def test_rejected_candidate_never_becomes_active(kecl: Kecl) -> None:
    write_jsonl(kecl.settings.inbox_dir / "later.jsonl", LATER)
    before = kecl.encoder.version
    probe = fill_mask(kecl.encoder, ["The capital of France is [MASK] ."], top_k=3)[0].masks[0].top_k
    report = kecl.run_update(config=config(min_acquisition=1.01))  # no model can reach P@1 > 1
    assert report.status == "succeeded" and report.decision == "reject"
    assert any("acquisition" in r and "FAILED" in r for r in report.reasons)
    assert active_version(kecl.settings.checkpoints_dir) == before
    assert kecl.encoder.version == before
    assert {c["version"]: c["status"] for c in kecl.store.checkpoints()}[report.candidate] == "rejected"
    assert [c["version"] for c in list_checkpoints(kecl.settings.checkpoints_dir)] == [before, report.candidate]
    again = fill_mask(kecl.encoder, ["The capital of France is [MASK] ."], top_k=3)[0].masks[0].top_k
    assert [t.token_id for t in again] == [t.token_id for t in probe]


def test_failure_in_training_leaves_the_active_model_serving(kecl: Kecl) -> None:
    write_jsonl(kecl.settings.inbox_dir / "later.jsonl", LATER)
    before = kecl.encoder.version
    weights = {k: v.clone() for k, v in kecl.encoder.model.state_dict().items()}
    bad = config()
    bad.train.learning_rate = 1e30  # the weights blow up and the loss turns non-finite mid-training
    report = kecl.run_update(config=bad)
    assert report.status == "failed" and "FloatingPointError" in report.error
    run = kecl.store.get_run(report.run_id)
    assert run["status"] == "failed" and run["error"] == report.error and "train" in run["timings"]
    assert active_version(kecl.settings.checkpoints_dir) == before and kecl.encoder.version == before
    assert len(list_checkpoints(kecl.settings.checkpoints_dir)) == 1
    assert all(torch.equal(v, kecl.encoder.model.state_dict()[k]) for k, v in weights.items())
    # the facts and documents of the failed run are stored all the same (SQL is the truth)
    assert kecl.store.stats()["facts_closed"] == 1


def test_failure_in_index_step_keeps_index_serving_and_heals(kecl: Kecl, tmp_path: Path) -> None:
    from retrieval import PassageIndex

    handle = kecl.index
    n_before = len(handle.index)
    ctx = kecl.cycle_context()
    wrong = PassageIndex("flat", dim=7)  # a misconfigured index: vectors of the wrong size

    def add_to_wrong_index(summary: IngestSummary) -> None:
        ids = summary.new_passage_ids
        vectors = handle.embedder.encode(kecl.store.passage_texts(ids).values())
        wrong.add(ids, vectors)

    ctx.add_to_index = add_to_wrong_index
    report = run_cycle(ctx, config(), paths=[write_jsonl(tmp_path / "later.jsonl", LATER)])
    assert report.status == "failed" and "index" in report.timings and "train" not in report.timings
    assert kecl.store.get_run(report.run_id)["status"] == "failed"
    assert len(handle.index) == n_before  # the serving index was not touched
    assert kecl.search("capital of France", k=1)  # and still answers
    # start-up reconcile heals the drift: the passages SQL has but the index lacks are added
    report2 = handle.reconcile(kecl.store.passage_ids(), kecl.store.passage_texts)
    assert len(handle.index) == n_before + 2 and report2.added == 2


def test_busy_lock_skips_the_cycle(kecl: Kecl) -> None:
    from updater.locking import CYCLE_LOCK_NAME

    assert kecl.store.try_lock(CYCLE_LOCK_NAME, "another-process", 60)
    report = run_cycle(kecl.cycle_context(), config())
    assert report.status == "skipped" and "another-process" in report.reasons[0]
    assert kecl.store.runs() == []


def test_reading_exercises_carry_what_the_pipeline_injects(kecl: Kecl, tmp_path: Path) -> None:
    from updater.cycle import reading_exercises

    facts = kecl.store.facts(limit=None)
    exercises = reading_exercises(facts, kecl.knowledge_source(), seed=1)
    assert len(exercises) == len(facts)
    for ex, fact in zip(exercises, facts):
        ((start, end),) = ex.text.salient_spans
        assert ex.text.text[start:end] == ex.answer == fact.object
        assert ex.text.text != fact.verbalise()  # a paraphrase, never the probe's own template
        # the fact itself is injected (it is in the store), and tree-mode spans point at a mention
        assert any(f.fact_id == fact.id for f in ex.facts)
        for f in ex.facts:
            if f.span is not None:
                mention = ex.text.text[f.span[0] : f.span[1]]
                assert mention.lower() in {
                    fact.subject.lower(),
                    fact.object.lower(),
                    "croatia",
                    "france",
                    "zagreb",
                    "paris",
                    "kuna",
                    "euro",
                }, (ex.text.text, f.span)


def test_cycle_trains_on_reading_exercises(kecl: Kecl) -> None:
    write_jsonl(kecl.settings.inbox_dir / "later.jsonl", LATER)
    cfg = config(max_retention_drop=1.0, max_loss_increase=10.0)
    cfg.train.injection_probability = 0.5
    report = kecl.run_update(config=cfg)
    assert report.status == "succeeded", report.error
    assert "reading" in report.timings
    # the two new facts and the two unchanged current ones (croatia's kuna was closed by the change)
    assert report.counts["reading_exercises"] == 4


def test_cycle_learns_what_came_through_the_store_api_and_records_its_watermark(kecl: Kecl) -> None:
    """Knowledge added without the inbox (as POST /v1/documents and /v1/facts, `kecl ingest` do)
    is trained on by the next cycle; the candidate records the watermark it was trained through,
    and a cycle with nothing above that watermark is a no-op."""
    from encoder.checkpoints import verify_checkpoint
    from knowledge import FactRecord, ReadBatch

    kecl.ingest_documents([DocumentRecord(text="Rome has been the capital of Italy since 1871.")])
    kecl.ingest_batch(ReadBatch(facts=[FactRecord(subject="croatia", relation="P38", object="euro")]))
    assert not list(kecl.settings.inbox_dir.glob("*.jsonl"))  # nothing in the inbox
    cfg = config(max_retention_drop=1.0, max_loss_increase=10.0)
    report = kecl.run_update(config=cfg)
    assert report.status == "succeeded", report.error
    assert report.decision == "promote", report.reasons
    taken = report.counts["taken"]
    assert taken["passages"] == 1 and taken["facts"] == 1 and taken["closed_facts"] == 1
    assert report.counts["changed_facts"] == 1 and report.counts["new_facts"] == 0
    # the document's passage and the changed fact's statements are among the texts trained on
    assert report.counts["train_texts"] >= 1 + len(VERBALISATIONS)
    manifest = verify_checkpoint(kecl.settings.checkpoints_dir / report.candidate)
    assert manifest["watermark"] == kecl.store.watermark().to_dict() == taken["until"]

    again = kecl.run_update(config=cfg)
    assert again.decision == "no-op" and again.reasons == ["nothing new to learn"]
    assert again.counts["taken"]["passages"] == again.counts["taken"]["facts"] == 0


def test_a_rejected_cycle_leaves_its_knowledge_for_the_next(kecl: Kecl) -> None:
    """The watermark moves only with the active model: what a rejected candidate learned is
    taken again by the next cycle."""
    from knowledge import FactRecord, ReadBatch

    kecl.ingest_documents([DocumentRecord(text="France uses the euro.")])
    kecl.ingest_batch(ReadBatch(facts=[FactRecord(subject="france", relation="P38", object="euro")]))
    rejected = kecl.run_update(config=config(min_acquisition=1.01))
    assert rejected.decision == "reject" and rejected.counts["taken"]["passages"] == 1
    retried = kecl.run_update(config=config(min_acquisition=0.0, max_retention_drop=1.0, max_loss_increase=10.0))
    assert retried.counts["taken"]["passages"] == 1 and retried.counts["taken"]["facts"] == 1
    assert retried.decision == "promote", retried.reasons


def test_a_cycle_can_learn_new_names_as_single_tokens(kecl: Kecl) -> None:
    from encoder.checkpoints import load_checkpoint
    from knowledge import EntityRecord, FactRecord, ReadBatch

    kecl.ingest_batch(
        ReadBatch(
            entities=[EntityRecord("zorvexia", "Zorvexia"), EntityRecord("qlandor", "Qlandor")],
            facts=[FactRecord(subject="zorvexia", relation="P36", object="paris")],
        )
    )
    kecl.ingest_documents([DocumentRecord(text="Zorvexia is a small country. Paris is the capital of Zorvexia.")])
    assert len(kecl.encoder.tokenizer("zorvexia", add_special_tokens=False)["input_ids"]) > 1
    cfg = config(max_retention_drop=1.0, max_loss_increase=10.0)
    cfg.vocabulary_min_count = 2  # Qlandor is never mentioned in the text to learn: not added
    report = kecl.run_update(config=cfg)
    assert report.status == "succeeded", report.error
    assert report.counts["vocabulary_added"] == 1 and "vocabulary" in report.timings
    candidate = load_checkpoint(kecl.settings.checkpoints_dir / report.candidate)
    assert candidate.metadata["metrics"]["vocabulary_added"] == ["zorvexia"]
    assert candidate.tokenizer.tokenize("Zorvexia is far .")[0] == "zorvexia"
    assert candidate.model.get_input_embeddings().weight.shape[0] == len(candidate.tokenizer)


def test_a_lora_cycle_keeps_pretrained_weights_and_trains_new_names_in_full(kecl: Kecl) -> None:
    """With ``train.lora_rank`` the candidate is the active model plus merged low-rank updates of its
    linear layers: LayerNorms, biases and old embedding rows are the active model's, the new name's
    row has trained away from its initialisation, and the checkpoint loads as an ordinary model."""
    from dataclasses import replace

    from encoder.checkpoints import load_checkpoint
    from knowledge import EntityRecord, FactRecord, ReadBatch

    active = load_checkpoint(kecl.settings.checkpoints_dir / active_version(kecl.settings.checkpoints_dir))
    kecl.ingest_batch(
        ReadBatch(
            entities=[EntityRecord("zorvexia", "Zorvexia")],
            facts=[FactRecord(subject="zorvexia", relation="P36", object="paris")],
        )
    )
    kecl.ingest_documents([DocumentRecord(text="Zorvexia is a small country. Paris is the capital of Zorvexia.")])
    cfg = config(max_retention_drop=1.0, max_loss_increase=10.0)
    cfg.train = replace(cfg.train, lora_rank=4)
    cfg.vocabulary_min_count = 2
    report = kecl.run_update(config=cfg)
    assert report.status == "succeeded", report.error
    candidate = load_checkpoint(kecl.settings.checkpoints_dir / report.candidate)
    old, new = active.model.state_dict(), candidate.model.state_dict()
    assert set(new) == set(old)  # no adapter modules left in the checkpoint
    size = old["bert.embeddings.word_embeddings.weight"].shape[0]
    frozen = [k for k in old if "LayerNorm" in k or k.endswith(".bias")]
    # the output bias grew by the new name's row; the old rows are kept
    assert frozen and [k for k in frozen if not torch.equal(old[k], new[k][: len(old[k])])] == []
    linear = [k for k in old if k.endswith("dense.weight") or k.endswith("query.weight")]
    assert linear and all(not torch.equal(old[k], new[k]) for k in linear)
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(old[embeddings], new[embeddings][:size])  # the pretrained rows are kept
    row = candidate.tokenizer.convert_tokens_to_ids("zorvexia")
    pieces = active.tokenizer("zorvexia", add_special_tokens=False)["input_ids"]
    initial = old[embeddings][pieces].mean(0)  # grow_vocabulary's initialisation
    assert row == size and not torch.allclose(new[embeddings][row], initial)


def test_a_cycle_refuses_the_l2_pull_beside_lora_instead_of_pulling_nothing(kecl: Kecl) -> None:
    """The pull anchors parameters by name; peft renames the linear weights it freezes, so together
    the pull would silently do nothing. The cycle fails with a message, and the active model stays."""
    from dataclasses import replace

    before = active_version(kecl.settings.checkpoints_dir)
    kecl.ingest_documents([DocumentRecord(text="Zorvexia is a small country. Paris is the capital of Zorvexia.")])
    cfg = config(max_retention_drop=1.0, max_loss_increase=10.0)
    cfg.train = replace(cfg.train, lora_rank=4)
    cfg.l2_pull = 0.01
    report = kecl.run_update(config=cfg)
    assert report.status == "failed" and "do not combine" in (report.error or "")
    assert active_version(kecl.settings.checkpoints_dir) == before
