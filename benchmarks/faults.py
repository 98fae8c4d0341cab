"""The fault campaign: real processes killed with SIGKILL, damaged files, a read-only database, a
full disk and a database server restarted mid-cycle, each against a real home with the packaged
model. For each fault: what the system did, whether anything acknowledged was lost, and how long
recovery took.

    python -m benchmarks.faults                      # the whole campaign, table on stdout
    python -m benchmarks.faults --write RELIABILITY.md
    python -m benchmarks.faults --only cycle-kill-train,server-kill-post

``--postgres URL`` adds the database-restart fault (it runs ``pg_ctlcluster 15 main restart``:
every client of that server sees it). Training is cut to a few steps: the faults, not the model,
are under test.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import httpx

from benchmarks.fault_home import KEY, Home, Outcome, free_port, kill_at, later_feed, wait_healthy, write_jsonl

# ----------------------------------------------------------------------------- faults


def cycle_kill(home: Home, stage: str) -> Outcome:
    """SIGKILL ``kecl update`` in ``stage``; the next ``kecl update`` must run at once (not exit 75),
    mark the killed run failed and learn its batch; a checkpoint temporary must be swept."""
    write_jsonl(home.inbox / f"batch-{stage}.jsonl", later_feed(stage))
    proc = home.start("update")
    tmp_seen = (lambda: any(home.root.joinpath("checkpoints").glob(".tmp-*"))) if stage == "checkpoint" else None
    killed_in = kill_at(proc, f"cycle stage: {stage}", tmp_seen)
    if killed_in is None:
        return Outcome(f"kill -9 `kecl update` in {stage}", "the cycle finished before the kill", "-", None, False)
    leftovers = len(list(home.root.joinpath("checkpoints").glob(".tmp-*")))
    killed_id = home.sql("select max(id) from update_run")[0][0]
    rc, out, seconds = home.run("update")
    row = home.sql(f"select status, error from update_run where id = {killed_id}")[0]
    next_run = home.sql("select status, counts from update_run order by id desc limit 1")[0]
    counts = json.loads(next_run[1] or "{}")
    stored = home.sql(
        f"select count(*) from fact f join entity e on e.id = f.subject_id where e.external_id = 'land-{stage}'"
    )[0][0]
    learnt = counts.get("new_facts", 0) >= 1 and killed_id in counts.get("recovered_runs", [])
    swept = not any(home.root.joinpath("checkpoints").glob(".tmp-*"))
    ok = rc == 0 and row[0] == "failed" and stored == 1 and learnt and swept
    behaviour = (
        f"next cycle ran at once (exit {rc}), marked run {killed_id} {row[0]}, "
        f"{'learnt' if learnt else 'did NOT learn'} its batch"
        + (f"; {leftovers} temp folder(s) left by the kill, {'swept' if swept else 'NOT swept'}" if leftovers else "")
    )
    return Outcome(
        f"kill -9 `kecl update` in {stage}",
        behaviour,
        "none" if stored == 1 else "the batch's fact",
        round(seconds, 1),
        ok,
        {"killed_in": killed_in, "next_exit": rc, "next_status": next_run[0], "tail": out[-300:] if rc else ""},
    )


def lock_held_elsewhere(home: Home) -> Outcome:
    """A live holder on another host: ``kecl update`` exits 75 at once, with one line."""
    with sqlite3.connect(home.root / "kecl.db") as c:
        c.execute(
            "insert into update_lock (name, holder, acquired_at, expires_at) values "
            "('update-cycle', 'other-host:4242:abcd', datetime('now'), datetime('now', '+10 minutes'))"
        )
    rc, out, seconds = home.run("update")
    with sqlite3.connect(home.root / "kecl.db") as c:
        c.execute("delete from update_lock where holder = 'other-host:4242:abcd'")
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("error:")]
    ok = rc == 75 and len(lines) == 1 and "other-host" in lines[0]
    return Outcome(
        "cycle lock held by a live process on another host",
        f"exit {rc} after {seconds:.1f}s: {lines[0] if lines else out[-200:]}",
        "none",
        None,
        ok,
    )


def server_kill_mid_post(home: Home, clients: int = 4) -> Outcome:
    """SIGKILL ``kecl serve`` during a burst of POST /v1/documents; every 201 must survive."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = home.start("serve", "--port", str(port))
    wait_healthy(url)
    acked: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def burst(client: int) -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                text = f"Burst document {client}-{i} mentions Zagreb and the euro."
                try:
                    r = c.post("/v1/documents", json={"documents": [{"text": text}]})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        acked.append(text)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 8 and time.monotonic() < deadline:  # mid-burst: several acknowledged, more in flight
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    t0 = time.perf_counter()
    proc = home.start("serve", "--port", str(port))
    try:
        wait_healthy(url)
        recovery = time.perf_counter() - t0
        with httpx.Client(base_url=url, timeout=60) as c:
            hits = c.post("/v1/search", json={"text": acked[-1], "k": 10}).json() if acked else {}
    finally:
        proc.terminate()
        proc.wait(60)
    stored = {t for (t,) in home.sql("select text from document where text like 'Burst document %'")}
    lost = [t for t in acked if t not in stored]
    searchable = bool(acked) and acked[-1] in json.dumps(hits)
    return Outcome(
        "kill -9 `kecl serve` mid-POST",
        f"{len(acked)} documents acknowledged before the kill; restarted and healthy; "
        f"last one {'searchable' if searchable else 'NOT searchable'} after restart",
        f"{len(lost)} of {len(acked)}",
        round(recovery, 1),
        not lost and bool(acked) and searchable,
        {"acknowledged": len(acked), "lost": lost[:5]},
    )


