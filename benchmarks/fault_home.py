"""The fault campaign's home: a kecl home driven through real ``kecl`` processes, the feeds it
ingests, one row of results, and the process helpers the faults share."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

KEY = "fault-campaign-key-0123"
BASE = [
    {"kind": "relation", "id": "P38", "label": "currency", "template": "The currency of [X] is the [Y] .",
     "functional": True},
    {"kind": "relation", "id": "P36", "label": "capital", "template": "The capital of [X] is [Y] .",
     "functional": True},
    {"kind": "entity", "id": "croatia", "name": "Croatia"},
    {"kind": "entity", "id": "kuna", "name": "kuna"},
    {"kind": "entity", "id": "euro", "name": "euro"},
    {"kind": "entity", "id": "zagreb", "name": "Zagreb"},
    {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "kuna", "valid_from": "1994-05-30"},
    {"kind": "fact", "subject": "croatia", "relation": "P36", "object": "zagreb"},
    {"text": "Zagreb is the capital of Croatia. The kuna was the currency of Croatia."},
    {"text": "Paris is the capital of France. France uses the euro."},
]  # fmt: skip


def later_feed(tag: str) -> list[dict[str, Any]]:
    """A new batch for the inbox: a new entity with a capital, and a document (``tag`` keeps each
    scenario's batch distinct)."""
    return [
        {"kind": "entity", "id": f"land-{tag}", "name": f"Landia {tag}"},
        {"kind": "entity", "id": f"city-{tag}", "name": f"Citadel {tag}"},
        {"kind": "fact", "subject": f"land-{tag}", "relation": "P36", "object": f"city-{tag}"},
        {"text": f"Citadel {tag} is the capital of Landia {tag}."},
    ]


@dataclass
class Outcome:
    """One row of the campaign's table."""

    fault: str
    behaviour: str
    lost: str  # what was acknowledged and is gone ("none" is the target)
    recovery_s: float | None
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class Home:
    """A kecl home driven through real ``kecl`` processes."""

    def __init__(self, root: Path, database_url: str | None = None) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "KECL_HOME": str(root),
            "KECL_API__API_KEY": KEY,
            "KECL_LOG_LEVEL": "INFO",
            "KECL_TRAIN__STEPS": "6",
            "KECL_TRAIN__BATCH_SIZE": "8",
            "KECL_GATES__MAX_RETENTION_DROP": "1.0",
            "KECL_GATES__MAX_LOSS_INCREASE": "100.0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        if database_url:
            self.env["KECL_DATABASE_URL"] = database_url

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kecl.cli", *args]

    def run(self, *args: str, timeout: float = 900, extra_env: dict[str, str] | None = None,
            preexec: Callable[[], None] | None = None) -> tuple[int, str, float]:  # fmt: skip
        """Run ``kecl ARGS``; returns (exit code, stdout+stderr, seconds)."""
        t0 = time.perf_counter()
        done = subprocess.run(
            self.command(*args),
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=preexec,
        )
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def prepare(self) -> None:
        """init (no adaptation: cycles train the base model), the base feed, one cycle (a checkpoint)."""
        for args in (("init", "--no-adapt"), ("ingest", str(write_jsonl(self.root.parent / "base.jsonl", BASE)))):
            rc, out, _ = self.run(*args)
            if rc != 0:
                raise RuntimeError(f"kecl {' '.join(args)} failed: {out[-2000:]}")

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """A read on the home's SQLite database (the campaign's own check, outside kecl)."""
        with sqlite3.connect(self.root / "kecl.db") as c:
            return c.execute(query).fetchall()


def kill_at(proc: subprocess.Popen[str], marker: str, then: Callable[[], bool] | None = None) -> str | None:
    """SIGKILL ``proc`` when its log shows ``marker`` (and ``then()`` holds, polled); returns the
    last stage it logged, or None if it finished first."""
    assert proc.stderr is not None
    stage = None
    for line in proc.stderr:
        if "cycle stage: " in line:
            stage = line.rsplit("cycle stage: ", 1)[1].strip()
        if marker in line:
            deadline = time.monotonic() + 120
            while then is not None and not then() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return stage
    proc.wait()
    return None


def wait_healthy(url: str, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy in {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
