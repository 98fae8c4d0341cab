"""Make the MLM-head adaptation that kecl ships for a pretrained model (``encoder/data/adaptations/``).

A fresh home needs its default model adapted (``encoder.adapt_default``: 830 training steps, 10 to
20 minutes on two CPU cores). Shipping the result lets the first run skip that. This script trains
the adaptation (or takes an adapted checkpoint, ``--checkpoint``), stores it as a delta from the
pretrained weights (``encoder.make_delta``: a matrix's change as low-rank factors where the rank
keeps the given share of its energy, else in 4 bits per value) in each of ``--variants``, applies
each delta to a freshly loaded pretrained model and measures it on the adaptation's held-out
passages and reading exercises beside the full adapted model, and writes the smallest variant whose
held-out top-1 is within ``--tolerance`` of the full model's (or ``--keep``)::

    .venv/bin/python scripts/make_default_delta.py --variants 32:0.9,64:0.95,64:1.0

The delta applies only to the weights it was made from (their fingerprint is in the file), so the
packaged copy, the hub's and any local copy of the same model all get it; any other model is
adapted by training, as before. Bump ``encoder.default.ADAPT_RECIPE`` and run this again whenever
the recipe changes: a delta of another recipe is never applied.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from encoder import (
    ADAPT_RECIPE,
    SHIPPED_DIR,
    adapt_default,
    adaptation_data,
    adaptation_scores,
    apply_delta,
    load_checkpoint,
    load_mlm,
    make_delta,
    save_delta,
    weights_fingerprint,
)
from kecl.home import resolve_model_path
from kecl.settings import DEFAULT_MODEL

log = logging.getLogger("make_default_delta")


def summary(scores: dict[str, Any]) -> str:
    reading = scores.get("reading_top1", {})
    parts = [f"held-out top-1 {scores['heldout_top1']:.3f}", f"loss {scores['heldout_loss']:.3f}"]
    parts += [f"reading {mode} {value:.3f}" for mode, value in reading.items()]
    return ", ".join(parts)


def parse_variant(text: str) -> tuple[int, float]:
    rank, _, energy = text.partition(":")
    return int(rank), float(energy or 0.95)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the pretrained model (Hugging Face id or folder)")
    ap.add_argument("--checkpoint", type=Path, help="an adapted kecl checkpoint of --model (default: train one)")
    ap.add_argument(
        "--variants",
        default="32:0.9,64:0.95,64:1.0",
        help="comma-separated rank:energy pairs to measure (energy: share of a matrix's change its factors must keep)",
    )
    ap.add_argument("--keep", help="the variant to write, as rank:energy (default: see --tolerance)")
    ap.add_argument("--tolerance", type=float, default=0.002, help="held-out top-1 the kept variant may give up")
    ap.add_argument("--out", type=Path, default=SHIPPED_DIR, help="folder to write the delta to")
    ap.add_argument("--report", type=Path, help="also write the measurements as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variants = [parse_variant(v) for v in args.variants.split(",") if v.strip()]
    keep_variant = parse_variant(args.keep) if args.keep else None
    if keep_variant and keep_variant not in variants:
        variants.append(keep_variant)
    path = resolve_model_path(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if checkpoint is None:
            version, _ = adapt_default(Path(scratch) / "ckpts", path, name=args.model, device="cpu", shipped_dir=None)
            checkpoint = Path(scratch) / "ckpts" / version
        trained = load_checkpoint(checkpoint, device="cpu")
        made = trained.metadata.get("metrics", {})
        if made.get("kind") != "default-adaptation" or made.get("recipe") != ADAPT_RECIPE:
            ap.error(
                f"{checkpoint} is not an adaptation by recipe {ADAPT_RECIPE} (its metrics: {made.get('kind')}, recipe {made.get('recipe')})"
            )
        base = load_mlm(path, device="cpu", name=args.model)
        fingerprint = weights_fingerprint(base.model)
        data = adaptation_data(base.tokenizer)
        started = time.perf_counter()
        full = adaptation_scores(trained, data)
        log.info("full adapted model: %s (%.0f s)", summary(full), time.perf_counter() - started)
        rows: dict[tuple[int, float], dict[str, Any]] = {}
        for rank, energy in variants:
            file = Path(scratch) / f"r{rank}-e{energy}.safetensors"
            save_delta(file, make_delta(base.model, trained.model, rank, energy), fingerprint, {})
            fresh = load_mlm(path, device="cpu", name=args.model)
            started = time.perf_counter()
            apply_delta(fresh.model, file)
            applied = time.perf_counter() - started
            row = {**adaptation_scores(fresh, data), "bytes": file.stat().st_size, "apply_seconds": applied}
            rows[rank, energy] = row
            log.info(
                "rank %d, energy %s: %s; %.1f MB, applied in %.1f s",
                *(rank, energy, summary(row), row["bytes"] / 1e6, applied),
            )
        by_size = sorted(rows, key=lambda v: rows[v]["bytes"])
        keep = keep_variant or next(
            (v for v in by_size if rows[v]["heldout_top1"] >= full["heldout_top1"] - args.tolerance), by_size[-1]
        )
        info = {
            "recipe": ADAPT_RECIPE,
            "rank": keep[0],
            "energy": keep[1],
            "model": args.model,
            # measured here, on this machine's default corpus, when the delta was made
            "metrics": {
                **{k: v for k, v in rows[keep].items() if k not in ("bytes", "apply_seconds")},
                "full_model": {k: full[k] for k in ("heldout_top1", "heldout_loss", "reading_top1") if k in full},
                **{k: made[k] for k in ("steps", "train_seconds", "bf16", "corpus") if k in made},
            },
            "made_with": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "date": time.strftime("%Y-%m-%d"),
            },
        }
        args.out.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.model)
        target = args.out / f"{slug}-recipe{ADAPT_RECIPE}.safetensors"
        save_delta(target, make_delta(base.model, trained.model, *keep), fingerprint, info)
        log.info("wrote %s (rank %d, energy %s, %.1f MB)", target, *keep, target.stat().st_size / 1e6)
        if args.report:
            report = {"full": full, "variants": {f"{r}:{e}": row for (r, e), row in rows.items()}, "kept": keep}
            args.report.write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
