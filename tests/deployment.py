"""A real multi-process deployment for tests and benchmarks: ``kecl serve`` replicas, one
``kecl worker`` and one-shot CLI commands as child processes on one home and one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
API_KEY = "secret-key-for-tests"


def deployment_env(home: Path, db_url: str, embedder_dir: Path, **extra: str) -> dict[str, str]:
    """The environment every process of one deployment shares: home, database, a tiny embedder,
    short leases and a fast publisher (so a test sees hand-overs in seconds)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "KECL_HOME": str(home),
        "KECL_DATABASE_URL": db_url,
        "KECL_INDEX__EMBEDDER": str(embedder_dir),
        "KECL_MODEL__DEVICE": "cpu",
        "KECL_API__API_KEY": API_KEY,
        "KECL_LOG_LEVEL": "WARNING",
        "KECL_SCHEDULER__INTERVAL_MINUTES": "100000",
        "KECL_PROCESSES__PUBLISH_INTERVAL_SECONDS": "0.5",
        "KECL_PROCESSES__PUBLISHER_LEASE_SECONDS": "3",
        "KECL_PROCESSES__WORKER_LEASE_SECONDS": "3",
        "KECL_PROCESSES__GC_GRACE_SECONDS": "2",
        "OMP_NUM_THREADS": "1",
    }
    env.update(extra)
    return env


def kecl_command(*args: str) -> list[str]:
    """The ``kecl`` CLI as a child process of this interpreter."""
    return [sys.executable, "-m", "kecl.cli", *args]


@dataclass
class Deployment:
    """Child processes on one home; :meth:`close` kills whatever is left."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start_replica(self, name: str, port: int | None = None, *args: str) -> str:
        """Start ``kecl serve`` as ``name`` (``args``: more of its options); returns its base URL
        (wait with :meth:`wait_ready`)."""
        self.ports[name] = port or self.ports.get(name) or free_port()
        self._spawn(name, "serve", "--port", str(self.ports[name]), *args)
        return self.url(name)

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        """Start ``kecl worker`` as ``name``."""
        return self._spawn(name, "worker")

    def run_cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a one-shot ``kecl`` command to completion."""
        return subprocess.run(
            kecl_command(*args), env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` (no cleanup of any kind runs) and reap it."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def wait_ready(self, name: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until ``name``'s ``/readyz`` answers 200; returns its body."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                r = httpx.get(self.url(name) + "/readyz", timeout=10)
                last = r.json()
                if r.status_code == 200:
                    return dict(last)
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout} s: {last}; log: {self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        """Kill every process still running."""
        for name in list(self.procs):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child writes it until it ends
        proc = subprocess.Popen(kecl_command(*args), env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc


def post_document(url: str, text: str, timeout: float = 30) -> list[int]:
    """POST one document; returns its new passage ids (raises on any error status)."""
    r = httpx.post(
        url + "/v1/documents", json={"documents": [{"text": text}]}, headers={"X-API-Key": API_KEY}, timeout=timeout
    )
    r.raise_for_status()
    return list(r.json()["passage_ids"])


def dense_rank(url: str, text: str, passage_id: int, k: int = 5, http: httpx.Client | None = None) -> int | None:
    """The dense channel's rank of ``passage_id`` when searching for ``text`` (None: not found).
    ``http``: a client to reuse (a new one per call costs ~35 ms of CPU, its TLS context)."""
    r = (http or httpx).post(url + "/v1/search", json={"text": text, "k": k}, timeout=30)
    r.raise_for_status()
    for hit in r.json()["hits"]:
        if hit["passage_id"] == passage_id:
            return hit["ranks"].get("dense")
    return None


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None