def truncated_index(home: Home) -> Outcome:
    """Truncate the saved FAISS file: `index status` must say so; the server must heal at start."""

    def published() -> list[Path]:  # the newest generation's folder holds the file the server loads
        return sorted(home.root.joinpath("index").rglob("*.faiss"), key=lambda p: p.stat().st_mtime)

    faiss_files = published()
    if not faiss_files:
        home.run("index", "build")
        faiss_files = published()
    target = faiss_files[-1]
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    rc, out, _ = home.run("index", "status", "--json")
    reported = rc == 1 and "does not match its checksum" in out
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = home.start("serve", "--port", str(port))
    try:
        wait_healthy(url)
        recovery = time.perf_counter() - t0
        stats = httpx.get(url + "/v1/stats", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(60)
    healed = stats.get("index", {}).get("vectors") == stats["store"]["passages"]
    return Outcome(
        "truncated index file",
        f"`kecl index status` {'reports it damaged (exit 1)' if reported else 'does NOT report it'}; "
        f"the server {'rebuilt it from SQL at start' if healed else 'did NOT heal it'}",
        "none (the index is derived from SQL)",
        round(recovery, 1),
        reported and healed,
    )


def flipped_checkpoint(home: Home) -> Outcome:
    """Flip bytes in the active checkpoint: `kecl query` must say so in one line with the command
    that activates the parent, and that command must bring answers back."""
    while len(list(home.root.joinpath("checkpoints").glob("v*"))) < 2:  # a parent to fall back to
        write_jsonl(home.inbox / f"batch-parent-{time.time_ns()}.jsonl", later_feed(f"p{time.time_ns()}"))
        if home.run("update")[0] != 0:
            raise RuntimeError("could not make a checkpoint to damage")
    active = (home.root / "checkpoints" / "ACTIVE").read_text().strip()
    weights = home.root / "checkpoints" / active / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 16])
    weights.write_bytes(bytes(data))
    rc, out, _ = home.run("query", "The capital of Croatia is [MASK] .")
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    command = errors[0].split("`")[1] if errors and "`" in errors[0] else None
    t0 = time.perf_counter()
    fixed = command is not None and home.run(*command.split()[1:])[0] == 0
    rc2, out2, _ = home.run("query", "The capital of Croatia is [MASK] .")
    recovery = time.perf_counter() - t0
    ok = rc == 1 and len(errors) == 1 and "Traceback" not in out and fixed and rc2 == 0
    return Outcome(
        "flipped bytes in the active checkpoint",
        f"`kecl query` exit {rc}: {errors[0][:160] if errors else out[-160:]}; after `{command}`: exit {rc2}",
        "none (the parent version serves)",
        round(recovery, 1),
        ok,
    )


