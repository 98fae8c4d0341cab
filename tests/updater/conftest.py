"""Fixtures for updater tests: the packaged tokenizer and tiny random BERTs (seconds, not minutes)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from encoder.model import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(None), use_fast=True)
