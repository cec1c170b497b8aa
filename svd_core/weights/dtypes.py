"""The dtype policy of loading, in one place: what a file may store, what the caller may ask for.

A weight that reaches a model must be stored as floating point (F32, F16, BF16 or F64); it is cast to
the compute dtype of its part when read. The caller may store the UNet's matrices in another dtype
(`weight_dtype`, e.g. fp8), which its `ops` then cast per call.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from ..config import DTYPES
from .safetensors import CheckpointError, StoredTensor

# Format dtypes a weight may be stored in. fp8 files are refused: they carry no scales, and fp8 storage
# is asked for with `weight_dtype` instead.
FILE_WEIGHT_DTYPES: tuple[str, ...] = ("F32", "F16", "BF16", "F64")

# Storage dtypes of the UNet's matrices that load_models accepts (fp8: stored, computed in `dtype`).
WEIGHT_DTYPES = frozenset(DTYPES.values())


def check_stored(tensors: Iterable[StoredTensor]) -> None:
    """Every tensor read into a model is stored in one of FILE_WEIGHT_DTYPES (made ones are not stored)."""
    for t in tensors:
        if not t.made and t.dtype not in FILE_WEIGHT_DTYPES:
            raise CheckpointError(f"checkpoint '{t.file}': tensor '{t.key}' has dtype {t.dtype}; expected "
                                  f"{', '.join(FILE_WEIGHT_DTYPES[:-1])} or {FILE_WEIGHT_DTYPES[-1]}")


def check_weight_dtype(weight_dtype: torch.dtype | None) -> None:
    """`weight_dtype` is None (the compute dtype) or one of WEIGHT_DTYPES."""
    if weight_dtype is not None and weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype} is not supported; expected one of "
                         f"{sorted(map(str, WEIGHT_DTYPES))}")


def compute_dtype(part: str, dtype: torch.dtype, vae_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype `part` computes (and is read) in: `vae_dtype` for the VAE when given, else `dtype`."""
    return vae_dtype if (part == "vae" and vae_dtype is not None) else dtype


def store_matrices(sd: dict[str, torch.Tensor], weight_dtype: torch.dtype) -> None:
    """Cast the matrices of a state dict (tensors of 2 or more dimensions: linear and convolution weights)
    to `weight_dtype`, one tensor at a time so no second copy is held; norms and biases keep theirs."""
    for k in [k for k, v in sd.items() if v.ndim >= 2]:
        sd[k] = sd[k].to(weight_dtype)