def deleted_pointer(home: Home) -> Outcome:
    """Delete ``checkpoints/ACTIVE``: SQL says which version is active (the file is only its
    cache), so kecl must answer with that version and write the cache again."""
    pointer = home.root / "checkpoints" / "ACTIVE"
    if not pointer.is_file():
        write_jsonl(home.inbox / "batch-pointer.jsonl", later_feed("pointer"))
        home.run("update")
    version = pointer.read_text().strip()
    pointer.unlink()
    t0 = time.perf_counter()
    rc, _, _ = home.run("query", "The capital of Croatia is [MASK] .")
    recovery = time.perf_counter() - t0
    restored = pointer.is_file() and pointer.read_text().strip() == version
    return Outcome(
        "deleted ACTIVE pointer",
        f"`kecl query` exit {rc}, answered with {version} as SQL records it and "
        f"{'wrote the ACTIVE cache again' if restored else 'did NOT write the ACTIVE cache again'}",
        "none",
        round(recovery, 1),
        rc == 0 and restored,
    )


def read_only_database(home: Home) -> Outcome:
    """`kecl ingest` on a read-only database: one line saying what to do; then it works again."""
    doc = home.root.parent / "readonly.txt"
    doc.write_text("Rijeka is a port city of Croatia.")
    db = home.root / "kecl.db"
    ro = f"sqlite:///file:{db}?mode=ro&uri=true"
    rc, out, _ = home.run("ingest", str(doc), extra_env={"KECL_DATABASE_URL": ro})
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    t0 = time.perf_counter()
    rc2, _, _ = home.run("ingest", str(doc))
    recovery = time.perf_counter() - t0
    stored = home.sql("select count(*) from document where text like 'Rijeka%'")[0][0]
    ok = rc == 1 and lines[-1].startswith("error: the database is read-only") and "Traceback" not in out
    return Outcome(
        "read-only database (`kecl ingest`)",
        f"exit {rc}: {lines[-1][:160]}; writable again: exit {rc2}",
        "none (nothing was acknowledged)",
        round(recovery, 1),
        ok and rc2 == 0 and stored == 1,
    )


def full_disk(home: Home) -> Outcome:
    """`kecl ingest` of a large corpus with a file-size limit just above the database: one line;
    the database stays intact and the same ingest succeeds without the limit."""
    big = home.root.parent / "big.txt"
    big.write_text("\n\n".join(f"Paragraph {i} says that Zagreb lies on the Sava river." for i in range(20_000)))
    limit = (home.root / "kecl.db").stat().st_size + 256 * 1024

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    rc, out, _ = home.run("ingest", str(big), preexec=small_disk)
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    intact = home.sql("pragma integrity_check")[0][0] == "ok"
    t0 = time.perf_counter()
    rc2, _, _ = home.run("ingest", str(big))
    recovery = time.perf_counter() - t0
    ok = rc == 1 and intact and rc2 == 0 and "Traceback" not in out
    return Outcome(
        "full disk (RLIMIT_FSIZE) during `kecl ingest`",
        f"exit {rc}: {lines[-1][:160] if lines else ''}; database integrity {'ok' if intact else 'BROKEN'}; "
        f"again without the limit: exit {rc2}",
        "none (nothing was acknowledged)",
        round(recovery, 1),
        ok,
    )


