"""The light part of the composition root: model names resolved in one place, the store opened
with the encoder's own token counter."""

from __future__ import annotations

from pathlib import Path

from kecl.home import ensure_home, open_store, resolve_model_path, token_counter
from kecl.settings import DEFAULT_MODEL, PACKAGED_MODEL_IDS, Settings
from tests.factories import packaged_model_path


def test_default_ids_resolve_to_the_packaged_model_and_others_pass_through() -> None:
    for name in PACKAGED_MODEL_IDS:
        assert resolve_model_path(name) == packaged_model_path()
    assert DEFAULT_MODEL in PACKAGED_MODEL_IDS
    assert resolve_model_path("/some/other/model") == "/some/other/model"
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"


def test_token_counter_uses_the_encoders_word_pieces() -> None:
    count = token_counter(DEFAULT_MODEL)
    assert count("Zagreb") == 1 and count("Zagreb is the capital of Croatia.") == 7
    assert count("Elmsworthian") > 1  # a rare word is several pieces


def test_the_home_is_laid_out_and_its_store_opens(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    assert ensure_home(settings) == settings.home
    for folder in (settings.index_dir, settings.checkpoints_dir, settings.inbox_dir, settings.runs_dir):
        assert folder.is_dir()
    store = open_store(settings)
    assert store.stats()["passages"] == 0 and (settings.home / "kecl.db").is_file()
    store.close()
