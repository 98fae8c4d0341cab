"""Resumable training state: what ``train_mlm`` saves every ``save_every`` steps and resumes from.

The batch and masking of a step depend only on ``(seed, step)``, so weights + optimizer + learning
rate schedule at step ``s`` are all a run needs to continue exactly as an uninterrupted one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LRScheduler
from transformers import PreTrainedModel

from encoder.train_config import TrainConfig

STATE_WEIGHTS = "model.safetensors"
STATE_FILE = "trainer_state.pt"
# The decoder is tied to the word embeddings (and its bias to the head's): saved once, re-tied on load.
TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def save_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    nsp_head: torch.nn.Module | None,
    step: int,
    config: TrainConfig,
) -> None:
    """Write the state after ``step`` steps: weights (tied ones once), optimizer, scheduler, NSP head
    and config, each to a temporary name then renamed, so a crash never leaves it half-written."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED}
    tmp_w, tmp_s = folder / (STATE_WEIGHTS + ".tmp"), folder / (STATE_FILE + ".tmp")
    save_file(weights, str(tmp_w))
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "nsp_head": nsp_head.state_dict() if nsp_head is not None else None,
            "config": config.to_dict(),
        },
        tmp_s,
    )
    os.replace(tmp_w, folder / STATE_WEIGHTS)
    os.replace(tmp_s, folder / STATE_FILE)


def load_state(
    folder: Path,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    nsp_head: torch.nn.Module | None,
    config: TrainConfig,
) -> int:
    """Load what :func:`save_state` wrote into ``model``, ``optimizer``, ``scheduler`` (and
    ``nsp_head``); returns the step to continue from.

    Raises ``FileNotFoundError`` if the folder lacks the state, ``ValueError`` if it was written by a
    run with another number of steps (its schedule would differ) or for another model.
    """
    weights_path, state_path = folder / STATE_WEIGHTS, folder / STATE_FILE
    if not (weights_path.is_file() and state_path.is_file()):
        raise FileNotFoundError(f"resume_from={folder}: expected {STATE_WEIGHTS} and {STATE_FILE} there")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state["config"].get("steps") != config.steps:
        raise ValueError(
            f"resume_from={folder}: saved run had steps={state['config'].get('steps')}, this one {config.steps}"
        )
    missing, unexpected = model.load_state_dict(
        {k: v.to(next(model.parameters()).device) for k, v in load_file(str(weights_path)).items()}, strict=False
    )
    missing = [k for k in missing if k not in TIED]
    if missing or unexpected:
        raise ValueError(
            f"resume_from={folder}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if nsp_head is not None and state["nsp_head"] is not None:
        nsp_head.load_state_dict(state["nsp_head"])
    return int(state["step"])
