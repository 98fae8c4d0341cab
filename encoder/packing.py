"""Turn training texts into fixed-length blocks of token ids with no padding waste.

Two layouts (``TrainConfig.packing``):

- ``"packed"``: whole documents ``[CLS] doc [SEP]`` are laid side by side in a block; each keeps
  its own positions (0, 1, ...) and a block-diagonal attention mask stops attention across
  document boundaries, so a block behaves like several separate padded sequences.
- ``"grouped"``: as Hugging Face's ``run_mlm.py`` — all tokenised texts concatenated and cut into
  blocks; attention crosses boundaries, no mask is needed (the fastest kernel path).

Documents longer than a block are split into pieces. Each token also carries a *unit* id for
whole-word / salient-span masking (see :mod:`encoder.masking`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SpanText:
    """A training passage with the character spans of its entity mentions (salient spans)."""

    text: str
    salient_spans: list[tuple[int, int]] = field(default_factory=list)


TrainText = str | SpanText
Piece = tuple[list[int], list[int], list[bool]]  # [CLS] tokens [SEP], their unit ids, salient flags


@dataclass
class Blocks:
    """``n`` training blocks of ``length`` tokens (all ``(n, length)`` tensors).

    ``segment_ids``: index of the document inside its block (``-1`` on padding), which gives the
    block-diagonal attention mask; ``unit_ids``: masking units (``-1`` for specials and padding);
    ``salient``: tokens inside an entity mention.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    unit_ids: torch.Tensor
    salient: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor) -> Blocks:
        """The blocks at ``index`` (a 1-D index tensor), in that order."""
        return Blocks(
            *(t[index] for t in (self.input_ids, self.position_ids, self.segment_ids, self.unit_ids, self.salient))
        )

    @staticmethod
    def cat(parts: Sequence[Blocks]) -> Blocks:
        """All blocks of ``parts``, one after the other (they must share a block length)."""
        return Blocks(
            *(
                torch.cat(ts)
                for ts in zip(*((p.input_ids, p.position_ids, p.segment_ids, p.unit_ids, p.salient) for p in parts))
            )
        )


