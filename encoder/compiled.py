"""The encoder's layers compiled with ``torch.compile`` for a training run.

Each transformer layer is compiled in place (``nn.Module.compile``); the loss, the masked-position
head and the sparse last layer stay eager, so the variable number of masked tokens never forces a
recompile of the layers, whose shapes are the batch's. Compiling costs time once per process and
shape (reported by the trainer as its first step's time); it pays where the step is bound by
kernel launches and memory traffic, as on a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """``model.bert.encoder.layer`` as a list (empty for a model without it)."""
    layers = getattr(getattr(getattr(model, "bert", None), "encoder", None), "layer", None)
    return list(layers) if layers is not None else []


@contextlib.contextmanager
def compiled_layers(model: torch.nn.Module, on: bool, mode: str | None = None) -> Iterator[bool]:
    """With ``on``, every encoder layer of ``model`` runs compiled (``torch.compile``'s ``mode``;
    ``"reduce-overhead"`` adds CUDA graphs, for small models whose steps are bound by kernel
    launches) for the duration and eager again afterwards; yields whether any layer was compiled."""
    layers = encoder_layers(model) if on else []
    for layer in layers:
        # dynamic=None: the first shape compiles static; a batch of another length (a reading
        # exercise) recompiles once with dynamic shapes instead of once per length
        layer.compile(dynamic=None, mode=mode)
    if layers:
        log.info("torch.compile: %d encoder layers compiled (the first step pays the compilation)", len(layers))
    try:
        yield bool(layers)
    finally:
        for layer in layers:
            # nn.Module.compile keeps the compiled callable here; clearing it restores eager calls
            layer._compiled_call_impl = None


def use_compile(setting: bool | None, device: torch.device) -> bool:
    """``setting``, or when unset: on for CUDA, off elsewhere (on CPU the trainer's bf16 path is
    tuned eager, and compiling would cost more than a short continual-learning run saves)."""
    return device.type == "cuda" if setting is None else setting
