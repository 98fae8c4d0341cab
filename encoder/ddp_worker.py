"""One training process of :func:`encoder.launch.train_mlm_distributed`, started by torchrun:
``python -m torch.distributed.run … -m encoder.ddp_worker JOB``.

Loads the model and the job, joins the process group and trains; rank 0 writes the trained
weights (the tied decoder once, as in the training state) and the result next to the job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from encoder.distributed import local_device, process_group
from encoder.launch import RESULT_FILE, WEIGHTS_FILE
from encoder.model import load_mlm
from encoder.train_config import TrainConfig
from encoder.train_state import TIED
from encoder.trainer import train_mlm


def main(argv: list[str] | None = None) -> int:
    """Run the job file named in ``argv``; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m torch.distributed.run … -m encoder.ddp_worker JOB", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    job = torch.load(args[0], map_location="cpu", weights_only=False)
    device = local_device(torch.device(job["device"]))
    with process_group(device) as ranks:
        bundle = load_mlm(job["model"], device=device, attn_implementation=job["attn"])
        result = train_mlm(
            bundle,
            job["new"],
            job["replay"],
            TrainConfig(**job["config"]),
            resume_from=job["resume_from"],
            progress=False,
            reading=job["reading"],
        )
        if ranks.main:
            out = Path(job["out"])
            weights = {k: v.detach().contiguous().cpu() for k, v in bundle.model.state_dict().items() if k not in TIED}
            save_file(weights, str(out / (WEIGHTS_FILE + ".tmp")))
            (out / RESULT_FILE).write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
            (out / (WEIGHTS_FILE + ".tmp")).rename(out / WEIGHTS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
