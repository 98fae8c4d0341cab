"""encoder/ — the masked-LM encoder: loading, masking, training, prediction, checkpoints.

Public names are listed in ``__all__``; the modules behind them are private to the package.
"""

from encoder.augmented import InjectedPrediction, InjectedRanks, predict_injected, rank_injected
from encoder.block_cache import cached_blocks
from encoder.bundle import MLMBundle, bf16_supported, resolve_device
from encoder.checkpoints import (
    CheckpointError,
    active_version,
    fallback_version,
    list_checkpoints,
    load_active,
    load_checkpoint,
    save_checkpoint,
    set_active,
    temp_name,
    verify_checkpoint,
)
from encoder.default import ADAPT_RECIPE, SHIPPED_DIR, AdaptationData, adapt_default, adaptation_data, adaptation_scores
from encoder.default_corpus import default_corpus
from encoder.delta import apply_delta, make_delta, save_delta, weights_fingerprint
from encoder.entity_scoring import (
    NORMALISATIONS,
    EntityPrediction,
    decode_free,
    score_entities,
    widened_lengths,
    word_pieces,
)
from encoder.heap import heap_reuse
from encoder.injection import (
    STRATEGIES,
    InjectedFact,
    InjectedInputs,
    InjectedPassage,
    add_length_branches,
    build_injected_inputs,
)
from encoder.launch import check_nproc, train_mlm_distributed
from encoder.masking import mask_tokens
from encoder.metrics import masked_lm_loss
from encoder.model import ScratchConfig, grow_vocabulary, load_mlm, new_mlm_from_scratch
from encoder.packing import SpanText, TrainText, build_blocks
from encoder.predict import (
    FillMaskResult,
    RankResult,
    evidence_bias,
    fill_mask,
    fill_mask_encoded,
    masked_token_ranks,
    score_candidates,
    to_dict,
)
from encoder.reading_corpus import ReadingExample, fill_slots
from encoder.train_config import TrainConfig
from encoder.trainer import TrainResult, train_mlm

__all__ = [
    "ADAPT_RECIPE",
    "AdaptationData",
    "SHIPPED_DIR",
    "NORMALISATIONS",
    "EntityPrediction",
    "decode_free",
    "score_entities",
    "word_pieces",
    "widened_lengths",
    "add_length_branches",
    "STRATEGIES",
    "CheckpointError",
    "FillMaskResult",
    "InjectedFact",
    "InjectedInputs",
    "InjectedPassage",
    "InjectedPrediction",
    "InjectedRanks",
    "MLMBundle",
    "RankResult",
    "ReadingExample",
    "ScratchConfig",
    "SpanText",
    "TrainConfig",
    "TrainResult",
    "TrainText",
    "active_version",
    "adapt_default",
    "adaptation_data",
    "adaptation_scores",
    "apply_delta",
    "make_delta",
    "save_delta",
    "weights_fingerprint",
    "bf16_supported",
    "resolve_device",
    "build_blocks",
    "build_injected_inputs",
    "default_corpus",
    "evidence_bias",
    "fill_mask",
    "fill_mask_encoded",
    "fill_slots",
    "grow_vocabulary",
    "heap_reuse",
    "list_checkpoints",
    "load_active",
    "fallback_version",
    "temp_name",
    "load_checkpoint",
    "load_mlm",
    "mask_tokens",
    "masked_lm_loss",
    "masked_token_ranks",
    "new_mlm_from_scratch",
    "predict_injected",
    "rank_injected",
    "save_checkpoint",
    "score_candidates",
    "set_active",
    "to_dict",
    "train_mlm",
    "cached_blocks",
    "train_mlm_distributed",
    "check_nproc",
    "verify_checkpoint",
]
