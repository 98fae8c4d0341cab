"""Entity linker: normalisation, longest match on word boundaries, ambiguity, original offsets."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from knowledge.linker import EntityLinker, LinkedMention, normalise_alias


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Türkiye", "turkiye"),
        ("TÜRKİYE", "turkiye"),  # Turkish dotted capital I: casefold gives i + combining dot
        ("Tu\u0308rkiye", "turkiye"),  # NFD input
        ("Straße", "strasse"),
        ("  New-York!!", "new york"),
        ("São\tPaulo\n", "sao paulo"),
        ("ﬁnal", "final"),  # compatibility ligature
        ("😀 Ankara 😀", "ankara"),
        ("...", ""),
    ],
)
def test_normalise_alias_examples(text, expected):
    assert normalise_alias(text) == expected


@given(st.text(max_size=60))
def test_normalise_alias_is_idempotent_and_clean(text):
    key = normalise_alias(text)
    assert normalise_alias(key) == key
    assert key == key.strip() and "  " not in key
    assert not any(unicodedata.category(c) == "Mn" for c in key)


def _linker(*aliases: tuple[str, int] | tuple[str, int, float]) -> EntityLinker:
    linker = EntityLinker()
    for alias in aliases:
        linker.add_alias(*alias)
    return linker


def test_link_prefers_longest_match_and_reports_original_spans():
    linker = _linker(("New York", 1), ("New York City", 2), ("York", 3), ("Türkiye", 4))
    text = "In NEW-YORK  city and in york, not in Yorkshire; TÜRKİYE."
    mentions = linker.link(text)
    assert [(m.entity_id, m.surface) for m in mentions] == [(2, "NEW-YORK  city"), (3, "york"), (4, "TÜRKİYE")]
    for m in mentions:
        assert text[m.start : m.end] == m.surface


def test_link_respects_word_boundaries():
    linker = _linker(("Ankara", 1))
    assert linker.link("Ankaras and xAnkara and Ankara1") == []
    assert [m.surface for m in linker.link("Ankara's mayor (Ankara)")] == ["Ankara", "Ankara"]


def test_leftmost_match_wins_over_a_later_overlapping_one():
    linker = _linker(("red sea", 1), ("sea lion", 2))
    assert [m.entity_id for m in linker.link("the red sea lion")] == [1]


def test_ambiguous_alias_goes_to_highest_prior_then_lowest_id():
    linker = _linker(("Paris", 7, 1.0), ("Paris", 3, 1.0), ("Paris", 9, 0.5))
    assert linker.candidates("PARIS") == [(3, 1.0), (7, 1.0), (9, 0.5)]
    assert linker.link("Paris")[0].entity_id == 3
    linker.add_alias("Paris", 9, 5.0)  # re-adding updates the prior
    assert linker.link("Paris")[0].entity_id == 9
    assert len(linker) == 1


def test_short_aliases_are_skipped():
    linker = _linker(("A", 1), ("é", 2), ("UK", 3))
    assert len(linker) == 1
    assert [m.entity_id for m in linker.link("a é uk")] == [3]


def test_added_and_removed_aliases_take_effect_on_next_link():
    linker = _linker(("Ankara", 1))
    assert [m.entity_id for m in linker.link("Ankara Izmir")] == [1]
    linker.add_alias("İzmir", 2)
    assert [m.entity_id for m in linker.link("Ankara Izmir")] == [1, 2]
    linker.remove_entity(1)
    assert [m.entity_id for m in linker.link("Ankara Izmir")] == [2]
    assert linker.candidates("ankara") == []
    linker.remove_entity(2)
    assert linker.link("Ankara Izmir") == [] and len(linker) == 0


def test_offsets_survive_unicode_before_and_inside_the_match():
    linker = _linker(("Cafe Muller", 1), ("Straße", 2))
    text = "😀👍🏽 e\u0301\u0301 CAFE\u0301 MÜLLER\u0308, STRASSE ß İ straße!"
    mentions = linker.link(text)
    assert mentions == [
        LinkedMention(text.index("CAFE"), text.index(","), 1, text[text.index("CAFE") : text.index(",")]),
        LinkedMention(text.index("STRASSE"), text.index("STRASSE") + 7, 2, "STRASSE"),
        LinkedMention(text.index("straße"), text.index("straße") + 6, 2, "straße"),
    ]
    # the dropped diacritics after the last letter belong to the mention
    assert mentions[0].surface.endswith("R\u0308")


def test_match_never_splits_a_character():
    linker = _linker(("1 4", 1), ("4 x", 2))
    # "¼" normalises to "1 4": whole, it is a match; half of it is not
    assert [m.surface for m in linker.link("a ¼ b")] == ["¼"]
    assert [m.surface for m in linker.link("⑴4")] == ["⑴4"]  # "(1)4" -> "1 4"
    linker.remove_entity(1)
    assert linker.link("¼ x") == []  # "1 4 x": "4 x" would need half of "¼"
    assert [m.surface for m in linker.link("4 x")] == ["4 x"]


# --- property-based: random gazetteers and texts against a brute-force reference -------------

# Alias words and filler words come from alphabets that stay disjoint after normalisation, so a
# mention can only be made of inserted aliases.
_ALIAS_CHARS = "abcdeéüßİı"
_FILLER_CHARS = "xyzø0123"
_SEPARATORS = [" ", "  ", ", ", "-", " 😀 ", "\n", " (", ") ", "'s "]

alias_words = st.text(alphabet=_ALIAS_CHARS, min_size=1, max_size=5)
filler_words = st.text(alphabet=_FILLER_CHARS, min_size=1, max_size=6)


def _surface_variant(alias: str, how: int) -> str:
    """Spell an alias the way a text might: as is, upper, title, or decomposed."""
    return [alias, alias.upper(), alias.title(), unicodedata.normalize("NFD", alias)][how]


def _reference_link(linker: EntityLinker, keys: set[str], text: str) -> list[tuple[int, str, int]]:
    """Brute force on the normalised text: all whole-word occurrences, leftmost-longest."""
    norm = normalise_alias(text)
    found = []
    for key in keys:
        start = norm.find(key)
        while start != -1:
            end = start + len(key)
            if (start == 0 or norm[start - 1] == " ") and (end == len(norm) or norm[end] == " "):
                found.append((start, -len(key), key))
            start = norm.find(key, start + 1)
    chosen, taken_until = [], 0
    for start, neg_length, key in sorted(found):
        if start >= taken_until:
            chosen.append((start, key, linker.candidates(key)[0][0]))
            taken_until = start - neg_length
    return chosen


@st.composite
def gazetteers(draw) -> list[tuple[str, int, float]]:
    """Aliases made of words from one small pool, so that they share prefixes and overlap."""
    pool = draw(st.lists(alias_words, min_size=1, max_size=4))
    alias = st.lists(st.sampled_from(pool), min_size=1, max_size=3).map(" ".join)
    return draw(st.lists(st.tuples(alias, st.integers(0, 5), st.floats(0, 3)), min_size=1, max_size=8))


@settings(max_examples=300, deadline=None)
@given(
    gazetteer=gazetteers(),
    pieces=st.lists(
        st.one_of(filler_words.map(lambda w: (w, None)), st.tuples(st.integers(0, 7), st.integers(0, 3))), max_size=20
    ),
    separators=st.lists(st.sampled_from(_SEPARATORS), min_size=21, max_size=21),
)
def test_link_matches_brute_force_reference(gazetteer, pieces, separators):
    linker = EntityLinker()
    for alias, entity_id, prior in gazetteer:
        linker.add_alias(alias, entity_id, prior)
    keys = {normalise_alias(alias) for alias, _, _ in gazetteer if len(normalise_alias(alias).replace(" ", "")) >= 2}
    assume(keys)

    # build the text, remembering where each inserted alias occurrence sits
    text, inserted = separators[-1], []
    for (piece, how), separator in zip(pieces, separators):
        if how is None:
            text += piece
        else:
            alias = gazetteer[piece % len(gazetteer)][0]
            surface = _surface_variant(alias, how)
            # "ı".upper() == "I", which casefolds to "i": not the same alias any more
            if normalise_alias(alias) in keys and normalise_alias(surface) == normalise_alias(alias):
                inserted.append((len(text), len(text) + len(surface), normalise_alias(alias)))
            text += surface
        text += separator

    mentions = linker.link(text)

    # the same mentions as the brute-force reference, in the same order and places
    reference = _reference_link(linker, keys, text)
    assert [(normalise_alias(m.surface), m.entity_id) for m in mentions] == [
        (key, entity_id) for _, key, entity_id in reference
    ]
    for m, (norm_start, _key, _) in zip(mentions, reference):
        assert normalise_alias(text[: m.start]) == normalise_alias(text)[:norm_start].rstrip()

    previous_end = 0
    for m in mentions:
        assert text[m.start : m.end] == m.surface
        assert normalise_alias(m.surface) in keys
        assert m.start >= previous_end  # in order, not overlapping
        previous_end = m.end
        # word boundaries: the mention does not glue to the text on either side
        before, after = normalise_alias(text[: m.start]), normalise_alias(text[m.end :])
        key = normalise_alias(m.surface)
        assert normalise_alias(text[: m.end]) == f"{before} {key}".strip()
        assert normalise_alias(text[m.start :]) == f"{key} {after}".strip()

    # every inserted occurrence is found whole (diacritics after its last letter included), or
    # overlaps the longer match that took its place
    for start, end, key in inserted:
        assert any(m.start < end and start < m.end for m in mentions)
        for m in mentions:
            if m.start == start and normalise_alias(m.surface) == key:
                assert m.end == end
