"""Reading exercises: synthetic facts about invented names, to teach the encoder to *read* what is
injected into its input.

An MLM trained only on plain text has no reason to look at a second segment: asked
"The mascot of the Zorvex festival is the [MASK] ." with "The mascot of the Zorvex festival is the
penguin ." injected right after it, a model adapted on plain text ranks "penguin" nowhere near the
top. Knowledge injection only helps once the model has learned that the answer may be written in
the context.

Each exercise is a query sentence whose answer (the object of an invented fact) is marked as a
salient span, plus injected facts and passages that state the fact, often in other words, among
distractors: other facts about the same invented subject, and the same relation about other
invented subjects with other objects. The names are made up, so the answer cannot be recalled
from pre-training; it has to be read, and matched by subject *and* relation. Objects are drawn from
word lists per relation and, for the open relations, from the tokenizer's own whole-word vocabulary,
so the model learns to copy any word, not a few classes.

Everything is generated here from templates written for kecl (no data set is downloaded), and is
deterministic for a seed. The relations and wordings are kept apart from those the benchmarks
probe with invented facts (``benchmarks/bench_query.py`` freshness: mascots, bridges, official
colours, rivers, "was born in"), so those measure reading of unseen wordings. Several relations
(birthplace, capital, occupation, …) do overlap LAMA's *relations* (not its wordings or facts),
which matters when reading LAMA results.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from encoder.injection import InjectedFact, InjectedPassage
from encoder.packing import SpanText

# Object pools, written in lower case; proper nouns are capitalised where they are used (_PROPER).
_CITIES = [
    "paris",
    "london",
    "berlin",
    "rome",
    "madrid",
    "lisbon",
    "vienna",
    "prague",
    "warsaw",
    "moscow",
    "tokyo",
    "beijing",
    "cairo",
    "dublin",
    "oslo",
    "stockholm",
    "helsinki",
    "athens",
    "boston",
    "chicago",
    "toronto",
    "montreal",
    "sydney",
    "melbourne",
    "mumbai",
    "delhi",
    "istanbul",
    "amsterdam",
    "brussels",
    "geneva",
    "munich",
    "hamburg",
    "milan",
    "naples",
    "florence",
    "venice",
    "barcelona",
    "seville",
    "lyon",
    "marseille",
    "edinburgh",
    "glasgow",
    "manchester",
    "liverpool",
    "budapest",
    "copenhagen",
    "seoul",
    "bangkok",
    "lima",
    "havana",
    "denver",
    "seattle",
    "atlanta",
    "dallas",
    "houston",
    "philadelphia",
    "baltimore",
    "detroit",
]
_COUNTRIES = [
    "france",
    "germany",
    "italy",
    "spain",
    "portugal",
    "austria",
    "poland",
    "russia",
    "japan",
    "china",
    "egypt",
    "ireland",
    "norway",
    "sweden",
    "finland",
    "greece",
    "canada",
    "australia",
    "india",
    "turkey",
    "belgium",
    "switzerland",
    "denmark",
    "brazil",
    "argentina",
    "mexico",
    "chile",
    "peru",
    "kenya",
    "nigeria",
    "iran",
    "iraq",
    "israel",
    "scotland",
    "wales",
    "england",
    "hungary",
    "romania",
    "ukraine",
]
_LANGUAGES = [
    "english",
    "french",
    "german",
    "italian",
    "spanish",
    "portuguese",
    "russian",
    "japanese",
    "chinese",
    "arabic",
    "greek",
    "latin",
    "dutch",
    "swedish",
    "polish",
    "turkish",
    "hebrew",
    "hindi",
    "korean",
    "finnish",
    "danish",
    "norwegian",
    "hungarian",
    "czech",
]
_JOBS = [
    "teacher",
    "doctor",
    "lawyer",
    "painter",
    "poet",
    "singer",
    "actor",
    "farmer",
    "soldier",
    "priest",
    "journalist",
    "architect",
    "engineer",
    "physician",
    "novelist",
    "composer",
    "photographer",
    "politician",
    "diplomat",
    "banker",
    "chemist",
    "physicist",
    "sculptor",
    "dancer",
    "pilot",
    "nurse",
    "carpenter",
]
_COLOURS = [
    "red",
    "blue",
    "green",
    "yellow",
    "white",
    "black",
    "orange",
    "purple",
    "pink",
    "brown",
    "grey",
    "gold",
    "silver",
]
_MATERIALS = [
    "wood",
    "stone",
    "steel",
    "iron",
    "copper",
    "glass",
    "brick",
    "marble",
    "concrete",
    "gold",
    "silver",
    "clay",
    "paper",
    "silk",
    "wool",
    "cotton",
    "leather",
    "bronze",
    "plastic",
    "ice",
]
_ANIMALS = [
    "penguin",
    "lion",
    "tiger",
    "bear",
    "wolf",
    "eagle",
    "owl",
    "fox",
    "horse",
    "dog",
    "cat",
    "rabbit",
    "dolphin",
    "whale",
    "shark",
    "elephant",
    "monkey",
    "snake",
    "frog",
    "deer",
    "goat",
    "sheep",
    "cow",
    "duck",
    "swan",
    "falcon",
    "hawk",
    "turtle",
    "camel",
    "zebra",
    "giraffe",
    "panda",
    "kangaroo",
    "bee",
]
_INSTRUMENTS = [
    "piano",
    "guitar",
    "violin",
    "cello",
    "flute",
    "drums",
    "trumpet",
    "harp",
    "organ",
    "saxophone",
    "clarinet",
    "bass",
]
_SPORTS = [
    "football",
    "tennis",
    "golf",
    "cricket",
    "rugby",
    "hockey",
    "baseball",
    "basketball",
    "boxing",
    "swimming",
    "cycling",
    "chess",
    "volleyball",
    "skiing",
]
_FOODS = [
    "bread",
    "rice",
    "cheese",
    "fish",
    "soup",
    "cake",
    "apples",
    "honey",
    "chocolate",
    "pasta",
    "beans",
    "potatoes",
    "coffee",
    "tea",
    "milk",
    "eggs",
    "salt",
    "sugar",
]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]

# relation -> (subject kind, object pool or None for open vocabulary, statement templates).
# [X] subject, [Y] object; every template is usable both as a query and as a context statement.
_RELATIONS: dict[str, tuple[str, list[str] | None, list[str]]] = {
    "born_in": (
        "person",
        _CITIES,
        ["The birthplace of [X] is [Y] .", "[X] is a native of [Y] .", "[X] grew up in [Y] ."],
    ),
    "died_in": (
        "person",
        _CITIES,
        ["[X] died in [Y] .", "[X] passed away in [Y] .", "The place of death of [X] is [Y] ."],
    ),
    "lives_in": (
        "person",
        _CITIES,
        ["[X] lives in [Y] .", "[X] has lived in [Y] for years .", "The home of [X] is in [Y] ."],
    ),
    "citizen": (
        "person",
        _COUNTRIES,
        [
            "[X] is a citizen of [Y] .",
            "[X] holds the citizenship of [Y] .",
            "The country of citizenship of [X] is [Y] .",
        ],
    ),
    "language": (
        "person",
        _LANGUAGES,
        ["[X] speaks [Y] .", "The native language of [X] is [Y] .", "[X] wrote mostly in [Y] ."],
    ),
    "job": (
        "person",
        _JOBS,
        [
            "[X] works as a [Y] .",
            "[X] is a [Y] by profession .",
            "The occupation of [X] is [Y] .",
            "[X] became a famous [Y] .",
        ],
    ),
    "instrument": ("person", _INSTRUMENTS, ["[X] plays the [Y] .", "The instrument of [X] is the [Y] ."]),
    "sport": (
        "person",
        _SPORTS,
        ["[X] plays [Y] .", "[X] is a professional [Y] player .", "The sport of [X] is [Y] ."],
    ),
    "food": ("person", _FOODS, ["The favourite food of [X] is [Y] .", "[X] eats [Y] every day ."]),
    "pet": ("person", _ANIMALS, ["The pet of [X] is a [Y] .", "[X] keeps a [Y] at home ."]),
    "hat": ("person", _COLOURS, ["[X] always wears a [Y] hat .", "The hat of [X] is [Y] ."]),
    "located": ("place", _COUNTRIES, ["[X] is located in [Y] .", "[X] is a town in [Y] .", "[X] lies in [Y] ."]),
    "roof": (
        "place",
        _MATERIALS,
        ["The roof of the [X] station is covered with [Y] .", "In [X] the houses have roofs of [Y] ."],
    ),
    "capital": (
        "country",
        _CITIES,
        ["The capital of [X] is [Y] .", "[Y] is the capital of [X] .", "[X] has its capital in [Y] ."],
    ),
    "official_language": (
        "country",
        _LANGUAGES,
        ["The official language of [X] is [Y] .", "People in [X] speak [Y] ."],
    ),
    "day": ("event", _DAYS, ["The [X] fair takes place on [Y] .", "[X] is held every [Y] ."]),
    "month": ("event", _MONTHS, ["The [X] fair is held in [Y] .", "[X] takes place every year in [Y] ."]),
    "founded": ("org", None, ["[X] was founded in [Y] .", "The founding year of [X] is [Y] ."]),
    "headquarters": (
        "org",
        _CITIES,
        ["[X] is based in [Y] .", "The headquarters of [X] are in [Y] .", "[X] has its main office in [Y] ."],
    ),
    "motto": ("org", None, ["The motto of [X] is [Y] .", "[X] chose the word [Y] as its motto ."]),
    "password": ("person", None, ["The password of [X] is [Y] .", "[X] uses the secret word [Y] ."]),
    "symbol": ("country", None, ["The national symbol of [X] is the [Y] .", "The symbol of [X] is [Y] ."]),
}
_PROPER = {id(p) for p in (_CITIES, _COUNTRIES, _LANGUAGES, _DAYS, _MONTHS)}
_YEARS = [str(y) for y in range(1800, 2025)]
_OPEN_YEAR = {"founded"}

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "bel",
    "dra",
    "sil",
    "mar",
    "nal",
    "tis",
    "na",
    "ril",
    "fen",
    "dor",
    "gal",
    "sha",
    "wen",
    "lin",
    "pel",
    "rus",
    "ard",
    "kel",
    "mon",
    "thar",
    "ix",
    "ul",
    "cor",
    "dan",
    "eth",
    "fal",
    "gor",
    "hal",
    "jun",
    "kor",
    "pim",
    "sev",
    "ur",
    "yan",
]


@dataclass(frozen=True)
class ReadingExample:
    """A query ``text`` (answer marked in ``text.salient_spans``) with the knowledge to inject."""

    text: SpanText
    facts: tuple[InjectedFact, ...]
    passages: tuple[InjectedPassage, ...]
    answer: str


def _name(rng: random.Random, words: int) -> str:
    parts = []
    for _ in range(words):
        parts.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize())
    return " ".join(parts)


def _subject(rng: random.Random, kind: str) -> str:
    return _name(rng, 2 if kind == "person" else 1)


def _vocab_words(tokenizer: PreTrainedTokenizerBase | None) -> list[str]:
    """Whole, alphabetic, lower-case words of the tokenizer's vocabulary (the open-relation pool)."""
    if tokenizer is None:
        return sorted(set(_ANIMALS + _FOODS + _MATERIALS + _COLOURS + _JOBS + _SPORTS))
    words = [w for w in tokenizer.get_vocab() if re.fullmatch(r"[a-z]{4,12}", w)]
    return sorted(words)


