"""The OpenMP width of a server's computing threads, in fresh interpreters (the width is process
state, and torch fixes a thread's width at its first computation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kecl.threads import available_cores, default_width

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys, threading, torch
from kecl.threads import set_task_width, side_by_side

def width_in_new_thread():
    out = []
    t = threading.Thread(target=lambda: out.append((torch.get_num_threads(), side_by_side(3))))
    t.start(); t.join()
    return out[0]

# a thread that computed before the call keeps its width
before, go, done = [], threading.Event(), threading.Event()
def early():
    torch.get_num_threads()  # torch fixes a thread's width at its first call that asks for it
    go.wait(); before.append(torch.get_num_threads()); done.set()
threading.Thread(target=early).start()
wide = torch.get_num_threads()
configured = json.loads(sys.argv[1])
in_force = set_task_width(configured)
go.set(); done.wait()
new_width, fits = width_in_new_thread()
# a cycle's thread takes every core; threads started after it keep the task width
from kecl.threads import available_cores, use_all_cores
cycle = []
def train():
    use_all_cores(); cycle.append(torch.get_num_threads())
t = threading.Thread(target=train); t.start(); t.join()
after_cycle, _ = width_in_new_thread()
print(json.dumps({"wide": wide, "in_force": in_force, "early": before[0], "new": new_width,
                  "fits": fits, "here": torch.get_num_threads(), "cycle": cycle[0], "after_cycle": after_cycle}))
"""


def probe(configured: int | None, omp: str | None) -> dict[str, int | bool]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(configured)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_default_width_shares_the_cores_among_an_asks_modes() -> None:
    assert [default_width(c) for c in (1, 2, 3, 6, 16)] == [1, 1, 1, 2, 5]


def test_a_configured_width_reaches_threads_that_compute_later_not_earlier_ones() -> None:
    got = probe(1, None)
    assert got["in_force"] == got["new"] == got["here"] == 1
    assert got["early"] == got["wide"]  # a thread keeps the width it first computed with
    assert got["fits"] == (2 <= available_cores())  # two one-thread tasks fit on two cores
    assert got["cycle"] == available_cores() and got["after_cycle"] == 1


def test_no_width_configured_takes_the_default_or_omp_num_threads() -> None:
    got = probe(None, None)
    assert got["in_force"] == got["new"] == default_width(available_cores())
    # the operator's choice stands (all cores here, where the default would narrow to a third)
    with_omp = probe(None, str(available_cores()))
    assert with_omp["in_force"] == with_omp["new"] == with_omp["wide"] == available_cores()
    assert probe(1, str(available_cores()))["new"] == 1  # kecl's own setting wins over it


@pytest.mark.skipif(available_cores() < 2, reason="one core: the modes of an Ask never fit side by side")
def test_at_full_width_the_modes_do_not_run_side_by_side() -> None:
    """A process that never narrowed (a CLI command) answers the modes in turn: at all cores'
    width two would oversubscribe the machine."""
    got = probe(available_cores(), None)
    assert got["fits"] is False


SERVER_PROBE = """
import json, sys, threading, torch
from fastapi.testclient import TestClient
from kecl.api import create_app
from kecl.settings import Settings

settings = Settings(home=sys.argv[1], api={"threads_per_task": 1})
app = create_app(settings)
with TestClient(app) as client:
    out = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start(); t.join()
    ran_on = set()
    kecl = app.state.kecl
    kecl.encoder.model.bert.register_forward_hook(lambda *_: ran_on.add(threading.current_thread().name))
    kecl.encoder.explaining_model().bert.register_forward_hook(lambda *_: ran_on.add(threading.current_thread().name))
    page = client.get("/ask", params={"q": "Paris is the capital of [MASK] ."})
print(json.dumps({"width": out[0], "status": page.status_code, "threads": sorted(ran_on)}))
"""


def test_a_server_narrows_its_threads_and_answers_an_asks_modes_side_by_side(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", SERVER_PROBE, str(tmp_path / "home")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["width"] == 1 and got["status"] == 200
    if available_cores() >= 2:
        assert got["threads"] and all(name.startswith("kecl-mode") for name in got["threads"])
    else:
        assert got["threads"] and not any(name.startswith("kecl-mode") for name in got["threads"])
