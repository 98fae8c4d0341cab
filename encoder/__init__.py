"""encoder/ — the masked-LM encoder: loading, masking, training, prediction, checkpoints.

Public names are listed in ``__all__``; the modules behind them are private to the package.
"""

from encoder.checkpoints import (
    CheckpointError,
    active_version,
    list_checkpoints,
    load_active,
    load_checkpoint,
    save_checkpoint,
    set_active,
    verify_checkpoint,
)
from encoder.default import adapt_default
from encoder.masking import mask_tokens
from encoder.metrics import masked_lm_loss
from encoder.model import MLMBundle, ScratchConfig, grow_vocabulary, load_mlm, new_mlm_from_scratch
from encoder.packing import SpanText, TrainText
from encoder.predict import (
    FillMaskResult,
    fill_mask,
    fill_mask_encoded,
    masked_token_ranks,
    score_candidates,
)
from encoder.train_config import TrainConfig
from encoder.trainer import TrainResult, train_mlm

__all__ = [
    "CheckpointError",
    "FillMaskResult",
    "MLMBundle",
    "ScratchConfig",
    "SpanText",
    "TrainConfig",
    "TrainResult",
    "TrainText",
    "active_version",
    "adapt_default",
    "fill_mask",
    "fill_mask_encoded",
    "grow_vocabulary",
    "list_checkpoints",
    "load_active",
    "load_checkpoint",
    "load_mlm",
    "mask_tokens",
    "masked_lm_loss",
    "masked_token_ranks",
    "new_mlm_from_scratch",
    "save_checkpoint",
    "score_candidates",
    "set_active",
    "train_mlm",
    "verify_checkpoint",
]
