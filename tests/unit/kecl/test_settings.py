"""Settings: one source of truth for defaults shared with a package, and a kecl.toml without history."""

from __future__ import annotations

import dataclasses
import re

from kecl.settings import IndexSettings, default_toml
from retrieval import IndexConfig


def test_index_settings_default_to_the_index_configs_defaults() -> None:
    config = {f.name: f.default for f in dataclasses.fields(IndexConfig)}
    settings = IndexSettings()
    shared = [name for name in IndexSettings.model_fields if name in config]
    assert {"hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"} <= set(shared)
    for name in shared:
        assert getattr(settings, name) == config[name], name
    assert IndexConfig.from_settings(settings) == IndexConfig()


def test_the_written_settings_file_carries_no_lab_history() -> None:
    text = default_toml()
    assert not re.search(r"session \d|recipe \d|BENCHMARKS\.md|bench_\w+", text, re.IGNORECASE)
