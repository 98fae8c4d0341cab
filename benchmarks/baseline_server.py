"""The baseline a user would write by hand: the same retrieval as kecl, then the transformers
``fill-mask`` pipeline on the same injected text, one request at a time.

    .venv/bin/python -m benchmarks.baseline_server --home HOME --port 8101
"""

from __future__ import annotations

import argparse
import threading

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Query(BaseModel):
    text: str
    k: int = 4


def make_app(home: str) -> FastAPI:
    from transformers import pipeline

    from encoder import active_version, build_injected_inputs
    from kecl.pipeline import QueryOptions, retrieve
    from kecl.services import Kecl
    from kecl.settings import Settings

    kecl = Kecl(Settings(home=home))
    _ = kecl.index  # load + reconcile before serving, as kecl serve does
    version = active_version(kecl.settings.checkpoints_dir)
    model_path = str(kecl.settings.checkpoints_dir / version) if version else None
    fill = pipeline("fill-mask", model=model_path or kecl.encoder.model, tokenizer=kecl.encoder.tokenizer, device=-1)
    one_at_a_time = threading.Lock()
    app = FastAPI()

    @app.post("/query")
    def query(q: Query) -> dict:
        prepared = retrieve(kecl, q.text, QueryOptions(mode="concat", k_passages=q.k))
        injected = build_injected_inputs(
            kecl.encoder.tokenizer,
            [prepared.text],
            [prepared.facts],
            [prepared.passages],
            strategy="concat",
            max_length=kecl.settings.model.max_injected_length,
        )
        text = injected.texts[0].removeprefix("[CLS] ").removesuffix(" [SEP]")
        with one_at_a_time:
            out = fill(text, top_k=5)
        preds = out[0] if out and isinstance(out[0], list) else out
        return {"predictions": [[{"token": p["token_str"], "score": p["score"]} for p in preds]]}

    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", required=True)
    ap.add_argument("--port", type=int, default=8101)
    args = ap.parse_args(argv)
    uvicorn.run(make_app(args.home), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
