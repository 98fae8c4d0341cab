"""Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009) of several rankings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]],
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    k: int | None = None,
) -> list[tuple[int, float]]:
    """Fuse best-first id lists: ``score(d) = Σ_c weights[c] / (rrf_k + rank_c(d))``, ranks from 1.

    ``rankings`` maps a channel name (dense, lexical, entity) to its ids, best first; an id
    repeated within one list counts at its best rank. A channel missing from ``weights`` weighs
    1.0; a weight of 0 switches it off. Returns the top ``k`` (all when None) ``(id, score)``
    pairs, best first; ties go to the id with the better best rank, then the smaller id.
    Raises ValueError for a negative weight or rrf_k."""
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    weights = weights or {}
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for channel, ids in rankings.items():
        w = float(weights.get(channel, 1.0))
        if w < 0:
            raise ValueError(f"weight of channel {channel!r} is negative ({w})")
        if w == 0:
            continue
        seen: set[int] = set()
        for rank, pid in enumerate(ids, start=1):
            pid = int(pid)
            if pid < 0 or pid in seen:  # -1 pads FAISS results
                continue
            seen.add(pid)
            scores[pid] = scores.get(pid, 0.0) + w / (rrf_k + rank)
            best_rank[pid] = min(best_rank.get(pid, rank), rank)
    fused = sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))
    return fused if k is None else fused[:k]