def postgres_restart(root: Path, url: str) -> Outcome:
    """`pg_ctlcluster 15 main restart` during a cycle's training: the cycle may fail, the next one
    must run and learn the batch. Works in a fresh schema of ``url``'s database, dropped afterwards."""
    import sqlalchemy as sa  # deferred: only this fault talks to PostgreSQL from the campaign itself

    schema = f"kecl_faults_{time.time_ns()}"
    admin = sa.create_engine(url, pool_pre_ping=True)  # the restart ends the pooled connections
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        return _postgres_restart(root, f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}")
    except Exception as exc:  # noqa: BLE001 - a fault that breaks the campaign is a row, not the end
        return Outcome("PostgreSQL restarted mid-cycle (training)", f"campaign error: {exc}", "?", None, False)
    finally:
        admin.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _postgres_restart(root: Path, url: str) -> Outcome:
    home = Home(root, database_url=url)
    home.prepare()
    write_jsonl(home.inbox / "batch-pg.jsonl", later_feed("pg"))
    proc = home.start("update")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "cycle stage: train" in line:
            subprocess.run(["pg_ctlcluster", "15", "main", "restart"], check=True, timeout=120)
            break
    for _ in proc.stderr:
        pass
    first = proc.wait()
    t0 = time.perf_counter()
    rc, out, _ = home.run("update")
    recovery = time.perf_counter() - t0
    return Outcome(
        "PostgreSQL restarted mid-cycle (training)",
        f"the cycle in flight exited {first}; the next `kecl update` exited {rc}",
        "none" if rc == 0 else "see details",
        round(recovery, 1),
        rc == 0,
        {"tail": out[-400:]},
    )


# ----------------------------------------------------------------------------- the campaign


def scenarios() -> dict[str, Callable[[Home], Outcome]]:
    """Every fault on a SQLite home, by name, in the order they run (they share one home)."""
    out: dict[str, Callable[[Home], Outcome]] = {}
    for stage in ("ingest", "index", "train", "checkpoint", "promote"):
        out[f"cycle-kill-{stage}"] = lambda h, s=stage: cycle_kill(h, s)  # type: ignore[misc]
    out["lock-elsewhere"] = lock_held_elsewhere
    out["server-kill-post"] = server_kill_mid_post
    out["truncated-index"] = truncated_index
    out["flipped-checkpoint"] = flipped_checkpoint
    out["deleted-pointer"] = deleted_pointer
    out["read-only-db"] = read_only_database
    out["full-disk"] = full_disk
    return out


QUICK = ("cycle-kill-train", "server-kill-post", "truncated-index", "read-only-db")
"""The subset the integration tier runs."""


def run_campaign(names: list[str], root: Path, postgres: str | None = None) -> list[Outcome]:
    """Run the named faults on one prepared home under ``root``; returns one row each."""
    home = Home(root / "home")
    home.prepare()
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            row = scenarios()[name](home)
        except Exception as exc:  # noqa: BLE001 - a fault that breaks the campaign is a row, not the end
            row = Outcome(name, f"campaign error: {type(exc).__name__}: {exc}", "?", None, False)
        row.details["seconds"] = round(time.perf_counter() - t0, 1)
        # one table row as each fault ends: a campaign cut short still leaves its rows
        print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
        rows.append(row)
    if postgres:
        rows.append(postgres_restart(root / "pg-home", postgres))
    return rows


def table(rows: list[Outcome]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| fault | what the system did | acknowledged and lost | recovery (s) | as required |",
        "|---|---|---|---:|---|",
    ]
    for r in rows:
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        lines.append(f"| {r.fault} | {r.behaviour} | {r.lost} | {recovery} | {'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated fault names (default: all); see scenarios()")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--postgres", help="a PostgreSQL URL for the restart fault (restarts the server!)")
    ap.add_argument("--write", type=Path, help="replace the table in this Markdown file (RELIABILITY.md)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    names = list(QUICK) if args.quick else args.only.split(",") if args.only else list(scenarios())
    with tempfile.TemporaryDirectory(prefix="kecl-faults-") as tmp:
        rows = run_campaign(names, Path(tmp), args.postgres)
    text = table(rows)
    print(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    if args.write:
        start, end = "<!-- faults:begin -->", "<!-- faults:end -->"
        doc = args.write.read_text() if args.write.exists() else f"{start}\n{end}\n"
        head, _, rest = doc.partition(start)
        _, _, tail = rest.partition(end)
        args.write.write_text(f"{head}{start}\n{text}\n{end}{tail}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
