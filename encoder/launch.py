"""Run :func:`encoder.trainer.train_mlm` on several processes through ``torch.distributed.run``.

The caller's process stays out of the process group: it writes the model and the job to a
working folder, starts ``python -m torch.distributed.run --standalone --nproc-per-node N -m
encoder.ddp_worker JOB`` and waits. Each worker loads the model, joins the group (gloo on CPU,
NCCL on GPUs, one GPU per worker) and trains its share of every batch; rank 0 writes the trained
weights and the result, which are loaded back into the caller's bundle. Evaluation, gates and
checkpoints stay with the caller, i.e. on one process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from encoder.bundle import MLMBundle
from encoder.packing import TrainText
from encoder.reading_corpus import ReadingExample
from encoder.train_config import TrainConfig, check_inputs
from encoder.trainer import TrainResult

log = logging.getLogger(__name__)

JOB_FILE, WEIGHTS_FILE, RESULT_FILE = "job.pt", "trained.safetensors", "result.json"


def check_nproc(nproc: object, device: torch.device) -> int:
    """``nproc`` as a number of training processes for ``device``, or ``ValueError`` saying why
    not: at least 1; on CUDA at most the GPUs visible; on CPU at most the cores."""
    if isinstance(nproc, bool) or not isinstance(nproc, int):
        raise ValueError(f"nproc={nproc!r}: expected a whole number of processes")
    if nproc < 1:
        raise ValueError(f"nproc={nproc}: at least one training process is needed")
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ValueError(f"nproc={nproc}: only {gpus} GPU(s) visible; one process per GPU")
    else:
        cores = os.cpu_count() or 1
        if nproc > cores:
            raise ValueError(f"nproc={nproc}: more processes than the {cores} CPU cores would only slow training")
    return nproc


def train_mlm_distributed(
    bundle: MLMBundle,
    new: Sequence[TrainText],
    replay: Sequence[TrainText] = (),
    config: TrainConfig | None = None,
    nproc: int = 2,
    resume_from: str | Path | None = None,
    reading: Sequence[ReadingExample] = (),
    work_dir: str | Path | None = None,
    check: Callable[[], None] | None = None,
) -> TrainResult:
    """:func:`encoder.trainer.train_mlm` on ``nproc`` processes; ``bundle.model`` is updated in
    place with the trained weights, as the single-process run would. ``check`` is called about
    once a second while the workers run; if it raises, the workers are stopped and the exception
    propagates (the bundle is then unchanged). ``work_dir``: where the temporary job folder goes.

    Raises ``ValueError`` for a bad ``nproc`` or setting (before anything starts) and
    ``RuntimeError`` with the workers' last output if they fail.
    """
    config = config or TrainConfig()
    check_nproc(nproc, bundle.device)
    check_inputs(new, replay, config)
    if config.batch_size < nproc:
        raise ValueError(f"batch_size={config.batch_size} cannot be shared by nproc={nproc} processes")
    with tempfile.TemporaryDirectory(prefix="kecl-ddp-", dir=work_dir) as tmp:
        folder = Path(tmp)
        bundle.model.save_pretrained(folder / "model")
        bundle.tokenizer.save_pretrained(folder / "model")
        job = {
            "model": str(folder / "model"),
            "attn": bundle.model.config._attn_implementation,
            "device": str(bundle.device),
            "new": list(new),
            "replay": list(replay),
            "reading": list(reading),
            "config": dataclasses.asdict(config),
            "resume_from": str(resume_from) if resume_from is not None else None,
            "out": str(folder),
        }
        torch.save(job, folder / JOB_FILE)
        _run_workers(folder, nproc, check)
        weights = load_file(str(folder / WEIGHTS_FILE))
        device = next(bundle.model.parameters()).device
        missing, unexpected = bundle.model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        if unexpected or any(not k.startswith("cls.predictions.decoder") for k in missing):
            raise RuntimeError(f"the trained weights do not match the model ({missing[:3]}, {unexpected[:3]})")
        bundle.model.tie_weights()
        return TrainResult(**json.loads((folder / RESULT_FILE).read_text(encoding="utf-8")))


def _run_workers(folder: Path, nproc: int, check: Callable[[], None] | None) -> None:
    """Start torchrun on the job in ``folder`` and wait for it, calling ``check`` meanwhile."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "encoder.ddp_worker",
        str(folder / JOB_FILE),
    ]
    log.info("training on %d processes: %s", nproc, " ".join(command))
    output = open(folder / "workers.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while process.poll() is None:
            if check is not None:
                check()
            time.sleep(1.0)
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)  # the launcher and its workers: their own session
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    finally:
        output.seek(0)
        tail = output.read()[-4000:]
        output.close()
    if process.returncode != 0 or not (folder / WEIGHTS_FILE).is_file():
        raise RuntimeError(f"distributed training failed (exit status {process.returncode}):\n{tail}")