def as_span_text(item: TrainText, where: str = "") -> SpanText:
    """Validate one training item; raises ``TypeError``/``ValueError`` naming the bad item."""
    if isinstance(item, str):
        return SpanText(item)
    if isinstance(item, SpanText):
        for start, end in item.salient_spans:
            if not (0 <= start < end <= len(item.text)):
                raise ValueError(
                    f"{where}: salient span ({start}, {end}) is outside the text of length {len(item.text)}"
                )
        return item
    raise TypeError(f"{where}: expected str or SpanText, got {type(item).__name__}")


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[SpanText], whole_word: bool
) -> list[tuple[list[int], list[int], list[bool]]]:
    """Per text: token ids (no specials), unit ids (0-based within the text), salient flags."""
    # verbose=False: long documents are split into blocks below, the length warning does not apply
    encodings = tokenizer([t.text for t in texts], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for i, item in enumerate(texts):
        ids = encodings["input_ids"][i]
        offsets = encodings["offset_mapping"][i]
        words = encodings.word_ids(i) if whole_word else list(range(len(ids)))
        units = [w if w is not None else j for j, w in enumerate(words)]
        salient = [False] * len(ids)
        if item.salient_spans:
            # An entity mention is one unit: its tokens are masked together.
            next_unit = (max(units) + 1) if units else 0
            for start, end in item.salient_spans:
                inside = [j for j, (a, b) in enumerate(offsets) if a < end and b > start]
                for j in inside:
                    units[j] = next_unit
                    salient[j] = True
                next_unit += 1
        out.append((ids, units, salient))
    return out


def _best_fit(pieces: list[Piece], capacity: int) -> list[list[Piece]]:
    """Best-fit decreasing bin packing: pieces longest first (ties in their given order), each into
    the open block with the least room that still holds it, else a new block. Blocks come out in
    the order they were opened. O(n · capacity), by keeping the open blocks in lists by free room."""
    blocks: list[list[Piece]] = []
    by_room: list[list[int]] = [[] for _ in range(capacity + 1)]  # free room -> open block indices
    for piece in sorted(pieces, key=lambda p: -len(p[0])):
        need = len(piece[0])
        room = next((r for r in range(need, capacity + 1) if by_room[r]), None)
        if room is None:
            blocks.append([])
            index, room = len(blocks) - 1, capacity
        else:
            index = by_room[room].pop()
        blocks[index].append(piece)
        by_room[room - need].append(index)
    return blocks


def build_blocks(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[TrainText],
    max_length: int,
    packing: str = "packed",
    whole_word_mask: bool = False,
    batch_encode: int = 1000,
    fit: str = "best",
) -> Blocks:
    """Tokenise ``texts`` and lay them out in blocks of ``max_length`` tokens.

    ``fit`` (``"packed"`` only): ``"best"`` places the documents longest first, each into the block
    it fills most tightly (best-fit decreasing, as in Krell et al. 2021's packing for BERT): under
    1% padding where laying documents side by side in order (``"sequential"``) leaves about 17%
    on the default corpus, because a block is closed as soon as the next document does not fit.
    ``"sequential"`` keeps the documents' order.

    Returns an empty ``Blocks`` (0 rows) for no text. Raises ``ValueError`` for an unknown
    ``packing``/``fit`` or ``max_length`` < 8, ``TypeError`` for an item that is not str/SpanText.
    """
    if packing not in ("packed", "grouped"):
        raise ValueError(f"packing={packing!r}: expected 'packed' or 'grouped'")
    if fit not in ("best", "sequential"):
        raise ValueError(f"fit={fit!r}: expected 'best' or 'sequential'")
    if max_length < 8:
        raise ValueError(f"max_length={max_length} is too short for MLM blocks (need >= 8)")
    items = [as_span_text(t, f"text #{i}") for i, t in enumerate(texts)]
    items = [t for t in items if t.text.strip()]
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    rows: list[tuple[list[int], list[int], list[int], list[int], list[bool]]] = []
    cur: tuple[list[int], list[int], list[int], list[int], list[bool]] = ([], [], [], [], [])
    unit_base = 0

    def flush() -> None:
        nonlocal cur
        if cur[0]:
            rows.append(cur)
        cur = ([], [], [], [], [])

    def append(ids: list[int], units: list[int], salient: list[bool], positions: list[int], segment: int) -> None:
        nonlocal unit_base
        cur[0].extend(ids)
        cur[1].extend(positions)
        cur[2].extend([segment] * len(ids))
        cur[3].extend(u if u < 0 else u + unit_base for u in units)
        cur[4].extend(salient)
        unit_base += (max(units) + 1) if units else 0

    body = max_length - 2
    pieces: list[Piece] = []  # for best-fit packing, placed at the end
    for start in range(0, len(items), batch_encode):
        for ids, units, salient in _encode(tokenizer, items[start : start + batch_encode], whole_word_mask):
            for piece in range(0, max(len(ids), 1), body):
                p_ids, p_units, p_sal = (
                    ids[piece : piece + body],
                    units[piece : piece + body],
                    salient[piece : piece + body],
                )
                if not p_ids:
                    continue
                low = min(p_units)
                p_units = [u - low for u in p_units]
                seq = [cls] + p_ids + [sep]
                seq_units = [-1] + p_units + [-1]
                seq_sal = [False] + p_sal + [False]
                if packing == "packed" and fit == "best":
                    pieces.append((seq, seq_units, seq_sal))
                elif packing == "packed":
                    if len(cur[0]) + len(seq) > max_length:
                        flush()
                    segment = cur[2][-1] + 1 if cur[2] else 0
                    append(seq, seq_units, seq_sal, list(range(len(seq))), segment)
                else:
                    # run_mlm.py: one stream cut into full blocks; a document may straddle two.
                    pos = 0
                    while pos < len(seq):
                        room = max_length - len(cur[0])
                        take = seq[pos : pos + room]
                        n = len(take)
                        start_pos = len(cur[0])
                        append(
                            take,
                            seq_units[pos : pos + n],
                            seq_sal[pos : pos + n],
                            list(range(start_pos, start_pos + n)),
                            0,
                        )
                        pos += n
                        if len(cur[0]) == max_length:
                            flush()
    if packing == "grouped" and cur[0] and rows:
        cur = ([], [], [], [], [])  # run_mlm.py drops the short remainder
    flush()
    for block in _best_fit(pieces, max_length):
        for segment, (seq, seq_units, seq_sal) in enumerate(block):
            append(seq, seq_units, seq_sal, list(range(len(seq))), segment)
        flush()
    n = len(rows)
    input_ids = torch.full((n, max_length), pad, dtype=torch.long)
    position_ids = torch.zeros((n, max_length), dtype=torch.long)
    segment_ids = torch.full((n, max_length), -1, dtype=torch.long)
    unit_ids = torch.full((n, max_length), -1, dtype=torch.long)
    salient_t = torch.zeros((n, max_length), dtype=torch.bool)
    for r, (ids, positions, seg, units, sal) in enumerate(rows):
        k = len(ids)
        input_ids[r, :k] = torch.tensor(ids)
        position_ids[r, :k] = torch.tensor(positions)
        segment_ids[r, :k] = torch.tensor(seg)
        unit_ids[r, :k] = torch.tensor(units)
        salient_t[r, :k] = torch.tensor(sal)
    return Blocks(input_ids, position_ids, segment_ids, unit_ids, salient_t)


def block_attention_mask(
    segment_ids: torch.Tensor, attn_implementation: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor | None:
    """The attention mask for a batch of blocks, in the form the backend expects (transformers v5
    passes a 4-D mask through unchanged): boolean ``(B, 1, L, L)`` for SDPA, additive float for
    eager; ``None`` when every block is one full document (the kernel's no-mask fast path).

    Padding attends to padding only, so no softmax row is empty (which would give NaN).
    """
    if bool((segment_ids == 0).all()):
        return None
    if bool((segment_ids.max(dim=1).values <= 0).all()):
        # One document per block, maybe padded: a 2-D mask lets transformers pick the kernel.
        return (segment_ids >= 0).long()
    visible = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return to_backend_mask(visible, attn_implementation, dtype)


def to_backend_mask(
    visible: torch.Tensor, attn_implementation: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A boolean ``(B, 1, Lq, Lk)`` visibility matrix (True = may attend) in the backend's form."""
    if visible.dim() == 3:
        visible = visible[:, None]
    if attn_implementation == "eager":
        return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
            ~visible, torch.finfo(dtype).min
        )
    return visible.bool()
