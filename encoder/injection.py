"""Knowledge injection: put facts and passages into the encoder's input, on an unmodified BERT.

One function, three layouts (``strategy``):

- ``"closed-book"``: ``[CLS] text [SEP]`` — nothing injected (the baseline, same code path);
- ``"concat"`` (REALM / RAG): ``[CLS] text [SEP] fact1 ; fact2 [SEP] passage1 [SEP] passage2 [SEP]``,
  token type 0 for the text segment and 1 for the knowledge, positions 0..n-1, a 2-D mask;
- ``"tree"`` (K-BERT, Liu et al. 2020): each fact's ``branch`` is inserted right after the last
  token of its entity mention. The sentence keeps its own positions (``soft_position_ids``); a
  branch after a mention ending at soft position ``p`` takes ``p+1, p+2, …``. A visibility matrix
  lets branch tokens see only their own branch and their mention, so the rest of the sentence is
  not disturbed by them ("knowledge noise"); knowledge reaches it only through the mention, in
  later layers.

The budget. The query text's own tokens (and its ``[MASK]``s) are never cut: the knowledge shares
``max_length`` minus the text. Facts and passages are taken greedily by ``score``, highest first,
as one list; scores are compared *as given*, so the caller puts them on one scale (e.g. fact
confidence and passage cosine similarity both in [0, 1], or rank-based ``1 / (k + rank)`` for
both). At equal score a fact goes first (shorter, and exact). A fact that does not fit whole is
dropped and the next one is tried; a passage that does not fit is cut to fill what is left
(when at least ``MIN_PASSAGE_TOKENS`` remain), after which the budget is spent.

Tree-mode choices (K-BERT has no passages and one segment):
- branches have token type 0, as in K-BERT; several facts about one mention are several branches,
  each starting at ``p+1`` and seeing only itself and the mention;
- facts without a ``span`` (no mention in the text) are not injected in tree mode;
- passages are appended after the final ``[SEP]`` as in concat (token type 1, positions continuing
  after the sentence), visible to and from the sentence and each other, never to branches.

Masks: closed-book and concat return a 2-D padding mask (transformers converts it for the
backend); tree returns a boolean ``[batch, 1, seq, seq]`` visibility matrix. transformers v5
passes a 4-D mask through untouched, so it must be in the backend's form: ``fill_mask_encoded``
converts it, and ``InjectedInputs.to_dict(attn_implementation)`` does so for a direct model call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from encoder.masking import mask_tokens
from encoder.packing import SpanText, as_span_text, to_backend_mask

log = logging.getLogger(__name__)

Strategy = Literal["closed-book", "concat", "tree"]
STRATEGIES: tuple[Strategy, ...] = ("closed-book", "concat", "tree")
MIN_PASSAGE_TOKENS = 4
"""A passage is cut to fit the budget only if at least this many of its tokens would remain."""

_SENTENCE, _PASSAGE = 0, -1  # visibility groups; branches are 1, 2, …


@dataclass(frozen=True)
class InjectedFact:
    """One fact to inject.

    ``text``: the fact as text for concat (``"Croatia currency euro"`` or a verbalised sentence);
    ``branch``: the short form K-BERT inserts after the mention (relation label + object);
    ``span``: character span in the query text of the entity the fact is about (``None``: no
    mention, concat only); ``score``: higher = more relevant, for the shared budget.
    """

    text: str
    branch: str
    span: tuple[int, int] | None
    score: float = 1.0
    fact_id: int | None = None


@dataclass(frozen=True)
class InjectedPassage:
    """A retrieved passage to inject (``score``: higher = more relevant)."""

    text: str
    score: float = 1.0
    passage_id: int | None = None


@dataclass
class InjectedInputs:
    """A padded batch of injected inputs.

    ``position_ids``: soft positions for tree, ``0..n-1`` otherwise. ``attention_mask``: 2-D
    ``[batch, seq]`` padding mask (closed-book, concat) or boolean ``[batch, 1, seq, seq]``
    visibility matrix (tree; True = may attend). ``text_mask``: True on the query text's own
    tokens (not ``[CLS]``/``[SEP]``, not injected), in text order. ``texts``: each row rendered
    readably (tree branches in braces after their mention). ``used_facts`` / ``used_passages``:
    indices into the given facts / passages of each row that made it into the budget, in the
    order they were chosen (highest score first).
    """

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    texts: list[str]
    used_facts: list[list[int]]
    used_passages: list[list[int]]
    text_mask: torch.Tensor
    strategy: str = "concat"
    truncated_passages: list[list[int]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # each row's tokens before padding

    def select(self, rows: Sequence[int]) -> InjectedInputs:
        """The given rows alone, padded only to the longest of them (a batch of similar lengths
        wastes less of the encoder's work on padding)."""
        index = torch.tensor(list(rows), dtype=torch.long)
        length = max((self.lengths[r] for r in rows), default=0)
        mask = self.attention_mask[index]
        mask = mask[:, :length] if mask.dim() == 2 else mask[:, :, :length, :length]
        return InjectedInputs(
            self.input_ids[index, :length],
            self.token_type_ids[index, :length],
            self.position_ids[index, :length],
            mask,
            texts=[self.texts[r] for r in rows],
            used_facts=[self.used_facts[r] for r in rows],
            used_passages=[self.used_passages[r] for r in rows],
            text_mask=self.text_mask[index, :length],
            strategy=self.strategy,
            truncated_passages=[self.truncated_passages[r] for r in rows] if self.truncated_passages else [],
            lengths=[self.lengths[r] for r in rows],
        )

    def to_dict(self, attn_implementation: str | None = None) -> dict[str, torch.Tensor]:
        """The model inputs. Without ``attn_implementation`` a tree mask stays a boolean
        visibility matrix (what ``fill_mask_encoded`` / ``masked_token_ranks`` take); with it
        (``"sdpa"``/``"eager"``) it is converted for a direct ``model(**inputs)`` call."""
        mask = self.attention_mask
        if attn_implementation is not None and mask.dim() == 4:
            mask = to_backend_mask(mask, attn_implementation)
        return {
            "input_ids": self.input_ids,
            "token_type_ids": self.token_type_ids,
            "position_ids": self.position_ids,
            "attention_mask": mask,
        }


@dataclass
class _Row:
    """One unpadded row while it is built."""

    ids: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    is_text: list[bool] = field(default_factory=list)
    mentions: dict[int, list[int]] = field(default_factory=dict)  # branch group → its mention's token indices
    rendered: str = ""
    used_facts: list[int] = field(default_factory=list)
    used_passages: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)

    def add(
        self, ids: Sequence[int], token_type: int, positions: Sequence[int], group: int, is_text: bool = False
    ) -> None:
        self.ids.extend(ids)
        self.types.extend([token_type] * len(ids))
        self.positions.extend(positions)
        self.groups.extend([group] * len(ids))
        self.is_text.extend([is_text] * len(ids))


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    if not texts:
        return [], []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]


