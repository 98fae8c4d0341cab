"""The knowledge-augmented query: link → facts → passages → inject → fill-mask, with evidence.

``answer_queries`` runs the whole path for a batch of texts and returns one :class:`Answer` each:
the predictions, the facts used (with sources), the evidence passages (with documents and
scores), the injected input as text, the snapshot that answered, and on request the attention
explanation summarised over the evidence. It works on any :class:`KnowledgeAccess` (the running
:class:`kecl.services.Kecl` is one); :mod:`kecl.batching` lets concurrent requests share a forward pass.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from encoder import (
    InjectedFact,
    InjectedPassage,
    MLMBundle,
    predict_injected,
    score_entities,
    widened_lengths,
    word_pieces,
)
from kecl.search import SearchHit
from kecl.settings import Settings
from knowledge import Candidate, FactView, KnowledgeStore, LinkedMention

log = logging.getLogger("kecl.pipeline")

Mode = Literal["closed-book", "concat", "tree"]
MODES: tuple[str, ...] = ("closed-book", "concat", "tree")
_WORD = re.compile(r"\w+")
MASK_PATTERN = re.compile(r"\[MASK\]", re.IGNORECASE)
"""A [MASK] in any letter case (users type [mask] too)."""
_STOP = frozenset("the a an of is was in on at to and by for [x] [y] x y".split())


class QueryError(ValueError):
    """A query the user must change (no [MASK], masks too far apart to fit the encoder): the API
    answers it with 422, never 500."""


class KnowledgeAccess(Protocol):
    """What the query pipeline reads: the settings, the store, the serving encoder, hybrid search
    and the snapshot that answers (:class:`kecl.services.Kecl` provides all of them)."""

    settings: Settings

    @property
    def store(self) -> KnowledgeStore: ...

    @property
    def encoder(self) -> MLMBundle: ...

    def search(self, query: str, k: int = 4) -> list[SearchHit]: ...

    def snapshot(self) -> dict[str, Any]: ...


@dataclass
class QueryOptions:
    mode: Mode = "concat"
    k_passages: int = 4
    hops: int = 1
    max_facts: int = 8
    as_of: dt.date | None = None
    top_k: int = 5
    explain: bool = False
    evidence_boost: float | None = None  # None: the ``model.evidence_boost`` setting


@dataclass
class Answer:
    text: str
    mode: str
    predictions: list[list[dict[str, Any]]]  # per [MASK]: [{token, score}, ...]
    entities: list[dict[str, Any]] = field(default_factory=list)  # [{text, entity_id, score, source}, ...]
    facts: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    injected_input: str = ""
    explanation: list[dict[str, Any]] | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def top(self) -> str | None:
        """The best token at the first [MASK]."""
        return self.predictions[0][0]["token"] if self.predictions and self.predictions[0] else None

    @property
    def top_entity(self) -> str | None:
        """The best entity-level answer (a whole name, however many word-pieces), else the best token."""
        return self.entities[0]["text"] if self.entities else self.top

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# ----------------------------------------------------------------------------- knowledge selection


def _relevance(query: str, fact: FactView) -> float:
    """How well a fact's relation matches the query's wording (cheap, explainable).

    1 + Jaccard overlap of the query's content words with the relation's template and label, so a
    query phrased like a relation's template ("The currency of Croatia is the [MASK] .") ranks that
    relation's facts first; all linked facts stay eligible.
    """
    q = {w for w in _WORD.findall(MASK_PATTERN.sub(" ", query.lower())) if w not in _STOP}
    r = {w for w in _WORD.findall(f"{fact.template or ''} {fact.relation}".lower()) if w not in _STOP}
    return 1.0 + (len(q & r) / len(q | r) if q and r else 0.0)


def select_facts(
    system: KnowledgeAccess, text: str, opts: QueryOptions, mentions: list[LinkedMention] | None = None
) -> tuple[list[InjectedFact], list[FactView]]:
    """Link ``text`` (unless its ``mentions`` are given), then collect the facts within
    ``opts.hops`` of its entities, best first.

    Returns the ``InjectedFact``s (for the encoder) and the matching ``FactView``s (for the answer).
    """
    store = system.store
    mentions = store.link(text) if mentions is None else mentions
    spans: dict[int, tuple[int, int]] = {}
    for m in mentions:
        spans.setdefault(m.entity_id, (m.start, m.end))
    scored: list[tuple[float, int, Any, FactView]] = []
    seen: set[int] = set()
    for eid, span in spans.items():
        for hop_rank, f in enumerate(store.neighbourhood(eid, hops=opts.hops, as_of=opts.as_of, max_facts=50)):
            if f.id in seen:
                continue
            seen.add(f.id)
            direct = f.subject_id == eid or f.object_id == eid
            score = _relevance(text, f) * (1.0 if direct else 0.5)
            if f.subject_id == eid:
                branch = f"{f.relation} {f.object}"
            elif f.object_id == eid:
                branch = f"{f.relation} of {f.subject}"
            else:
                branch = f.verbalise()
            scored.append(
                (
                    score,
                    -hop_rank,
                    InjectedFact(
                        text=f.verbalise(), branch=branch, span=span if direct else None, score=score, fact_id=f.id
                    ),
                    f,
                )
            )
    scored.sort(key=lambda x: (-x[0], -x[1]))
    top = scored[: opts.max_facts]
    return [s[2] for s in top], [s[3] for s in top]


def select_passages(system: KnowledgeAccess, text: str, opts: QueryOptions) -> list[SearchHit]:
    """The ``k_passages`` best passages by hybrid search (the [MASK] token itself is not searched)."""
    if opts.k_passages <= 0:
        return []
    return system.search(MASK_PATTERN.sub(" ", text), opts.k_passages)


# ----------------------------------------------------------------------------- the query


def answer_queries(system: KnowledgeAccess, texts: Sequence[str], opts: QueryOptions) -> list[Answer]:
    """Answer a batch of cloze queries (each with at least one ``[MASK]``) in one forward pass.

    Raises ``ValueError`` for an unknown mode or a text without ``[MASK]``.
    """
    _check_query(texts, [opts.mode])
    prepared = [retrieve(system, t, opts) for t in texts]
    return predict_prepared(system, prepared, opts)


def _check_query(texts: Sequence[str], modes: Sequence[str]) -> None:
    """Raise ``ValueError`` for an unknown mode, :class:`QueryError` for a text without ``[MASK]``."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    for t in texts:
        if not MASK_PATTERN.search(t):
            raise QueryError(f"no [MASK] in {t!r}: write the word to predict as [MASK]")


