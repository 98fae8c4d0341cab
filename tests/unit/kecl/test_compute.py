"""A process's OpenMP work runs on one thread (``kecl.compute``): whichever thread asks, the
encoder's and the embedder's forward passes and the index's searches run there."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kecl import compute
from kecl.pipeline import QueryOptions
from kecl.services import Kecl
from knowledge import DocumentRecord
from tests.factories import activate_tiny_checkpoint, tiny_settings

WHO = contextvars.ContextVar("WHO", default="nobody")


def test_call_runs_on_one_thread_reentrantly_with_the_callers_context() -> None:
    def where() -> tuple[int, str]:
        return threading.get_ident(), WHO.get()

    WHO.set("the caller")
    with ThreadPoolExecutor(4) as callers:
        seen = list(callers.map(lambda _: compute.call(where), range(8)))
    assert len({ident for ident, _ in seen}) == 1 and seen[0][0] != threading.get_ident()
    assert compute.call(where)[1] == "the caller"  # the caller's context variables go along
    # a job that calls again runs inline instead of waiting for itself
    assert compute.call(lambda: compute.call(where))[0] == seen[0][0]
    assert compute.call(compute.on_compute_thread) and not compute.on_compute_thread()

    def fails() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        compute.call(fails)
    assert compute.call(where)[0] == seen[0][0]  # the thread survives a failed job


@pytest.fixture()
def kecl(tmp_path: Path, tiny_embedder_dir: Path) -> Iterator[Kecl]:
    k = Kecl(tiny_settings(tmp_path / "home", tiny_embedder_dir))
    activate_tiny_checkpoint(k.settings)
    k.ingest_documents([DocumentRecord(text="Paris is the capital of France.")])
    yield k
    k.close()


def test_a_serving_process_runs_every_forward_pass_and_search_on_the_compute_thread(kecl: Kecl) -> None:
    """Queries from several request threads: every forward pass of the MLM and of the embedder
    (seen by forward hooks on the real models) and every FAISS search ran on the compute thread."""
    threads: dict[str, set[str]] = {"encoder": set(), "embedder": set(), "faiss": set()}

    def hook(kind: str):  # noqa: ANN202 - a torch forward hook
        return lambda *_: threads[kind].add(threading.current_thread().name)

    kecl.encoder.model.bert.register_forward_pre_hook(hook("encoder"))
    kecl.embedder.inner.model.register_forward_pre_hook(hook("embedder"))
    index = kecl.index.index
    search = index.search

    def recorded_search(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        threads["faiss"].add(threading.current_thread().name)
        return search(*args, **kwargs)

    index.search = recorded_search  # type: ignore[method-assign]
    questions = ["The capital of France is [MASK] .", "Paris is the capital of [MASK] ."]
    with ThreadPoolExecutor(4, thread_name_prefix="request") as requests:
        answers = list(
            requests.map(
                lambda q: kecl.answer_modes(q, ["closed-book", "concat"], QueryOptions(explain=True)), questions * 2
            )
        )
        hits = list(requests.map(lambda q: kecl.search(q, 3), questions))
    assert all(a["concat"].predictions and a["closed-book"].predictions for a in answers)
    assert all(h for h in hits)
    for kind, names in threads.items():
        assert names and all(n.startswith("kecl-compute") for n in names), (kind, names)
