"""The three networks of SVD as one object, and how to build them from a config."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import SVDConfig
from ..nets.image_encoder import ImageEncoder
from ..nets.layers import Ops
from ..nets.unet import UNet
from ..nets.vae import VAE
from ..speed import route_linears

PARTS = ("unet", "image_encoder", "vae")


@dataclass
class SVDModels:
    """The three networks of SVD and the config they were built from."""

    unet: UNet
    image_encoder: ImageEncoder
    vae: VAE
    config: SVDConfig


def build_models(config: SVDConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 ops: Ops = torch.nn) -> SVDModels:
    """Fresh (uninitialised on `meta`) models for `config`, their layers made by `ops` (see layers.Ops).
    Plain torch.nn.Linear layers run fp32 CPU inference on this machine's faster route, oneDNN or torch's own
    F.linear, measured once per process on the UNet's shapes (speed.route_linears)."""
    with torch.device(device):
        unet = UNet(config.unet, ops)
        image_encoder = ImageEncoder(config.image_encoder, ops)
        vae = VAE(config.vae, ops)
    models = SVDModels(unet, image_encoder, vae, config)
    if dtype is not None:
        for part in PARTS:
            getattr(models, part).to(dtype)
    for part in PARTS:  # after the dtype: only fp32 CPU weights are measured for
        route_linears(getattr(models, part), probe_on=unet)
    return models
