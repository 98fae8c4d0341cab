"""Passage embedders: normalised sentence vectors, so inner product is cosine similarity.

Two kinds share one interface (``encode(texts) -> float32 [n, dim]``, ``dim``, ``version``):
- :class:`Embedder`, a frozen sentence-transformers model (the default, as RETRO keeps its
  retriever frozen so training the MLM never makes the index stale);
- :class:`MeanPoolingEmbedder`, any Hugging Face BERT (e.g. the active MLM encoder itself),
  mean-pooled over its last hidden states (REALM/Atlas style: re-embed after each promotion).

``version`` is ``"<name>@<first 16 hex of sha256(weights)>"``: the index is stamped with it, so a
vector made by one set of weights is never searched with a query made by another.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:  # transformers costs seconds to import: the caller has loaded the model with it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """What the index and reconcile need from an embedder."""

    @property
    def version(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def weights_hash(module: torch.nn.Module, skip_prefixes: tuple[str, ...] = ()) -> str:
    """sha256 over the module's state dict (names, dtypes, shapes, bytes), first 16 hex digits;
    tensors whose names start with ``skip_prefixes`` are left out."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith(skip_prefixes):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class Embedder:
    """A frozen sentence-transformers model.

    ``name_or_path``: a sentence-transformers / Hugging Face model id or local folder (a plain BERT
    folder gets mean pooling); ``name``: how its version names it (default: ``name_or_path``), e.g.
    the Hugging Face id of a local copy, so that an index made with the same weights from another
    folder still matches. ``device``: a concrete device (``"cpu"``, ``"cuda:0"``). Raises whatever
    sentence-transformers raises when the model cannot be loaded (OSError for a missing folder or an
    id not in the offline cache).

    ``trace``: run the model as a TorchScript trace (see :func:`trace_sentence_model`) where it
    gives the eager model's vectors, the eager model otherwise. A traced forward pass runs without
    the GIL, while an eager one takes it back between its hundreds of operations: in a server whose
    request threads run Python, each of those waits up to the interpreter's switch interval (beside
    one busy Python thread, eight queries took ~10× as long eager as traced: BENCHMARKS.md,
    "Beside Python work").

    ``bf16``: compute under bfloat16 autocast (callers ask for it where bf16 is native: elsewhere it
    is emulated and slower). A forward pass over a few short texts streams the weights more than it
    multiplies, and bf16 halves what it streams; its vectors are the float32 ones to a cosine of
    ~0.99997 (``benchmarks/bench_embedder.py``), so an index made in either finds the same passages.
    """

    def __init__(
        self,
        name_or_path: str,
        batch_size: int = 64,
        device: str = "cpu",
        *,
        name: str | None = None,
        trace: bool = True,
        bf16: bool = False,
    ):
        # deferred: sentence-transformers costs seconds to import; only this embedder needs it
        from sentence_transformers import SentenceTransformer

        self.name = name or name_or_path
        self.batch_size = batch_size
        self.bf16 = bf16
        self.model = SentenceTransformer(name_or_path, device=device)
        self.model.eval()
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        )  # renamed in sentence-transformers 6
        dim = get_dim()
        self.traced: TracedSentenceModel | None = None
        self.dim = int(dim) if dim else int(self.encode(["probe"]).shape[1])
        self.version = f"{self.name}@{weights_hash(self.model)}"
        if trace:
            self.traced = trace_sentence_model(self.model, self._encode_eager, bf16=bf16)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array [len(texts), dim], each row of unit length."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.traced is None:
            return self._encode_eager(texts)
        # longest first, as sentence-transformers batches, so each batch pads little
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = [texts[i] for i in rows]
            vectors = self.traced(batch)
            out[rows] = vectors if vectors is not None else self._encode_eager(batch)
        return out

    def _encode_eager(self, texts: Sequence[str]) -> np.ndarray:
        with _bf16_autocast(self.model.device.type, self.bf16):
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class TracedSentenceModel:
    """A sentence-transformers model's forward pass (tokenised features → normalised vectors) as a
    TorchScript trace; call it with one batch of texts. Made by :func:`trace_sentence_model`."""

    def __init__(self, model: Any, module: torch.jit.ScriptModule, keys: list[str], constants: dict[str, Any]):
        self.model, self.module, self.keys, self.constants = model, module, keys, constants

    def features(self, texts: Sequence[str]) -> list[torch.Tensor] | None:
        """The tensors the trace takes, in its order; None when the tokeniser's output does not fit it."""
        tensors, constants = _split_features(_preprocess(self.model, texts))
        if list(tensors) != self.keys or constants != self.constants:
            return None
        return [tensors[k].to(self.model.device) for k in self.keys]

    def __call__(self, texts: Sequence[str]) -> np.ndarray | None:
        """Unit-length float32 vectors; None when the tokeniser's output does not fit the trace."""
        tensors = self.features(texts)
        if tensors is None:
            return None
        with torch.inference_mode():
            vectors = self.module(*tensors)
            return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()