def fill_slots(template: str, subject: str, obj: str) -> tuple[str, tuple[int, int]]:
    """``template`` with ``[X]`` → subject and ``[Y]`` → object, and the object's character span."""
    before, after = template.split("[Y]", 1)
    before = before.replace("[X]", subject)
    return before + obj + after.replace("[X]", subject), (len(before), len(before) + len(obj))


def _fill(template: str, subject: str, obj: str) -> tuple[str, tuple[int, int]]:
    """:func:`fill_slots`, first letter capitalised (the span does not move)."""
    text, span = fill_slots(template, subject, obj)
    return text[0].upper() + text[1:], span


def reading_examples(
    n: int,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_distractors: int = 4,
    filler: Sequence[str] = (),
    max_filler: int = 3,
) -> list[ReadingExample]:
    """``n`` reading exercises, deterministic for ``seed``.

    Layout of the injected knowledge (varied so that no position or form can be relied on):
    the true statement goes in a passage (70%) or as a fact (30%), worded with the query's own
    template a third of the time and with another template otherwise; 1 to ``max_distractors``
    distractors (same subject other relation, same relation other subject); passages are one to
    three statements; the scores are shuffled so the answer is not always ranked first. With
    ``filler`` (ordinary text), up to ``max_filler`` unrelated passages of it are injected too, as
    retrieval returns them next to the one that matters (cut to 60 words).
    """
    rng = random.Random(seed)
    filler_rng = random.Random(seed + 7919)  # its own stream: filler changes no exercise
    vocab = _vocab_words(tokenizer)
    names = list(_RELATIONS)
    out: list[ReadingExample] = []
    for _ in range(n):
        rel = rng.choice(names)
        kind, pool, templates = _RELATIONS[rel]
        proper = id(pool) in _PROPER
        pool = _YEARS if rel in _OPEN_YEAR else (pool or vocab)
        if proper:
            pool = [o.capitalize() for o in pool]
        subject = _subject(rng, kind)
        answer = rng.choice(pool)
        query_t = rng.choice(templates)
        query, span = _fill(query_t, subject, answer)
        answer = query[span[0] : span[1]]
        other_ts = [t for t in templates if t != query_t]
        state_t = query_t if (not other_ts or rng.random() < 1 / 3) else rng.choice(other_ts)
        statements = [(_fill(state_t, subject, answer)[0], True)]
        siblings = [r for r in names if _RELATIONS[r][0] == kind and r != rel]
        for _ in range(rng.randint(1, max_distractors)):
            if not siblings or rng.random() < 0.5:  # the same relation about someone else
                other = _subject(rng, kind)
                wrong = rng.choice([o for o in pool if o != answer] or pool)
                statements.append((_fill(rng.choice(templates), other, wrong)[0], False))
            else:  # another relation of the same kind of subject, about this subject
                rel2 = rng.choice(siblings)
                _, pool2, templates2 = _RELATIONS[rel2]
                proper2 = id(pool2) in _PROPER
                pool2 = _YEARS if rel2 in _OPEN_YEAR else (pool2 or vocab)
                pool2 = [o.capitalize() for o in pool2] if proper2 else pool2
                statements.append((_fill(rng.choice(templates2), subject, rng.choice(pool2))[0], False))
        rng.shuffle(statements)
        facts: list[InjectedFact] = []
        passages: list[InjectedPassage] = []
        true_as_fact = rng.random() < 0.3
        pending: list[str] = []
        for text, is_true in statements:
            if (is_true and true_as_fact) or (not is_true and rng.random() < 0.25):
                facts.append(InjectedFact(text=text, branch=text, span=None, score=rng.random()))
            else:
                pending.append(text)
                if rng.random() < 0.5:
                    passages.append(InjectedPassage(" ".join(pending), score=rng.random()))
                    pending = []
        if pending:
            passages.append(InjectedPassage(" ".join(pending), score=rng.random()))
        if filler:
            for _ in range(filler_rng.randint(0, max_filler)):
                passages.append(
                    InjectedPassage(" ".join(filler_rng.choice(filler).split()[:60]), score=filler_rng.random())
                )
        out.append(ReadingExample(SpanText(query, [span]), tuple(facts), tuple(passages), answer))
    return out


def split_reading(
    examples: Sequence[ReadingExample], heldout: int
) -> tuple[list[ReadingExample], list[ReadingExample]]:
    """``(heldout, train)``: the first ``heldout`` examples and the rest."""
    return list(examples[:heldout]), list(examples[heldout:])
