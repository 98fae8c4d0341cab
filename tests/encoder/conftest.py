import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from encoder.bundle import MLMBundle, load_tokenizer
from encoder.model import resolve_model_path


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(resolve_model_path(None))


def make_tiny(tokenizer, attn="sdpa", seed=0, dropout=0.1) -> MLMBundle:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    config._attn_implementation = attn
    return MLMBundle(BertForMaskedLM(config).eval(), tokenizer, None, {"name_or_path": "tiny"})


@pytest.fixture
def tiny(tokenizer):
    return make_tiny(tokenizer)
