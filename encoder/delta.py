"""A trained model stored as its difference from the pretrained model it was trained from.

Weight matrices of the pretrained encoder are stored as low-rank factors of their change (the
truncated SVD of ``trained − pretrained``, the best approximation of that rank) where a few
directions hold nearly all of it, else as the change in 4 bits per value with a scale per row;
vectors (biases, LayerNorms) and everything the pretrained model did not have (a fresh MLM head)
are stored whole. A delta records a fingerprint of the pretrained weights it applies to and refuses
any other model, so it can be shipped beside kecl and applied to a model the user loads from
anywhere (a wheel, the hub, a local copy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel

FORMAT = "kecl-delta-1"
_A, _B, _DIFF, _Q, _SCALE = ".lora_A", ".lora_B", ".diff", ".diff_int4", ".diff_scale"
_PAIRS = {_A: _B, _B: _A, _Q: _SCALE, _SCALE: _Q}  # suffixes stored, and read, together
_QUANTISE_FROM = 4096  # elements: a smaller matrix is stored in half precision (its size does not matter)


def pretrained_names(model: PreTrainedModel) -> list[str]:
    """The parameters that belong to the pretrained encoder (``bert.…``), not to a task head.

    Tied parameters are named once (``named_parameters`` lists a shared tensor under its first name).
    """
    prefix = f"{model.base_model_prefix}."
    return [name for name, _ in model.named_parameters() if name.startswith(prefix)]


def weights_fingerprint(model: PreTrainedModel) -> str:
    """SHA-256 over the pretrained encoder's parameter names, shapes and float32 values."""
    params = dict(model.named_parameters())
    digest = hashlib.sha256()
    for name in sorted(pretrained_names(model)):
        value = params[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def make_delta(
    base: PreTrainedModel,
    trained: PreTrainedModel,
    rank: int,
    energy: float = 0.95,
    dtype: torch.dtype = torch.float16,
    quantise: bool = True,
) -> dict[str, torch.Tensor]:
    """The tensors of ``trained``'s delta from ``base`` (same architecture and vocabulary).

    A pretrained matrix's change is stored as ``<name>.lora_B`` (out × rank, singular values folded
    in) and ``<name>.lora_A`` (rank × in) when ``rank`` factors are smaller than the matrix and keep
    at least ``energy`` of the change's squared norm (an embedding table's change usually does: a few
    directions); otherwise as ``<name>.diff_int4``, the change in 4 bits with a scale per row
    (``<name>.diff_scale``; error at most 1/14 of the row's largest change, which measured as
    harmless: see ``scripts/make_default_delta.py``), or, for matrices too small to matter, as
    ``<name>.diff`` (so is every such change with ``quantise=False``). Vectors and head parameters
    are stored whole under their own names. Raises ``ValueError`` if ``rank`` < 1, ``energy`` is
    not in [0, 1], or the two models' parameters differ in name or shape.
    """
    if rank < 1:
        raise ValueError(f"make_delta: rank must be at least 1, got {rank}")
    if not 0.0 <= energy <= 1.0:
        raise ValueError(f"make_delta: energy must be in [0, 1], got {energy}")
    old, new = dict(base.named_parameters()), dict(trained.named_parameters())
    if {n: tuple(p.shape) for n, p in old.items()} != {n: tuple(p.shape) for n, p in new.items()}:
        raise ValueError("make_delta: the trained model's parameters differ from the base model's in name or shape")
    pretrained = set(pretrained_names(base))
    out: dict[str, torch.Tensor] = {}
    for name, param in new.items():
        value = param.detach().to("cpu", torch.float32)
        if name not in pretrained or value.dim() != 2:
            out[name] = value.to(dtype).contiguous()
            continue
        change = value - old[name].detach().to("cpu", torch.float32)
        rows, cols = change.shape
        if rank * (rows + cols) < rows * cols:
            u, s, vh = torch.linalg.svd(change, full_matrices=False)
            total = float((s**2).sum())
            if total == 0.0 or float((s[:rank] ** 2).sum()) >= energy * total:
                out[name + _B] = (u[:, :rank] * s[:rank]).to(dtype).contiguous()
                out[name + _A] = vh[:rank].to(dtype).contiguous()
                continue
        if not quantise or rows * cols < _QUANTISE_FROM:
            out[name + _DIFF] = change.to(dtype).contiguous()
            continue
        scale = change.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 7.0
        out[name + _Q] = _pack_int4(torch.round(change / scale).clamp(-7, 7))
        out[name + _SCALE] = scale.to(dtype).contiguous()
    return out


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Integers in [-7, 7] (rows × cols) as bytes holding two of them each (rows × ⌈cols / 2⌉)."""
    nibbles = (values + 8).to(torch.uint8)
    if nibbles.shape[1] % 2:
        nibbles = torch.nn.functional.pad(nibbles, (0, 1), value=8)
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).contiguous()


def _unpack_int4(packed: torch.Tensor, cols: int) -> torch.Tensor:
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
    return nibbles[:, :cols].float() - 8.0


def save_delta(path: str | Path, tensors: dict[str, torch.Tensor], base_fingerprint: str, info: dict[str, Any]) -> None:
    """Write a delta as safetensors; ``info`` (JSON-serialisable: how it was made, what it measured)
    travels in the file's metadata beside the base model's fingerprint."""
    metadata = {"format": FORMAT, "base_fingerprint": base_fingerprint, "info": json.dumps(info, default=float)}
    save_file(tensors, str(path), metadata=metadata)


def read_delta_header(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(base_fingerprint, info)`` of a delta file, without reading its tensors. Raises
    ``ValueError`` if the file is not a kecl delta."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a kecl delta (format {metadata.get('format')!r}, expected {FORMAT!r})")
    return metadata["base_fingerprint"], json.loads(metadata.get("info", "{}"))


@torch.no_grad()
def apply_delta(model: PreTrainedModel, path: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    """Turn the pretrained ``model`` into the trained one in place; returns the delta's ``info``.
    ``fingerprint``: the model's :func:`weights_fingerprint`, when the caller has it already.

    Raises ``ValueError`` (leaving the model untouched) if the model's pretrained weights are not
    the ones the delta was made from, or if a tensor of the delta names no parameter of the model or
    has the wrong shape.
    """
    made_from, info = read_delta_header(path)
    if (fingerprint or weights_fingerprint(model)) != made_from:
        raise ValueError(f"{path}: made for other pretrained weights than this model's")
    params = dict(model.named_parameters())
    updates: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        for key in sorted(keys):
            name = next((key[: -len(s)] for s in (_A, _B, _DIFF, _Q, _SCALE) if key.endswith(s)), key)
            if name not in params:
                raise ValueError(f"{path}: {key} names no parameter of this model")
            suffix = next((s for s in _PAIRS if key.endswith(s)), None)
            if suffix is not None and name + _PAIRS[suffix] not in keys:
                raise ValueError(f"{path}: {key} has no {name + _PAIRS[suffix]}")
            if suffix in (_A, _SCALE):
                continue  # read with its pair
            if suffix == _B:
                value = handle.get_tensor(key).float() @ handle.get_tensor(name + _A).float()
            elif suffix == _Q:
                packed = handle.get_tensor(key)
                value = _unpack_int4(packed, params[name].shape[-1]) * handle.get_tensor(name + _SCALE).float()
            else:
                value = handle.get_tensor(key).float()
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"{path}: {key} gives {name} the shape {tuple(value.shape)}, the model's is {tuple(params[name].shape)}"
                )
            # a change is added to the pretrained value; a whole tensor replaces it
            value = value.to(params[name].device)
            updates[name] = value + params[name].detach().float() if key != name else value
    for name, value in updates.items():
        params[name].copy_(value.to(params[name].dtype))
    return info
