"""Sampling a video's latents: the EDM-preconditioned UNet on its conditioning, guided per frame, run by one of
the samplers of diffusion/sampling.py, with the seams other algorithms plug into (a denoiser wrapper, held frames).

Every step follows Stability-AI/generative-models (scripts/sampling/simple_video_sample.py with the
svd / svd_xt / svd_xt_1_1 configs). Layout: B videos of T frames; latents are (B, T, C, h, w) at the public
boundary and folded to "(b t) c h w" inside, the layout of the reference's UNet.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor

from ..diffusion.edm import VDenoiser
from ..diffusion.guidance import GuidedDenoiser, guidance_scales
from ..diffusion.parallel import SplitGuidanceBatch, check_group
from ..diffusion.sampling import RHO, SAMPLERS, SCHEDULES, SIGMA_MAX, SIGMA_MIN, Denoiser, StepHook, initial_noise_scale
from ..nets.layers import compute_dtype, execution_device
from ..nets.unet import UNet
from ..seeds import VideoNoise, batch_noise_sampler
from .conditioning import Conditioning, embed_vector

__all__ = ["SAMPLER_NAMES", "HeldFrames", "StepCallback", "conditional_denoiser", "guided_denoiser", "sample_video"]

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)

StepCallback = Callable[[int, int, Tensor], None]  # (step from 1, total, denoised (B, T, C, h, w))


def _unet_inputs(unet: UNet, conds: list[Conditioning], num_frames: int) -> tuple[Tensor, Tensor, Tensor]:
    """Stack the conditionings (guidance: [negative, positive], uncond first like the reference's guider)
    and repeat them over frames."""
    device, dtype = execution_device(unet), compute_dtype(unet)
    both = Conditioning.cat(conds).to(device)
    widths = unet.config.vector_widths
    if both.vector.ndim == 3:  # one row per frame (SV3D)
        if both.vector.shape[1] != num_frames:
            raise ValueError(f"the conditioning was made for {both.vector.shape[1]} frames, the video has "
                             f"{num_frames}: make both with the same number of frames")
        vector = embed_vector(rearrange(both.vector, "b t k -> (b t) k"), widths)  # (nB*T, sum widths)
    else:
        vector = repeat(embed_vector(both.vector, widths), "b d -> (b t) d", t=num_frames)  # (nB*T, 3*E)
    crossattn = repeat(both.crossattn, "b n d -> (b t) n d", t=num_frames).to(dtype)
    concat = repeat(both.concat, "b c h w -> (b t) c h w", t=num_frames).to(dtype)
    return crossattn, concat, vector.to(dtype)


def _preconditioned(unet: UNet, conds: list[Conditioning], num_frames: int) -> VDenoiser:
    """The EDM-preconditioned UNet (VDenoiser) on the stacked conditionings."""
    dtype = compute_dtype(unet)
    crossattn, concat, vector = _unet_inputs(unet, conds, num_frames)

    def network(x_in: Tensor, c_noise: Tensor) -> Tensor:  # F(c_in * x; c_noise), x_in (n*B*T, C, h, w)
        # The conditioning latent is concatenated AFTER the c_in scaling, unscaled (sgm OpenAIWrapper).
        # c_noise stays fp32
        return unet(torch.cat([x_in, concat], dim=1), c_noise, crossattn, vector, num_frames=num_frames)

    return VDenoiser(network, dtype=dtype)


@dataclass(frozen=True)
class HeldFrames:
    """Frames of every video held at given latents while sampling (continuing a video, keyframes).

    `frames` are frame indices in [0, T); `latents` (B, len(frames), C, h, w) are the clean values in the
    sampler's space (the VAE latent times the scale factor, like `latent`).
    """

    frames: tuple[int, ...]
    latents: Tensor

    def check(self, shape: torch.Size) -> None:
        b, t = shape[:2]
        if not self.frames or any(not 0 <= f < t for f in self.frames) or len(set(self.frames)) != len(self.frames):
            raise ValueError(f"hold.frames must be distinct frame indices in [0, {t}), got {self.frames}")
        want = (b, len(self.frames), *shape[2:])
        if tuple(self.latents.shape) != want:
            raise ValueError(f"hold.latents must have shape {want}, got {tuple(self.latents.shape)}")

    def hook(self, noise: Tensor) -> StepHook:
        """The step hook: x's held frames <- latents + sigma * their noise; x is "(b t)"-folded, noise
        (B, T, C, h, w) is the sampling's own standard-normal noise."""
        t = noise.shape[1]
        index = list(self.frames)
        values = self.latents.to(device=noise.device, dtype=torch.float32)
        own = noise[:, index]

        def hook(step: int, x: Tensor, sigma: Tensor) -> Tensor:
            video = rearrange(x, "(b t) c h w -> b t c h w", t=t).clone()
            video[:, index] = values + sigma.to(torch.float32) * own
            return rearrange(video, "b t c h w -> (b t) c h w")

        return hook


def guided_denoiser(unet: UNet, positive: Conditioning, negative: Conditioning, num_frames: int,
                    scales: Tensor) -> GuidedDenoiser:
    """D(x, sigma) for x (B*T, C, h, w): the EDM-preconditioned UNet (VDenoiser) on the conditioning,
    cond and uncond in one batch, guided per frame with `scales` (T,)."""
    return GuidedDenoiser(_preconditioned(unet, [negative, positive], num_frames), scales)


def conditional_denoiser(unet: UNet, positive: Conditioning, num_frames: int) -> Denoiser:
    """D(x, sigma) on the positive conditioning alone: what guidance at scale 1 on every frame amounts to
    (D_u + 1 * (D_c - D_u) = D_c, up to rounding), at half the UNet batch. diffusers' SVD pipeline skips
    the unconditional half the same way when no scale exceeds 1 (do_classifier_free_guidance)."""
    return _preconditioned(unet, [positive], num_frames)


def _denoiser(unet: UNet, positive: Conditioning, negative: Conditioning, scales: Tensor,
              cfg_parallel: Any) -> Denoiser:
    """The guided denoiser of a plain video: cond and uncond in one batch; cond alone when every scale is 1;
    or the two halves on two ranks (cfg_parallel)."""
    t = int(scales.shape[0])
    if bool((scales == 1.0).all()):
        return conditional_denoiser(unet, positive, t)
    if cfg_parallel is not None:
        mine = [negative, positive][check_group(cfg_parallel)]  # rank 0 uncond, rank 1 cond
        return GuidedDenoiser(SplitGuidanceBatch(_preconditioned(unet, [mine], t), cfg_parallel), scales)
    return guided_denoiser(unet, positive, negative, t, scales)


def _start(noise: Tensor, latent: Tensor | None, sigma0: Tensor, *, full: bool) -> Tensor:
    """The sampler's x at sigma0, "(b t)"-folded, float32 on sigma0's device: latent + noise * sqrt(1 + sigma0^2)
    for a full denoise (the reference's prepare_sampling_loop), latent + noise * sigma0 for a partial one."""
    scale = initial_noise_scale(sigma0) if full else sigma0
    x = rearrange(noise, "b t c h w -> (b t) c h w").to(sigma0.device, torch.float32) * scale
    if latent is None:
        return x
    if latent.shape != noise.shape:
        raise ValueError(f"latent must have the noise's shape {tuple(noise.shape)}, got {tuple(latent.shape)}")
    return x + rearrange(latent, "b t c h w -> (b t) c h w").to(sigma0.device, torch.float32)


def sample_video(
    unet: UNet,
    positive: Conditioning,
    negative: Conditioning,
    noise: Tensor,
    *,
    num_steps: int,
    min_cfg: float,
    max_cfg: float,
    guidance: str = "linear",
    sampler: str = "euler",
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    denoise: float = 1.0,
    latent: Tensor | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: StepCallback | None = None,
    denoiser_wrapper: Callable[[Denoiser], Denoiser] | None = None,
    hold: HeldFrames | None = None,
    cfg_parallel: Any = None,
) -> Tensor:
    """Sample latents (B, T, C, h, w) from standard-normal `noise` of that shape; returns float32.

    The start is x = latent + noise * sqrt(1 + sigma_0^2) for a full denoise: the reference scales the
    initial noise by sqrt(1 + sigma_max^2), not sigma_max (sgm sampling.py prepare_sampling_loop;
    diffusers' init_noise_sigma agrees). For denoise < 1 it is latent + noise * sigma_0 (EDM).
    Cond and uncond run through the UNet as one batch; guidance scales are per frame.
    `callback(step, total, denoised)` runs after each step with step counting from 1 and denoised
    (B, T, C, h, w); an exception raised there stops sampling (how ComfyUI's cancel reaches us).

    Two seams let other algorithms plug in without editing this function:
    - `denoiser_wrapper(D) -> D'` wraps the guided denoiser D(x, sigma) (x and sigma "(b t)"-folded) in
      another one with the same signature;
    - `hold` keeps chosen frames at given latents: before the first step and after every step they are
      set to latents + sigma * noise (their own initial noise, at the level the step reached), so they
      end exactly at the given latents.
    The sampler's levels come from its schedule (SAMPLERS[name].schedule: the Karras schedule, or the
    consistency grid of `lcm_sigmas` for "lcm"), with sigma_min, sigma_max and rho.
    Churn (s_churn > 0) needs a churn sampler (SAMPLERS[name].churn). Fresh noise (churn, or the "lcm"
    sampler's re-noising) is drawn on the CPU from `generator`: one generator for the whole batch, or a
    list of B, one per video (video i then depends on generators[i] alone); None: seed 0.
    When every frame's guidance scale is exactly 1 the unconditional half is skipped
    (`conditional_denoiser`): half the UNet batch, the same frames up to rounding.
    `cfg_parallel`, a torch.distributed process group of two ranks, splits each guided UNet call between
    them (parallel.py); every rank calls sample_video with the same arguments and gets the same latents.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is unknown; expected one of {SAMPLER_NAMES}")
    if noise.ndim != 5:
        raise ValueError(f"noise must be (B, T, C, h, w), got shape {tuple(noise.shape)}")
    b, t = noise.shape[:2]
    if positive.batch_size != b or negative.batch_size != b:
        raise ValueError(f"conditioning is for {positive.batch_size} video(s), the noise for {b}")
    spec = SAMPLERS[sampler]
    if s_churn > 0 and not spec.churn:
        raise ValueError(f"s_churn is {s_churn}, but sampler {sampler!r} takes no churn; use one of "
                         f"{tuple(n for n, v in SAMPLERS.items() if v.churn)} or s_churn 0")
    if isinstance(generator, list) and len(generator) != b:
        raise ValueError(f"generator is a list of {len(generator)} generators for {b} video(s); give one per video")
    if hold is not None:
        hold.check(noise.shape)
    device = execution_device(unet)
    scales = guidance_scales(guidance, t, min_cfg, max_cfg)
    sigmas = SCHEDULES[spec.schedule](num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                                      denoise=denoise).to(device)
    denoiser = _denoiser(unet, positive, negative, scales, cfg_parallel)
    if denoiser_wrapper is not None:
        denoiser = denoiser_wrapper(denoiser)
    x = _start(noise, latent, sigmas[0], full=denoise == 1.0)
    step_hook: StepHook | None = None
    if hold is not None:
        step_hook = hold.hook(noise.to(device, torch.float32))
        x = step_hook(-1, x, sigmas[0])

    def on_step(i: int, total: int, x_i: Tensor, denoised: Tensor, sigma: Tensor) -> None:
        if callback is not None:
            callback(i + 1, total, rearrange(denoised, "(b t) c h w -> b t c h w", t=t))

    kwargs: dict[str, object] = {"callback": on_step, "step_hook": step_hook}
    if spec.needs_noise:
        fresh = (VideoNoise.of(generator).sampler(t) if isinstance(generator, list)
                 else batch_noise_sampler(generator))
        kwargs.update(s_noise=s_noise, noise_sampler=fresh)
    if spec.churn:
        kwargs.update(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax)
    with torch.inference_mode():
        out = spec(denoiser, x, sigmas, **kwargs)
    return rearrange(out, "(b t) c h w -> b t c h w", t=t)
