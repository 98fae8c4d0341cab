"""The served encoder answers under bf16 autocast only where settings allow and the CPU has it."""

import torch

from encoder.trainer import bf16_supported
from kecl.services import Kecl
from kecl.settings import Settings


def test_served_encoder_precision_follows_settings(tmp_path):
    on = Kecl(Settings(home=tmp_path / "a"))
    assert on.encoder.inference_bf16 == bf16_supported(torch.device("cpu"))
    off = Kecl(Settings(home=tmp_path / "b", model={"bf16": False}))
    assert off.encoder.inference_bf16 is False
    on.close()
    off.close()
