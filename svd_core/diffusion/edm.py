"""EDM preconditioning of SVD's v-prediction network (Karras et al. 2022, eq. 7 and Table 1).

SVD-XT 1.1 is trained as a v-predictor with unit data scale (sigma_data = 1) and EDM's
noise conditioning c_noise = ln(sigma) / 4: the scalings named VScalingWithEDMcNoise in
sgm/modules/diffusionmodules/denoiser_scaling.py. With sigma_data = 1 the EDM Table 1 entries
become

    c_skip  = 1 / (sigma^2 + 1)
    c_out   = -sigma / sqrt(sigma^2 + 1)     (sign flipped: the network predicts v, not F)
    c_in    = 1 / sqrt(sigma^2 + 1)
    c_noise = ln(sigma) / 4

and the denoiser is D(x; sigma) = c_skip * x + c_out * F(c_in * x; c_noise)   (EDM eq. 7).
All of it is evaluated in float32 around a network that may run in half precision.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .sampling import per_sample_sigma

__all__ = ["VNetwork", "VDenoiser", "edm_v_scalings"]


def edm_v_scalings(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (c_skip, c_out, c_in, c_noise) for v-prediction with sigma_data = 1, in float32.

    Same shape as ``sigma``. Formulas: EDM Table 1 with sigma_data = 1 and the v sign
    convention (sgm denoiser_scaling.py VScalingWithEDMcNoise).
    """
    s = sigma.to(torch.float32)
    s2p1 = s * s + 1.0  # sigma^2 + sigma_data^2, sigma_data = 1
    c_skip = 1.0 / s2p1
    c_out = -s * torch.rsqrt(s2p1)
    c_in = torch.rsqrt(s2p1)
    c_noise = 0.25 * torch.log(s)  # EDM Table 1: c_noise = ln(sigma) / 4
    return c_skip, c_out, c_in, c_noise


class VNetwork(Protocol):
    """What VDenoiser wraps: F(x_in, c_noise) -> v, with x_in (N, ...) and c_noise (N,)."""

    def __call__(self, x_in: Tensor, c_noise: Tensor) -> Tensor: ...


class VDenoiser:
    """EDM denoiser D(x; sigma) around SVD's v-prediction network (EDM eq. 7, Table 1).

    ``network`` is called as ``F(x_in, c_noise)`` where ``x_in = c_in * x`` is cast to
    ``dtype`` (the network's compute dtype, e.g. float16) and ``c_noise`` has one value per batch
    element. Its output F_x is cast back to float32 and D_x = c_skip * x + c_out * F_x is returned
    in float32, as in NVlabs/edm's EDMPrecond. Any conditioning must be bound into ``network``
    (e.g. with functools.partial); samplers only ever see ``D(x, sigma)``.
    """

    def __init__(self, network: VNetwork, dtype: torch.dtype = torch.float32) -> None:
        self.network = network
        self.dtype = dtype

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x: (N, ...) any float dtype; sigma: a scalar, (1,) or (N,) (see per_sample_sigma). Returns D_x,
        float32, shaped like x."""
        n = x.shape[0]
        sigma_n = per_sample_sigma(sigma, x)  # (N,)
        c_skip, c_out, c_in, c_noise = edm_v_scalings(sigma_n)  # each (N,)
        bshape = (n,) + (1,) * (x.ndim - 1)  # broadcast per-sample scalars over (C, H, W)
        x32 = x.to(torch.float32)
        x_in = (c_in.view(bshape) * x32).to(self.dtype)
        F_x = self.network(x_in, c_noise).to(torch.float32)
        if F_x.shape != x.shape:
            raise ValueError(f"network output shape {tuple(F_x.shape)} != input shape {tuple(x.shape)}")
        D_x = c_skip.view(bshape) * x32 + c_out.view(bshape) * F_x
        return D_x