def _mention_tokens(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    start, end = span
    return [j for j, (a, b) in enumerate(offsets) if a < end and b > start]


def _choose(
    fact_costs: Sequence[int | None],
    facts: Sequence[InjectedFact],
    passage_costs: Sequence[int],
    passages: Sequence[InjectedPassage],
    room: int,
) -> tuple[list[int], list[tuple[int, int]]]:
    """Greedy fill of ``room`` tokens by score (facts first at equal score).

    ``fact_costs[k]`` is ``None`` for a fact that cannot be injected. Returns the chosen fact
    indices and ``(passage index, tokens kept incl. its [SEP])`` pairs, both in choice order.
    """
    # (-score, kind, index, cost): (kind, index) is unique, so the cost never decides the order
    items = [(-f.score, 0, k, cost) for k, f in enumerate(facts) if (cost := fact_costs[k]) is not None]
    items += [(-p.score, 1, k, passage_costs[k]) for k, p in enumerate(passages)]
    chosen_facts: list[int] = []
    chosen_passages: list[tuple[int, int]] = []
    for _, kind, k, cost in sorted(items):
        if room <= 0:
            break
        if cost <= room:
            room -= cost
            if kind == 0:
                chosen_facts.append(k)
            else:
                chosen_passages.append((k, cost))
        elif kind == 1 and room - 1 >= MIN_PASSAGE_TOKENS:
            chosen_passages.append((k, room))  # cut to fill the rest: the budget is spent
            room = 0
    return chosen_facts, chosen_passages


def _render_passage(passage: InjectedPassage, offsets: Sequence[tuple[int, int]], kept: int) -> str:
    if kept >= len(offsets):
        return passage.text
    return passage.text[: offsets[kept - 1][1]] + " …" if kept else "…"


def as_strategy(name: str) -> Strategy:
    """``name`` as a :data:`Strategy`, for a layout named in settings or on a command line.

    Raises ``ValueError`` for any other name.
    """
    for strategy in STRATEGIES:
        if name == strategy:
            return strategy
    raise ValueError(f"strategy={name!r}: expected one of {STRATEGIES}")


def build_injected_inputs(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    facts: Sequence[Sequence[InjectedFact]] | None = None,
    passages: Sequence[Sequence[InjectedPassage]] | None = None,
    strategy: Strategy = "concat",
    max_length: int = 256,
) -> InjectedInputs:
    """Build the encoder inputs for ``texts`` with each row's facts and passages injected.

    ``facts[i]`` / ``passages[i]`` belong to ``texts[i]`` (either may be ``None``: nothing of
    that kind). Rows are padded to the longest row, never beyond ``max_length``. A literal
    ``[MASK]`` inside a fact or passage becomes ``[UNK]``, so the only masks are the query's.
    Returns :class:`InjectedInputs`. Raises ``ValueError`` for an unknown strategy, a bare string,
    facts/passages whose count differs from the texts, a fact span outside its text, or a text
    that alone (with ``[CLS]``/``[SEP]``) is longer than ``max_length``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}")
    if isinstance(texts, str):
        raise ValueError("build_injected_inputs: pass a list of texts, not a single string")
    texts = list(texts)
    for name, given in (("facts", facts), ("passages", passages)):
        if given is not None and len(given) != len(texts):
            raise ValueError(f"build_injected_inputs: {len(given)} rows of {name} for {len(texts)} texts")
    if strategy == "closed-book":
        facts = passages = None
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    mask_id, unk = tokenizer.mask_token_id, tokenizer.unk_token_id
    semicolon = tokenizer(";", add_special_tokens=False)["input_ids"]
    fact_separator = semicolon[0] if len(semicolon) == 1 and semicolon[0] != unk else sep

    text_ids, text_offsets = _tokenize(tokenizer, texts)
    rows: list[_Row] = []
    for i, text in enumerate(texts):
        ids, offsets = text_ids[i], text_offsets[i]
        if len(ids) + 2 > max_length:
            raise ValueError(
                f"text #{i} is {len(ids) + 2} tokens with [CLS]/[SEP], more than max_length={max_length}; "
                "shorten the text or raise max_length (the query text is never truncated)"
            )
        row_facts = list(facts[i]) if facts is not None and facts[i] is not None else []
        row_passages = list(passages[i]) if passages is not None and passages[i] is not None else []
        for k, f in enumerate(row_facts):
            if f.span is not None and not (0 <= f.span[0] < f.span[1] <= len(text)):
                raise ValueError(
                    f"text #{i}, fact #{k} ({f.text!r}): span {f.span} is outside the text of length {len(text)}"
                )
        # Injected tokens never carry [MASK]: only the query's masks are predicted.
        fact_tokens = [
            [unk if t == mask_id else t for t in seq]
            for seq in _tokenize(tokenizer, [f.branch if strategy == "tree" else f.text for f in row_facts])[0]
        ]
        p_ids, p_offsets = _tokenize(tokenizer, [p.text for p in row_passages])
        p_ids = [[unk if t == mask_id else t for t in seq] for seq in p_ids]
        passage_costs = [len(seq) + 1 for seq in p_ids]  # each passage closes with [SEP]
        room = max_length - len(ids) - 2

        row = _Row()
        if strategy == "tree":
            mentions = [_mention_tokens(offsets, f.span) if f.span is not None else [] for f in row_facts]
            fact_costs = [len(t) if t and m else None for t, m in zip(fact_tokens, mentions)]
            chosen, chosen_p = _choose(fact_costs, row_facts, passage_costs, row_passages, room)
            after: dict[int, list[int]] = {}  # last mention token → facts branching there
            for k in chosen:
                after.setdefault(mentions[k][-1], []).append(k)
            row.add([cls], 0, [0], _SENTENCE)
            text_index: list[int] = []
            for j, token in enumerate(ids):
                text_index.append(len(row.ids))
                row.add([token], 0, [j + 1], _SENTENCE, is_text=True)
                for k in after.get(j, []):
                    group = len(row.mentions) + 1
                    row.add(fact_tokens[k], 0, range(j + 2, j + 2 + len(fact_tokens[k])), group)
                    row.mentions[group] = [text_index[m] for m in mentions[k]]
            row.add([sep], 0, [len(ids) + 1], _SENTENCE)
            rendered = text
            for j in sorted(after, reverse=True):
                end = offsets[j][1]
                rendered = rendered[:end] + "".join(f" {{{row_facts[k].branch}}}" for k in after[j]) + rendered[end:]
            row.rendered = f"[CLS] {rendered} [SEP]"
            row.used_facts = chosen
        else:
            fact_costs = [len(t) + 1 if t else None for t in fact_tokens]  # + "[SEP]" or " ; "
            chosen, chosen_p = (
                _choose(fact_costs, row_facts, passage_costs, row_passages, room) if strategy == "concat" else ([], [])
            )
            row.add([cls], 0, [0], _SENTENCE)
            row.add(ids, 0, range(1, len(ids) + 1), _SENTENCE, is_text=True)
            row.add([sep], 0, [len(ids) + 1], _SENTENCE)
            row.rendered = f"[CLS] {text} [SEP]"
            if chosen:
                segment: list[int] = []
                for n, k in enumerate(chosen):
                    segment += ([fact_separator] if n else []) + fact_tokens[k]
                segment.append(sep)
                row.add(segment, 1, range(len(row.ids), len(row.ids) + len(segment)), _SENTENCE)
                row.rendered += " " + " ; ".join(row_facts[k].text for k in chosen) + " [SEP]"
            row.used_facts = chosen
        # Passages: the same concat segments in both concat and tree.
        # In tree mode positions continue after the sentence's soft positions (branches do not
        # advance them); in concat they are simply the token index.
        next_position = len(ids) + 2
        for k, kept in chosen_p:
            body = p_ids[k][: kept - 1] + [sep]
            start = next_position if strategy == "tree" else len(row.ids)
            row.add(body, 1, range(start, start + len(body)), _PASSAGE)
            next_position = start + len(body)
            row.rendered += f" {_render_passage(row_passages[k], p_offsets[k], kept - 1)} [SEP]"
            row.used_passages.append(k)
            if kept < passage_costs[k]:
                row.truncated.append(k)
        rows.append(row)
    return _pad(rows, pad, strategy)


def _pad(rows: list[_Row], pad: int, strategy: str) -> InjectedInputs:
    batch, length = len(rows), max((len(r.ids) for r in rows), default=0)
    input_ids = torch.full((batch, length), pad, dtype=torch.long)
    token_type_ids = torch.zeros((batch, length), dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    text_mask = torch.zeros((batch, length), dtype=torch.bool)
    real = torch.zeros((batch, length), dtype=torch.bool)
    visible = torch.zeros((batch, 1, length, length), dtype=torch.bool) if strategy == "tree" else None
    for b, row in enumerate(rows):
        n = len(row.ids)
        input_ids[b, :n] = torch.tensor(row.ids, dtype=torch.long)
        token_type_ids[b, :n] = torch.tensor(row.types, dtype=torch.long)
        position_ids[b, :n] = torch.tensor(row.positions, dtype=torch.long)
        text_mask[b, :n] = torch.tensor(row.is_text, dtype=torch.bool)
        real[b, :n] = True
        if visible is not None:
            visible[b, 0] = _visible_matrix(row, length)
    if visible is None:
        attention_mask = real.long()
    else:
        # Padding sees only itself: no softmax row is empty (an all -inf row gives NaN).
        attention_mask = visible | (torch.eye(length, dtype=torch.bool) & ~real[:, None, :, None])
    return InjectedInputs(
        input_ids,
        token_type_ids,
        position_ids,
        attention_mask,
        texts=[r.rendered for r in rows],
        used_facts=[r.used_facts for r in rows],
        used_passages=[r.used_passages for r in rows],
        text_mask=text_mask,
        strategy=strategy,
        truncated_passages=[r.truncated for r in rows],
        lengths=[len(r.ids) for r in rows],
    )


def _visible_matrix(row: _Row, length: int) -> torch.Tensor:
    """K-BERT's visible matrix for one row, ``[length, length]`` (padding left invisible)."""
    groups = torch.full((length,), -2, dtype=torch.long)
    groups[: len(row.groups)] = torch.tensor(row.groups, dtype=torch.long)
    context = (groups == _SENTENCE) | (groups == _PASSAGE)
    visible = context[:, None] & context[None, :]
    for group, mention_index in row.mentions.items():
        branch = groups == group
        mention = torch.zeros(length, dtype=torch.bool)
        mention[mention_index] = True
        visible |= branch[:, None] & (branch | mention)[None, :]
        visible |= mention[:, None] & branch[None, :]
    return visible


def injected_training_batch(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str | SpanText],
    facts: Sequence[Sequence[InjectedFact]] | None = None,
    passages: Sequence[Sequence[InjectedPassage]] | None = None,
    strategy: Strategy = "concat",
    max_length: int = 256,
    *,
    mlm_probability: float = 0.15,
    salient_probability: float | None = None,
    whole_word_mask: bool = False,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
    attn_implementation: str | None = None,
) -> dict[str, torch.Tensor]:
    """An MLM batch on injected inputs: only the text's own tokens are masked and labelled, so
    the model learns to *read* the injected knowledge to fill them (the trainer mixes such
    batches with closed-book ones at its ``injection_probability``).

    ``texts`` may be :class:`SpanText` with ``salient_spans`` (entity mentions, masked as whole
    units with ``salient_probability``); masking follows :func:`encoder.masking.mask_tokens`.
    Returns ``input_ids`` (masked), ``token_type_ids``, ``position_ids``, ``attention_mask``
    (converted for ``attn_implementation`` when given, else as in :class:`InjectedInputs`) and
    ``labels`` (``IGNORE_INDEX`` everywhere but the chosen text tokens). Raises as
    :func:`build_injected_inputs` and ``mask_tokens``.
    """
    items = [as_span_text(t, f"text #{i}") for i, t in enumerate(texts)]
    inputs = build_injected_inputs(tokenizer, [t.text for t in items], facts, passages, strategy, max_length)
    enc = tokenizer([t.text for t in items], add_special_tokens=False, return_offsets_mapping=True)
    unit_ids = torch.full_like(inputs.input_ids, -1)
    salient = torch.zeros_like(inputs.text_mask)
    for b, item in enumerate(items):
        offsets = enc["offset_mapping"][b]
        words = enc.word_ids(b) if whole_word_mask else list(range(len(offsets)))
        units = [w if w is not None else j for j, w in enumerate(words)]
        flags = [False] * len(units)
        next_unit = max(units, default=-1) + 1
        for span in item.salient_spans:  # an entity mention is one unit
            for j in _mention_tokens(offsets, span):
                units[j], flags[j] = next_unit, True
            next_unit += 1
        where = inputs.text_mask[b].nonzero().flatten()
        unit_ids[b, where] = torch.tensor(units, dtype=torch.long)
        salient[b, where] = torch.tensor(flags, dtype=torch.bool)
    masked, labels = mask_tokens(
        inputs.input_ids,
        unit_ids,
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        mlm_probability=mlm_probability,
        mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob,
        salient=salient,
        salient_probability=salient_probability,
        generator=generator,
    )
    batch = inputs.to_dict(attn_implementation)
    batch["input_ids"] = masked
    batch["labels"] = labels
    return batch


