"""The update cycle's training stage on two gloo processes (torch.distributed.run): the cycle
promotes as with one process, evaluation and gates in-process. (That two processes train as one
on the same data is tested in test_distributed_training; two homes sample their replay apart.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from encoder.trainer import TrainConfig
from kecl.services import Kecl
from knowledge import read_paths
from tests.factories import activate_tiny_checkpoint, tiny_settings, write_jsonl
from tests.unit.updater.test_cycle import BASE, LATER
from updater.cycle import CycleConfig, GateConfig

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")


def _cycle(tmp_path: Path, embedder: Path, nproc: int) -> dict:
    settings = tiny_settings(tmp_path / f"home{nproc}", embedder)
    k = Kecl(settings)
    try:
        version = activate_tiny_checkpoint(settings)
        k.store.record_checkpoint(version, None, "active", {})
        k.ingest_batch(read_paths([write_jsonl(tmp_path / "base.jsonl", BASE)]))
        write_jsonl(settings.inbox_dir / "later.jsonl", LATER)
        config = CycleConfig(
            # no dropout: each rank draws its own dropout masks
            train=TrainConfig(
                steps=4,
                batch_size=4,
                max_length=64,
                learning_rate=5e-3,
                bf16=False,
                hidden_dropout=0.0,
                attention_dropout=0.0,
            ),
            gates=GateConfig(max_retention_drop=1.0, max_loss_increase=10.0),
            heldout_passages=20,
            train_nproc=nproc,
            work_dir=settings.runs_dir,
        )
        report = k.run_update(config=config)
        assert report.status == "succeeded", report.error
        assert report.decision == "promote", report.reasons
        assert k.encoder.version != version  # the candidate serves
        return report.metrics["train"]
    finally:
        k.close()


def test_two_process_training_stage_promotes_like_one(tmp_path: Path, tiny_embedder_dir: Path) -> None:
    one = _cycle(tmp_path, tiny_embedder_dir, 1)
    two = _cycle(tmp_path, tiny_embedder_dir, 2)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["steps"] == one["steps"] == 4
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=0.05)  # both trained, same scale
