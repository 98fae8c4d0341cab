"""retrieval: embed passages and keep a FAISS index keyed by SQL passage ids.

Knows no SQL: callers pass passage ids, texts and fetch functions. Public names:

- embedding: ``Embedder``, ``MeanPoolingEmbedder``, ``CoalescingEmbedder``, ``TextEmbedder``;
- the index: ``PassageIndex``, ``IndexState``, ``IndexConfig``, ``choose_kind``, ``build_index``,
  ``gpu_available``;
- on disk: ``save_index``, ``load_index``, ``read_manifest``, ``Manifest``, ``IndexLoadError``,
  ``verify_files``;
- keeping it current: ``reconcile``, ``ReconcileReport``, ``EmbedderMismatchError``,
  ``build_from_passages``, ``IndexHandle``; vectors other processes stored: ``FetchTexts``,
  ``FetchVectors``, ``stored_vectors``, ``read_or_embed``;
- fusing ranked lists: ``reciprocal_rank_fusion``.
"""

from retrieval.embedder import CoalescingEmbedder, Embedder, MeanPoolingEmbedder, TextEmbedder
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.handle import IndexHandle
from retrieval.index import IndexConfig, IndexState, PassageIndex, build_index, choose_kind, gpu_available
from retrieval.persist import IndexLoadError, Manifest, load_index, read_manifest, save_index, verify_files
from retrieval.reconcile import (
    EmbedderMismatchError,
    FetchTexts,
    FetchVectors,
    ReconcileReport,
    build_from_passages,
    read_or_embed,
    reconcile,
    stored_vectors,
)

__all__ = [
    "CoalescingEmbedder",
    "Embedder",
    "MeanPoolingEmbedder",
    "TextEmbedder",
    "PassageIndex",
    "IndexState",
    "IndexConfig",
    "choose_kind",
    "build_index",
    "gpu_available",
    "save_index",
    "load_index",
    "read_manifest",
    "Manifest",
    "IndexLoadError",
    "verify_files",
    "reconcile",
    "stored_vectors",
    "read_or_embed",
    "FetchTexts",
    "FetchVectors",
    "ReconcileReport",
    "EmbedderMismatchError",
    "build_from_passages",
    "IndexHandle",
    "reciprocal_rank_fusion",
]
