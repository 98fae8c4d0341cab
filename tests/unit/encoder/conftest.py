"""Encoder tests: a tiny random MLM with the packaged tokenizer (``tokenizer`` is shared)."""

import pytest

from encoder import MLMBundle
from tests.factories import tiny_bundle


@pytest.fixture
def tiny(tokenizer) -> MLMBundle:  # type: ignore[no-untyped-def]
    return tiny_bundle(tokenizer)