def answer_modes(
    system: KnowledgeAccess, text: str, modes: Sequence[str], opts: QueryOptions, executor: Executor | None = None
) -> dict[str, Answer]:
    """One cloze query answered in each of ``modes`` (``opts.mode`` is ignored). The augmented
    modes differ only in how the knowledge is injected, so its facts and passages are selected
    once and shared. With an ``executor`` the modes run side by side on it (closed-book while the
    augmented modes' knowledge is selected, then the augmented modes together); the answers are
    the same.

    Raises ``ValueError`` as :func:`answer_queries` does.
    """
    _check_query([text], modes)

    def answer(mode: str, prepared: Prepared | None = None) -> Answer:
        mode_opts = dataclasses.replace(opts, mode=cast(Mode, mode))  # checked by _check_query
        (one,) = predict_prepared(system, [prepared or retrieve(system, text, mode_opts)], mode_opts)
        return one

    augmented = [m for m in modes if m != "closed-book"]
    shared_opts = dataclasses.replace(opts, mode=cast(Mode, augmented[0])) if augmented else opts
    if executor is None:
        shared = retrieve(system, text, shared_opts) if augmented else None
        return {m: answer(m, shared if m != "closed-book" else None) for m in modes}
    futures = {m: executor.submit(answer, m) for m in modes if m == "closed-book"}
    if augmented:
        shared = retrieve(system, text, shared_opts)
        futures.update({m: executor.submit(answer, m, shared) for m in augmented})
    return {m: futures[m].result() for m in modes}


