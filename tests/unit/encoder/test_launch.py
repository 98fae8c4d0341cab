"""Checks a distributed run makes before it starts anything: the number of processes, the batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from encoder import TrainConfig, check_nproc, train_mlm_distributed
from kecl.cli import app
from tests.factories import tiny_bundle


@pytest.mark.parametrize(
    ("nproc", "message"),
    [(0, "at least one"), (-2, "at least one"), (1.5, "whole number"), ("2", "whole number"), (True, "whole number")],
)
def test_bad_nproc_values_are_refused_with_the_reason(nproc, message):
    with pytest.raises(ValueError, match=message):
        check_nproc(nproc, torch.device("cpu"))


def test_more_processes_than_cores_or_gpus_is_refused():
    cores = os.cpu_count() or 1
    assert check_nproc(cores, torch.device("cpu")) == cores
    with pytest.raises(ValueError, match="CPU cores"):
        check_nproc(cores + 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="GPU"):
        check_nproc(torch.cuda.device_count() + 1, torch.device("cuda"))


def test_a_batch_smaller_than_the_processes_is_refused_before_anything_starts(tokenizer):
    bundle = tiny_bundle(tokenizer)
    with pytest.raises(ValueError, match="batch_size=1 cannot be shared"):
        train_mlm_distributed(bundle, ["some text here"], config=TrainConfig(batch_size=1), nproc=2)


def test_kecl_train_refuses_a_bad_nproc_before_reading_or_loading(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KECL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing.txt"), "--nproc", "0"])
    assert result.exit_code != 0
    assert "at least one training process" in result.output and "--nproc" in result.output
    monkeypatch.setenv("KECL_TRAIN__NPROC", "0")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing.txt")])
    # the settings' own validation, reported as the CLI's one-line error
    assert result.exit_code == 1 and "train.nproc" in result.output
