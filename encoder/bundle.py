"""The model bundle (a masked-LM with its tokenizer) and the device facts everything else needs.

Both ``encoder.model`` (loading, building) and ``encoder.checkpoints`` (saving, verified loading)
need these; they live here so those two import one way (model → checkpoints → bundle).
"""

from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BertForMaskedLM, PreTrainedModel, PreTrainedTokenizerFast

MODEL_LOAD_LOCK = threading.RLock()
"""Held while a model is built from files. transformers builds models under process-wide patches
(meta-device construction, skipped weight initialisation), so two loads overlapping in one process
— a promotion's reload beside a follower's background load — can leave parameters on the meta
device; loads take turns instead."""


@dataclass
class MLMBundle:
    """A masked-LM model with its tokenizer and where it came from.

    ``version`` is the checkpoint version (``None`` for a model not saved yet); ``metadata`` holds
    the source (``name_or_path``), parent lineage and metrics of a loaded checkpoint.
    """

    model: BertForMaskedLM
    tokenizer: PreTrainedTokenizerFast
    version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Inference (fill-mask, ranks) under bf16 autocast: ~1.7x faster on a CPU with AVX512-BF16;
    # set by whoever serves the model, only where bf16 is native.
    inference_bf16: bool = False

    _explaining: BertForMaskedLM | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (inputs are moved there)."""
        return next(self.model.parameters()).device

    def explaining_model(self) -> BertForMaskedLM:
        """:attr:`model` with eager attention, which can return its attention weights, sharing every
        parameter and buffer with it (no second copy of the weights).

        Switching the one model's backend for the length of a pass raced between threads: a pass
        that kept its attentions could have the faster backend switched back under it by another
        pass finishing, and answer without them. Built once; built again when :attr:`model`'s
        parameters or vocabulary size changed (a grown vocabulary)."""
        with _EXPLAINING_LOCK:
            twin = self._explaining
            if twin is None or not _in_step(twin, self.model):
                shared = itertools.chain(self.model.parameters(), self.model.buffers())
                twin = copy.deepcopy(self.model, memo={id(t): t for t in shared})
                twin.set_attn_implementation("eager")
                self._explaining = twin
            return twin


_EXPLAINING_LOCK = threading.Lock()


def _in_step(twin: BertForMaskedLM, model: BertForMaskedLM) -> bool:
    pa, pb = list(twin.parameters()), list(model.parameters())
    same = len(pa) == len(pb) and all(x is y for x, y in zip(pa, pb))
    return same and twin.config.vocab_size == model.config.vocab_size


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def move_to(model: PreTrainedModel, device: torch.device) -> None:
    """``model.to(device)``, in place.

    transformers wraps ``PreTrainedModel.to`` in ``functools.wraps(nn.Module.to)``, which typeshed
    types as an unbound function (it asks for ``self`` again); called through ``nn.Module``'s
    signature the call still dispatches to transformers' override.
    """
    module: torch.nn.Module = model
    module.to(device)


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 runs natively: CUDA with bf16, or a CPU with AVX512-BF16 / AMX.

    Elsewhere bf16 autocast is emulated and slower than float32, so callers fall back to float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def load_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer saved at ``path`` (a model folder, a checkpoint or a Hugging Face id).

    Raises ``ValueError`` for a slow tokenizer: masking and injection need its offsets and word ids.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"{path}: a fast tokenizer (tokenizer.json) is needed for offsets and word ids")
    return tokenizer
