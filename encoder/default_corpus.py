"""General English text for adapting a fresh MLM head, with nothing downloaded at run time.

Two sources, both present wherever kecl is installed:

- **Python's own documentation**: the docstrings of the standard library's ``.py`` files, read
  with ``ast`` (never imported), from the interpreter running kecl. Plain technical English,
  PSF-licensed, and used in place on the user's machine (not copied into the project).
- **Everyday sentences** generated here from small hand-written templates and word lists
  (written for kecl, so licence-clean), so that simple sentences such as
  "The puppy [MASK] on the mat." are covered too.
"""

from __future__ import annotations

import ast
import logging
import random
import re
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

_CODEISH = re.compile(r"(>>>|\w+\(.*\)|[{}\[\]=<>_`|]|::|\.\.\s|\$|\\)")


def _clean_paragraphs(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", doc):
        lines = [ln.strip() for ln in para.strip().splitlines()]
        text = " ".join(ln for ln in lines if ln)
        words = text.split()
        if len(words) < 8 or len(_CODEISH.findall(text)) > len(words) // 12:
            continue
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if letters < 0.9 * len(text):
            continue
        out.append(text)
    return out


def stdlib_docstring_paragraphs(max_chars: int = 3_000_000) -> list[str]:
    """Prose paragraphs from the standard library's docstrings, deduplicated, in a stable order.

    Returns an empty list if the standard library ships without sources.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[str] = []
    total = 0
    files = sorted(
        p
        for p in stdlib.rglob("*.py")
        if "site-packages" not in p.parts
        and "test" not in p.parts
        and "tests" not in p.parts
        and "idlelib" not in p.parts
    )
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in _clean_paragraphs(doc):
                    if para not in seen:
                        seen.add(para)
                        out.append(para)
                        total += len(para)
                        if total >= max_chars:
                            return out
    return out


_SUBJECTS = [
    "the puppy",
    "the cat",
    "a small dog",
    "the old man",
    "my sister",
    "the teacher",
    "a young girl",
    "the farmer",
    "our neighbour",
    "the children",
    "the bird",
    "his brother",
    "the doctor",
    "a tired student",
    "the baby",
    "the horse",
    "her mother",
    "the boy",
    "the cook",
    "the driver",
]
_PLACES = [
    "on the mat",
    "in the garden",
    "at the table",
    "by the window",
    "on the sofa",
    "in the kitchen",
    "under the tree",
    "near the door",
    "in the park",
    "on the floor",
    "at school",
    "in the car",
    "on the bed",
    "by the river",
    "in the house",
]
_VERBS_PLACE = ["sat", "slept", "played", "waited", "stood", "rested", "lay", "ate", "read", "worked", "sang", "stayed"]
_OBJECTS = [
    "a book",
    "the ball",
    "an apple",
    "some bread",
    "a letter",
    "the newspaper",
    "a cup of tea",
    "the door",
    "a song",
    "the dishes",
    "a picture",
    "the window",
    "a new coat",
    "the bus",
    "a glass of water",
]
_VERBS_OBJ = [
    "read",
    "opened",
    "ate",
    "wrote",
    "bought",
    "found",
    "carried",
    "washed",
    "painted",
    "closed",
    "wanted",
    "dropped",
    "took",
    "saw",
    "made",
]
_TIMES = [
    "in the morning",
    "every day",
    "last night",
    "after dinner",
    "on sunday",
    "before breakfast",
    "in the evening",
    "at noon",
    "yesterday",
    "all afternoon",
]
_ADJ = [
    ("sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("night", "dark"),
    ("sun", "hot"),
    ("ice", "cold"),
    ("sea", "deep"),
    ("road", "long"),
    ("room", "quiet"),
    ("soup", "warm"),
]
_FACTS = [
    "water is a liquid .",
    "the sun rises in the east .",
    "a week has seven days .",
    "a year has twelve months .",
    "cats and dogs are animals .",
    "birds can fly .",
    "fish live in water .",
    "people sleep at night .",
    "ice melts when it is warm .",
    "the moon moves around the earth .",
    "bread is made from flour .",
    "rain falls from the clouds .",
    "trees have leaves and roots .",
    "a doctor works in a hospital .",
    "a teacher works in a school .",
    "children go to school to learn .",
]


EVERYDAY_PASSAGES = 4000
"""Generated everyday passages in the default corpus."""


def everyday_sentences(n: int = EVERYDAY_PASSAGES, seed: int = 0) -> list[str]:
    """``n`` short everyday English passages (three to five sentences each), generated from
    templates; deterministic for a given seed."""
    rng = random.Random(seed)

    def sentence() -> str:
        kind = rng.randrange(5)
        s = rng.choice(_SUBJECTS)
        if kind == 0:
            text = f"{s} {rng.choice(_VERBS_PLACE)} {rng.choice(_PLACES)} {rng.choice(_TIMES)} ."
        elif kind == 1:
            text = f"{s} {rng.choice(_VERBS_OBJ)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)} ."
        elif kind == 2:
            noun, adj = rng.choice(_ADJ)
            text = f"the {noun} was {adj} {rng.choice(_TIMES)} ."
        elif kind == 3:
            text = rng.choice(_FACTS)
        else:
            text = f"{s} and {rng.choice(_SUBJECTS)} {rng.choice(_VERBS_OBJ)} {rng.choice(_OBJECTS)} {rng.choice(_TIMES)} ."
        return text[0].upper() + text[1:]

    return [" ".join(sentence() for _ in range(rng.randint(3, 5))) for _ in range(n)]


def default_corpus(seed: int = 0, max_chars: int = 3_000_000, everyday: int = EVERYDAY_PASSAGES) -> list[str]:
    """The default adaptation corpus: stdlib docstring paragraphs plus everyday sentences,
    shuffled with ``seed``."""
    texts = stdlib_docstring_paragraphs(max_chars) + everyday_sentences(everyday, seed)
    random.Random(seed).shuffle(texts)
    log.info("default corpus: %d passages, %d characters", len(texts), sum(map(len, texts)))
    return texts
