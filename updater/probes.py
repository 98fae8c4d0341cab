"""Cloze probes: LAMA-format files, probes made from the store's facts, LAMA's one-token rule.

A probe is a sentence with exactly one ``[MASK]`` and the gold object that belongs there
("Dante was born in [MASK] ." → "Florence"). Two sources:

- **LAMA files** (Petroni et al. 2019): JSONL with ``sub_label``, ``obj_label`` and either a
  relation (T-REx ``predicate_id``, whose cloze template comes from ``relations.jsonl``; Google-RE,
  whose three templates LAMA fixed) or ``masked_sentences`` (Google-RE, SQuAD; T-REx keeps them
  under ``evidences[].masked_sentence``);
- **the store's facts**, verbalised through their relation's template with ``[Y]`` masked — the
  acquisition and retention probes of an update cycle.

LAMA scores only objects that are a single token of the model's vocabulary, so that one
prediction at one position can be right or wrong; :func:`single_token_filter` applies that rule
and says what it dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from knowledge import IngestIssue

log = logging.getLogger(__name__)

MASK = "[MASK]"
_MASK_RE = re.compile(r"\[MASK\]", re.IGNORECASE)

# LAMA's Google-RE templates (lama/build_encoded_dataset / run_experiments.py).
GOOGLE_RE_TEMPLATES: dict[str, str] = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}


@dataclass(frozen=True)
class Probe:
    """One cloze question: ``text`` with exactly one ``[MASK]``, whose answer is ``obj_label``.

    ``relation`` is the relation id (``P19``, ``place_of_birth``); ``group`` is what the metrics
    are broken down by (the relation, or "new" / "changed" / "unchanged" in an update cycle).
    ``fact_id`` links a probe made from the store back to its fact; ``origin`` is "file:line".
    """

    text: str
    obj_label: str
    sub_label: str = ""
    relation: str = ""
    probe_id: str = ""
    group: str = ""
    fact_id: int | None = None
    origin: str | None = None
    obj_entity_id: int | None = None  # the gold entity, when the store knows it (entity-level answers)


@dataclass
class LoadedProbes:
    """Probes read from files, with every skipped line (file, line, why)."""

    probes: list[Probe] = field(default_factory=list)
    issues: list[IngestIssue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class FactLike(Protocol):
    """What :func:`probes_from_facts` needs of a fact (``knowledge.FactView`` has it); read-only,
    so frozen dataclasses qualify."""

    @property
    def id(self) -> int: ...
    @property
    def subject(self) -> str: ...
    @property
    def relation_id(self) -> str: ...
    @property
    def relation(self) -> str: ...
    @property
    def template(self) -> str | None: ...
    @property
    def object(self) -> str: ...


# ----------------------------------------------------------------------------- templates


def fill_template(template: str, subject: str, obj: str = MASK) -> str:
    """``[X]`` → ``subject``, ``[Y]`` → ``obj`` (``[MASK]`` by default).

    Raises ``ValueError`` unless the template has exactly one ``[Y]``.
    """
    if template.count("[Y]") != 1:
        raise ValueError(f"template {template!r} must contain exactly one [Y]")
    return template.replace("[X]", subject).replace("[Y]", obj)


def read_relation_templates(path: str | Path) -> dict[str, str]:
    """``relation id → cloze template`` from a LAMA ``relations.jsonl``.

    Raises ``FileNotFoundError`` if missing and ``ValueError`` (with file:line) on a bad line.
    """
    path = Path(path)
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out[str(d["relation"])] = str(d["template"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: expected a JSON object with 'relation' and 'template' ({exc})") from None
    return out


def _find_relations_file(path: Path) -> Path | None:
    """LAMA keeps ``relations.jsonl`` next to the ``TREx/`` folder: look beside and above."""
    for folder in (path if path.is_dir() else path.parent, *(path if path.is_dir() else path.parent).parents[:2]):
        candidate = folder / "relations.jsonl"
        if candidate.is_file():
            return candidate
    return None


def _google_re_relation(path: Path, record: Mapping[str, Any]) -> str | None:
    pred = record.get("pred")
    if isinstance(pred, str) and pred.rsplit("/", 1)[-1] in GOOGLE_RE_TEMPLATES:
        return pred.rsplit("/", 1)[-1]
    stem = path.stem.removesuffix("_test")
    return stem if stem in GOOGLE_RE_TEMPLATES else None


# ----------------------------------------------------------------------------- LAMA files


def _masked_sentences(record: Mapping[str, Any]) -> list[str]:
    sentences = record.get("masked_sentences")
    if isinstance(sentences, list):
        return [s for s in sentences if isinstance(s, str)]
    evidences = record.get("evidences")
    if isinstance(evidences, list):
        return [
            e["masked_sentence"] for e in evidences if isinstance(e, dict) and isinstance(e.get("masked_sentence"), str)
        ]
    return []


def _probe_from_record(
    record: Any, path: Path, n: int, templates: Mapping[str, str], use_masked_sentences: bool
) -> Probe:
    """One LAMA line → a probe. Raises ``ValueError`` saying what is wrong with the line."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    obj = record.get("obj_label")
    if not isinstance(obj, str) or not obj.strip():
        raise ValueError("missing or empty 'obj_label'")
    sub = record.get("sub_label", "")
    sub = sub if isinstance(sub, str) else ""
    relation = record.get("predicate_id") or _google_re_relation(path, record) or f"{path.parent.name}/{path.stem}"
    relation = str(relation)
    template = templates.get(relation) or GOOGLE_RE_TEMPLATES.get(relation)
    sentences = _masked_sentences(record)
    if use_masked_sentences or template is None:
        # LAMA feeds all of a fact's masked sentences at once; one sentence keeps the one-mask
        # contract of a probe, so take the first with exactly one [MASK].
        one = [s for s in sentences if len(_MASK_RE.findall(s)) == 1]
        if not one:
            if template is None:
                raise ValueError(f"no template for relation {relation!r} and no masked sentence with one [MASK]")
            raise ValueError("no masked sentence with exactly one [MASK]")
        text = _MASK_RE.sub(MASK, one[0])
    else:
        if not sub.strip():
            raise ValueError("missing or empty 'sub_label'")
        try:
            text = fill_template(template, sub.strip())
        except ValueError as exc:
            raise ValueError(f"relation {relation!r}: {exc}") from None
    probe_id = str(record.get("uuid") or record.get("id") or f"{path.name}:{n}")
    return Probe(
        text=text,
        obj_label=obj.strip(),
        sub_label=sub.strip(),
        relation=relation,
        probe_id=probe_id,
        group=relation,
        origin=f"{path}:{n}",
    )


