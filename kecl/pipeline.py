"""The knowledge-augmented query: link → facts → passages → inject → fill-mask, with evidence.

``answer_queries`` runs the whole path for a batch of texts and returns one :class:`Answer` each:
the predictions, the facts used (with sources), the evidence passages (with documents and
scores), the injected input as text, the snapshot that answered, and on request the attention
explanation summarised over the evidence. :class:`MicroBatcher` lets concurrent API requests share
one forward pass (requests that arrive within a few milliseconds are batched).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kecl.services import Kecl
    from knowledge import FactView

log = logging.getLogger("kecl.pipeline")

Mode = Literal["closed-book", "concat", "tree"]
MODES: tuple[str, ...] = ("closed-book", "concat", "tree")
_WORD = re.compile(r"\w+")
_MASK_WORD = re.compile(r"\[MASK\]", re.IGNORECASE)
_STOP = frozenset("the a an of is was in on at to and by for [x] [y] x y".split())


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

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# ----------------------------------------------------------------------------- knowledge selection


def _relevance(query: str, fact: FactView) -> float:
    """How well a fact's relation matches the query's wording (cheap, explainable).

    1 + Jaccard overlap of the query's content words with the relation's template and label, so a
    query phrased like a relation's template ("The currency of Croatia is the [MASK] .") ranks that
    relation's facts first; all linked facts stay eligible.
    """
    q = {w for w in _WORD.findall(_MASK_WORD.sub(" ", query.lower())) if w not in _STOP}
    r = {w for w in _WORD.findall(f"{fact.template or ''} {fact.relation}".lower()) if w not in _STOP}
    return 1.0 + (len(q & r) / len(q | r) if q and r else 0.0)


def select_facts(kecl: Kecl, text: str, opts: QueryOptions) -> tuple[list[Any], list[FactView]]:
    """Link ``text``, then collect the facts within ``opts.hops`` of its entities, best first.

    Returns the ``InjectedFact``s (for the encoder) and the matching ``FactView``s (for the answer).
    """
    from encoder.injection import InjectedFact

    store = kecl.store
    mentions = store.link(text)
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


def select_passages(kecl: Kecl, text: str, opts: QueryOptions) -> list[Any]:
    """The ``k_passages`` best passages by hybrid search (the [MASK] token itself is not searched)."""
    if opts.k_passages <= 0:
        return []
    return kecl.search(_MASK_WORD.sub(" ", text), opts.k_passages)


# ----------------------------------------------------------------------------- the query


def answer_queries(kecl: Kecl, texts: Sequence[str], opts: QueryOptions) -> list[Answer]:
    """Answer a batch of cloze queries (each with at least one ``[MASK]``) in one forward pass.

    Raises ``ValueError`` for an unknown mode or a text without ``[MASK]``.
    """
    if opts.mode not in MODES:
        raise ValueError(f"unknown mode {opts.mode!r}; expected one of {MODES}")
    for t in texts:
        if not _MASK_WORD.search(t):
            raise ValueError(f"no [MASK] in {t!r}: write the word to predict as [MASK]")
    prepared = [retrieve(kecl, t, opts) for t in texts]
    return predict_prepared(kecl, prepared, opts)


@dataclass
class Prepared:
    """A query with its knowledge selected, ready for the encoder."""

    text: str
    facts: list[Any]
    fact_views: list[Any]
    passages: list[Any]
    hits: list[Any]
    retrieve_ms: float


def within_margin(hits: list[Any], margin: float | None) -> list[Any]:
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


def retrieve(kecl: Kecl, text: str, opts: QueryOptions) -> Prepared:
    """Link, select facts and passages for one query (nothing for closed-book)."""
    from encoder.injection import InjectedPassage

    t0 = time.perf_counter()
    text = _MASK_WORD.sub("[MASK]", text)
    if opts.mode == "closed-book":
        return Prepared(text, [], [], [], [], 0.0)
    facts, views = select_facts(kecl, text, opts)
    hits = within_margin(select_passages(kecl, text, opts), kecl.settings.retrieval.passage_margin)
    # The injection budget compares fact and passage scores directly, and their own scores live on
    # different scales (relevance ≈ 1–2, fused RRF ≈ 0.01–0.03): share the budget by rank instead,
    # interleaving the best fact, the best passage, the second fact, … (facts first at a tie).
    facts = [dataclasses.replace(f, score=1.0 / (rank + 1)) for rank, f in enumerate(facts)]
    passages = [InjectedPassage(h.text, 1.0 / (rank + 1), h.passage_id) for rank, h in enumerate(hits)]
    return Prepared(text, facts, views, passages, hits, (time.perf_counter() - t0) * 1000)


def predict_prepared(kecl: Kecl, prepared: Sequence[Prepared], opts: QueryOptions) -> list[Answer]:
    """Inject and fill-mask a batch of prepared queries with the active encoder."""
    from encoder.injection import build_injected_inputs
    from encoder.predict import evidence_bias, fill_mask_encoded

    if not prepared:
        return []
    t0 = time.perf_counter()
    bundle = kecl.encoder
    strategy = opts.mode
    inputs = build_injected_inputs(
        bundle.tokenizer,
        [p.text for p in prepared],
        [p.facts for p in prepared],
        [p.passages for p in prepared],
        strategy=strategy,
        max_length=kecl.settings.model.max_injected_length,
    )
    boost = kecl.settings.model.evidence_boost if opts.evidence_boost is None else opts.evidence_boost
    bias = evidence_bias(bundle.tokenizer, inputs, boost)
    results = fill_mask_encoded(
        bundle,
        inputs.to_dict(),
        top_k=opts.top_k,
        explain=opts.explain,
        texts=[p.text for p in prepared],
        logit_bias=bias,
    )
    predict_ms = (time.perf_counter() - t0) * 1000
    snapshot = kecl.snapshot()
    answers = []
    for row, (p, r) in enumerate(zip(prepared, results)):
        used_f = inputs.used_facts[row]
        used_p = inputs.used_passages[row]
        answer = Answer(
            text=p.text,
            mode=opts.mode,
            predictions=[[{"token": t.token, "score": round(t.score, 6)} for t in m.top_k] for m in r.masks],
            facts=[
                {**p.fact_views[i].to_dict(), "relevance": round(_relevance(p.text, p.fact_views[i]), 4)}
                for i in used_f
            ],
            evidence=[{**p.hits[i].to_dict(), "score": round(p.hits[i].score, 6)} for i in used_p],
            injected_input=inputs.texts[row],
            snapshot=snapshot,
            timings_ms={"retrieve": round(p.retrieve_ms, 2), "predict": round(predict_ms, 2)},
        )
        if opts.explain and r.masks and r.masks[0].explanation is not None:
            answer.explanation = explain_over_evidence(r.masks[0].explanation)
        answers.append(answer)
    return answers


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


# ----------------------------------------------------------------------------- batching concurrent requests


class MicroBatcher:
    """Runs the encoder for concurrent requests together.

    Each request does its own retrieval in its own thread, then queues its prepared query; one
    worker thread takes whatever is queued (waiting at most ``max_wait_ms`` for company, at most
    ``max_batch`` at once, only requests with the same options), runs one batched forward pass and
    resolves every request's future. On 2 CPU cores a batch of 8 costs far less than 8 forwards.
    """

    def __init__(self, kecl: Kecl, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        self.kecl = kecl
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[tuple[Prepared, QueryOptions, Future] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="kecl-batcher", daemon=True)
        self._worker.start()

    def submit(self, text: str, opts: QueryOptions) -> Answer:
        """Answer one query (blocking), batched with whatever else is in flight."""
        if not _MASK_WORD.search(text):
            raise ValueError(f"no [MASK] in {text!r}: write the word to predict as [MASK]")
        prepared = retrieve(self.kecl, text, opts)
        future: Future = Future()
        self._queue.put((prepared, opts, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            # one forward pass per distinct option set (explain, mode and top_k change the work)
            groups: dict[tuple, list] = {}
            for prepared, opts, future in batch:
                key = (opts.mode, opts.top_k, opts.explain, opts.evidence_boost)
                groups.setdefault(key, []).append((prepared, opts, future))
            for items in groups.values():
                try:
                    answers = predict_prepared(self.kecl, [p for p, _, _ in items], items[0][1])
                    for (_, _, future), answer in zip(items, answers):
                        answer.timings_ms["batch_size"] = len(items)
                        future.set_result(answer)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                    for _, _, future in items:
                        if not future.done():
                            future.set_exception(exc)
