"""The masked-LM encoder: load a pretrained BERT, build one from scratch, grow its vocabulary."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from encoder.bundle import MODEL_LOAD_LOCK, MLMBundle, load_tokenizer, move_to, resolve_device
from encoder.checkpoints import MANIFEST, load_checkpoint

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class ScratchConfig:
    """Size of a BERT trained from scratch (``new_mlm_from_scratch``)."""

    vocab_size: int = 8000
    num_hidden_layers: int = 4
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int | None = None  # default 4 × hidden_size
    max_length: int = 128
    min_frequency: int = 2
    lowercase: bool = True


def load_mlm(
    name_or_path: str,
    device: str | torch.device = "auto",
    attn_implementation: str = "sdpa",
    *,
    name: str | None = None,
) -> MLMBundle:
    """Load a ``BertForMaskedLM`` and its fast tokenizer.

    ``name_or_path``: a Hugging Face id, a local folder or a kecl checkpoint folder (the caller
    resolves short names to paths). ``name``: how the model is named in its metadata (default:
    ``name_or_path``), e.g. the Hugging Face id of a local copy. A BERT encoder without an MLM head
    (MiniLM ships as a bare ``BertModel``) gets a fresh head whose decoder is tied to the word
    embeddings. Raises ``ValueError`` if the model is not BERT-like, ``FileNotFoundError``/``OSError``
    if it cannot be found.
    """
    path = str(name_or_path)
    if Path(path, MANIFEST).is_file():
        return load_checkpoint(path, device=device, attn_implementation=attn_implementation)
    config = BertConfig.from_pretrained(path)
    if config.model_type != "bert":
        raise ValueError(f"{name_or_path!r} is a {config.model_type!r} model; kecl's encoder expects BERT")
    config.tie_word_embeddings = True
    # The "newly initialised weights" warning is expected for a bare encoder: we say it once, clearly.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with MODEL_LOAD_LOCK:
            loaded = BertForMaskedLM.from_pretrained(
                path, config=config, attn_implementation=attn_implementation, output_loading_info=True
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    # from_pretrained is annotated as returning the model alone; output_loading_info=True makes it
    # (model, info), and info's values are lists or sets depending on the transformers version.
    model, info = cast(tuple[BertForMaskedLM, dict[str, Any]], loaded)
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("cls.")]
    if missing:
        raise ValueError(f"{path}: encoder weights missing from the checkpoint: {missing[:5]}")
    if any(k.startswith("cls.") for k in info.get("missing_keys", [])):
        log.info("%s has no MLM head: initialised one, decoder tied to the word embeddings", path)
    tokenizer = load_tokenizer(path)
    move_to(model, resolve_device(device))
    model.eval()
    return MLMBundle(model, tokenizer, None, {"name_or_path": name or path})


def new_mlm_from_scratch(
    corpus_texts: Iterable[str],
    config: ScratchConfig | None = None,
    device: str | torch.device = "auto",
    attn_implementation: str = "sdpa",
) -> MLMBundle:
    """Train a WordPiece tokenizer on ``corpus_texts`` and build a randomly initialised BERT.

    Returns an untrained bundle (train it with ``train_mlm``). Raises ``ValueError`` on an empty
    corpus.
    """
    config = config or ScratchConfig()
    texts = [t for t in corpus_texts if t and t.strip()]
    if not texts:
        raise ValueError("new_mlm_from_scratch: the corpus is empty; a tokenizer needs text to learn from")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=config.lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=config.vocab_size, min_frequency=config.min_frequency, special_tokens=SPECIAL_TOKENS
    )
    backend.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    backend.decoder = decoders.WordPiece()
    # transformers 5 keeps BertTokenizerFast as a lazily resolved alias of BertTokenizer, outside its
    # typed exports (transformers 4 has it as a class of its own)
    tokenizer = transformers.BertTokenizerFast(  # type: ignore[attr-defined]
        tokenizer_object=backend,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=config.lowercase,
        model_max_length=config.max_length,
    )
    bert_config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size or 4 * config.hidden_size,
        max_position_embeddings=max(config.max_length, 32),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    bert_config._attn_implementation = attn_implementation
    model = BertForMaskedLM(bert_config)
    move_to(model, resolve_device(device))
    model.eval()
    return MLMBundle(model, tokenizer, None, {"name_or_path": "scratch", "scratch_config": vars(config)})


def set_attention(bundle: MLMBundle, attn_implementation: str) -> None:
    """Switch the attention backend (``"sdpa"`` or ``"eager"``) in place; weights are unchanged."""
    bundle.model.set_attn_implementation(attn_implementation)


@contextlib.contextmanager
def attention_implementation(model: PreTrainedModel, implementation: str) -> Iterator[None]:
    """The model's attention backend switched to ``implementation`` inside, the previous one restored
    afterwards (weights are unchanged; a backend only computes attention differently)."""
    previous = model.config._attn_implementation
    if implementation == previous:
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@contextlib.contextmanager
def dropout_probabilities(model: torch.nn.Module, attention: float | None, hidden: float | None) -> Iterator[None]:
    """Inside, every self-attention module drops attention probabilities at ``attention`` and every
    other dropout (hidden states) at ``hidden`` (``None``: leave that kind as it is); the model's
    own probabilities are restored afterwards."""
    changed = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Dropout):
            continue
        p = attention if name.endswith("attention.self.dropout") else hidden
        if p is not None:
            changed.append((module, module.p))
            module.p = p
    try:
        yield
    finally:
        for dropout, old in changed:
            dropout.p = old


def grow_vocabulary(bundle: MLMBundle, words: Iterable[str]) -> list[str]:
    """Add whole words (entity names) as single tokens; returns the tokens actually added.

    Words the tokenizer already keeps as one token are skipped. The embedding matrix (and the tied
    decoder) is resized and each new row is the mean of the word's old sub-word embeddings, its
    output bias the mean of their biases, so the model starts from what it knew about the pieces.
    Rows of existing tokens are untouched, so old inputs give exactly the old predictions.
    """
    tokenizer, model = bundle.tokenizer, bundle.model
    lowercase = tokenizer.tokenize("A") == ["a"]
    pieces: dict[str, list[int]] = {}
    for word in words:
        token = word.strip().lower() if lowercase else word.strip()
        if not token or token in pieces:
            continue
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) <= 1 or token in tokenizer.get_vocab():
            continue
        pieces[token] = ids
    if not pieces:
        return []
    added = tokenizer.add_tokens([AddedToken(t, single_word=True, normalized=True) for t in pieces])
    if added != len(pieces):
        log.warning("grow_vocabulary: asked for %d tokens, tokenizer added %d", len(pieces), added)
    old_size = _input_embedding(model).weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embeddings = _input_embedding(model).weight
    bias = model.cls.predictions.bias
    with torch.no_grad():
        for token, ids in pieces.items():
            # annotated ``int | list[int]`` for either argument; one token gives one id
            new_id = cast(int, tokenizer.convert_tokens_to_ids(token))
            if new_id < old_size:
                continue
            index = torch.tensor(ids, device=embeddings.device)
            embeddings[new_id] = embeddings[index].mean(0)
            bias[new_id] = bias[index].mean()
    model.tie_weights()
    log.info("grow_vocabulary: added %d tokens (vocab %d → %d)", len(pieces), old_size, len(tokenizer))
    return list(pieces)


def _input_embedding(model: BertForMaskedLM) -> torch.nn.Embedding:
    """The word embedding table (transformers annotates it as any module)."""
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, torch.nn.Embedding):
        raise TypeError(f"grow_vocabulary: expected an nn.Embedding word table, got {type(embedding).__name__}")
    return embedding


def num_threads_hint() -> int:
    """CPU threads torch uses (for logs)."""
    return torch.get_num_threads() or os.cpu_count() or 1
