"""save_index / load_index: round trip, crash before the rename, corruption detected, format-1 folders load."""

from __future__ import annotations

import hashlib
import json
import os

import faiss
import numpy as np
import pytest

from retrieval import IndexConfig, IndexLoadError, PassageIndex, load_index, read_manifest, save_index
from tests.factories import exact_topk, unit_vectors

DIM = 24


def make(kind: str, n: int = 1200, seed: int = 0) -> tuple[PassageIndex, np.ndarray]:
    vectors = unit_vectors(n, DIM, seed=seed)
    index = PassageIndex(kind, DIM, IndexConfig(ivf_train_min=1000), embedder_version=f"emb@{seed}")
    index.add(np.arange(n) * 2 + 1, vectors)
    return index, vectors


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_round_trip_gives_same_results_and_manifest(tmp_path, kind):
    index, vectors = make(kind)
    index.remove([1, 3, 5])  # hnsw: tombstones must survive the trip
    manifest = save_index(index, tmp_path)
    assert manifest.count == len(index) == 1197 and manifest.max_id == 2399
    assert manifest.embedder_version == "emb@0"
    loaded = load_index(tmp_path)
    assert loaded.kind == kind and loaded.embedder_version == "emb@0"
    assert np.array_equal(loaded.ids(), index.ids())
    queries = vectors[:40]
    np.testing.assert_allclose(loaded.search(queries, 5)[0], index.search(queries, 5)[0], atol=1e-6)
    assert np.array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])
    loaded.add([100_001], vectors[:1])  # still mutable after loading
    assert len(loaded) == 1198
    loaded.add([7], vectors[500:501])  # an upsert after loading replaces, never duplicates
    assert len(loaded) == 1198 and (loaded.ids() == 7).sum() == 1


def test_ivfpq_waiting_for_training_round_trips(tmp_path):
    index = PassageIndex("ivfpq", DIM, IndexConfig(ivf_train_min=5000))
    index.add(np.arange(100), unit_vectors(100, DIM))
    save_index(index, tmp_path)
    loaded = load_index(tmp_path)
    assert len(loaded) == 100 and loaded.trained_count == 0


def test_crash_between_write_and_rename_keeps_previous_index(tmp_path, monkeypatch):
    old, _ = make("flat", seed=1)
    save_index(old, tmp_path)
    new, _ = make("flat", n=1500, seed=2)

    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt("simulated crash before the manifest rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        save_index(new, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    loaded = load_index(tmp_path)  # the old generation, intact
    assert len(loaded) == 1200 and loaded.embedder_version == "emb@1"
    save_index(new, tmp_path)  # the next save recovers and cleans up
    assert len(load_index(tmp_path)) == 1500
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        f"index-{read_manifest(tmp_path).generation}.faiss",
        "manifest.json",
    ]


def test_crash_mid_write_of_index_file_keeps_previous_index(tmp_path, monkeypatch):
    old, _ = make("hnsw", seed=3)
    save_index(old, tmp_path)
    import faiss

    def half_written(index, path):
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", half_written)
    with pytest.raises(OSError):
        save_index(make("hnsw", seed=4)[0], tmp_path)
    assert load_index(tmp_path).embedder_version == "emb@3"


def test_load_detects_corruption_missing_files_and_count_mismatch(tmp_path):
    with pytest.raises(IndexLoadError, match="no index manifest"):
        load_index(tmp_path)
    index, _ = make("flat")
    manifest = save_index(index, tmp_path)
    data = tmp_path / next(iter(manifest.files))
    blob = bytearray(data.read_bytes())
    blob[-5] ^= 0xFF
    data.write_bytes(bytes(blob))
    with pytest.raises(IndexLoadError, match="checksum"):
        load_index(tmp_path)
    save_index(index, tmp_path)
    path = tmp_path / "manifest.json"
    raw = json.loads(path.read_text())
    raw["count"] += 1
    path.write_text(json.dumps(raw))
    with pytest.raises(IndexLoadError, match="manifest says"):
        load_index(tmp_path)
    data = tmp_path / next(iter(raw["files"]))
    data.unlink()
    with pytest.raises(IndexLoadError, match="missing"):
        load_index(tmp_path)


