"""Entity-level answers: a ``[MASK]`` stands for a whole name, however many word-pieces it has.

Candidates (from the knowledge graph, see ``knowledge.candidates``) are scored by the MLM with one
``[MASK]`` per word-piece: the query is asked once per candidate *length* n with n masks, and a
candidate of n pieces scores the sum of its pieces' log-probabilities at those masks (the masked
pseudo-log-likelihood with every piece masked at once, so all candidates of one length share one
forward pass and every candidate of every query is scored in one batch). Lengths differ, so the
sum is normalised: ``"mean"`` (per piece), ``"sqrt"`` (by √n) or ``"sum"`` (none) —
``benchmarks/bench_lama.py --entity`` compares them.

With no candidate, the answer is decoded freely (X-FACTR, Jiang et al. 2020): for each length
1…N, fill the masks one at a time, the most confident position first, each step a forward pass
over every query still decoding.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from encoder.bundle import MLMBundle
from encoder.injection import (
    InjectedFact,
    InjectedPassage,
    add_length_branches,
    as_strategy,
    build_injected_inputs,
    split_by_length,
)
from encoder.predict import _forward, _vocab_kinds

Normalisation = Literal["mean", "sqrt", "sum"]
NORMALISATIONS: tuple[str, ...] = ("mean", "sqrt", "sum")
MASK = "[MASK]"


class CandidateLike(Protocol):
    """What a candidate answer must have (``knowledge.Candidate`` has it)."""

    @property
    def text(self) -> str: ...

    @property
    def entity_id(self) -> int | None: ...

    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class EntityPrediction:
    """One ranked answer: the surface form, the entity it names (None for a decoded string), its
    score (normalised log-likelihood, plus the evidence prior) and where it came from."""

    text: str
    entity_id: int | None
    score: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (score rounded)."""
        return {"text": self.text, "entity_id": self.entity_id, "score": round(self.score, 4), "source": self.source}


_PIECES: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()


def word_pieces(tokenizer: Any, texts: Sequence[str]) -> list[tuple[int, ...]]:
    """The word-piece ids of each text (cached per tokenizer object: candidate names recur)."""
    cache = _PIECES.setdefault(tokenizer, {})
    missing = sorted({t for t in texts if t not in cache})
    if missing:
        if len(cache) > 200_000:
            cache.clear()
        for t, ids in zip(missing, tokenizer(missing, add_special_tokens=False)["input_ids"]):
            cache[t] = tuple(ids)
    return [cache[t] for t in texts]


def widened_lengths(pieces: Sequence[Sequence[int]], max_pieces: int) -> list[int]:
    """The lengths of 2…``max_pieces`` pieces among candidates' ``pieces``, shortest first: the
    widths a [MASK] is asked at beyond the one-mask row."""
    return sorted({len(p) for p in pieces if 2 <= len(p) <= max_pieces})


def normalise(total: torch.Tensor | float, n: int, normalisation: str) -> Any:
    """A length-``n`` log-likelihood ``total`` normalised as ``normalisation`` says.
    Raises ValueError for an unknown normalisation."""
    if normalisation == "mean":
        return total / n
    if normalisation == "sqrt":
        return total / math.sqrt(n)
    if normalisation == "sum":
        return total
    raise ValueError(f"normalisation={normalisation!r}: expected one of {NORMALISATIONS}")


def _expand(text: str, n: int, facts: Sequence[InjectedFact]) -> tuple[str, list[InjectedFact]]:
    """``text`` with its one [MASK] as ``n`` masks, and fact spans after it moved along."""
    at = text.index(MASK)
    masks = " ".join([MASK] * n)
    shift = len(masks) - len(MASK)
    moved = [
        f if f.span is None or f.span[0] < at else dataclasses.replace(f, span=(f.span[0] + shift, f.span[1] + shift))
        for f in facts
    ]
    return text[:at] + masks + text[at + len(MASK) :], moved


def _knowledge_text(
    facts: Sequence[InjectedFact], passages: Sequence[InjectedPassage], used: tuple[list[int], list[int]]
) -> str:
    used_f, used_p = used
    return " ".join([facts[i].text for i in used_f] + [passages[i].text for i in used_p]).lower()


