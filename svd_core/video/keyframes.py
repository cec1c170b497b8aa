"""Videos from a first to a last frame, and seamless loops, with the stock SVD weights (no training).

ViBiDSampler (Yang, Kwon and Ye, ICLR 2025, "ViBiDSampler: Enhancing Video Interpolation Using
Bidirectional Diffusion Sampler", arXiv 2410.05651; their public MIT code is vibidsampler/vibid,
`vibidsampler.py`, built on generative-models) alternates at every noise level a forward denoising step
conditioned on the first frame and a time-reversed one conditioned on the last. Step i, from sigma = s_i
to s' = s_{i+1}, in the paper's order (Algorithm 1; the loop of vibidsampler.py `sample`):

  1. (D_u, D_c) = D_first(x, s);  D = D_u + w (D_c - D_u)          classifier-free guidance, constant w
  2. D[last frame] = z_last                                          DDS: the known frame is kept
  3. x = D + s' (x - D_u) / s                                        CFG++: re-noised along the unconditional score
  4. x = x + sqrt(s^2 - s'^2) eps,  eps ~ N(0, I)                    back up to s
  5. reverse the frames; the same three lines with D_last, w_flip and z_first; reverse back

Two UNet calls (each cond + uncond) per step instead of one. Their DDS runs 5 conjugate-gradient
iterations on A = a mask of the known frame, started at D; for a mask, A^T A = A is a projection and CG
lands on the solution in its first iteration: the known frame replaced, the others untouched. We write
that replacement directly. Their known frames are `encode_first_stage` latents of the clean frames (a
posterior sample times the scale factor); we take the posterior mean (deterministic).

Defaults of vibidsampler.py `sample()`: 25 steps (svd_xt), cfg_scale = cfg_scale_flip = 1.0, fps_id 6,
motion bucket 127, cond_aug 0.02.

A loop is the same with the image at both ends; the last frame, a second copy of the first, is dropped
after decoding, so the video plays round without a repeated frame (num_frames - 1 frames).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

from ..diffusion.guidance import GuidedDenoiser, guidance_scales
from ..diffusion.sampling import (
    RHO,
    SIGMA_MAX,
    SIGMA_MIN,
    NoiseSampler,
    initial_noise_scale,
    karras_sigmas,
    per_sample_sigma,
)
from ..nets.layers import execution_device
from ..nets.unet import UNet
from ..seeds import VideoNoise
from .conditioning import Conditioning, Keyframes
from .sample import StepCallback, guided_denoiser

__all__ = ["VIBID_STEPS", "VIBID_CFG", "VIBID_CFG_FLIP", "sample_vibid", "sample_keyframes"]

VIBID_STEPS = 25  # vibidsampler.py sample(): num_steps default for svd_xt
VIBID_CFG = 1.0  # vibidsampler.py sample(): cfg_scale
VIBID_CFG_FLIP = 1.0  # vibidsampler.py sample(): cfg_scale_flip


def _with_last_frame(d: Tensor, known: Tensor, t: int) -> Tensor:
    """d (B*T, C, h, w) with each video's last frame replaced by `known` (B, C, h, w): ViBiD's DDS step."""
    video = rearrange(d, "(b t) c h w -> b t c h w", t=t).clone()
    video[:, -1] = known.to(video)
    return rearrange(video, "b t c h w -> (b t) c h w")


def _reverse_frames(x: Tensor, t: int) -> Tensor:
    return rearrange(rearrange(x, "(b t) c h w -> b t c h w", t=t).flip(1), "b t c h w -> (b t) c h w")


def _cfgpp_step(guider: GuidedDenoiser, x: Tensor, sigma: Tensor, sigma_next: Tensor, known: Tensor,
                t: int) -> tuple[Tensor, Tensor]:
    """Lines 1-3 of a ViBiD half step: (the new x at sigma_next, the guided estimate with its known frame)."""
    d_u, d_c = guider.pair(x, per_sample_sigma(sigma, x))
    d = _with_last_frame(guider.combine(d_u, d_c), known, t)
    return d + (x - d_u) / sigma * sigma_next, d


def sample_vibid(
    first: GuidedDenoiser,
    last: GuidedDenoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    first_latent: Tensor,
    last_latent: Tensor,
    noise_sampler: NoiseSampler,
    callback: Callable[[int, int, Tensor, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """ViBiDSampler (Yang et al. 2025, Algorithm 1): bidirectional CFG++ sampling between two known frames.

    `first` / `last` are the guided denoisers conditioned on the first / the last frame, their guidance
    scales the CFG++ scales w / w_flip; x (B*T, C, h, w) at sigmas[0]; first_latent / last_latent
    (B, C, h, w) the known frames' latents; noise_sampler(x) gives the fresh noise of line 4.
    callback(step, total, x, denoised, sigma) after each step, with the backward half's estimate.
    """
    t = first.num_frames
    n_steps = len(sigmas) - 1
    for i in range(n_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x, _ = _cfgpp_step(first, x, sigma, sigma_next, last_latent, t)  # lines 1-3, forward in time
        x = x + noise_sampler(x) * (sigma**2 - sigma_next**2).sqrt()  # line 4: back up to sigma
        x, d = _cfgpp_step(last, _reverse_frames(x, t), sigma, sigma_next, first_latent, t)  # line 5, reversed
        x = _reverse_frames(x, t)
        if callback is not None:
            callback(i, n_steps, x, _reverse_frames(d, t), sigma)
    return x


def sample_keyframes(
    unet: UNet,
    positive: Conditioning,
    negative: Conditioning,
    keyframes: Keyframes,
    noise: Tensor,
    *,
    num_steps: int = VIBID_STEPS,
    cfg_scale: float = VIBID_CFG,
    cfg_scale_flip: float = VIBID_CFG_FLIP,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    generators: list[torch.Generator] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Latents (B, T, C, h, w) of B videos from the first frames of `positive` to the last frames of
    `keyframes`, from standard-normal `noise` (B, T, C, h, w) (scaled by sqrt(1 + sigma_0^2), as the
    reference's sampling loop does). One CPU generator per video draws the re-noising of line 4
    (`generators`; default: seeded 0, 1, ...). Returns float32."""
    if noise.ndim != 5:
        raise ValueError(f"noise must be (B, T, C, h, w), got shape {tuple(noise.shape)}")
    b, t = noise.shape[:2]
    for name, c in (("positive", positive), ("negative", negative), ("keyframes", keyframes)):
        if c.batch_size != b:
            raise ValueError(f"{name} is for {c.batch_size} video(s), the noise for {b}")
    if t < 2:
        raise ValueError(f"a video from a first to a last frame needs at least 2 frames, got {t}")
    device = execution_device(unet)
    first = guided_denoiser(unet, positive, negative, t, guidance_scales("constant", t, cfg_scale, cfg_scale))
    last = guided_denoiser(unet, keyframes.end_positive, keyframes.end_negative, t,
                           guidance_scales("constant", t, cfg_scale_flip, cfg_scale_flip))
    sigmas = karras_sigmas(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).to(device)
    x = rearrange(noise, "b t c h w -> (b t) c h w").to(device, torch.float32) * initial_noise_scale(sigmas[0])
    gens = generators if generators is not None else VideoNoise.for_batch(0, b).generators
    if len(gens) != b:
        raise ValueError(f"generators: {len(gens)} given for {b} video(s)")

    def on_step(i: int, total: int, x_i: Tensor, denoised: Tensor, sigma: Tensor) -> None:
        if callback is not None:
            callback(i + 1, total, rearrange(denoised, "(b t) c h w -> b t c h w", t=t))

    with torch.inference_mode():
        out = sample_vibid(first, last, x, sigmas, first_latent=keyframes.start_latent.to(device),
                           last_latent=keyframes.end_latent.to(device), noise_sampler=VideoNoise.of(gens).sampler(t),
                           callback=on_step)
    return rearrange(out, "(b t) c h w -> b t c h w", t=t)
