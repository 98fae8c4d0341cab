"""Fill-mask prediction, gold-token ranks for probes, and attention explanations.

Attention weights need the eager kernel (SDPA never materialises them), so the model switches
to eager only for an ``explain=True`` call and back to SDPA afterwards.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from transformers import PreTrainedTokenizerFast

from encoder.bundle import MLMBundle
from encoder.injection import InjectedInputs
from encoder.packing import to_backend_mask


@dataclass
class TokenScore:
    """One candidate filler of a [MASK]."""

    token: str
    token_id: int
    score: float  # softmax probability over the vocabulary


@dataclass
class AttentionExplanation:
    """Attention from one masked position to every input token.

    ``per_head[layer][head][j]``: weight of token ``j`` in that head; ``rollout[j]``: attention
    rollout (Abnar & Zuidema 2020: head-averaged attention plus identity, multiplied through the
    layers), the share of the masked position's final representation that flows from token ``j``.
    """

    tokens: list[str]
    per_head: list[list[list[float]]]
    rollout: list[float]


@dataclass
class MaskPrediction:
    """The top-k fillers of one [MASK] (and, with ``explain``, where its attention went)."""

    position: int  # index of the [MASK] token in the input ids
    top_k: list[TokenScore]
    explanation: AttentionExplanation | None = None
    log_probs: torch.Tensor | None = None  # with ``keep_log_probs``: over the vocabulary, before any bias


@dataclass
class FillMaskResult:
    """Predictions for one input: one entry per [MASK], left to right."""

    text: str | None
    tokens: list[str]
    masks: list[MaskPrediction] = field(default_factory=list)
    # with ``branch_from``: the log-probabilities at the masks of the row's length branches, in order
    branch_log_probs: torch.Tensor | None = None


def _forward(
    bundle: MLMBundle, batch: Mapping[str, torch.Tensor], explain: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Encoder output ``(hidden_states, attentions)``, the attentions (one per layer) only with
    ``explain``; the MLM head is applied by the caller only at [MASK] positions (the 30k-word head
    over every token would dominate the cost)."""
    # the explaining twin shares the weights: switching the shared model's backend raced between threads
    model = (
        bundle.explaining_model() if explain and bundle.model.config._attn_implementation != "eager" else bundle.model
    )
    device = bundle.device
    inputs = {
        k: v.to(device)
        for k, v in batch.items()
        if k in ("input_ids", "token_type_ids", "position_ids", "attention_mask") and v is not None
    }
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() in (3, 4):
        # transformers v5 passes 4-D masks through untouched: give it the backend's form.
        # Boolean / 0-1 integer: a visibility matrix; floating point: an additive mask (0 = visible).
        visible = mask >= 0 if mask.is_floating_point() else mask.bool()
        inputs["attention_mask"] = to_backend_mask(visible, model.config._attn_implementation)
    # eval() sets the flag on every submodule (~0.2 ms, 3x the check): only when one is still training
    if any(m.training for m in model.modules()):
        model.eval()
    with torch.inference_mode(), _autocast(bundle):
        out = model.bert(**inputs, output_attentions=explain)
    if not explain:
        return out.last_hidden_state, None
    if out.attentions is None:
        raise RuntimeError("the encoder returned no attention weights to explain")
    return out.last_hidden_state, out.attentions


def _autocast(bundle: MLMBundle) -> torch.autocast:
    return torch.autocast(bundle.device.type, dtype=torch.bfloat16, enabled=bundle.inference_bf16)


def _rollout(attentions: Sequence[torch.Tensor], row: int, keep: torch.Tensor) -> torch.Tensor:
    """Attention rollout for one batch row; ``keep`` selects its real (non-padding) tokens."""
    idx = keep.nonzero().flatten()
    result = None
    for layer in attentions:
        a = layer[row].float().mean(0)[idx][:, idx]
        a = a + torch.eye(a.shape[0], device=a.device)  # the residual connection
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("attention rollout needs at least one layer's attentions")
    return result


_VOCAB_KINDS: weakref.WeakKeyDictionary[Any, tuple[int, torch.Tensor, torch.Tensor]] = weakref.WeakKeyDictionary()