@dataclass
class Prepared:
    """A query with its knowledge selected, ready for the encoder."""

    text: str
    facts: list[InjectedFact]
    fact_views: list[FactView]
    passages: list[InjectedPassage]
    hits: list[SearchHit]
    retrieve_ms: float
    candidates: list[Candidate] = field(default_factory=list)


def within_margin(hits: list[SearchHit], margin: float | None) -> list[SearchHit]:
    """The hits whose dense similarity is at most ``margin`` below the highest dense similarity
    among them (the first hit, best by fused rank, is always kept; a hit outside the dense
    channel's candidates counts as too far). The encoder is
    easily led astray by unrelated passages, so a passage far less similar than the best one is
    better left out than injected. ``None``: all hits."""
    if margin is None or not hits:
        return hits
    dense = [h.channel_scores.get("dense") for h in hits]
    best = max((d for d in dense if d is not None), default=None)
    if best is None:
        return hits
    return [h for i, (h, d) in enumerate(zip(hits, dense)) if i == 0 or (d is not None and d >= best - margin)]


def fit_to_budget(tokenizer: Any, text: str, max_tokens: int) -> str:
    """``text`` itself if it is at most ``max_tokens`` tokens, else the window of whole tokens
    around its masks that fits (centred on them), cut from the text at token boundaries.

    The encoder cannot read more than its budget, and a long query's words far from the mask
    matter least. Raises :class:`QueryError` if the text has no [MASK] or its first and last
    masks are further apart than the budget.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) <= max_tokens:
        return text
    masks = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    if not masks:
        raise QueryError("the text has no [MASK]: write the word to predict as [MASK]")
    span = masks[-1] - masks[0] + 1
    if span > max_tokens:
        raise QueryError(
            f"the masks span {span} tokens, more than the encoder reads ({max_tokens}): "
            "put the masks closer together or split the query"
        )
    width = max_tokens
    while width >= span:
        start = max(0, min(masks[0] - (width - span) // 2, len(ids) - width))
        cut = text[offsets[start][0] : offsets[start + width - 1][1]]
        # a cut inside a word can tokenize into more pieces than it had in context: shrink until it fits
        if len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= max_tokens:
            log.info("query of %d tokens cut to the %d around its masks", len(ids), width)
            return cut
        width -= 1
    raise QueryError(f"no window of at most {max_tokens} tokens around the masks fits: shorten the query")


def retrieve(system: KnowledgeAccess, text: str, opts: QueryOptions) -> Prepared:
    """Link, select facts and passages for one query (nothing for closed-book).

    A query longer than the encoder reads is cut around its masks (:func:`fit_to_budget`);
    raises :class:`QueryError` when that is impossible.
    """
    t0 = time.perf_counter()
    text = MASK_PATTERN.sub("[MASK]", text)
    answers = system.settings.answers
    # [CLS] and [SEP] take two of the encoder's positions; entity-level scoring widens the [MASK]
    # into as many masks as a candidate has pieces, so the text leaves room for the longest
    extra_masks = max(answers.max_pieces, answers.decode_pieces) - 1 if answers.entities else 0
    text = fit_to_budget(system.encoder.tokenizer, text, system.settings.model.max_injected_length - 2 - extra_masks)
    mentions = system.store.link(text) if answers.entities or opts.mode != "closed-book" else []
    if opts.mode == "closed-book":
        # Closed-book: candidates of a fitting type only, never the subject's own facts or passages.
        candidates = _candidates(system, text, mentions, [], [])
        return Prepared(text, [], [], [], [], (time.perf_counter() - t0) * 1000, candidates)
    facts, views = select_facts(system, text, opts, mentions)
    hits = within_margin(select_passages(system, text, opts), system.settings.retrieval.passage_margin)
    # The injection budget compares fact and passage scores directly, and their own scores live on
    # different scales (relevance ≈ 1–2, fused RRF ≈ 0.01–0.03): share the budget by rank instead,
    # interleaving the best fact, the best passage, the second fact, … (facts first at a tie).
    facts = [dataclasses.replace(f, score=1.0 / (rank + 1)) for rank, f in enumerate(facts)]
    passages = [InjectedPassage(h.text, 1.0 / (rank + 1), h.passage_id) for rank, h in enumerate(hits)]
    candidates = _candidates(system, text, mentions, views, [h.passage_id for h in hits])
    return Prepared(text, facts, views, passages, hits, (time.perf_counter() - t0) * 1000, candidates)


def _candidates(
    system: KnowledgeAccess, text: str, mentions: list[LinkedMention], views: list[FactView], passage_ids: list[int]
) -> list[Candidate]:
    """The graph's candidates for the query's [MASK] (see ``knowledge.candidates``); none when
    entity-level answers are off or the query has several masks."""
    answers = system.settings.answers
    if not answers.entities or text.count("[MASK]") != 1:
        return []
    subject_words = [w for m in mentions for w in _WORD.findall(m.surface)]
    return system.store.answer_candidates(
        text, sorted({m.entity_id for m in mentions}), subject_words, views, passage_ids, answers.max_candidates
    )


def predict_prepared(system: KnowledgeAccess, prepared: Sequence[Prepared], opts: QueryOptions) -> list[Answer]:
    """Inject and fill-mask a batch of prepared queries with the serving encoder."""
    if not prepared:
        return []
    t0 = time.perf_counter()
    bundle = system.encoder
    boost = system.settings.model.evidence_boost if opts.evidence_boost is None else opts.evidence_boost
    lengths = _widened_lengths(system, prepared, opts)
    predicted = predict_injected(
        bundle,
        [p.text for p in prepared],
        [p.facts for p in prepared],
        [p.passages for p in prepared],
        strategy=opts.mode,
        max_length=system.settings.model.max_injected_length,
        evidence_boost=boost,
        top_k=opts.top_k,
        explain=opts.explain,
        keep_log_probs=system.settings.answers.entities,
        mask_lengths=lengths,
    )
    inputs, results = predicted.inputs, predicted.results
    predict_ms = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    # The one-mask forward pass just made serves the one-piece candidates too.
    one_mask = {
        row: (r.masks[0].log_probs, _read(p, inputs.used_facts[row], inputs.used_passages[row]))
        for row, (p, r) in enumerate(zip(prepared, results))
        if len(r.masks) == 1 and r.masks[0].log_probs is not None
    }
    widened = {(row, n): lp for row, by_n in enumerate(predicted.widened) for n, lp in by_n.items()}
    entities = entity_answers(system, prepared, opts.mode, boost, one_mask, widened)
    entities_ms = (time.perf_counter() - t1) * 1000
    snapshot = system.snapshot()
    answers = []
    for row, (p, r) in enumerate(zip(prepared, results)):
        used_f = inputs.used_facts[row]
        used_p = inputs.used_passages[row]
        answer = Answer(
            text=p.text,
            mode=opts.mode,
            predictions=[[{"token": t.token, "score": round(t.score, 6)} for t in m.top_k] for m in r.masks],
            entities=[e.to_dict() for e in entities[row]],
            facts=[
                {**p.fact_views[i].to_dict(), "relevance": round(_relevance(p.text, p.fact_views[i]), 4)}
                for i in used_f
            ],
            evidence=[{**p.hits[i].to_dict(), "score": round(p.hits[i].score, 6)} for i in used_p],
            injected_input=inputs.texts[row],
            snapshot=snapshot,
            timings_ms={
                "retrieve": round(p.retrieve_ms, 2),
                "predict": round(predict_ms, 2),
                "entities": round(entities_ms, 2),
            },
        )
        if opts.explain and r.masks and r.masks[0].explanation is not None:
            answer.explanation = explain_over_evidence(r.masks[0].explanation)
        answers.append(answer)
    return answers


def _widened_lengths(
    system: KnowledgeAccess, prepared: Sequence[Prepared], opts: QueryOptions
) -> list[list[int]] | None:
    """For each query, the lengths (2 pieces or more) of its candidates, for the entity rows to
    ride on the per-token pass as length branches (``encoder.add_length_branches``) — or None,
    where they go in passes of their own: entity answers off, explanations asked (they cover the
    plain rows only), tree layout (its mask is already a visibility matrix of its own branches),
    or closed-book (its rows are the query alone, so branches save no reading and every length
    would be asked before the shortlist could drop some)."""
    answers = system.settings.answers
    if not answers.entities or not answers.length_branches or opts.explain or opts.mode != "concat":
        return None
    tokenizer = system.encoder.tokenizer
    lengths: list[list[int]] = []
    for p in prepared:
        if p.text.count("[MASK]") != 1:
            lengths.append([])
            continue
        lengths.append(widened_lengths(word_pieces(tokenizer, [c.text for c in p.candidates]), answers.max_pieces))
    return lengths


def _read(p: Prepared, used_facts: list[int], used_passages: list[int]) -> str:
    """The injected knowledge a row read, lower-cased (the entity-level evidence prior looks in it)."""
    return " ".join([p.facts[i].text for i in used_facts] + [p.passages[i].text for i in used_passages]).lower()


def entity_answers(
    system: KnowledgeAccess,
    prepared: Sequence[Prepared],
    mode: str,
    boost: float,
    one_mask: dict[int, tuple[Any, str]] | None = None,
    widened: dict[tuple[int, int], Any] | None = None,
) -> list[list[Any]]:
    """Ranked entity-level answers for each prepared query (``encoder.score_entities``), all in one
    batch, the knowledge injected as for the per-token predictions (``one_mask``: the one-mask
    pass already made, reused); empty lists when turned off."""
    answers = system.settings.answers
    if not answers.entities:
        return [[] for _ in prepared]
    return score_entities(
        system.encoder,
        [p.text for p in prepared],
        [p.candidates for p in prepared],
        [p.facts for p in prepared],
        [p.passages for p in prepared],
        strategy=mode,
        max_length=system.settings.model.max_injected_length,
        evidence_boost=boost,
        normalisation=answers.normalisation,
        max_pieces=answers.max_pieces,
        decode_pieces=answers.decode_pieces,
        top_k=answers.top_k,
        one_mask=one_mask,
        shortlist=answers.shortlist,
        widened=widened,
        length_branches=answers.length_branches,
    )


def explain_over_evidence(explanation: Any) -> list[dict[str, Any]]:
    """Attention rollout from the first [MASK], summed per input segment (text, each fact or
    passage between [SEP]/';' boundaries), with the top tokens of each segment."""
    segments: list[dict[str, Any]] = []
    current: dict[str, Any] = {"tokens": [], "weight": 0.0}
    for tok, w in zip(explanation.tokens, explanation.rollout):
        if tok in ("[CLS]",):
            continue
        if tok in ("[SEP]", ";"):
            if current["tokens"]:
                segments.append(current)
            current = {"tokens": [], "weight": 0.0}
            continue
        current["tokens"].append((tok, w))
        current["weight"] += w
    if current["tokens"]:
        segments.append(current)
    out = []
    for i, seg in enumerate(segments):
        toks = [t for t, _ in seg["tokens"]]
        top = sorted(seg["tokens"], key=lambda x: -x[1])[:5]
        out.append(
            {
                "segment": i,
                "text": " ".join(toks).replace(" ##", ""),
                "weight": round(seg["weight"], 4),
                "top_tokens": [{"token": t, "weight": round(w, 4)} for t, w in top],
            }
        )
    return out
