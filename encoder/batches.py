"""The training batches: which rows a step draws, and how they are masked.

A step's batch is either plain text (blocks of the new stream mixed with the replay stream, masked
as in BERT) or, with ``TrainConfig.injection_probability``, a batch of reading exercises with
their knowledge injected and only the answer masked. Everything about the batch of draw ``d`` —
its rows, which kind it is, its masking — comes from ``d`` and the seed alone, so a resumed run
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from encoder.block_cache import cached_blocks
from encoder.injection import Strategy, injected_training_batch
from encoder.masking import mask_tokens
from encoder.packing import Blocks, TrainText, block_attention_mask
from encoder.reading_corpus import ReadingExample
from encoder.train_config import TrainConfig

log = logging.getLogger(__name__)

_MIXED: tuple[Strategy, Strategy] = ("concat", "tree")
"""The layouts an injected step of ``injection_strategy="mixed"`` picks from."""


def epoch_rows(n: int, per_step: int, seed: int, step: int) -> list[int]:
    """Rows ``step * per_step …`` of a stream that visits ``0..n-1`` in a fresh seeded order each epoch."""
    start = step * per_step
    index: list[int] = []
    while len(index) < per_step:
        epoch, offset = divmod(start + len(index), n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        index.extend(order[offset : offset + per_step - len(index)].tolist())
    return index


class Stream:
    """Cycles through blocks in a seeded order; the rows for step ``s`` depend only on ``(seed, s)``."""

    def __init__(self, blocks: Blocks, per_step: int, seed: int) -> None:
        self.blocks, self.per_step, self.seed = blocks, per_step, seed

    def rows(self, step: int) -> Blocks:
        """The blocks drawn at ``step``."""
        return self.blocks.select(torch.tensor(epoch_rows(len(self.blocks), self.per_step, self.seed, step)))


@dataclass
class Streams:
    """What the steps draw from: the plain-text streams (new, then replay when given, each with its
    share of a batch), the reading exercises, and the chance that a step reads instead (0 without
    exercises). ``new_blocks`` / ``replay_blocks`` count the packed blocks of each stream."""

    plain: list[Stream]
    reading: Sequence[ReadingExample]
    injection_probability: float
    new_blocks: int
    replay_blocks: int


@dataclass
class StepBatch:
    """One micro-batch on the device: the model's inputs with ``labels`` (a plain batch's
    ``attention_mask`` is ``None`` when its blocks need none), the real (non-padding) tokens in it,
    for throughput, and next-sentence labels (``None``: no NSP in this batch)."""

    tensors: dict[str, torch.Tensor | None]
    tokens: int
    nsp_labels: torch.Tensor | None = None


def prepare_streams(
    tokenizer: PreTrainedTokenizerFast,
    new: Sequence[TrainText],
    replay: Sequence[TrainText],
    reading: Sequence[ReadingExample],
    config: TrainConfig,
) -> Streams:
    """Tokenise and pack ``new`` and ``replay`` into blocks (read from ``config.block_cache_dir``
    when prepared before), each stream with its share of a batch, and keep the reading exercises a step may train on instead.

    Returns :class:`Streams`. Raises ``ValueError`` if ``new`` holds no trainable text.
    """

    def blocks(texts: Sequence[TrainText]) -> Blocks:
        built, hit = cached_blocks(
            config.block_cache_dir, tokenizer, texts, config.max_length, config.packing, config.whole_word_mask
        )
        if config.block_cache_dir is not None:
            log.info("blocks of %d texts: %s", len(texts), "from the cache" if hit else "prepared and cached")
        return built

    new_blocks = blocks(new)
    if len(new_blocks) == 0:
        raise ValueError("train_mlm: no trainable text in 'new' (empty or whitespace only)")
    replay_blocks = blocks(replay) if replay else None
    n_replay = round(config.batch_size * config.replay_ratio) if replay_blocks is not None and len(replay_blocks) else 0
    plain = [Stream(new_blocks, config.batch_size - n_replay, config.seed)]
    if replay_blocks is not None and n_replay:
        plain.append(Stream(replay_blocks, n_replay, config.seed + 1))
    if config.injection_probability > 0 and not reading:  # e.g. `kecl train` on plain files: expected
        log.debug(
            "injection_probability=%.2f without reading exercises: every step is closed-book",
            config.injection_probability,
        )
    return Streams(
        plain=plain,
        reading=reading,
        injection_probability=config.injection_probability if reading else 0.0,
        new_blocks=len(new_blocks),
        replay_blocks=len(replay_blocks) if replay_blocks is not None else 0,
    )


def draw_batch(
    streams: Streams,
    draw: int,
    gen: torch.Generator,
    tokenizer: PreTrainedTokenizerFast,
    config: TrainConfig,
    nsp: bool,
    attn: str,
    device: torch.device,
) -> StepBatch:
    """The micro-batch of ``draw``: reading exercises with probability ``streams.injection_probability``,
    else plain blocks. ``gen`` (seeded from ``draw``) makes every choice; ``attn`` is the attention
    backend the masks are built for."""
    p = streams.injection_probability
    if p and float(torch.rand(1, generator=gen)) < p:
        configured = config.injection_strategy
        strategy: Strategy = _MIXED[int(torch.randint(2, (1,), generator=gen))] if configured == "mixed" else configured
        rows = epoch_rows(len(streams.reading), config.batch_size, config.seed + 2, draw)
        batch = _reading_batch(tokenizer, [streams.reading[i] for i in rows], strategy, config, gen, attn)
        tokens = int((batch["input_ids"] != tokenizer.pad_token_id).sum())
        return StepBatch({k: v.to(device) for k, v in batch.items()}, tokens)
    return _plain_batch(streams.plain, draw, gen, tokenizer, config, nsp, attn, device)


def _plain_batch(
    streams: list[Stream],
    draw: int,
    gen: torch.Generator,
    tokenizer: PreTrainedTokenizerFast,
    config: TrainConfig,
    nsp: bool,
    attn: str,
    device: torch.device,
) -> StepBatch:
    """Blocks from every stream, masked as in BERT (entity mentions at ``salient_probability``)."""
    blocks = Blocks.cat([s.rows(draw) for s in streams])
    nsp_labels = None
    token_type_ids = None
    if nsp:
        blocks, token_type_ids, nsp_labels = _nsp_pairs(blocks, tokenizer, gen)
        token_type_ids = token_type_ids.to(device)
    input_ids, labels = mask_tokens(
        blocks.input_ids,
        blocks.unit_ids,
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        mlm_probability=config.mlm_probability,
        mask_replace_prob=config.mask_replace_prob,
        random_replace_prob=config.random_replace_prob,
        salient=blocks.salient,
        salient_probability=config.salient_probability,
        generator=gen,
    )
    batch = {
        "input_ids": input_ids.to(device),
        "position_ids": blocks.position_ids.to(device),
        "attention_mask": block_attention_mask(blocks.segment_ids, attn),
        "labels": labels.to(device),
    }
    if batch["attention_mask"] is not None:
        batch["attention_mask"] = batch["attention_mask"].to(device)
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return StepBatch(batch, int((blocks.segment_ids >= 0).sum()), nsp_labels)


def _reading_batch(
    tokenizer: PreTrainedTokenizerFast,
    examples: Sequence[ReadingExample],
    strategy: Strategy,
    config: TrainConfig,
    generator: torch.Generator,
    attn: str,
) -> dict[str, torch.Tensor]:
    """An injected MLM batch: only the answer span is masked. Masking other text tokens as well would
    often hide the subject or the relation word, the very keys that say which statement to read."""
    return injected_training_batch(
        tokenizer,
        [e.text for e in examples],
        [list(e.facts) for e in examples],
        [list(e.passages) for e in examples],
        strategy=strategy,
        max_length=config.injection_max_length,
        mlm_probability=0.0,
        salient_probability=1.0,
        whole_word_mask=config.whole_word_mask,
        mask_replace_prob=config.mask_replace_prob,
        random_replace_prob=config.random_replace_prob,
        generator=generator,
        attn_implementation=attn,
    )


def _nsp_pairs(
    blocks: Blocks, tokenizer: PreTrainedTokenizerFast, generator: torch.Generator
) -> tuple[Blocks, torch.Tensor, torch.Tensor]:
    """BERT's next-sentence task: split each block's first document in two halves; in 50% of
    rows the second half is replaced by the start of another row's document. Returns the new
    blocks, their token type ids (1 on segment B) and the labels (0 = is next)."""
    n, length = blocks.input_ids.shape
    ids = blocks.input_ids.clone()
    is_random = torch.rand(n, generator=generator) < 0.5
    partner = torch.randint(n, (n,), generator=generator)
    token_type = torch.zeros_like(ids)
    for r in range(n):
        doc = (blocks.segment_ids[r] == 0).nonzero().flatten()
        body = doc[1:-1]
        if body.numel() < 4:
            is_random[r] = False
            continue
        half = body[body.numel() // 2]
        end = int(doc[-1])
        if is_random[r] and partner[r] != r:
            src = blocks.input_ids[partner[r], 1:]
            k = end - int(half)
            ids[r, half:end] = src[:k].masked_fill(src[:k] == tokenizer.pad_token_id, tokenizer.sep_token_id)
        else:
            is_random[r] = False
        token_type[r, half : end + 1] = 1
    out = Blocks(ids, blocks.position_ids, blocks.segment_ids, blocks.unit_ids, blocks.salient)
    return out, token_type, is_random.long()


def build_batch(
    streams: Streams,
    draw: int,
    tokenizer: PreTrainedTokenizerFast,
    config: TrainConfig,
    nsp: bool,
    attn: str,
    device: torch.device,
    off_thread: bool,
) -> StepBatch:
    """The micro-batch of ``draw``; built on the CPU when ``off_thread`` (a background thread
    builds it, the step's thread moves it to the device), else straight on ``device``."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + draw)
    target = torch.device("cpu") if off_thread else device
    return draw_batch(streams, draw, gen, tokenizer, config, nsp, attn, target)


def on_device(batch: StepBatch, device: torch.device) -> StepBatch:
    """``batch`` with its tensors on ``device`` (copied without waiting where the device allows)."""
    if device.type == "cpu":
        return batch
    tensors = {k: None if v is None else v.to(device, non_blocking=True) for k, v in batch.tensors.items()}
    nsp_labels = None if batch.nsp_labels is None else batch.nsp_labels.to(device, non_blocking=True)
    return StepBatch(tensors, batch.tokens, nsp_labels)
