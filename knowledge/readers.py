"""Readers for corpora and fact feeds.

Corpora: ``.txt`` and ``.md`` (one document per file), ``.jsonl`` (one document per line with
``text`` and optional ``id``, ``title``, ``published_at``); directories are read recursively.
Fact feeds: ``.jsonl`` lines with ``"kind"`` of ``entity`` / ``relation`` / ``fact`` (a line with
``text`` is a document, so one file may mix both), or ``.tsv`` files whose header names the
columns (``kind`` column, or inferred: ``subject`` → facts, ``template`` → relations, ``name`` →
entities; aliases separated by ``|``).

Bad input never stops a batch: every problem becomes an :class:`IngestIssue` (file, line, reason)
and the record (or, for undecodable files, the file) is skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS_SUFFIXES = {".txt", ".md", ".jsonl", ".tsv"}


@dataclass(frozen=True)
class IngestIssue:
    """One problem found in the input: where, and why it was skipped."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class DocumentRecord:
    text: str
    title: str | None = None
    external_id: str | None = None
    published_at: dt.date | None = None
    source: str | None = None
    origin: str | None = None  # "file:line", for error messages


@dataclass
class EntityRecord:
    id: str
    name: str
    aliases: list[str] = field(default_factory=list)
    description: str | None = None
    type: str | None = None
    origin: str | None = None


@dataclass
class RelationRecord:
    id: str
    label: str
    template: str | None = None
    functional: bool = False
    origin: str | None = None


@dataclass
class FactRecord:
    subject: str
    relation: str
    object: str | None = None
    object_literal: str | None = None
    valid_from: dt.date | None = None
    source: str | None = None
    confidence: float = 1.0
    origin: str | None = None


@dataclass
class ReadBatch:
    """Everything read from a set of paths, in the order it must be written."""

    documents: list[DocumentRecord] = field(default_factory=list)
    entities: list[EntityRecord] = field(default_factory=list)
    relations: list[RelationRecord] = field(default_factory=list)
    facts: list[FactRecord] = field(default_factory=list)
    issues: list[IngestIssue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def extend(self, other: ReadBatch) -> None:
        self.documents += other.documents
        self.entities += other.entities
        self.relations += other.relations
        self.facts += other.facts
        self.issues += other.issues
        self.files += other.files


class RecordError(ValueError):
    """A record that cannot be used; the message says what was expected."""


def iter_input_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under ``paths`` (directories recursively, sorted) with a readable suffix."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in CORPUS_SUFFIXES and not child.name.startswith("."):
                    yield child
        else:
            yield path


def read_paths(paths: Iterable[Path], source: str | None = None) -> ReadBatch:
    """Read every file under ``paths``; unreadable files and bad records become issues."""
    batch = ReadBatch()
    for path in iter_input_files(paths):
        batch.extend(read_file(path, source=source))
    return batch


def read_file(path: Path, source: str | None = None) -> ReadBatch:
    """Read one corpus file or fact feed. Never raises for bad content: see ``ReadBatch.issues``."""
    batch = ReadBatch(files=[str(path)])
    name = str(path)
    if not path.exists():
        batch.issues.append(IngestIssue(name, None, "no such file"))
        return batch
    suffix = path.suffix.lower()
    if suffix not in CORPUS_SUFFIXES:
        batch.issues.append(
            IngestIssue(name, None, f"unsupported file type {suffix!r} (expected one of {sorted(CORPUS_SUFFIXES)})")
        )
        return batch
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        batch.issues.append(IngestIssue(name, None, f"not valid UTF-8 (byte {exc.start}): file skipped"))
        return batch
    except OSError as exc:
        batch.issues.append(IngestIssue(name, None, f"cannot read: {exc.strerror or exc}"))
        return batch
    source = source or name
    if suffix in {".txt", ".md"}:
        text = content.strip()
        if not text:
            batch.issues.append(IngestIssue(name, None, "empty document"))
        else:
            title = _markdown_title(text) if suffix == ".md" else None
            batch.documents.append(
                DocumentRecord(text=text, title=title or path.stem, external_id=path.name, source=source, origin=name)
            )
    elif suffix == ".jsonl":
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                batch.issues.append(IngestIssue(name, lineno, f"malformed JSON: {exc.msg} (column {exc.colno})"))
                continue
            _add_record(batch, obj, name, lineno, source)
    else:  # .tsv
        _read_tsv(batch, content, name, source)
    return batch


def _read_tsv(batch: ReadBatch, content: str, name: str, source: str) -> None:
    reader = csv.DictReader(io.StringIO(content), delimiter="\t")
    columns = set(reader.fieldnames or [])
    default_kind = (
        None
        if "kind" in columns
        else "fact"
        if "subject" in columns
        else "relation"
        if "template" in columns
        else "entity"
        if "name" in columns
        else "document"
        if "text" in columns
        else None
    )
    if default_kind is None and "kind" not in columns:
        batch.issues.append(
            IngestIssue(
                name,
                1,
                f"cannot tell what the TSV holds from its header {sorted(columns)}: "
                "expected a 'kind' column or subject/template/name/text columns",
            )
        )
        return
    for lineno, row in enumerate(reader, start=2):
        obj: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        if None in row:
            batch.issues.append(IngestIssue(name, lineno, "more fields than the header has columns"))
            continue
        if default_kind and "kind" not in obj:
            obj["kind"] = default_kind
        if isinstance(obj.get("aliases"), str):
            obj["aliases"] = [a.strip() for a in obj["aliases"].split("|") if a.strip()]
        _add_record(batch, obj, name, lineno, source)


def _add_record(batch: ReadBatch, obj: Any, name: str, lineno: int, source: str) -> None:
    origin = f"{name}:{lineno}"
    try:
        if not isinstance(obj, dict):
            raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
        kind = obj.get("kind") or ("document" if "text" in obj else None)
        if kind == "document":
            batch.documents.append(_document(obj, source, origin))
        elif kind == "entity":
            batch.entities.append(_entity(obj, origin))
        elif kind == "relation":
            batch.relations.append(_relation(obj, origin))
        elif kind == "fact":
            batch.facts.append(_fact(obj, source, origin))
        else:
            raise RecordError(
                f"unknown record kind {kind!r}: expected 'entity', 'relation', 'fact' or a document with 'text'"
            )
    except RecordError as exc:
        batch.issues.append(IngestIssue(name, lineno, str(exc)))


def _required_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordError(f"missing field {key!r}")
    if not isinstance(value, (str, int)):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    return str(value).strip()


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int, float)):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    return str(value)


