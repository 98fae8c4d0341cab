"""A tiny home for the web interface's tests: the pipeline tests' documents and facts, a hub
entity, an alias that is markup, two evaluated update runs and a tiny active checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kecl.services import Kecl
from knowledge import EntityRecord, FactRecord, RelationRecord
from tests.factories import activate_tiny_checkpoint, tiny_settings
from tests.unit.kecl.test_pipeline import populate

SCRIPT_ALIAS = "<script>alert('x')</script>"


def candidate_metrics(new: float, unchanged: float, loss: float) -> dict:
    group = {
        "new": {"p_at_1": new, "n": 4},
        "changed": {"p_at_1": 0.0, "n": 0},
        "unchanged": {"p_at_1": unchanged, "n": 10},
    }
    return {"candidate": {"modes": {"closed-book": group, "concat": group}, "heldout_loss": loss}}


def populate_web(k: Kecl) -> Kecl:
    populate(k)
    store = k.store
    store.upsert_relations([RelationRecord("P31", "links to", None, False)])
    store.upsert_entities(
        [EntityRecord("hub", "Hub City", aliases=[SCRIPT_ALIAS])]
        + [EntityRecord(f"s{i}", f"Spoke {i}") for i in range(40)]
    )
    store.add_facts([FactRecord("hub", "P31", object=f"s{i}") for i in range(40)])
    store.add_facts([FactRecord("zagreb", "P31", object="hub")])
    for i, (new, kept, loss) in enumerate([(0.25, 0.9, 3.5), (0.75, 0.88, 3.2)]):
        run = store.start_run("test")
        store.finish_run(
            run,
            status="finished",
            metrics=candidate_metrics(new, kept, loss),
            decision="promote",
            reasons=[f"acquisition {new}"],
            timings={"train": 1.5 + i},
            counts={"facts_added": 3},
        )
    return k


@pytest.fixture()
def web_kecl(tmp_path: Path, tiny_embedder_dir: Path) -> Iterator[Kecl]:
    k = Kecl(tiny_settings(tmp_path / "home", tiny_embedder_dir, api={"api_key": "sesame-sesame-sesame"}))
    activate_tiny_checkpoint(k.settings)
    yield populate_web(k)
    k.close()
