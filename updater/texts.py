"""The text a cycle learns from, made from the store: new passages with salient spans, facts
stated in words, and reading exercises with the knowledge the query pipeline injects.

Facts are stated several ways (:data:`VERBALISATIONS`: the relation's own template and paraphrases
of its label), so the model learns the fact rather than one sentence; the acquisition probes use
the relation's template, the reading exercises only the paraphrases. A cycle takes its patterns
from ``CycleConfig.verbalisations`` (default :data:`VERBALISATIONS`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from encoder import ReadingExample, SpanText, fill_slots
from knowledge import FactView, IngestSummary, KnowledgeStore
from updater.evaluation import KnowledgeSource

HELDOUT_MODULO = 10  # passages whose id is divisible by this are never trained on: held-out loss

VERBALISATIONS: tuple[str, ...] = (
    "{template}",
    "The {label} of [X] is [Y] .",
    "[X]'s {label} is [Y] .",
    "[Y] is the {label} of [X] .",
)
"""Patterns a fact is stated in: ``{template}`` (the relation's cloze template) or a sentence with
``{label}`` (the relation's label) and the slots ``[X]`` (subject) and ``[Y]`` (object). The first
is the form replay uses; reading exercises use the others when there are any."""


@dataclass
class FactChanges:
    """This cycle's current facts split into brand-new and changed ones, and (old, new) pairs of the
    changed ones with the fact each closed."""

    new: list[FactView]
    changed: list[FactView]
    pairs: list[tuple[FactView, FactView]]

    @property
    def focus(self) -> set[int]:
        """Entities the new and changed facts are about: their mentions are the salient spans."""
        fresh = self.new + self.changed
        return {f.subject_id for f in fresh} | {f.object_id for f in fresh if f.object_id}


def changed_facts(store: KnowledgeStore, summary: IngestSummary) -> FactChanges:
    """Split this cycle's current new facts into brand-new and changed (with the fact they closed)."""
    closed = {
        (f.subject_id, f.relation_id): f
        for f in store.facts(ids=summary.closed_fact_ids, include_closed=True, limit=None)
    }
    changes = FactChanges([], [], [])
    for f in store.facts(ids=summary.new_fact_ids, limit=None):
        old = closed.get((f.subject_id, f.relation_id))
        if old is not None and old.object != f.object:
            changes.changed.append(f)
            changes.pairs.append((old, f))
        else:
            changes.new.append(f)
    return changes


def verbalise_fact(fact: FactView, patterns: Sequence[str] = VERBALISATIONS) -> list[SpanText]:
    """Sentences stating ``fact``, one per pattern (see :data:`VERBALISATIONS`; duplicates and
    patterns without both slots left out), each with the object's character span as a salient span
    for entity-span masking."""
    out, seen = [], set()
    for pattern in patterns:
        template = pattern.format(template=fact.template or "[X] {label} [Y] .", label=fact.relation)
        if "[X]" not in template or "[Y]" not in template:
            continue
        text, span = fill_slots(template, fact.subject, fact.object)
        if text not in seen:
            seen.add(text)
            out.append(SpanText(text, [span]))
    return out


def training_texts(
    store: KnowledgeStore,
    summary: IngestSummary,
    focus_entities: set[int],
    patterns: Sequence[str] = VERBALISATIONS,
) -> list[SpanText]:
    """New passages (entity mentions of the focus entities as salient spans) + the new facts stated
    in each of ``patterns``."""
    mentions = store.passage_mentions(summary.new_passage_ids)
    texts = store.passage_texts(summary.new_passage_ids)
    out = []
    for pid in sorted(texts):
        if pid % HELDOUT_MODULO == 0:
            continue  # kept aside: the held-out MLM loss of later cycles is measured on these
        spans = [(a, b) for a, b, eid in mentions.get(pid, []) if eid in focus_entities] or [
            (a, b) for a, b, _ in mentions.get(pid, [])
        ]
        out.append(SpanText(texts[pid], spans))
    for fact in store.facts(ids=summary.new_fact_ids, include_closed=False, limit=None):
        out.extend(verbalise_fact(fact, patterns))
    return out


def reading_exercises(
    facts: Sequence[FactView],
    knowledge: KnowledgeSource,
    seed: int = 0,
    mode: str = "concat",
    patterns: Sequence[str] = VERBALISATIONS,
) -> list[ReadingExample]:
    """Reading exercises from the store's own facts, with exactly the knowledge the query pipeline
    injects (``knowledge``): the query states the fact in one of its paraphrases (never the
    relation's own template, which the acquisition probes use, unless ``patterns`` has no other),
    the object masked. Where retrieval
    misses the fact, the exercise still counts: the model then learns to fall back on memory.
    """
    rng = random.Random(seed)
    queries, items = [], []
    for fact in facts:
        forms = verbalise_fact(fact, patterns)
        if not forms:
            continue
        form = rng.choice(forms[1:] or forms)
        ((start, end),) = form.salient_spans
        queries.append(form.text[:start] + "[MASK]" + form.text[end:])
        items.append((form, start, end - start - len("[MASK]"), fact.object))
    if not queries:
        return []
    fact_lists, passage_lists = knowledge(queries, mode)
    out = []
    for (form, at, shift, answer), facts_i, passages_i in zip(items, fact_lists, passage_lists):
        # The pipeline's fact spans are offsets in the query with "[MASK]"; move those after it.
        moved = tuple(
            f if f.span is None or f.span[0] < at else replace(f, span=(f.span[0] + shift, f.span[1] + shift))
            for f in facts_i
        )
        out.append(ReadingExample(form, moved, tuple(passages_i), answer))
    return out