# A manifest's config exactly as format 1 recorded it (before IndexConfig's hnsw_ef_search default became 192).
FORMAT_1_CONFIG = {
    "hnsw_m": 32,
    "hnsw_ef_construction": 64,
    "hnsw_ef_search": 128,
    "ivf_nlist": None,
    "ivf_nprobe": 32,
    "pq_m": None,
    "pq_nbits": 8,
    "ivf_train_min": 1000,
    "ivf_train_sample": 200000,
    "retrain_factor": 4.0,
    "compact_ratio": 0.25,
    "exact_filter_max": 20000,
    "use_gpu": None,
}


def write_format_1(folder, case: str, ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray):
    """A folder laid out as format 1, built from faiss and numpy directly (not through
    PassageIndex): the faiss index, for HNSW ``extras-1.npz`` (labels, alive), the manifest.
    Returns the faiss index written."""
    kind = "ivfpq" if case.startswith("ivfpq") else case
    extras = {}
    trained_count = 0
    if case in ("flat", "ivfpq-pending"):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        index.add_with_ids(vectors, ids)
        index.remove_ids(faiss.IDSelectorBatch(len(removed), faiss.swig_ptr(removed)))
    elif case == "hnsw":
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.add(vectors)
        extras = {"labels": ids, "alive": ~np.isin(ids, removed)}
    else:
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFPQ(quantizer, DIM, 8, 3, 4, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add_with_ids(vectors, ids)
        index.remove_ids(faiss.IDSelectorBatch(len(removed), faiss.swig_ptr(removed)))
        trained_count = len(ids)
    faiss.write_index(index, str(folder / "index-1.faiss"))
    files = {"index-1.faiss": hashlib.sha256((folder / "index-1.faiss").read_bytes()).hexdigest()}
    if extras:
        with open(folder / "extras-1.npz", "wb") as f:
            np.savez(f, **extras)
        files["extras-1.npz"] = hashlib.sha256((folder / "extras-1.npz").read_bytes()).hexdigest()
    live = np.setdiff1d(ids, removed)
    manifest = {
        "format_version": 1,
        "kind": kind,
        "dim": DIM,
        "embedder_version": "emb@old",
        "count": len(live),
        "max_id": int(live.max()),
        "generation": 1,
        "files": files,
        "meta": {
            "kind": kind,
            "dim": DIM,
            "config": FORMAT_1_CONFIG,
            "trained_count": trained_count,
            "pending": case == "ivfpq-pending",
            "max_added": int(ids.max()),
        },
        "created_at": 0.0,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return index


@pytest.mark.parametrize("case", ["flat", "hnsw", "ivfpq", "ivfpq-pending"])
def test_folder_written_in_format_1_loads(tmp_path, case):
    n = 300
    vectors = unit_vectors(n, DIM, seed=9)
    ids = np.arange(n, dtype=np.int64) * 3 + 2
    removed = ids[:5]
    written = write_format_1(tmp_path, case, ids, vectors, removed)
    loaded = load_index(tmp_path)
    live = ~np.isin(ids, removed)
    assert loaded.kind == ("ivfpq" if case.startswith("ivfpq") else case) and loaded.embedder_version == "emb@old"
    assert np.array_equal(loaded.ids(), ids[live]) and loaded.tombstones == (5 if case == "hnsw" else 0)
    assert loaded.config.hnsw_ef_search == 128  # the recorded config, not today's default
    assert loaded.trained_count == (n if case == "ivfpq" else 0)
    queries = vectors[:20]
    _, got = loaded.search(queries, 5)
    if case == "ivfpq":
        params = faiss.SearchParametersIVF()
        params.nprobe = 8  # every list, as the loaded index probes min(ivf_nprobe, nlist)
        assert np.array_equal(got, written.search(queries, 5, params=params)[1])
    else:
        _, want = exact_topk(vectors[live], ids[live], queries, 5)
        assert (got == want).mean() > 0.95
    loaded.add([ids[10]], vectors[:1])  # an upsert after loading replaces, never duplicates
    assert len(loaded) == n - 5 and (loaded.ids() == ids[10]).sum() == 1
    save_index(loaded, tmp_path)  # and saves again in the same format
    assert load_index(tmp_path).state().meta["config"] == FORMAT_1_CONFIG