def parse_date(value: Any, key: str = "date") -> dt.date | None:
    """An ISO date (``2023-01-01``; a datetime's date part is kept), or None."""
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise RecordError(f"field {key!r}: {value!r} is not an ISO date (YYYY-MM-DD)") from None


def _document(obj: dict[str, Any], source: str, origin: str) -> DocumentRecord:
    text = _required_str(obj, "text")
    return DocumentRecord(
        text=text,
        title=_optional_str(obj, "title"),
        external_id=_optional_str(obj, "id"),
        published_at=parse_date(obj.get("published_at"), "published_at"),
        source=_optional_str(obj, "source") or source,
        origin=origin,
    )


def _entity(obj: dict[str, Any], origin: str) -> EntityRecord:
    aliases = obj.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise RecordError("field 'aliases' must be a list of strings")
    return EntityRecord(
        id=_required_str(obj, "id"),
        name=_required_str(obj, "name"),
        aliases=[a for a in aliases if a.strip()],
        description=_optional_str(obj, "description"),
        type=_optional_str(obj, "type"),
        origin=origin,
    )


def _relation(obj: dict[str, Any], origin: str) -> RelationRecord:
    template = _optional_str(obj, "template")
    if template is not None and ("[X]" not in template or "[Y]" not in template):
        raise RecordError(f"template {template!r} must contain [X] and [Y]")
    functional = obj.get("functional", False)
    if isinstance(functional, str):
        functional = functional.strip().lower() in {"1", "true", "yes", "y"}
    return RelationRecord(
        id=_required_str(obj, "id"),
        label=_optional_str(obj, "label") or _required_str(obj, "id"),
        template=template,
        functional=bool(functional),
        origin=origin,
    )


def _fact(obj: dict[str, Any], source: str, origin: str) -> FactRecord:
    obj_id = _optional_str(obj, "object")
    literal = _optional_str(obj, "object_literal")
    if (obj_id is None) == (literal is None):
        raise RecordError("a fact needs exactly one of 'object' (entity id) or 'object_literal'")
    confidence = obj.get("confidence", 1.0)
    try:
        confidence = float(confidence)
    except (TypeError, ValueError):
        raise RecordError(f"field 'confidence': {confidence!r} is not a number") from None
    return FactRecord(
        subject=_required_str(obj, "subject"),
        relation=_required_str(obj, "relation"),
        object=obj_id,
        object_literal=literal,
        valid_from=parse_date(obj.get("valid_from"), "valid_from"),
        source=_optional_str(obj, "source") or source,
        confidence=confidence,
        origin=origin,
    )


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip() or None
        if line.strip():
            return None
    return None
