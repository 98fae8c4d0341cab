"""Query API latency and throughput, kecl against a hand-written baseline, plus freshness.

Both servers run as separate processes on loopback over the same home (demo base slice,
default model, 4 passages). kecl: ``kecl serve`` (micro-batched forward passes and query
embeddings; bf16 autocast where the CPU has it natively, and then measured again in fp32). Baseline:
``benchmarks.baseline_server`` (same retrieval, then the transformers ``fill-mask`` pipeline on
the same injected text, one request at a time). Each is measured with 1 and 8 concurrent
clients (real HTTP, httpx). The throughput is also reported as a fraction of the ceiling:
the matmul rate measured here ÷ the FLOPs of one query. Freshness: from ``POST /v1/documents``
of a new fact to a correct augmented answer.

    .venv/bin/python -m benchmarks.bench_query            # 64 requests per setting
    .venv/bin/python -m benchmarks.bench_query --quick    # 16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FRESH_FACTS = [  # invented, so only the posted document can teach them; single-token answers
    (
        "The mascot of the Zorvex festival is the penguin.",
        "The mascot of the Zorvex festival is the [MASK] .",
        "penguin",
    ),
    ("The Quillon bridge is made of copper.", "The Quillon bridge is made of [MASK] .", "copper"),
    ("Brenna Vask was born in Lisbon.", "Brenna Vask was born in [MASK] .", "lisbon"),
    ("The official color of Talmora is green.", "The official color of Talmora is [MASK] .", "green"),
    ("The Osk river flows into the Baltic sea.", "The Osk river flows into the [MASK] sea .", "baltic"),
]


def prepare_home(home: Path, checkpoint: Path | None) -> None:
    from kecl.demo import DEMO_DATA
    from kecl.services import Kecl
    from kecl.settings import Settings

    settings = Settings(home=home)
    kecl = Kecl(settings)
    if checkpoint is not None:
        from encoder import set_active

        settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(checkpoint, settings.checkpoints_dir / checkpoint.name)
        set_active(settings.checkpoints_dir, checkpoint.name)
    else:
        from kecl.wiring import ensure_default_checkpoint

        ensure_default_checkpoint(settings)
    from knowledge import read_paths

    kecl.ingest_batch(read_paths([DEMO_DATA / "base"]))
    kecl.close()


def queries(home: Path, n: int) -> list[str]:
    from knowledge import KnowledgeStore

    store = KnowledgeStore.open(f"sqlite:///{home / 'kecl.db'}")
    facts = [f for f in store.facts(limit=None) if f.template]
    store.close()
    out = [f.template.replace("[X]", f.subject).replace("[Y]", "[MASK]") for f in facts]
    return (out * (n // max(len(out), 1) + 1))[:n]


def start(cmd: list[str], env: dict, url: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd} did not come up")


def load(url: str, path: str, texts: list[str], clients: int, body: dict) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    todo = list(texts)

    def worker() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    text = todo.pop()
                t0 = time.perf_counter()
                r = c.post(url + path, json={**body, "text": text})
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)

    # warm-up outside the measurement
    with httpx.Client(timeout=120) as c:
        c.post(url + path, json={**body, "text": texts[0]}).raise_for_status()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "qps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def ceiling(home: Path, tokens: int, precisions: tuple[str, ...]) -> dict:
    """Matmul rate of this CPU at the encoder's shapes in each of ``precisions`` ("fp32", "bf16")
    and the FLOPs of one query."""
    import torch

    from kecl.services import Kecl
    from kecl.settings import Settings

    bundle = Kecl(Settings(home=home)).encoder
    cfg = bundle.model.config
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    rates = {}
    for name in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        a, b = torch.randn(tokens * 8, h, dtype=dtype), torch.randn(h, inter, dtype=dtype)
        for _ in range(3):
            a @ b
        reps, t0 = 30, time.perf_counter()
        for _ in range(reps):
            a @ b
        rates[name] = reps * 2 * a.shape[0] * h * inter / (time.perf_counter() - t0)
    # per layer: QKV + output projections (4·h²), FFN (2·h·inter) per token, attention 2·T²·h
    per_layer = 2 * tokens * (4 * h * h + 2 * h * inter) + 2 * 2 * tokens * tokens * h
    head = 2 * (h * h + h * cfg.vocab_size)  # the MLM head at one masked position
    flops = layers * per_layer + head
    return {
        "matmul_gflops": {k: v / 1e9 for k, v in rates.items()},
        "flops_per_query": flops,
        "ceiling_qps": {k: v / flops for k, v in rates.items()},
        "tokens": tokens,
    }


def freshness(url: str) -> list[dict]:
    out = []
    with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": "bench-key-not-a-secret"}) as c:
        for doc, query, gold in FRESH_FACTS:
            t0 = time.perf_counter()
            c.post("/v1/documents", json={"documents": [{"text": doc, "source": "bench"}]}).raise_for_status()
            answer = c.post("/v1/query", json={"text": query, "mode": "concat", "k": 4}).json()
            elapsed = time.perf_counter() - t0
            top = answer["predictions"][0][0]["token"]
            closed = c.post("/v1/query", json={"text": query, "mode": "closed-book"}).json()["predictions"][0][0][
                "token"
            ]
            out.append(
                {
                    "fact": doc,
                    "gold": gold,
                    "augmented_top1": top,
                    "closed_book_top1": closed,
                    "correct": top == gold,
                    "seconds": elapsed,
                }
            )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--checkpoint", type=Path, help="an adapted checkpoint folder to serve (default: adapt one)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench-out/query.json")
    args = ap.parse_args(argv)
    n = 16 if args.quick else args.requests
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        prepare_home(home, args.checkpoint)
        texts = queries(home, n)
        env = {
            **os.environ,
            "KECL_HOME": str(home),
            "KECL_API__API_KEY": "bench-key-not-a-secret",
            "KECL_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        import torch

        from encoder import bf16_supported

        bf16 = bf16_supported(torch.device("cpu"))
        # kecl answers under bf16 autocast where the CPU has it (settings.model.bf16); then it is also
        # measured in fp32, so that batching alone is compared with the (fp32) baseline too.
        # (name, extra environment, precision it answers in)
        servers = [("kecl", {}, "bf16" if bf16 else "fp32")]
        if bf16:
            servers.append(("kecl-fp32", {"KECL_MODEL__BF16": "false"}, "fp32"))
        results: dict = {"requests": n, "kecl_bf16": bf16, "baseline": []}
        for port, (name, extra, _) in enumerate(servers, start=8111):
            url = f"http://127.0.0.1:{port}"
            proc = start(
                [str(Path(sys.executable).parent / "kecl"), "serve", "--port", str(port)],
                {**env, **extra},
                url + "/healthz",
            )
            try:
                results[name] = [
                    load(url, "/v1/query", texts, clients, {"mode": "concat", "k": 4}) for clients in (1, 8)
                ]
                if name == "kecl":
                    results["freshness"] = freshness(url)
            finally:
                proc.terminate()
                proc.wait(30)
        base_proc = start(
            [sys.executable, "-m", "benchmarks.baseline_server", "--home", str(home), "--port", "8120"],
            env,
            "http://127.0.0.1:8120/docs",
        )
        try:
            for clients in (1, 8):
                results["baseline"].append(load("http://127.0.0.1:8120", "/query", texts, clients, {"k": 4}))
        finally:
            base_proc.terminate()
            base_proc.wait(30)
        results["ceiling"] = ceiling(home, tokens=256, precisions=("fp32", "bf16") if bf16 else ("fp32",))
    names = [name for name, *_ in servers] + ["baseline"]
    print(
        f"\nquery API, {n} requests per setting, concat mode with 4 passages (demo base slice); "
        f"kecl {'in bf16 (native here)' if bf16 else 'in fp32 (no native bf16 here)'}, baseline fp32"
    )
    print(f"{'server':<11}{'clients':>8}{'qps':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name in names:
        for r in results[name]:
            print(f"{name:<11}{r['clients']:>8}{r['qps']:>8.2f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}")
    for name in names[:-1]:
        for i, clients in enumerate((1, 8)):
            ratio = results[name][i]["qps"] / results["baseline"][i]["qps"]
            results[f"ratio_{clients}" if name == "kecl" else f"ratio_{clients}_{name}"] = ratio
            print(f"throughput ratio {name}/baseline at {clients} client(s): {ratio:.2f}x")
    c = results["ceiling"]
    for name, _, precision in servers:
        best = max(r["qps"] for r in results[name])
        frac = best / c["ceiling_qps"][precision]
        results["fraction_of_ceiling" if name == "kecl" else f"fraction_of_ceiling_{name}"] = frac
        print(
            f"ceiling ({precision}): {c['matmul_gflops'][precision]:.1f} GFLOP/s ÷ {c['flops_per_query'] / 1e9:.2f} "
            f"GFLOP/query ({c['tokens']} tokens) = {c['ceiling_qps'][precision]:.1f} q/s; {name} best {best:.2f} q/s "
            f"= {frac:.0%}"
        )
    fresh = results["freshness"]
    print("freshness (POST /v1/documents → augmented answer):")
    for f in fresh:
        print(
            f"  {f['seconds'] * 1000:6.0f} ms  {'ok ' if f['correct'] else 'MISS'} gold={f['gold']} "
            f"augmented={f['augmented_top1']} closed-book={f['closed_book_top1']}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
