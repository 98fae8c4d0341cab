"""The served encoder answers under bf16 autocast only where settings allow and the CPU has it."""

import torch

from encoder.trainer import bf16_supported
from kecl.services import Kecl
from tests.factories import activate_tiny_checkpoint, tiny_settings


def test_served_encoder_precision_follows_settings(tmp_path, tiny_embedder_dir):
    on = Kecl(tiny_settings(tmp_path / "a", tiny_embedder_dir))
    activate_tiny_checkpoint(on.settings)
    assert on.encoder.inference_bf16 == bf16_supported(torch.device("cpu"))
    off = Kecl(tiny_settings(tmp_path / "b", tiny_embedder_dir, model={"bf16": False}))
    activate_tiny_checkpoint(off.settings)
    assert off.encoder.inference_bf16 is False
    on.close()
    off.close()
