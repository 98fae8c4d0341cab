"""``kecl eval``: LAMA-style probes, closed-book and augmented side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kecl.commands.common import console, load_settings


def eval_probes(
    probes: Annotated[list[Path] | None, typer.Argument(help="LAMA-format JSONL files or folders")] = None,
    modes: Annotated[str, typer.Option(help="comma-separated: closed-book, concat, tree")] = "closed-book,concat,tree",
    limit: Annotated[int | None, typer.Option(help="at most N probes per relation")] = None,
    from_store: Annotated[
        bool, typer.Option("--from-store", help="also probe every current fact in the store")
    ] = False,
    relation: Annotated[
        list[str] | None, typer.Option("--relation", "-r", help="only this relation id (repeatable)")
    ] = None,
    masked_sentences: Annotated[
        bool, typer.Option("--masked-sentences", help="probe with the records' masked sentences, not templates")
    ] = False,
    templates: Annotated[
        Path | None, typer.Option(help="relations.jsonl with the templates (default: found beside the files)")
    ] = None,
    knowledge: Annotated[str, typer.Option(help="what augmented modes inject: all, passages or facts")] = "all",
    k: Annotated[int, typer.Option("-k", help="evidence passages to inject")] = 4,
    hops: Annotated[int, typer.Option(help="graph hops for facts")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="probes per forward pass")] = 32,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the report (with per-probe results) here")
    ] = None,
) -> None:
    """Score probes (P@1, P@10, MRR; one-token objects only, as LAMA) in each mode side by side."""
    # deferred: evaluation loads torch and the models; --help answers without them
    from kecl.evidence import KNOWLEDGE_KINDS, cached_source
    from kecl.pipeline import MODES, QueryOptions
    from kecl.services import Kecl
    from updater import evaluate, load_lama_probes, probes_from_facts

    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    bad = [m for m in wanted if m not in MODES]
    if bad or not wanted:
        raise typer.BadParameter(
            f"{', '.join(bad) or modes!r}: expected a comma-separated list of {', '.join(MODES)}", param_hint="--modes"
        )
    if knowledge not in KNOWLEDGE_KINDS:
        raise typer.BadParameter(
            f"{knowledge!r}: expected one of {', '.join(KNOWLEDGE_KINDS)}", param_hint="--knowledge"
        )
    if not probes and not from_store:
        raise typer.BadParameter("give probe files/folders, or --from-store", param_hint="PROBES")

    settings = load_settings()
    kecl = Kecl(settings)
    try:
        items = []
        if probes:
            try:
                loaded = load_lama_probes(
                    probes,
                    templates=templates,
                    use_masked_sentences=masked_sentences,
                    limit_per_relation=limit,
                    relations=relation,
                )
            except (FileNotFoundError, ValueError) as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
            for issue in loaded.issues[:20]:
                console.print(f"[yellow]skipped[/yellow] {issue}")
            if len(loaded.issues) > 20:
                console.print(f"[yellow]… and {len(loaded.issues) - 20} more skipped lines[/yellow]")
            items += loaded.probes
        if from_store:
            wanted_relations: list[str | None] = list(relation) if relation else [None]
            facts = [f for rel in wanted_relations for f in kecl.store.facts(relation=rel, limit=None)]
            store_probes = probes_from_facts(facts)
            if limit is not None:
                counts: dict[str, int] = {}
                kept = []
                for p in store_probes:
                    counts[p.relation] = counts.get(p.relation, 0) + 1
                    if counts[p.relation] <= limit:
                        kept.append(p)
                store_probes = kept
            items += store_probes
        if not items:
            console.print("[red]no probes to evaluate[/red]")
            raise typer.Exit(2)
        source = None
        if any(m != "closed-book" for m in wanted):
            source = cached_source(kecl, QueryOptions(k_passages=k, hops=hops), knowledge)
        report = evaluate(
            kecl.encoder,
            items,
            modes=wanted,
            knowledge=source,
            batch_size=batch_size,
            max_length=settings.model.max_injected_length,
            progress=True,
            evidence_boost=settings.model.evidence_boost,
        )
        snapshot = kecl.snapshot()
        title = (
            f"{len(items) - report.dropped} probes · checkpoint {snapshot.get('checkpoint')} · knowledge: {knowledge}"
        )
        console.print(report.table(title=title))
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(
                json.dumps({**report.to_dict(with_results=True), "snapshot": snapshot}, indent=2, default=str)
            )
            console.print(f"report written to {json_out}")
    finally:
        kecl.close()


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``kecl`` app."""
    app.command("eval")(eval_probes)
