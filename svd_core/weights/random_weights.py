"""Random-weight models and checkpoints in the official layout, for tests, benchmarks and smoke runs.

Real weights are large and licensed separately; everything that checks this package on a machine
without them builds random weights with the exact names and shapes of the official files.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import SVDConfig
from .convert import image_encoder as convert_image_encoder
from .convert import unet as convert_unet
from .layout import SINGLE_FILE_PREFIXES, file_name, prefixes
from .models import PARTS, SVDModels, build_models


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter of `module` with nonzero random values, in place.

    The reference zero-initialises output layers, which would hide wiring errors, so nothing here is
    ever zero: weights ~ N(0, 1/fan_in), norm scales ~ 1 + 0.1 N(0,1), everything else ~ 0.1 N(0,1).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(random_tensor(name, tuple(p.shape), g).to(p.dtype))
    return module


def random_models(config: SVDConfig | None = None, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> SVDModels:
    """Models for `config` (the tiny one by default) in eval mode with random weights: the UNet, image encoder
    and VAE randomised (`randomize_`) with seed, seed + 1 and seed + 2."""

    models = build_models(config or SVDConfig.tiny(), dtype=dtype)
    for i, part in enumerate(PARTS):
        randomize_(getattr(models, part), seed=seed + i).eval().requires_grad_(False)
    return models


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """One nonzero random tensor, scaled by its role (read from its name), in float32."""
    r = torch.randn(shape, generator=generator, dtype=torch.float32)
    parts = name.split(".")
    leaf, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if len(shape) >= 2:
        v = r / math.sqrt(max(1, math.prod(shape[1:])))
    elif leaf == "weight" and ("norm" in parent or parent.startswith("ln")):
        v = 1.0 + 0.1 * r
    else:
        v = 0.1 * r
    return torch.where(v == 0, torch.full_like(v, 1e-3), v)


def random_state_dict(config: SVDConfig, *, seed: int = 0,
                      dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Random weights for `config` under the official single-file names of its family (see `layout`)."""

    models = build_models(config, device=torch.device("meta"))
    g = torch.Generator().manual_seed(seed)
    table = prefixes(config.family)
    out: dict[str, torch.Tensor] = {}
    for part in table:
        for name, p in getattr(models, part).state_dict().items():
            out[file_name(part, name, table)] = random_tensor(name, tuple(p.shape), g).to(dtype)
    return out


def comfyui_layout(sd: dict[str, torch.Tensor],
                   clip_prefix: str = "conditioner.embedders.0.open_clip.model.visual.") -> dict[str, torch.Tensor]:
    """The official single-file state dict rewritten as ComfyUI's ImageOnlyCheckpointSave writes SVD: the
    UNet unchanged, the VAE as `first_stage_model.encoder/decoder` (no conditioner.embedders.3), and the
    image tower in ComfyUI's clip-vision names (transformers' layout) under `clip_prefix`."""

    visual = "conditioner.embedders.0.open_clip.model.visual."
    cond_encoder = "conditioner.embedders.3.encoder.encoder."
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith(("model.diffusion_model.", "first_stage_model.decoder.")):
            out[k] = v
        elif k.startswith(cond_encoder):
            out["first_stage_model.encoder." + k[len(cond_encoder):]] = v
    tower = {k[len(visual):]: v for k, v in sd.items() if k.startswith(visual)}
    out.update({clip_prefix + k: v.contiguous() for k, v in convert_image_encoder.to_folder(tower).items()})
    return out


def save_random_checkpoint(
    path: str | os.PathLike[str],
    config: SVDConfig | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    layout: str = "official",
) -> Path:
    """Write a random-weight single-file checkpoint in the official key layout (or `layout="comfyui"`, the
    layout of ComfyUI's ImageOnlyCheckpointSave); returns its path."""
    if layout not in ("official", "comfyui"):
        raise ValueError(f"layout must be 'official' or 'comfyui', got {layout!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = random_state_dict(config or SVDConfig.tiny(), seed=seed, dtype=dtype)
    if layout == "comfyui":
        sd = comfyui_layout(sd)
    save_file(sd, str(path), metadata={"format": "pt", "svd_core": "random weights"})
    return path


def save_random_unet(
    path: str | os.PathLike[str],
    config: SVDConfig | None = None,
    *,
    seed: int = 1,
    dtype: torch.dtype = torch.float32,
    layout: str = "diffusers",
) -> Path:
    """Write a random-weight UNet-only file; returns its path. `layout="diffusers"` (the default) uses
    diffusers' UNetSpatioTemporalConditionModel names without a prefix, in fp32: how AnimateLCM-SVD-xt ships
    its UNets (wangfuyun/AnimateLCM-SVD-xt); "bare" uses the official names without `model.diffusion_model.`."""

    if layout not in ("diffusers", "bare"):
        raise ValueError(f"layout must be 'diffusers' or 'bare', got {layout!r}")
    prefix = SINGLE_FILE_PREFIXES["unet"][""]
    sd = random_state_dict(config or SVDConfig.tiny(), seed=seed, dtype=dtype)
    unet = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if layout == "diffusers":
        unet = {k: v.contiguous() for k, v in convert_unet.to_folder(unet).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(unet, str(path), metadata={"format": "pt", "svd_core": "random UNet weights"})
    return path