def _masked_log_probs(
    bundle: MLMBundle,
    texts: list[str],
    facts: list[list[InjectedFact]],
    passages: list[list[InjectedPassage]],
    strategy: str,
    max_length: int,
    batch_size: int,
    branch_lengths: list[list[int]] | None = None,
) -> tuple[list[torch.Tensor], list[str]]:
    """Per row: ``(masks, vocab)`` log-probabilities at its masks, and the injected knowledge it
    read (lower-cased, for the evidence prior); with ``branch_lengths``, each row also asked with
    its [MASK] widened to those lengths (:func:`encoder.injection.add_length_branches`), their masks'
    log-probabilities following the row's own in that order. Rows go through the encoder shortest first, at
    most ``batch_size`` at a time, a batch ending where a row is more than :data:`_LENGTH_SPREAD`
    times as long as its first: rows of one call differ in length by whole passages, and padding
    them all to the longest wasted about a quarter of an evaluation's forward passes."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    knowledge: list[str] = [""] * len(texts)
    if not texts:
        return [], []
    mask_id = bundle.tokenizer.mask_token_id
    inputs = build_injected_inputs(
        bundle.tokenizer, texts, facts, passages, strategy=as_strategy(strategy), max_length=max_length
    )
    plain = inputs
    if branch_lengths is not None:
        inputs, _ = add_length_branches(bundle.tokenizer, inputs, branch_lengths)
    for rows in _similar_lengths(inputs.lengths, batch_size):
        part = inputs.select(rows)
        hidden, _ = _forward(bundle, part.to_dict(), explain=False)
        is_mask = (part.input_ids == mask_id).to(hidden.device)
        with torch.inference_mode():
            logp = bundle.model.cls(hidden[is_mask]).float().log_softmax(-1).cpu()
        counts = is_mask.sum(1).tolist()
        offset = 0
        for i, c in zip(rows, counts):
            out[i] = logp[offset : offset + c]
            offset += c
            if strategy != "closed-book":
                knowledge[i] = _knowledge_text(facts[i], passages[i], (plain.used_facts[i], plain.used_passages[i]))
    return out, knowledge


_LENGTH_SPREAD = 1.2


def _similar_lengths(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of at most ``batch_size``, shortest rows first, each batch's rows
    within :data:`_LENGTH_SPREAD` of its shortest (so padding stays a small share of a batch)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        last = batches[-1] if batches else None
        if last is None or len(last) >= batch_size or lengths[i] > _LENGTH_SPREAD * lengths[last[0]]:
            batches.append([i])
        else:
            last.append(i)
    return batches


def score_entities(
    bundle: MLMBundle,
    texts: Sequence[str],
    candidates: Sequence[Sequence[CandidateLike]],
    facts: Sequence[Sequence[InjectedFact]] | None = None,
    passages: Sequence[Sequence[InjectedPassage]] | None = None,
    strategy: str = "closed-book",
    max_length: int = 256,
    evidence_boost: float = 0.0,
    normalisation: str = "mean",
    max_pieces: int = 6,
    decode_pieces: int = 3,
    top_k: int = 10,
    batch_size: int = 64,
    one_mask: dict[int, tuple[torch.Tensor, str]] | None = None,
    shortlist: int | None = None,
    widened: dict[tuple[int, int], torch.Tensor] | None = None,
    length_branches: bool = True,
) -> list[list[EntityPrediction]]:
    """Ranked entity-level answers for the one ``[MASK]`` of each of ``texts``.

    ``candidates[i]`` are scored with as many masks as they have pieces (at most ``max_pieces``;
    longer ones are left out), all of a query and all queries in one batch, with ``facts[i]`` /
    ``passages[i]`` injected by ``strategy`` as :func:`encoder.predict_injected` does.
    ``evidence_boost`` is the copy prior at entity level: a candidate that occurs in the knowledge
    the row read gains that much. The surfaces of one entity count once (its best). A query with no
    scorable candidate is decoded freely for 1…``decode_pieces`` masks. A text without exactly one
    ``[MASK]`` gets no answers. ``one_mask[i]``: text i's log-probabilities at its one [MASK] and
    the knowledge it read, from a forward pass already made (the per-token predictions), so its
    one-piece candidates need none; ``widened[(i, n)]``: text i's ``(n, vocab)`` log-probabilities
    with its [MASK] widened to n masks, from that same pass
    (:func:`encoder.predict_injected` ``mask_lengths``), so its n-piece candidates need none either
    (they read the knowledge of ``one_mask[i]``). ``length_branches``: in the concat layout, ask
    every candidate length as a branch of the one-mask row (one read of the knowledge for all
    lengths, :func:`encoder.injection.add_length_branches`) instead of a row of its own per length
    (exact pseudo-log-likelihood, each length re-reading the knowledge). ``shortlist``: score in full only the candidates whose first
    piece is among the ``shortlist`` most probable first pieces at one [MASK] (and every candidate
    from the linked facts), so fewer lengths need a pass of their own; None scores every candidate.
    Returns up to ``top_k`` answers per text, best first.

    Raises ValueError for an unknown normalisation, and as :func:`encoder.build_injected_inputs` does.
    """
    normalise(0.0, 1, normalisation)  # validate early
    n_texts = len(texts)
    fact_rows = [list(facts[i]) if facts is not None else [] for i in range(n_texts)]
    passage_rows = [list(passages[i]) if passages is not None else [] for i in range(n_texts)]
    tokenizer = bundle.tokenizer
    pieces = [word_pieces(tokenizer, [c.text for c in cands]) for cands in candidates]
    scorable = [i for i, text in enumerate(texts) if text.count(MASK) == 1]
    usable = {i: [c for c, p in enumerate(pieces[i]) if 0 < len(p) <= max_pieces] for i in scorable}
    to_decode = [i for i in scorable if not usable[i] and decode_pieces > 0]
    by_row: dict[tuple[int, int], tuple[torch.Tensor, str]] = {}
    for i, (logp, read) in (one_mask or {}).items():
        by_row[(i, 1)] = (logp.reshape(1, -1), read if strategy != "closed-book" else "")
    for (i, n), logp in (widened or {}).items():
        if (i, 1) in by_row:
            by_row[(i, n)] = (logp, by_row[(i, 1)][1])

    def run(rows: list[tuple[int, int]], branches: dict[int, list[int]] | None = None) -> None:
        expanded = [_expand(texts[i], n, fact_rows[i]) for i, n in rows]
        logps, knowledge = _masked_log_probs(
            bundle,
            [t for t, _ in expanded],
            [f for _, f in expanded],
            [passage_rows[i] for i, _ in rows],
            strategy,
            max_length,
            batch_size,
            [branches[i] for i, _ in rows] if branches is not None else None,
        )
        for (i, n), lp, kn in zip(rows, logps, knowledge):
            by_row.setdefault((i, n), (lp[:n], kn))  # a one-mask row given by the caller stays
            for m, branch in split_by_length(lp[n:], (branches or {}).get(i, [])).items():
                by_row[(i, m)] = (branch, kn)

    if length_branches and strategy == "concat":
        # one read of the knowledge per query: every length rides on the one-mask row
        need = {
            i: [n for n in widened_lengths(pieces[i], max_pieces) if (i, n) not in by_row]
            for i in scorable
            if usable[i]
        }
        need = {i: lengths for i, lengths in need.items() if lengths or (i, 1) not in by_row}
        if need:
            run([(i, 1) for i in need], need)
    elif shortlist is not None:
        # the one-mask pass first: its first-piece probabilities pick whom to score in full
        run([(i, 1) for i in scorable if usable[i] and (i, 1) not in by_row])
    if shortlist is not None:
        for i in scorable:
            if (i, 1) not in by_row or len(usable[i]) <= shortlist:
                continue
            first = by_row[(i, 1)][0][0]
            prior = first[torch.tensor([pieces[i][c][0] for c in usable[i]], dtype=torch.long)]
            top = {usable[i][int(j)] for j in prior.topk(min(shortlist, len(usable[i]))).indices}
            usable[i] = [c for c in usable[i] if c in top or candidates[i][c].source == "fact"]
    run(
        sorted(
            {(i, len(pieces[i][c])) for i in scorable for c in usable[i]} - set(by_row),
            key=lambda key: (key[0], key[1]),
        )
    )
    results: list[list[EntityPrediction]] = [[] for _ in range(n_texts)]
    for i in range(n_texts):
        # one gather per length: every candidate of n pieces against the n-mask row at once
        by_length: dict[int, list[int]] = {}
        for c in usable.get(i, []):
            by_length.setdefault(len(pieces[i][c]), []).append(c)
        scores: dict[int, float] = {}
        for n, members in by_length.items():
            logp, _ = by_row[(i, n)]
            member_ids = torch.tensor([pieces[i][c] for c in members], dtype=torch.long)
            totals = logp[torch.arange(n), member_ids].sum(-1)
            scores.update(zip(members, normalise(totals, n, normalisation).tolist()))
        best: dict[Any, EntityPrediction] = {}
        for c, score in scores.items():
            cand = candidates[i][c]
            read = by_row[(i, len(pieces[i][c]))][1]
            if evidence_boost > 0 and read and _occurs(cand.text.lower(), read):
                score += evidence_boost
            key = cand.entity_id if cand.entity_id is not None else ("text", cand.text.lower())
            if key not in best or score > best[key].score:
                best[key] = EntityPrediction(cand.text, cand.entity_id, score, cand.source)
        results[i] = sorted(best.values(), key=lambda p: -p.score)[:top_k]
    if to_decode:
        decoded = decode_free(
            bundle,
            [texts[i] for i in to_decode],
            [fact_rows[i] for i in to_decode],
            [passage_rows[i] for i in to_decode],
            strategy,
            max_length,
            normalisation,
            decode_pieces,
        )
        for i, answers in zip(to_decode, decoded):
            results[i] = answers[:top_k]
    return results


def _occurs(needle: str, haystack: str) -> bool:
    """``needle`` occurs in ``haystack`` as whole words."""
    at = haystack.find(needle)
    while at >= 0:
        end = at + len(needle)
        if (at == 0 or not haystack[at - 1].isalnum()) and (end == len(haystack) or not haystack[end].isalnum()):
            return True
        at = haystack.find(needle, at + 1)
    return False


def decode_free(
    bundle: MLMBundle,
    texts: Sequence[str],
    facts: Sequence[Sequence[InjectedFact]],
    passages: Sequence[Sequence[InjectedPassage]],
    strategy: str = "closed-book",
    max_length: int = 256,
    normalisation: str = "mean",
    max_pieces: int = 3,
) -> list[list[EntityPrediction]]:
    """Free answers for the one ``[MASK]`` of each text (X-FACTR's confidence order): for every
    length n in 1…``max_pieces`` start from n masks and fill, one position per step, the masked
    position whose best piece is most probable; the answer's score is the normalised sum of the
    log-probabilities its pieces had when filled. Special tokens are never chosen, nor a word
    continuation (``##…``) in the first position. Returns each text's answers, best first (one per
    length; lengths that decode to the same string count once)."""
    tokenizer = bundle.tokenizer
    _, continuation = _vocab_kinds(tokenizer)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    # (query, n) -> the pieces so far (None: still masked) and the log-probabilities they had
    state: dict[tuple[int, int], tuple[list[int | None], list[float]]] = {
        (i, n): ([None] * n, []) for i in range(len(texts)) for n in range(1, max_pieces + 1)
    }
    for _ in range(max_pieces):
        active = [key for key, (filled, _) in state.items() if None in filled]
        if not active:
            break
        rendered = [_render(tokenizer, texts[i], facts[i], state[(i, n)][0]) for i, n in active]
        logps, _ = _masked_log_probs(
            bundle,
            [t for t, _ in rendered],
            [f for _, f in rendered],
            [list(passages[i]) for i, _ in active],
            strategy,
            max_length,
            64,
        )
        for key, logp in zip(active, logps):
            filled, chosen = state[key]
            open_slots = [j for j, p in enumerate(filled) if p is None]
            logp = logp.clone()
            logp[:, special[special < logp.shape[1]]] = -math.inf
            if open_slots and open_slots[0] == 0:
                width = min(logp.shape[1], continuation.shape[0])
                logp[0, :width][continuation[:width]] = -math.inf
            best_p, best_id = logp.max(-1)
            slot = int(best_p.argmax())
            filled[open_slots[slot]] = int(best_id[slot])
            chosen.append(float(best_p[slot]))
    out: list[list[EntityPrediction]] = [[] for _ in texts]
    for (i, n), (filled, chosen) in state.items():
        text = str(tokenizer.decode([p for p in filled if p is not None])).strip()
        if not text:
            continue
        score = float(normalise(sum(chosen), n, normalisation))
        if all(a.text != text for a in out[i]):
            out[i].append(EntityPrediction(text, None, score, "decoded"))
    return [sorted(a, key=lambda p: -p.score) for a in out]


def _render(
    tokenizer: Any, text: str, facts: Sequence[InjectedFact], filled: list[int | None]
) -> tuple[str, list[InjectedFact]]:
    """``text`` with its [MASK] replaced by the pieces filled so far and masks for the rest."""
    expanded, moved = _expand(text, len(filled), facts)
    if all(p is None for p in filled):
        return expanded, moved
    parts = [MASK if p is None else str(tokenizer.convert_ids_to_tokens(p)) for p in filled]
    # word-pieces joined as the tokenizer would read them back ("el ##on" -> "elon")
    rendered = " ".join(parts).replace(" ##", "")
    at = text.index(MASK)
    new_text = text[:at] + rendered + text[at + len(MASK) :]
    shift = len(rendered) - len(MASK)
    moved = [
        f if f.span is None or f.span[0] < at else dataclasses.replace(f, span=(f.span[0] + shift, f.span[1] + shift))
        for f in facts
    ]
    return new_text, moved
