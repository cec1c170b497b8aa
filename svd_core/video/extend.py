"""Longer videos: continue a video clip by clip, with the stock SVD weights (no training).

Each new clip is an ordinary SVD sampling (pipeline.sample_video) of `num_frames` frames with two ties to
the video so far:
  - it is conditioned on the video's last frame (CLIP embedding and conditioning latent, as any start image);
  - its first `overlap` latent frames are held to the video's last `overlap` latents at every step
    (pipeline.HeldFrames: re-noised to the current level after each step, exact at the end), so the clip
    starts inside the motion of the video instead of from a still frame.
Those first `overlap` frames repeat the video's last ones, so they are dropped: the result has no frame
twice at a seam. Clips chained by hand (last frame -> new image-to-video) lose their motion at every seam
and drift in colour; the optional colour anchor matches each new clip's per-channel mean and standard
deviation to the first clip's (the statistics transfer of Reinhard et al. 2001, "Color Transfer between
Images", here per RGB channel over all frames).
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ..seeds import VideoNoise
from ..weights.models import SVDModels
from .conditioning import clean_latents
from .flow import condition, decode, latent_shape, sample
from .request import VideoRequest, validate_image
from .sample import HeldFrames, StepCallback

__all__ = ["DEFAULT_OVERLAP", "extend", "match_colour"]

# Latent frames shared by consecutive clips: enough to carry the motion, and 21 of 25 frames stay new.
DEFAULT_OVERLAP = 4


def match_colour(frames: Tensor, reference: Tensor, eps: float = 1e-6) -> Tensor:
    """frames (B, T, 3, H, W) with each channel's mean and standard deviation (over frames and pixels)
    moved to those of `reference` (B, T', 3, H, W), clamped to [0, 1]. The reference may lie on another
    device (the input video on the CPU, the new frames on a GPU): its statistics are computed where it is and
    only they move."""
    dims = (1, 3, 4)
    mu, sd = frames.mean(dim=dims, keepdim=True), frames.std(dim=dims, keepdim=True)
    mu_r = reference.mean(dim=dims, keepdim=True).to(frames.device)
    sd_r = reference.std(dim=dims, keepdim=True).to(frames.device)
    return ((frames - mu) / (sd + eps) * sd_r + mu_r).clamp(0.0, 1.0)


def extend(
    models: SVDModels,
    video: Tensor,
    *,
    num_frames: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    num_clips: int = 1,
    num_steps: int | None = None,
    fps_id: int | None = None,
    motion_bucket_id: int | None = None,
    cond_aug: float | None = None,
    min_cfg: float | None = None,
    max_cfg: float | None = None,
    guidance: str = "linear",
    sampler: str | None = None,
    seed: int = 0,
    color_anchor: bool = True,
    video_latents: Tensor | None = None,
    decode_chunk_size: int | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Continue B videos (B, T, 3, H, W) in [0, 1] by `num_clips` clips of `num_frames` frames (the
    preset's by default) sharing `overlap` latent frames with what precedes them. Returns the whole video,
    (B, T + num_clips * (num_frames - overlap), 3, H, W), the given frames first and unchanged.

    `video_latents` (B, T', C, h, w), the video's latents in the sampler's space (the VAE latent times the
    scale factor, e.g. the `z` sample_video returned), are held exactly; without them the last `overlap`
    frames are VAE-encoded (posterior mean). Video i draws its noise from its own CPU generator seeded
    seed + i (per clip: initial noise, then augmentation noise). Sampling settings default to the preset's.
    """
    if not isinstance(video, Tensor) or video.ndim != 5:
        raise ValueError(f"video must be (B, T, 3, H, W) in [0, 1], got {getattr(video, 'shape', type(video))}")
    b, t = video.shape[:2]
    validate_image(video[:, -1], "video")
    num_frames = models.config.sampling.num_frames if num_frames is None else num_frames
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 to extend a video, got {num_frames}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap < num_frames:
        raise ValueError(f"overlap must be a whole number of frames from 1 to num_frames - 1 = {num_frames - 1}, "
                         f"got {overlap!r}")
    if overlap > t:
        raise ValueError(f"overlap is {overlap} frames but the video has only {t}")
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips!r}")
    if models.config.kind.orbit:
        raise ValueError(f"extend: the loaded model ({models.config.name}) makes orbits of an object, which end on "
                         "their input view; continuing a video needs an SVD model")
    request = VideoRequest.build(
        models.config, width=video.shape[-1], height=video.shape[-2], num_frames=num_frames, num_steps=num_steps,
        fps_id=fps_id, motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, min_cfg=min_cfg, max_cfg=max_cfg,
        guidance=guidance, sampler=sampler, decode_chunk_size=decode_chunk_size, seed=seed)
    shape = latent_shape(models.vae, request)  # (T, C, h, w) of one clip
    if video_latents is not None:
        if video_latents.ndim != 5 or tuple(video_latents.shape[0:1] + video_latents.shape[2:]) != (b, *shape[1:]) \
                or video_latents.shape[1] < overlap:
            raise ValueError(f"video_latents must be (B={b}, T >= overlap={overlap}, "
                             f"{', '.join(map(str, shape[1:]))}), got {tuple(video_latents.shape)}")
        last = video_latents[:, -overlap:].float()
    else:
        last = rearrange(clean_latents(models.vae, rearrange(video[:, -overlap:].float(), "b t c h w -> (b t) c h w")),
                         "(b t) c h w -> b t c h w", b=b)
    video_noise = VideoNoise.for_batch(seed, b)
    out = video.float()
    for k in range(num_clips):
        start = video_noise.start(latent=shape, image=tuple(video.shape[2:]))  # per clip: latent, then augmentation
        assert start.latent is not None
        frame = out[:, -1]
        positive, negative = condition(models.image_encoder, models.vae, request, frame, None, start)

        def on_step(step: int, total: int, denoised: Tensor, k: int = k) -> None:
            if callback is not None:
                callback(k * total + step, num_clips * total, denoised)

        z = sample(models.unet, request, positive, negative, start.latent, video_noise, callback=on_step,
                   hold=HeldFrames(tuple(range(overlap)), last.float()))  # kept where it is: no host copy
        new = decode(models.vae, request, z)[:, overlap:]
        if color_anchor:
            new = match_colour(new, video.float())
        out = torch.cat([out, new.to(out)], dim=1)
        last = z[:, -overlap:]
    return out
