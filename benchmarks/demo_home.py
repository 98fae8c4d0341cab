"""A throwaway kecl home holding the demo data, with a chosen checkpoint active (for the benchmarks
that run the product on the demo's facts)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kecl.services import Kecl


@contextmanager
def demo_kecl(prefix: str, slices: Sequence[str], checkpoint: Path | None = None) -> Iterator[Kecl]:
    """A :class:`Kecl` on a fresh home (SQLite, exact index, CPU) holding the demo's ``slices``
    ("base", "later"), ``checkpoint`` (default: the base model) active in SQL and counted as trained
    through what the home holds (its watermark); the home is removed afterwards."""
    from encoder import load_checkpoint, save_checkpoint, set_active
    from kecl.demo import DEMO_DATA
    from kecl.services import Kecl
    from kecl.settings import Settings
    from kecl.wiring import load_base_model
    from knowledge import read_paths

    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        settings = Settings(home=home, database_url=None, model={"device": "cpu"}, index={"kind": "flat"})
        kecl = Kecl(settings)
        kecl.ingest_batch(read_paths([DEMO_DATA / s for s in slices]))
        bundle = load_checkpoint(checkpoint, device="cpu") if checkpoint else load_base_model(settings)
        version = save_checkpoint(bundle, settings.checkpoints_dir, watermark=kecl.store.watermark().to_dict())
        set_active(settings.checkpoints_dir, version)
        kecl.store.record_checkpoint(version, None, "active", {})
        try:
            yield kecl
        finally:
            kecl.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
