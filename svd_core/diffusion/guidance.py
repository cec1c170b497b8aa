"""Classifier-free guidance with a per-frame scale (SVD's "prediction guiders").

SVD guides each video frame with its own scale: the reference config for SVD-XT 1.1
(scripts/sampling/configs/svd_xt_1_1.yaml) uses LinearPredictionGuider with min_scale 1.5 and
max_scale 3.0, i.e. the first frame (the conditioning image) is guided least and the last most.
Guidance is applied to the denoised estimate: D = D_u + w_t * (D_c - D_u)
(sgm/modules/diffusionmodules/guiders.py LinearPredictionGuider.__call__).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

from .sampling import per_sample_sigma

__all__ = ["GUIDANCE_SCHEDULES", "GuidedDenoiser", "guidance_scales", "triangle_wave"]

GUIDANCE_SCHEDULES = ("linear", "triangle", "constant")


def triangle_wave(v: Tensor, period: float = 1.0) -> Tensor:
    """2 * |v/p - round_half_up(v/p)|: 0 at multiples of the period, 1 half-way between.

    Same wave as sgm guiders.py TrianglePredictionGuider.triangle_wave.
    """
    u = v / period
    return 2.0 * (u - torch.floor(u + 0.5)).abs()


def guidance_scales(schedule: str, num_frames: int, min_cfg: float, max_cfg: float) -> Tensor:
    """Per-frame guidance scales w_t, float32 of shape (num_frames,).

    - "linear":   linspace(min_cfg, max_cfg, T), first frame min, last frame max
                  (sgm LinearPredictionGuider; T = 1 gives [min_cfg]).
    - "triangle": min + (max - min) * triangle_wave(linspace(0, 1, T), period 1): min_cfg on the
                  first and last frame, max_cfg in the middle (sgm TrianglePredictionGuider with its
                  default period 1.0).
    - "constant": max_cfg on every frame, i.e. ordinary classifier-free guidance (min_cfg unused).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if schedule == "linear":
        return torch.linspace(min_cfg, max_cfg, num_frames, dtype=torch.float32)
    if schedule == "triangle":
        wave = triangle_wave(torch.linspace(0.0, 1.0, num_frames, dtype=torch.float32), 1.0)  # (T,) in [0, 1]
        return min_cfg + (max_cfg - min_cfg) * wave
    if schedule == "constant":
        return torch.full((num_frames,), float(max_cfg), dtype=torch.float32)
    raise ValueError(f"unknown guidance schedule {schedule!r}; expected one of {GUIDANCE_SCHEDULES}")


class GuidedDenoiser:
    """Per-frame classifier-free guidance around a batched denoiser; itself a denoiser D(x, sigma).

    ``x`` is laid out ``(b t) c h w`` (frames folded into the batch, frame index fastest), the
    layout the UNet uses. ``denoiser`` is called ONCE per evaluation with the doubled batch
    ``cat([x, x])`` of shape (2*b*t, c, h, w) and sigma of shape (2*b*t,); its first half must be
    the unconditional prediction and its second half the conditional one (the order of sgm's
    guider prepare_inputs: cat([uc, c])), so its conditioning must be stacked the same way.
    Returns D_u + scales[t] * (D_c - D_u) with the shape of x.
    """

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor], scales: Tensor) -> None:
        if scales.ndim != 1:
            raise ValueError(f"scales must have shape (num_frames,), got {tuple(scales.shape)}")
        self.denoiser = denoiser
        self.scales = scales.to(torch.float32)
        self.num_frames = int(scales.shape[0])

    def pair(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(D_u, D_c): the unconditional and conditional estimates of x, each (B*T, C, H, W), from ONE
        call of the batched denoiser (CFG++-style samplers need both)."""
        n = x.shape[0]
        if n % self.num_frames != 0:
            raise ValueError(f"batch of {n} is not a whole number of videos of {self.num_frames} frames "
                             "('(b t) c h w' layout)")
        sigma_n = per_sample_sigma(sigma, x)  # (N,)
        x2 = torch.cat([x, x])  # (2*B*T, C, H, W): [uncond; cond]
        sigma2 = torch.cat([sigma_n, sigma_n])  # (2*B*T,)
        d_u, d_c = self.denoiser(x2, sigma2).chunk(2)  # each (B*T, C, H, W)
        return d_u, d_c

    def combine(self, d_u: Tensor, d_c: Tensor, scales: Tensor | None = None) -> Tensor:
        """D_u + w_t * (D_c - D_u) per frame, with this guider's scales or the (T,) `scales` given."""
        t = self.num_frames
        w = (self.scales if scales is None else scales.to(torch.float32)).to(device=d_u.device)
        d_u = rearrange(d_u, "(b t) ... -> b t ...", t=t)  # (B, T, C, H, W)
        d_c = rearrange(d_c, "(b t) ... -> b t ...", t=t)
        w = w.view((1, t) + (1,) * (d_u.ndim - 2))  # (1, T, 1, 1, 1)
        guided = d_u + w * (d_c - d_u)  # (B, T, C, H, W)
        return rearrange(guided, "b t ... -> (b t) ...")  # (B*T, C, H, W)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.combine(*self.pair(x, sigma))
