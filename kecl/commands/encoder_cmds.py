"""`kecl` commands for encoder/ (registered by :mod:`kecl.cli`): ``train`` and ``predict``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from kecl.commands.common import console, load_settings
from kecl.settings import Settings

if TYPE_CHECKING:  # torch-heavy: annotations only, the modules load when a command runs
    from encoder import MLMBundle

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _read_corpus(paths: list[Path]) -> list[str]:
    """Minimal reader: .txt/.md (paragraphs separated by blank lines) and .jsonl (a ``text``
    field per line). The full readers live in knowledge/."""
    texts: list[str] = []
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file")
        if path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise typer.BadParameter(f"{path}:{n}: not JSON ({exc.msg})") from exc
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise typer.BadParameter(f"{path}:{n}: expected an object with a string 'text' field")
                texts.append(row["text"])
        elif path.suffix in (".txt", ".md"):
            texts += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        else:
            raise typer.BadParameter(f"{path}: expected .txt, .md or .jsonl")
    return texts


def _load_bundle(settings: Settings, model: str | None) -> MLMBundle:
    """``--model`` if given, else the active checkpoint, else the configured base model."""
    # deferred: torch and the models load only when a command runs, not for --help
    import encoder
    from kecl.home import open_store, resolve_model_path
    from kecl.wiring import device_for, load_training_copy

    if model:
        return encoder.load_mlm(resolve_model_path(model), device=device_for(settings), name=model)
    store = open_store(settings)
    try:
        return load_training_copy(settings, store)  # SQL's active checkpoint, else the base model
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kecl` app."""

    @app.command()
    def train(
        corpus: list[Path] = typer.Argument(..., help=".txt/.md/.jsonl files of new text"),
        from_model: str | None = typer.Option(None, "--from", help="model id or path (default: the active checkpoint)"),
        steps: int | None = typer.Option(None, help="optimizer steps (default: settings train.steps)"),
        activate: bool = typer.Option(True, help="make the new checkpoint active"),
        nproc: int | None = typer.Option(
            None,
            "--nproc",
            help="training processes, launched through torch.distributed.run: one per GPU, or CPU "
            "processes with gloo (default: settings train.nproc)",
        ),
    ) -> None:
        """Continue MLM training on CORPUS and save the result as a new checkpoint."""
        # deferred: torch and the models load only when a command runs, not for --help
        import encoder
        from kecl.home import open_store
        from kecl.wiring import (
            active_checkpoint,
            device_for,
            ensure_default_checkpoint,
            promote_checkpoint,
            train_config,
        )

        settings = load_settings()
        processes = settings.train.nproc if nproc is None else nproc
        try:
            encoder.check_nproc(processes, device_for(settings))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--nproc") from exc
        texts = _read_corpus(corpus)
        if not texts:
            raise typer.BadParameter("the corpus files hold no text")
        store = open_store(settings)
        if from_model is None and active_checkpoint(settings, store) is None:
            # MiniLM's MLM head starts untrained: the first training adapts it first.
            console.print("[yellow]no active checkpoint: adapting the default model's MLM head first[/yellow]")
            version = ensure_default_checkpoint(settings, store)
            console.print(f"[green]default checkpoint {version} is active[/green]")
        bundle = _load_bundle(settings, from_model)
        config = train_config(settings, steps)
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        if processes > 1:
            console.print(f"training on {processes} processes (torch.distributed.run)")
            result = encoder.train_mlm_distributed(
                bundle, texts, config=config, nproc=processes, work_dir=settings.runs_dir
            )
        else:
            result = encoder.train_mlm(bundle, texts, config=config, progress=True)
        version = encoder.save_checkpoint(
            bundle,
            settings.checkpoints_dir,
            parent=bundle.version,
            metrics={
                "train_loss": result.final_loss,
                "steps": result.steps,
                "tokens_per_second": result.tokens_per_second,
            },
        )
        store.record_checkpoint(version, bundle.metadata.get("parent"), "candidate", {}, None)
        if activate:
            promote_checkpoint(settings, store, version)
        store.close()
        console.print(
            f"[green]saved {version}[/green] loss {result.final_loss:.3f}, "
            f"{result.tokens_per_second:.0f} tokens/s, bf16={result.bf16}" + (" (active)" if activate else "")
        )

    @app.command()
    def predict(
        texts: list[str] = typer.Argument(..., help='sentences with [MASK], e.g. "The puppy [MASK] on the mat."'),
        top_k: int = typer.Option(5, "--top-k", min=1, max=100),
        explain: bool = typer.Option(False, "--explain", help="show attention from the mask to each token"),
        model: str | None = typer.Option(None, help="model id or path (default: the active checkpoint)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    ) -> None:
        """Fill in each [MASK] (uses the active checkpoint, else the configured model)."""
        import encoder  # deferred: torch and the model load only when a command runs, not for --help

        settings = load_settings()
        bundle = _load_bundle(settings, model)
        if model is None and bundle.version is None:
            console.print(
                "[yellow]no active checkpoint: the MLM head is untrained; run `kecl init` or `kecl train` "
                "first for meaningful predictions[/yellow]"
            )
        results = encoder.fill_mask(bundle, texts, top_k=top_k, explain=explain)
        if as_json:
            console.print_json(json.dumps([encoder.to_dict(r) for r in results]))
            return
        for text, result in zip(texts, results):
            if not result.masks:
                console.print(f"[yellow]no [MASK] in[/yellow] {text!r}")
            for n, mask in enumerate(result.masks, 1):
                table = Table(
                    title=f"{text}  — mask {n} (model {bundle.version or bundle.metadata.get('name_or_path')})"
                )
                table.add_column("#", justify="right")
                table.add_column("token")
                table.add_column("score", justify="right")
                for rank, t in enumerate(mask.top_k, 1):
                    table.add_row(str(rank), t.token, f"{t.score:.3f}")
                console.print(table)
                if mask.explanation is not None:
                    ex = mask.explanation
                    att = Table(title="attention from the mask (rollout; last layer, mean over heads)")
                    att.add_column("token")
                    att.add_column("rollout", justify="right")
                    att.add_column("last layer", justify="right")
                    last = ex.per_head[-1]
                    for j, token in enumerate(ex.tokens):
                        mean = sum(h[j] for h in last) / len(last)
                        att.add_row(token, f"{ex.rollout[j]:.3f}", f"{mean:.3f}")
                    console.print(att)
