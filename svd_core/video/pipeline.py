"""Image -> video: conditioning, EDM sampling with per-frame guidance, temporal decoding.

Every step follows Stability-AI/generative-models (scripts/sampling/simple_video_sample.py with the
svd / svd_xt / svd_xt_1_1 configs). Where ComfyUI or diffusers do something else, a comment says so.
Layout: B videos of T frames; latents are (B, T, C, h, w) at the public boundary and folded to
"(b t) c h w" inside, the layout of the reference's UNet.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import rearrange, repeat
from torch import Tensor

from ..checks import SIZE_MULTIPLE
from ..config import SamplingConfig
from ..diffusion.edm import VDenoiser
from ..nets.embeddings import timestep_embedding
from ..diffusion.guidance import GuidedDenoiser, guidance_scales
from ..nets.image_encoder import ImageEncoder, encode_image
from ..nets.layers import compute_dtype, execution_device
from ..diffusion.sampling import (
    RHO, SAMPLERS, SCHEDULES, SIGMA_MAX, SIGMA_MIN, Denoiser, StepHook, initial_noise_scale, randn_noise_sampler,
)
from ..nets.unet import UNet
from ..nets.vae import VAE

log = logging.getLogger(__name__)

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
DEFAULT_DECODE_CHUNK = SamplingConfig().decode_chunk_size  # simple_video_sample.py: decoding_t = 14

StepCallback = Callable[[int, int, Tensor], None]


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on, one entry per video (repeated over frames only inside sampling).

    `keyframes` (keyframes.Keyframes), when set on a positive conditioning, asks for a video that ends on
    a given last frame (or loops): the sampler then runs the bidirectional keyframe sampler."""

    crossattn: Tensor  # (B, 1, context_dim): the CLIP image embedding, one context token
    concat: Tensor  # (B, latent_channels, h, w): the VAE latent of the noised conditioning frame
    vector: Tensor  # (B, 3): fps_id, motion_bucket_id, cond_aug, embedded at the UNet's width when sampling
    keyframes: Any = None

    TENSORS: ClassVar[tuple[str, ...]] = ("crossattn", "concat", "vector")

    @property
    def batch_size(self) -> int:
        return int(self.crossattn.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Conditioning":
        moved = {k: getattr(self, k).to(device=device, dtype=dtype) for k in self.TENSORS}
        keyframes = self.keyframes.to(device) if self.keyframes is not None else None
        return Conditioning(**moved, keyframes=keyframes)

    def select(self, index: list[int]) -> "Conditioning":
        """The conditioning of the videos `index` (an index may repeat)."""
        keyframes = self.keyframes.select(index) if self.keyframes is not None else None
        return Conditioning(**{k: getattr(self, k)[index] for k in self.TENSORS}, keyframes=keyframes)

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        """The tensors of several conditionings stacked (their keyframes are not carried over)."""
        return Conditioning(**{k: torch.cat([getattr(c, k) for c in items]) for k in Conditioning.TENSORS})


def _module_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    return execution_device(module), compute_dtype(module)


def embed_vector(values: Tensor, embed_dim: int) -> Tensor:
    """(B, 3) [fps_id, motion_bucket_id, cond_aug] -> (B, 3*embed_dim) float32: their sinusoidal embeddings
    concatenated in that order (the reference's ConcatTimestepEmbedderND embedders 1, 2 and 4 of
    svd_xt_1_1.yaml, outdim 256 each; the SVD paper, section 4: micro-conditioning on frame rate, motion
    and noise augmentation)."""
    b, k = values.shape
    emb = timestep_embedding(rearrange(values.float(), "b k -> (b k)"), embed_dim)  # (B*3, E)
    return rearrange(emb, "(b k) e -> b (k e)", b=b, k=k)


def encode_conditioning(
    image_encoder: ImageEncoder,
    vae: VAE,
    image: Tensor,
    *,
    fps_id: int,
    motion_bucket_id: int,
    cond_aug: float,
    generator: torch.Generator | None = None,
    aug_noise: Tensor | None = None,
) -> tuple[Conditioning, Conditioning]:
    """(positive, negative) conditioning for B images (B, 3, H, W) in [0, 1].

    - image embedding: the whole frame squashed to 224x224 and CLIP-encoded (`encode_image`), used as a
      single context token;
    - conditioning latent: the frame in [-1, 1] plus cond_aug * N(0, 1), VAE-encoded (posterior mode),
      NOT multiplied by the scale factor 0.18215 (the reference's VideoPredictionEmbedderWithEncoder has
      is_ae=True and no scaling; diffusers agrees; ComfyUI also leaves it unscaled);
    - vector: the three scalars, embedded by `embed_vector` at the UNet's width when sampling.
    The negative zeroes the image embedding and the conditioning latent and keeps the vector, like the
    reference's force_uc_zero_embeddings=["cond_frames", "cond_frames_without_noise"].
    `aug_noise` (B, 3, H, W) replaces the draw from `generator` (a CPU generator by default).
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    b = image.shape[0]
    clip_device, _ = _module_device_dtype(image_encoder)
    vae_device, vae_dtype = _module_device_dtype(vae)
    image = image.to(torch.float32)
    if aug_noise is None:
        aug_noise = torch.randn(image.shape, generator=generator, dtype=torch.float32)
    elif aug_noise.shape != image.shape:
        raise ValueError(f"aug_noise must have the image's shape {tuple(image.shape)}, got {tuple(aug_noise.shape)}")
    with torch.inference_mode():
        embedding = encode_image(image_encoder, image.to(clip_device))  # (B, D)
        crossattn = rearrange(embedding, "b d -> b 1 d")
        frame = image.to(vae_device) * 2.0 - 1.0  # [0, 1] -> [-1, 1], simple_video_sample.py
        noised = frame + cond_aug * aug_noise.to(vae_device, torch.float32)
        concat = vae.encode(noised.to(vae_dtype))  # (B, C, h, w)
    vector = torch.tensor([[fps_id, motion_bucket_id, cond_aug]] * b, dtype=torch.float32).to(crossattn.device)
    positive = Conditioning(crossattn=crossattn, concat=concat, vector=vector)
    negative = Conditioning(
        crossattn=torch.zeros_like(crossattn), concat=torch.zeros_like(concat), vector=positive.vector.clone()
    )
    return positive, negative


def _unet_inputs(unet: UNet, conds: list[Conditioning], num_frames: int) -> tuple[Tensor, Tensor, Tensor]:
    """Stack the conditionings (guidance: [negative, positive], uncond first like the reference's guider)
    and repeat them over frames."""
    device, dtype = _module_device_dtype(unet)
    both = Conditioning.cat(conds).to(device)
    vector = embed_vector(both.vector, unet.config.vector_embed_dim)  # (nB, 3*E)
    crossattn = repeat(both.crossattn, "b n d -> (b t) n d", t=num_frames).to(dtype)
    concat = repeat(both.concat, "b c h w -> (b t) c h w", t=num_frames).to(dtype)
    vector = repeat(vector, "b d -> (b t) d", t=num_frames).to(dtype)
    return crossattn, concat, vector


def _preconditioned(unet: UNet, conds: list[Conditioning], num_frames: int) -> VDenoiser:
    """The EDM-preconditioned UNet (VDenoiser) on the stacked conditionings."""
    _, dtype = _module_device_dtype(unet)
    crossattn, concat, vector = _unet_inputs(unet, conds, num_frames)

    def network(x_in: Tensor, c_noise: Tensor) -> Tensor:  # F(c_in * x; c_noise), x_in (n*B*T, C, h, w)
        # The conditioning latent is concatenated AFTER the c_in scaling, unscaled (sgm OpenAIWrapper).
        return unet(torch.cat([x_in, concat], dim=1), c_noise, crossattn, vector, num_frames=num_frames)  # c_noise stays fp32

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


def guided_denoiser(unet: UNet, positive: Conditioning, negative: Conditioning, num_frames: int, scales: Tensor) -> GuidedDenoiser:
    """D(x, sigma) for x (B*T, C, h, w): the EDM-preconditioned UNet (VDenoiser) on the conditioning,
    cond and uncond in one batch, guided per frame with `scales` (T,)."""
    return GuidedDenoiser(_preconditioned(unet, [negative, positive], num_frames), scales)


def conditional_denoiser(unet: UNet, positive: Conditioning, num_frames: int) -> Denoiser:
    """D(x, sigma) on the positive conditioning alone: what guidance at scale 1 on every frame amounts to
    (D_u + 1 * (D_c - D_u) = D_c, up to rounding), at half the UNet batch. diffusers' SVD pipeline skips
    the unconditional half the same way when no scale exceeds 1 (do_classifier_free_guidance)."""
    return _preconditioned(unet, [positive], num_frames)


def video_noise_sampler(generators: list[torch.Generator], num_frames: int) -> Callable[[Tensor], Tensor]:
    """Fresh standard-normal noise like a "(b t)"-folded x, video i's frames drawn on the CPU from
    generators[i], then moved to x's device: each video's draws depend on its own generator only (a seed
    per video), and are the same numbers on every device."""

    def noise(like: Tensor) -> Tensor:
        per_video = (num_frames, *like.shape[1:])
        drawn = [torch.randn(per_video, generator=g, dtype=torch.float32) for g in generators]
        return rearrange(torch.stack(drawn), "b t ... -> (b t) ...").to(device=like.device, dtype=like.dtype)

    return noise


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
    device, _ = _module_device_dtype(unet)
    scales = guidance_scales(guidance, t, min_cfg, max_cfg)
    sigmas = SCHEDULES[spec.schedule](num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, denoise=denoise).to(device)
    denoiser: Denoiser
    if bool((scales == 1.0).all()):
        denoiser = conditional_denoiser(unet, positive, t)
    elif cfg_parallel is not None:
        from ..diffusion.parallel import SplitGuidanceBatch, check_group

        mine = [negative, positive][check_group(cfg_parallel)]  # rank 0 uncond, rank 1 cond
        denoiser = GuidedDenoiser(SplitGuidanceBatch(_preconditioned(unet, [mine], t), cfg_parallel), scales)
    else:
        denoiser = guided_denoiser(unet, positive, negative, t, scales)
    if denoiser_wrapper is not None:
        denoiser = denoiser_wrapper(denoiser)
    start = initial_noise_scale(sigmas[0]) if denoise == 1.0 else sigmas[0]
    x = rearrange(noise, "b t c h w -> (b t) c h w").to(device, torch.float32) * start
    if latent is not None:
        if latent.shape != noise.shape:
            raise ValueError(f"latent must have the noise's shape {tuple(noise.shape)}, got {tuple(latent.shape)}")
        x = x + rearrange(latent, "b t c h w -> (b t) c h w").to(device, torch.float32)
    step_hook: StepHook | None = None
    if hold is not None:
        step_hook = hold.hook(noise.to(device, torch.float32))
        x = step_hook(-1, x, sigmas[0])

    def on_step(i: int, total: int, x_i: Tensor, denoised: Tensor, sigma: Tensor) -> None:
        if callback is not None:
            callback(i + 1, total, rearrange(denoised, "(b t) c h w -> b t c h w", t=t))

    kwargs: dict[str, object] = {"callback": on_step, "step_hook": step_hook}
    if spec.needs_noise:
        if isinstance(generator, list):
            fresh = video_noise_sampler(generator, t)
        else:
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            fresh = _device_noise(randn_noise_sampler(gen), device)
        kwargs.update(s_noise=s_noise, noise_sampler=fresh)
    if spec.churn:
        kwargs.update(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax)
    with torch.inference_mode():
        out = spec(denoiser, x, sigmas, **kwargs)
    return rearrange(out, "(b t) c h w -> b t c h w", t=t)


def _device_noise(sampler: Callable[[Tensor], Tensor], device: torch.device) -> Callable[[Tensor], Tensor]:
    """Draw churn noise on the CPU (the same numbers on every device), then move it."""
    return lambda like: sampler(like.to("cpu")).to(device)


def decode_chunk(decode_chunk_size: int | None, num_frames: int, default: int = DEFAULT_DECODE_CHUNK) -> int:
    """The frames decoded together: decode_chunk_size (None: `default`, the reference's 14 or a preset's,
    quietly at most num_frames), at most the video's num_frames (a larger value is clamped, with a warning
    naming it); below 1 is refused."""
    if decode_chunk_size is None:
        return min(default, num_frames)
    if isinstance(decode_chunk_size, bool) or not isinstance(decode_chunk_size, int):
        raise ValueError(f"decode_chunk_size must be a whole number of frames, got {decode_chunk_size!r}")
    if decode_chunk_size < 1:
        raise ValueError(f"decode_chunk_size must be at least 1 frame, got {decode_chunk_size}")
    if decode_chunk_size > num_frames:
        log.warning("decode_chunk_size %d is larger than the video's %d frames: decoding all %d together",
                    decode_chunk_size, num_frames, num_frames)
        return num_frames
    return decode_chunk_size


def decode_latents(vae: VAE, z: Tensor, *, decode_chunk_size: int | None = None) -> Tensor:
    """Latents (B, T, C, h, w) -> frames (B, T, 3, H, W) float32 in [0, 1].

    z is divided by the scale factor (0.18215) and decoded by the temporal decoder in chunks of
    `decode_chunk_size` frames (None: 14, the reference's decoding_t; see `decode_chunk` for bad
    values), each chunk seen as one short
    video by the temporal layers, like the reference's decode_first_stage with
    en_and_decode_n_samples_a_time. Chunks never straddle two videos (the reference only decodes one).
    The chunk size never depends on free memory, so the output does not either.
    """
    if z.ndim != 5:
        raise ValueError(f"latents must be (B, T, C, h, w), got shape {tuple(z.shape)}")
    chunk = decode_chunk(decode_chunk_size, z.shape[1])
    device, dtype = _module_device_dtype(vae)
    videos = []
    with torch.inference_mode():
        for video in z:  # (T, C, h, w)
            frames = []
            for start in range(0, video.shape[0], chunk):
                part = video[start:start + chunk].to(device, dtype) / vae.config.scale_factor
                x = vae.decode(part, num_frames=part.shape[0])  # (n, 3, H, W) in about [-1, 1]
                frames.append(((x.float() + 1.0) / 2.0).clamp(0.0, 1.0))
            videos.append(torch.cat(frames))
    return torch.stack(videos)


def video_seeds(seed: int, count: int) -> list[int]:
    """The seeds of `count` videos made with `seed`: seed, seed + 1, ... (modulo 2**64, torch's range)."""
    return [(int(seed) + i) % 2**64 for i in range(count)]


def video_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per video, seeded with its seed (`video_seeds`): every draw of video i comes from its
    own generator, so it never depends on the other videos of its batch, nor on the device."""
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def validate_image(image: Tensor, name: str = "image", *, check_size: bool = True) -> None:
    if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (B, 3, H, W) in [0, 1], got {getattr(image, 'shape', type(image))}")
    h, w = image.shape[-2:]
    if h == 0 or w == 0 or (check_size and (h % SIZE_MULTIPLE or w % SIZE_MULTIPLE)):
        raise ValueError(f"{name} is {w}x{h}; width and height must be positive multiples of {SIZE_MULTIPLE}")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")