def load_lama_probes(
    path: str | Path | Sequence[str | Path],
    templates: Mapping[str, str] | str | Path | None = None,
    use_masked_sentences: bool = False,
    limit_per_relation: int | None = None,
    relations: Iterable[str] | None = None,
) -> LoadedProbes:
    """Read LAMA-format JSONL files (a file, a folder of them, or a list of either).

    ``templates``: ``relation id → "[X] … [Y] ."`` or the path of a ``relations.jsonl``; by default
    the ``relations.jsonl`` found beside or above the files (LAMA's layout), plus LAMA's Google-RE
    templates. ``use_masked_sentences``: probe with the record's own masked sentence instead of
    the template (records without a template always do). ``limit_per_relation``: the first N
    probes of each relation; ``relations``: keep only these relation ids.

    Bad lines are skipped and reported in ``issues`` (file:line: why), as kecl's ingest does.
    Raises ``FileNotFoundError`` for a path that does not exist.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(c for c in p.rglob("*.jsonl") if c.name != "relations.jsonl")
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"probe file or folder not found: {p}")
    if isinstance(templates, (str, Path)):
        table = read_relation_templates(templates)
    elif templates is not None:
        table = dict(templates)
    else:
        table = {}
        found = {_find_relations_file(Path(p)) for p in paths} - {None}
        for rel_file in sorted(found):  # type: ignore[type-var]
            table.update(read_relation_templates(rel_file))  # type: ignore[arg-type]
    wanted = set(relations) if relations is not None else None

    out = LoadedProbes(files=[str(f) for f in files])
    per_relation: dict[str, int] = {}
    for file in files:
        try:
            handle = open(file, encoding="utf-8")
        except OSError as exc:
            out.issues.append(IngestIssue(str(file), None, f"cannot read: {exc}"))
            continue
        with handle:
            try:
                for n, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        out.issues.append(IngestIssue(str(file), n, f"not valid JSON: {exc.msg} (column {exc.colno})"))
                        continue
                    try:
                        probe = _probe_from_record(record, file, n, table, use_masked_sentences)
                    except ValueError as exc:
                        out.issues.append(IngestIssue(str(file), n, str(exc)))
                        continue
                    if wanted is not None and probe.relation not in wanted:
                        continue
                    count = per_relation.get(probe.relation, 0)
                    if limit_per_relation is not None and count >= limit_per_relation:
                        continue
                    per_relation[probe.relation] = count + 1
                    out.probes.append(probe)
            except UnicodeDecodeError as exc:
                out.issues.append(IngestIssue(str(file), None, f"not UTF-8 text: {exc.reason}"))
    for issue in out.issues:
        log.warning("skipped probe %s", issue)
    return out


# ----------------------------------------------------------------------------- probes from the store


def probes_from_facts(
    facts: Iterable[FactLike],
    template_override: str | Mapping[str, str] | None = None,
    group: str | Callable[[FactLike], str] | None = None,
) -> list[Probe]:
    """One probe per fact: its relation's template with ``[X]`` = subject and ``[Y]`` = ``[MASK]``.

    ``template_override``: one template for all facts, or ``relation id → template`` (others keep
    their own). A fact without a template is verbalised as "[X] <relation label> [Y] ." (as
    ``FactView.verbalise`` does). ``group``: a fixed group name ("new", "unchanged" …) or a
    function of the fact; default the relation id.
    Raises ``ValueError`` for a template without exactly one ``[Y]``.
    """
    out = []
    for f in facts:
        if isinstance(template_override, str):
            template = template_override
        else:
            template = (template_override or {}).get(f.relation_id) or f.template or f"[X] {f.relation} [Y] ."
        name = group(f) if callable(group) else (group or f.relation_id)
        out.append(
            Probe(
                text=fill_template(template, f.subject),
                obj_label=f.object,
                sub_label=f.subject,
                relation=f.relation_id,
                probe_id=f"fact:{f.id}",
                group=name,
                fact_id=f.id,
                obj_entity_id=getattr(f, "object_id", None),
            )
        )
    return out


# ----------------------------------------------------------------------------- LAMA's one-token rule


def gold_token_id(tokenizer: Any, label: str) -> int | None:
    """The vocabulary id of ``label`` if the tokenizer keeps it as one whole-word token, else ``None``.

    The tokenizer normalises as it does for any input (an uncased model lowercases "Paris" and
    strips accents), so the label counts as one token exactly when the model could predict it at
    one ``[MASK]``. ``[UNK]`` does not count.
    """
    ids = tokenizer(label, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return None
    token_id = ids[0]
    if token_id == tokenizer.unk_token_id or token_id in set(tokenizer.all_special_ids):
        return None
    if tokenizer.convert_ids_to_tokens(token_id).startswith("##"):
        return None
    return int(token_id)


def single_token_filter(probes: Iterable[Probe], tokenizer: Any) -> tuple[list[Probe], list[Probe]]:
    """LAMA's restriction: ``(kept, dropped)``, kept = probes whose gold object is one token.

    Also drops probes whose text does not hold exactly one ``[MASK]``.
    """
    kept: list[Probe] = []
    dropped: list[Probe] = []
    for p in probes:
        ok = gold_token_id(tokenizer, p.obj_label) is not None and p.text.count(MASK) == 1
        (kept if ok else dropped).append(p)
    return kept, dropped