def add_length_branches(
    tokenizer: PreTrainedTokenizerBase, inputs: InjectedInputs, lengths: Sequence[Sequence[int]]
) -> tuple[InjectedInputs, list[int]]:
    """``inputs`` with, after each row, one branch per length ``n`` in ``lengths[row]``: the row's
    query again as ``[CLS] text [SEP]`` with its one ``[MASK]`` widened to ``n`` masks, at the
    positions it would have alone. A branch sees itself and the row's injected knowledge (token
    type 1); the row itself never sees a branch, so its own predictions are unchanged.

    Why: entity-level scoring needs the query once per candidate length. Asked as rows of their
    own, every length re-reads the whole injected knowledge; as branches, a length costs only the
    query's own tokens. The knowledge then reads the one-mask query, not the widened one — the
    one approximation against separate rows (none for closed-book, which has no knowledge).

    Returns the widened inputs (a boolean ``[batch, 1, seq, seq]`` visibility matrix) and each
    row's number of tokens before its branches. Raises ``ValueError`` for tree inputs (their mask
    is already a visibility matrix with branches of its own), a row/length count mismatch, or a
    row with lengths but not exactly one ``[MASK]`` in its text.
    """
    if inputs.attention_mask.dim() != 2:
        raise ValueError(f"length branches need closed-book or concat inputs, not {inputs.strategy!r}")
    if len(lengths) != len(inputs.lengths):
        raise ValueError(f"add_length_branches: {len(lengths)} rows of lengths for {len(inputs.lengths)} rows")
    cls, sep, mask_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
    rows: list[tuple[list[int], list[int], list[int], list[int]]] = []  # ids, types, positions, branch (0 = row)
    for r, row_lengths in enumerate(lengths):
        n_real = inputs.lengths[r]
        ids = inputs.input_ids[r, :n_real].tolist()
        types = inputs.token_type_ids[r, :n_real].tolist()
        positions = inputs.position_ids[r, :n_real].tolist()
        branch = [0] * n_real
        text = inputs.input_ids[r][inputs.text_mask[r]].tolist()
        if row_lengths and text.count(mask_id) != 1:
            raise ValueError(f"row #{r}: length branches need exactly one [MASK] in the text")
        for b, n in enumerate(row_lengths, start=1):
            at = text.index(mask_id)
            query = [cls, *text[:at], *[mask_id] * n, *text[at + 1 :], sep]
            ids += query
            types += [0] * len(query)
            positions += list(range(len(query)))
            branch += [b] * len(query)
        rows.append((ids, types, positions, branch))
    batch, length = len(rows), max((len(r[0]) for r in rows), default=0)
    input_ids = torch.full((batch, length), tokenizer.pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((batch, length), dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    text_mask = torch.zeros((batch, length), dtype=torch.bool)
    visible = torch.zeros((batch, 1, length, length), dtype=torch.bool)
    for r, (ids, types, positions, branch) in enumerate(rows):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids, dtype=torch.long)
        token_type_ids[r, :n] = torch.tensor(types, dtype=torch.long)
        position_ids[r, :n] = torch.tensor(positions, dtype=torch.long)
        text_mask[r, : inputs.lengths[r]] = inputs.text_mask[r, : inputs.lengths[r]]
        group = torch.full((length,), -1, dtype=torch.long)
        group[:n] = torch.tensor(branch, dtype=torch.long)
        knowledge = torch.zeros(length, dtype=torch.bool)
        knowledge[: inputs.lengths[r]] = inputs.token_type_ids[r, : inputs.lengths[r]] == 1
        same = (group[:, None] == group[None, :]) & (group >= 0)[:, None]
        visible[r, 0] = same | ((group > 0)[:, None] & knowledge[None, :])
        visible[r, 0, n:, n:] |= torch.eye(length - n, dtype=torch.bool)  # padding sees itself: no empty softmax row
    widened = InjectedInputs(
        input_ids,
        token_type_ids,
        position_ids,
        visible,
        texts=list(inputs.texts),
        used_facts=list(inputs.used_facts),
        used_passages=list(inputs.used_passages),
        text_mask=text_mask,
        strategy=inputs.strategy,
        truncated_passages=list(inputs.truncated_passages),
        lengths=[len(r[0]) for r in rows],
    )
    return widened, list(inputs.lengths)


def split_by_length(log_probs: torch.Tensor, lengths: Sequence[int]) -> dict[int, torch.Tensor]:
    """The masks' rows of ``log_probs`` (one row per mask, the branches in ``lengths`` order, as
    :func:`add_length_branches` lays them out) as ``{n: (n, vocab)}``."""
    out: dict[int, torch.Tensor] = {}
    at = 0
    for n in lengths:
        out[n] = log_probs[at : at + n]
        at += n
    return out