def _vocab_kinds(tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Two booleans over the vocabulary: word-like tokens (letters or digits, no special tokens or
    punctuation) and continuation pieces (WordPiece ``##…``). Cached per tokenizer object while it
    lives (not by ``id``, which a later tokenizer may reuse) and recomputed when its size changes."""
    cached = _VOCAB_KINDS.get(tokenizer)
    if cached is None or cached[0] != len(tokenizer):
        special = set(tokenizer.all_special_ids)
        tokens = [t or "" for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
        cached = (
            len(tokenizer),
            torch.tensor([i not in special and t.isalnum() for i, t in enumerate(tokens)]),
            torch.tensor([t.startswith("##") for t in tokens]),
        )
        _VOCAB_KINDS[tokenizer] = cached
    return cached[1], cached[2]


def _token(tokenizer: PreTrainedTokenizerFast, token_id: int) -> str:
    # convert_ids_to_tokens is annotated ``str | list[str]`` whatever it is given; an int gives one
    # token. (For an id past the tokenizer's vocabulary it gives None, which the annotation omits:
    # a model whose head is wider than its tokenizer can rank such an id.)
    return cast(str, tokenizer.convert_ids_to_tokens(token_id))


def _tokens(tokenizer: PreTrainedTokenizerFast, token_ids: list[int]) -> list[str]:
    # a list of ids (the tokenizer's own, so each has a token) gives a list of tokens
    return cast(list[str], tokenizer.convert_ids_to_tokens(token_ids))


def evidence_bias(tokenizer: Any, inputs: InjectedInputs, boost: float) -> torch.Tensor | None:
    """A ``(rows, vocab)`` logit bias: ``boost`` for every whole word that appears in a row's injected
    knowledge (facts, passages) but not in its own text, 0 elsewhere; ``None`` (no bias) for
    closed-book inputs or a boost of 0.

    Why: an augmented query is asked because the answer is expected in the evidence, and the
    encoder, though it reads, still lets a strong prior win ("flows into the [MASK] sea" →
    "seattle" with "Baltic" injected). The bias is a copy prior in log space, as in pointer-generator
    readers: evidence words gain ``exp(boost)`` in odds, everything stays possible, and the model
    still chooses among the evidence words. Words of the query itself are not boosted (they are
    rarely the answer and would otherwise echo the question), nor are the first pieces of words
    split into several tokens (a one-token answer is not "gd" of "gdansk").
    """
    if inputs.strategy == "closed-book" or boost <= 0:
        return None
    input_ids = inputs.input_ids
    vocab = len(tokenizer)
    device = input_ids.device
    wordlike, piece = (t.to(device) for t in _vocab_kinds(tokenizer))
    ids = input_ids.clamp(0, vocab - 1)
    real = (input_ids != tokenizer.pad_token_id) & (input_ids < vocab)
    # a whole word: word-like, and the next token does not continue it ("gd ##ans ##k" is no word)
    continued = torch.zeros_like(real)
    continued[:, :-1] = piece[ids[:, 1:]] & real[:, 1:]
    whole = real & wordlike[ids] & ~continued
    text_mask = inputs.text_mask.to(device).bool()
    row_of = torch.arange(input_ids.shape[0], device=device)[:, None].expand_as(input_ids)
    injected = torch.zeros(input_ids.shape[0], vocab, dtype=torch.bool, device=device)
    in_text = torch.zeros_like(injected)
    injected[row_of[whole & ~text_mask], ids[whole & ~text_mask]] = True
    in_text[row_of[real & text_mask], ids[real & text_mask]] = True
    chosen = injected & ~in_text
    return chosen.float() * boost


def fill_mask_encoded(
    bundle: MLMBundle,
    encodings: Mapping[str, torch.Tensor],
    top_k: int = 10,
    explain: bool = False,
    texts: Sequence[str | None] | None = None,
    logit_bias: torch.Tensor | None = None,
    keep_log_probs: bool = False,
    branch_from: Sequence[int] | None = None,
) -> list[FillMaskResult]:
    """Fill-mask on pre-built inputs: ``input_ids`` plus optional ``token_type_ids``,
    ``position_ids`` (e.g. K-BERT soft positions) and an ``attention_mask`` that is 2-D
    (padding) or a boolean 3-D/4-D visibility matrix (True = may attend). ``logit_bias``:
    ``(rows, vocab)`` added to the logits of every [MASK] of a row (e.g. :func:`evidence_bias`).
    ``keep_log_probs``: also keep each [MASK]'s log-probabilities before the bias (entity-level
    scoring reuses them instead of a second forward pass). ``branch_from[row]``: where the row's
    length branches begin (:func:`encoder.injection.add_length_branches`); the masks from there on
    are not predicted but their log-probabilities kept in ``branch_log_probs``, and the row's
    tokens end there.

    Returns one :class:`FillMaskResult` per row. Raises ``ValueError`` without ``input_ids``, or
    for ``explain`` with ``branch_from``.
    """
    if "input_ids" not in encodings:
        raise ValueError("fill_mask_encoded: encodings need 'input_ids'")
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1")
    if explain and branch_from is not None:
        raise ValueError("fill_mask_encoded: explanations cover rows without length branches only")
    tokenizer = bundle.tokenizer
    input_ids = encodings["input_ids"]
    hidden, attentions = _forward(bundle, encodings, explain)
    is_mask = (input_ids == tokenizer.mask_token_id).to(hidden.device)
    mask_at = is_mask.nonzero()  # (row, position) of every [MASK], in the order of hidden[is_mask]
    in_branch = (
        mask_at[:, 1].cpu() >= torch.tensor(list(branch_from), dtype=torch.long)[mask_at[:, 0].cpu()]
        if branch_from is not None
        else torch.zeros(len(mask_at), dtype=torch.bool)
    )
    with torch.inference_mode():
        logits = bundle.model.cls(hidden[is_mask]).float()
        plain = logits.log_softmax(-1).cpu() if keep_log_probs or branch_from is not None else None
        if logit_bias is not None:
            logits = logits + logit_bias.to(logits.device)[mask_at[:, 0]]
        main = (~in_branch).nonzero().flatten()
        mask_probs = logits[main.to(logits.device)].softmax(-1)
    where = {}  # (row, position) -> row of mask_probs
    for n, (r, p) in enumerate(mask_at[main.to(mask_at.device)].tolist()):
        where[(r, p)] = n
    mask = encodings.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        keep_all = mask.bool()
    else:
        keep_all = input_ids != tokenizer.pad_token_id
    if branch_from is not None:
        keep_all = keep_all & (torch.arange(input_ids.shape[1])[None, :] < torch.tensor(list(branch_from))[:, None])
    k = min(top_k, mask_probs.shape[-1])
    results = []
    for row in range(input_ids.shape[0]):
        keep = keep_all[row].cpu()
        ids = input_ids[row][keep].tolist()
        tokens = _tokens(tokenizer, ids)
        result = FillMaskResult(texts[row] if texts else None, tokens)
        positions = (input_ids[row] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        if branch_from is not None:
            positions = [p for p in positions if p < branch_from[row]]
        # _forward returns attentions exactly when explaining
        rollout = _rollout(attentions, row, keep.to(attentions[0].device)) if attentions is not None else None
        kept_index = keep.nonzero().flatten()
        for pos in positions:
            scores, top_ids = mask_probs[where[(row, pos)]].topk(k)
            top = [TokenScore(_token(tokenizer, int(i)), int(i), float(s)) for s, i in zip(scores, top_ids)]
            explanation = None
            if attentions is not None and rollout is not None:
                local = int((kept_index == pos).nonzero().flatten()[0])
                per_head = [layer[row][:, pos][:, kept_index.to(layer.device)].float().tolist() for layer in attentions]
                explanation = AttentionExplanation(tokens, per_head, rollout[local].tolist())
            n = int(main[where[(row, pos)]])
            kept = plain[n] if plain is not None and keep_log_probs else None
            result.masks.append(MaskPrediction(pos, top, explanation, kept))
        if branch_from is not None and plain is not None:
            result.branch_log_probs = plain[(in_branch & (mask_at[:, 0].cpu() == row)).nonzero().flatten()]
        results.append(result)
    return results


def encode_texts(bundle: MLMBundle, texts: Sequence[str], max_length: int = 512) -> dict[str, torch.Tensor]:
    """Tokenise texts as a padded batch (``input_ids``, ``token_type_ids``, ``attention_mask``)."""
    enc = bundle.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}


def fill_mask(
    bundle: MLMBundle,
    texts: Sequence[str],
    top_k: int = 10,
    explain: bool = False,
    batch_size: int = 64,
    max_length: int = 512,
) -> list[FillMaskResult]:
    """Top-k fillers for every ``[MASK]`` in each text, batched; with ``explain`` also the
    attention from each masked position to each input token (per layer and head, and rollout).

    ``[MASK]`` may be written literally in the text. Returns one result per text (texts without a
    mask get an empty ``masks`` list). Raises ``ValueError`` for a bare string or ``top_k`` < 1.
    """
    if isinstance(texts, str):
        raise ValueError("fill_mask: pass a list of texts, not a single string")
    results: list[FillMaskResult] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        results.extend(fill_mask_encoded(bundle, encode_texts(bundle, chunk, max_length), top_k, explain, chunk))
    return results


@dataclass
class RankResult:
    """Where the gold token ranks among all vocabulary entries at the masked position (1 = top)."""

    rank: int
    gold_score: float
    top_k: list[TokenScore]


def masked_token_ranks(
    bundle: MLMBundle,
    inputs: Sequence[str] | Mapping[str, torch.Tensor],
    gold_token_ids: Sequence[int],
    top_k: int = 10,
    batch_size: int = 64,
    logit_bias: torch.Tensor | None = None,
) -> list[RankResult]:
    """For inputs with exactly one ``[MASK]`` each, the rank of the gold token id there and the
    top-k — enough for P@1, P@10 and MRR. ``inputs`` are texts or pre-built encodings;
    ``logit_bias`` (``(rows, vocab)``) is added to each row's logits, as in :func:`fill_mask_encoded`.

    Raises ``ValueError`` when an input has no or several masks, or lengths differ.
    """
    if len(inputs["input_ids"] if isinstance(inputs, Mapping) else inputs) != len(gold_token_ids):
        raise ValueError("masked_token_ranks: one gold token id per input is needed")
    tokenizer = bundle.tokenizer
    out: list[RankResult] = []
    total = len(gold_token_ids)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        if isinstance(inputs, Mapping):
            batch = {k: v[start:stop] for k, v in inputs.items() if v is not None}
        else:
            batch = encode_texts(bundle, list(inputs[start:stop]))
        hidden, _ = _forward(bundle, batch, explain=False)
        is_mask = batch["input_ids"] == tokenizer.mask_token_id
        counts = is_mask.sum(1)
        if bool((counts != 1).any()):
            bad = start + int((counts != 1).nonzero()[0])
            raise ValueError(
                f"masked_token_ranks: input #{bad} has {int(counts[bad - start])} [MASK] tokens, expected 1"
            )
        rows = torch.arange(stop - start)
        with torch.inference_mode():
            logits = bundle.model.cls(hidden[rows, is_mask.float().argmax(1).to(hidden.device)]).float()
            if logit_bias is not None:
                logits = logits + logit_bias[start:stop].to(logits.device)
            probs = logits.softmax(-1)
        gold = torch.tensor(gold_token_ids[start:stop], device=probs.device)
        gold_p = probs[rows, gold]
        ranks = (probs > gold_p[:, None]).sum(1) + 1
        scores, ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for r in range(stop - start):
            top = [TokenScore(_token(tokenizer, int(i)), int(i), float(s)) for s, i in zip(scores[r], ids[r])]
            out.append(RankResult(int(ranks[r]), float(gold_p[r]), top))
    return out


def score_candidates(bundle: MLMBundle, text: str, candidates: Sequence[str]) -> dict[str, float]:
    """Probability of each single-token candidate at the one ``[MASK]`` of ``text``.

    Raises ``ValueError`` for a candidate that is not one token in the vocabulary.
    """
    ids = []
    for c in candidates:
        pieces = bundle.tokenizer(c, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"score_candidates: {c!r} is {len(pieces)} tokens, expected 1")
        ids.append(pieces[0])
    batch = encode_texts(bundle, [text])
    pos = (batch["input_ids"][0] == bundle.tokenizer.mask_token_id).nonzero().flatten()
    if pos.numel() != 1:
        raise ValueError(f"score_candidates: expected one [MASK] in {text!r}, found {pos.numel()}")
    hidden, _ = _forward(bundle, batch, explain=False)
    with torch.inference_mode():
        probs = bundle.model.cls(hidden[0, int(pos[0])]).float().softmax(-1)
    return {c: float(probs[i]) for c, i in zip(candidates, ids)}


def to_dict(result: FillMaskResult) -> dict[str, Any]:
    """A JSON-ready view of a result (for the API and CLI)."""
    return asdict(result)