def _preprocess(model: Any, texts: Sequence[str]) -> dict[str, Any]:
    """The model's input features for ``texts`` (``preprocess`` since sentence-transformers 6)."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return dict(preprocess(list(texts)))


def _split_features(features: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The features' tensors (what a trace takes) and the rest (what it holds fixed), by name."""
    tensors = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    return tensors, {k: v for k, v in features.items() if k not in tensors}


class _SentenceForward(torch.nn.Module):
    """The model's modules from feature tensors to the sentence embedding (what is traced)."""

    def __init__(self, model: Any, keys: list[str], constants: dict[str, Any]):
        super().__init__()
        self.model, self.keys, self.constants = model, keys, constants

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model({**self.constants, **dict(zip(self.keys, tensors, strict=True))})["sentence_embedding"]


def _bf16_autocast(device_type: str, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``device_type`` (a no-op context when not ``enabled``): the eager model
    and its trace compute under the same one, so the trace check compares like with like."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


BF16_TOLERANCE = 1e-2  # the largest element-wise gap of unit vectors allowed between bf16 paths
TRACE_EXAMPLE = ["a probe", "a longer probe sentence, padded beside the short one, for tracing the forward pass"]
TRACE_CHECKS = [
    ["one"],
    ["two short texts", "of equal length"],
    ["a single text longer than any of the examples the model was traced with, to check " * 3],
    ["mixed", "lengths with padding in the batch", "and one more text of another length entirely here"],
]


def trace_sentence_model(
    model: Any, eager: Callable[[Sequence[str]], np.ndarray], tolerance: float = 1e-4, bf16: bool = False
) -> TracedSentenceModel | None:
    """``model`` (a SentenceTransformer) traced with TorchScript, or None where tracing fails or the
    trace's vectors differ from ``eager``'s (which embeds texts with the model itself) by more
    than ``tolerance`` on batches of other sizes, lengths and padding than it was traced with: a
    trace records one path through the model's Python, so a model that branches on its input's
    values or shapes keeps the eager path rather than give other vectors.

    ``bf16``: traced under bfloat16 autocast (the trace keeps its casts), and then checked against
    an ``eager`` that computes in bf16 too, to ``BF16_TOLERANCE``: bf16 rounds the two paths'
    sums apart by more than float32 does."""
    tensors, constants = _split_features(_preprocess(model, TRACE_EXAMPLE))
    keys = list(tensors)
    st_log = logging.getLogger("sentence_transformers")
    level = st_log.level
    try:
        with (
            torch.inference_mode(),
            _bf16_autocast(model.device.type, bf16),
            warnings.catch_warnings(),
        ):
            # the tracer warns of every Python branch it fixes (the checks below decide) and reads
            # every attribute of the model, deprecated ones that log a warning too
            warnings.simplefilter("ignore")
            st_log.setLevel(logging.ERROR)
            try:
                module = torch.jit.trace(
                    _SentenceForward(model, keys, constants),
                    tuple(t.to(model.device) for t in tensors.values()),
                    strict=False,
                    check_trace=False,
                )
            finally:
                st_log.setLevel(level)
        traced = TracedSentenceModel(model, module, keys, constants)
        worst = 0.0
        for texts in TRACE_CHECKS:
            vectors = traced(texts)
            worst = max(worst, float("inf") if vectors is None else float(np.abs(vectors - eager(texts)).max()))
    except Exception as exc:  # noqa: BLE001 - any failure keeps the eager model, which works
        log.warning("embedding with the eager model: tracing it failed (%s)", exc)
        return None
    if worst > (max(tolerance, BF16_TOLERANCE) if bf16 else tolerance):
        log.warning("embedding with the eager model: its trace differs from it by %.2g", worst)
        return None
    return traced


class MeanPoolingEmbedder:
    """Any Hugging Face BERT (``BertModel`` or ``BertForMaskedLM``) as an embedder: the mean of
    the last hidden states over real (non-padding) tokens, then L2-normalised.

    ``version`` should name the checkpoint (e.g. its id); the weights hash is appended.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        version: str,
        batch_size: int = 64,
        max_length: int = 256,
    ):
        # BertForMaskedLM.base_model is its BertModel: skip the vocabulary-sized MLM head.
        self.model: PreTrainedModel = getattr(model, "base_model", model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        # the pooler is unused by mean pooling (and absent from BertForMaskedLM.bert)
        self.version = f"{version}@{weights_hash(self.model, skip_prefixes=('pooler.',))}"

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array [len(texts), hidden_size], each row of unit length."""
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        self.model.train(was_training)
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


class CoalescingEmbedder:
    """Wraps an embedder so that concurrent small ``encode`` calls share one forward pass.

    Under concurrent queries each request embeds its own short text; on 2 CPU cores one 15-token
    query costs ~12 ms alone but ~2.3 ms inside a batch of 16 (``benchmarks/bench_query.py``).
    Calls of at most ``max_batch`` texts go to one worker thread, which embeds everything queued at
    that moment together: no waiting when there is no company (a lone query costs the same), and
    while one batch runs the next one gathers. Larger calls (ingestion) go straight through.
    Results are row-for-row those of the wrapped embedder (up to float rounding of batching).

    A gathered batch is split by length where padding would cost more than another forward pass
    (see :func:`length_groups`): a POSTed passage padded into a batch of short queries made every
    query in it as long as the passage (on 2 CPU cores, 7 queries and a 35-token passage took 150
    ms in one pass, 68 ms in two). ``forward_cost_tokens``: what one forward pass costs beyond
    its tokens, in tokens (on CPU, streaming the weights; measured ~45 for MiniLM-L6).
    """

    def __init__(self, inner: TextEmbedder, max_batch: int = 64, forward_cost_tokens: float = 48.0) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self.forward_cost_tokens = forward_cost_tokens
        self._queue: queue.Queue[tuple[list[str], Future] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start = threading.Lock()
        self.idle_seconds = 30.0  # the worker thread exits after this long without work
        self.batches = 0  # forward passes run by the worker (observable in tests and benchmarks)

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def dim(self) -> int:
        return self.inner.dim

    def __getattr__(self, name: str) -> Any:  # model, name, tokenizer, … of the wrapped embedder
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts or len(texts) > self.max_batch:
            return self.inner.encode(texts)
        future: Future = Future()
        with self._start:  # the worker exits when idle; checking and queueing under one lock
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="kecl-embed", daemon=True)
                self._worker.start()
            self._queue.put((texts, future))
        return future.result()

    def close(self) -> None:
        with self._start:
            worker, self._worker = self._worker, None
            if worker is not None:
                self._queue.put(None)
        if worker is not None:
            worker.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._start:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            if item is None:
                return
            batch = [item]
            size = len(item[0])
            stop = False
            while size < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt[0])
            self._encode_batch(batch)
            if stop:
                return

    def _encode_batch(self, batch: list[tuple[list[str], Future]]) -> None:
        """Embed a gathered batch, resolving each caller as soon as the passes holding its texts
        are done: the short texts' pass runs first, so queries gathered with a long passage do not
        wait for the passage's pass too. A failed pass fails its callers and those not yet done."""
        texts = [t for texts, _ in batch for t in texts]
        owner = [i for i, (item, _) in enumerate(batch) for _ in item]
        starts = [owner.index(i) for i in range(len(batch))]
        pending = [len(item) for item, _ in batch]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        try:
            for group in self._groups(texts):
                out[group] = self.inner.encode([texts[i] for i in group])
                self.batches += 1
                for i in group:
                    pending[owner[i]] -= 1
                    if pending[owner[i]] == 0:
                        item, future = batch[owner[i]]
                        future.set_result(out[starts[owner[i]] : starts[owner[i]] + len(item)].copy())
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)

    def _groups(self, texts: list[str]) -> list[list[int]]:
        """The forward passes for ``texts``, shortest texts first."""
        return length_groups(self._token_lengths(texts), self.forward_cost_tokens) if len(texts) > 1 else [[0]]

    def _token_lengths(self, texts: list[str]) -> list[int]:
        tokenizer = getattr(self.inner, "tokenizer", None) or getattr(
            getattr(self.inner, "model", None), "tokenizer", None
        )
        if tokenizer is None:  # an embedder without a Hugging Face tokenizer: ~4 characters a token
            return [max(1, len(t) // 4) for t in texts]
        return [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]


def length_groups(lengths: Sequence[int], forward_cost: float) -> list[list[int]]:
    """Indices of texts (by their token ``lengths``) partitioned into forward passes that minimise
    the estimated cost ``sum(forward_cost + size * longest)`` over the passes: a padded batch costs
    its size times its longest text. Each pass holds texts adjacent in length order (an optimal
    partition always does), so a dynamic programme over the sorted lengths finds it."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):
            cost = best[start] + forward_cost + (end - start) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]
