"""Entity linker: an alias gazetteer matched with an Aho-Corasick automaton (pyahocorasick).

Normalisation (``normalise_alias``), applied alike to aliases and to the text being linked, one
original character at a time: NFKD, drop nonspacing and enclosing marks (diacritics), casefold,
then every character that is not a letter, digit or spacing mark becomes a separator; runs of
separators collapse to one space and the ends are stripped. So "Türkiye", "TÜRKİYE" and
"turkiye" meet in "turkiye", "ß" in "ss", "New-York" and "new  york" in "new york". Because the
mapping is per character, the linker keeps, for every normalised character, the original
character it came from, and reports spans in the ORIGINAL text (``text[start:end] == surface``,
dropped diacritics after the last letter included).

Matching rules:
- word boundaries: an alias matches only as whole words of the normalised text (the automaton
  holds ``" alias "`` and searches ``" text "``), and only where its ends fall on whole original
  characters (an alias never takes half of a character that normalises to several, like "¼");
- longest match: of overlapping candidates the leftmost wins, then the longest (leftmost-longest,
  as pyahocorasick's ``iter_long`` and most gazetteer taggers do); mentions never overlap and come
  in text order;
- ambiguity: when one normalised alias belongs to several entities, the entity with the highest
  prior wins (the store passes e.g. an explicit prior or the entity's fact count), ties broken by
  the lowest entity id; ``candidates`` lists all of them, best first, for a caller who wants to
  disambiguate by context;
- minimum length: aliases that normalise to fewer than ``min_alias_chars`` characters (default 2,
  spaces not counted) are skipped with a debug log — single letters link everywhere. The
  gazetteer does not guess which aliases are common words ("may", "us"): register names and
  labels, not every word a feed offers.

The automaton is rebuilt lazily: ``add_alias`` and ``remove_entity`` only mark it stale, and the
next ``link`` rebuilds it once (about 0.5 s per 100k aliases). Mutations and rebuilds take a
lock, so one linker may be shared between the updater and the query path.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from dataclasses import dataclass

import ahocorasick

log = logging.getLogger(__name__)

_DROPPED_CATEGORIES = frozenset({"Mn", "Me"})  # diacritics and enclosing marks
_WORD_CATEGORY_PREFIXES = ("L", "N", "Mc")  # letters, digits, spacing marks (Indic vowel signs)

_char_cache: dict[str, str] = {}


def _normalise_char(char: str) -> str:
    """Normalised form of one character: '' (dropped), ' ' (separator) or word characters.

    The result may mix both for compatibility characters such as "¼" -> "1 4".
    """
    cached = _char_cache.get(char)
    if cached is not None:
        return cached
    out = []
    # casefold may reintroduce marks ("İ" -> "i̇"), hence NFKD both before and after it
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", char).casefold())
    for c in decomposed:
        category = unicodedata.category(c)
        if category in _DROPPED_CATEGORIES:
            continue
        out.append(c if category.startswith(_WORD_CATEGORY_PREFIXES) else " ")
    # recompose what NFKD split apart inside this one character (Hangul syllables) for compact keys
    result = unicodedata.normalize("NFC", "".join(out))
    if len(_char_cache) < 1_000_000:  # bound the cache against adversarial text
        _char_cache[char] = result
    return result


def _normalise_with_offsets(text: str) -> tuple[str, list[int], list[int]]:
    """Normalise ``text`` and map each normalised character back to the original.

    Returns ``(normalised, starts, ends)``: normalised character ``j`` came from original
    character ``starts[j]``; ``ends[j]`` is one past the last original character it covers
    (extended over diacritics dropped right after it). Separator runs collapse to one space and
    the ends are stripped, as in ``normalise_alias``.
    """
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, char in enumerate(text):
        norm = _normalise_char(char)
        if not norm:
            if chars:  # a dropped diacritic belongs to the character before it
                ends[-1] = i + 1
            continue
        for c in norm:
            if c == " ":
                if not chars or chars[-1] == " ":
                    continue
            chars.append(c)
            starts.append(i)
            ends.append(i + 1)
    if chars and chars[-1] == " ":
        chars.pop()
        starts.pop()
        ends.pop()
    return "".join(chars), starts, ends


def normalise_alias(text: str) -> str:
    """Return the normalised surface form of ``text`` (the gazetteer key).

    NFKD, diacritics dropped, casefolded, non-word characters -> one space, stripped:
    ``normalise_alias("Türkiye") == "turkiye"``, ``normalise_alias("  New-York!") == "new york"``.
    Never raises; returns "" for text with no letters or digits.
    """
    return _normalise_with_offsets(text)[0]


@dataclass(frozen=True, slots=True)
class LinkedMention:
    """One linked entity mention; ``start``/``end`` are offsets in the original text."""

    start: int
    end: int
    entity_id: int
    surface: str


class EntityLinker:
    """Alias gazetteer over normalised surface forms; see the module docstring for the rules."""

    def __init__(self, min_alias_chars: int = 2) -> None:
        self.min_alias_chars = min_alias_chars
        self._entities_by_alias: dict[str, dict[int, float]] = {}
        self._aliases_by_entity: dict[int, set[str]] = {}
        self._automaton: ahocorasick.Automaton | None = None
        self._stale = True
        self._lock = threading.Lock()

    def add_alias(self, alias: str, entity_id: int, prior: float = 0.0) -> None:
        """Register ``alias`` for ``entity_id``; adding it again updates its prior.

        Aliases that normalise to fewer than ``min_alias_chars`` characters are skipped (logged
        at debug level). The automaton is rebuilt on the next ``link``.
        """
        key = normalise_alias(alias)
        if len(key.replace(" ", "")) < self.min_alias_chars:
            log.debug(
                "skipping alias %r of entity %d: shorter than %d characters after normalisation (%r)",
                alias,
                entity_id,
                self.min_alias_chars,
                key,
            )
            return
        with self._lock:
            self._entities_by_alias.setdefault(key, {})[entity_id] = float(prior)
            self._aliases_by_entity.setdefault(entity_id, set()).add(key)
            self._stale = True

    def remove_entity(self, entity_id: int) -> None:
        """Forget every alias of ``entity_id``; unknown ids are ignored."""
        with self._lock:
            for key in self._aliases_by_entity.pop(entity_id, ()):
                entities = self._entities_by_alias[key]
                del entities[entity_id]
                if not entities:
                    del self._entities_by_alias[key]
            self._stale = True

    def candidates(self, alias: str) -> list[tuple[int, float]]:
        """Return ``(entity_id, prior)`` pairs for ``alias`` (normalised here), best first.

        Best = highest prior, then lowest entity id: the first pair is the one ``link`` picks.
        Returns [] for an unknown alias.
        """
        with self._lock:
            entities = dict(self._entities_by_alias.get(normalise_alias(alias), {}))
        return sorted(entities.items(), key=lambda item: (-item[1], item[0]))

    def __len__(self) -> int:
        return len(self._entities_by_alias)

    def _current_automaton(self) -> ahocorasick.Automaton | None:
        with self._lock:
            if self._stale:
                self._automaton = self._build_automaton()
                self._stale = False
            return self._automaton

    def _build_automaton(self) -> ahocorasick.Automaton | None:
        if not self._entities_by_alias:
            return None
        automaton = ahocorasick.Automaton()
        for key, entities in self._entities_by_alias.items():
            best = min(entities.items(), key=lambda item: (-item[1], item[0]))[0]
            # padded with spaces so that matches fall on word boundaries by construction
            automaton.add_word(f" {key} ", (len(key), best))
        automaton.make_automaton()
        log.debug("built alias automaton: %d aliases", len(self._entities_by_alias))
        return automaton

    def link(self, text: str) -> list[LinkedMention]:
        """Return the entity mentions in ``text``: longest match, non-overlapping, in text order.

        Spans are character offsets in ``text`` itself; ``text[m.start:m.end] == m.surface``.
        """
        automaton = self._current_automaton()
        if automaton is None:
            return []
        normalised, starts, ends = _normalise_with_offsets(text)
        if not normalised:
            return []
        n = len(normalised)
        candidates: list[tuple[int, int, int]] = []  # (start, -length, entity) in normalised text
        for end_index, (length, entity_id) in automaton.iter(f" {normalised} "):
            # end_index is the trailing pad space; in normalised coordinates the key ends there
            norm_end = end_index - 1
            norm_start = norm_end - length
            # Reject a match that takes part of one original character ("¼" -> "1 4"): the
            # space beside the match (index norm_start - 1, or norm_end) came from the same
            # character as the match's edge, and so did a letter beyond it.
            first = starts[norm_start]
            if norm_start >= 2 and starts[norm_start - 1] == first == starts[norm_start - 2]:
                continue
            last = starts[norm_end - 1]
            if norm_end + 1 < n and starts[norm_end] == last == starts[norm_end + 1]:
                continue
            candidates.append((norm_start, -length, entity_id))
        candidates.sort()  # leftmost first, then longest
        mentions: list[LinkedMention] = []
        taken_until = 0
        for norm_start, neg_length, entity_id in candidates:
            if norm_start < taken_until:
                continue
            norm_end = norm_start - neg_length
            taken_until = norm_end
            start, end = starts[norm_start], ends[norm_end - 1]
            mentions.append(LinkedMention(start, end, entity_id, text[start:end]))
        return mentions
