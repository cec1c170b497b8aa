"""What the UNet is conditioned on, and how an image becomes it (the reference's conditioner).

Every step follows Stability-AI/generative-models (scripts/sampling/simple_video_sample.py with the
svd / svd_xt / svd_xt_1_1 configs, and the conditioner of svd_xt_1_1.yaml). One entry per video: the
tensors are repeated over frames only when sampling (sample.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from einops import rearrange
from torch import Tensor

from ..config import SVD_VECTOR, Family
from ..nets.embeddings import timestep_embedding
from ..nets.image_encoder import ImageEncoder, encode_image
from ..nets.layers import compute_dtype, execution_device
from ..nets.vae import VAE

__all__ = ["Conditioning", "Keyframes", "clean_latents", "embed_vector", "encode_conditioning", "encode_keyframes",
           "family_vector"]


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on, one entry per video (repeated over frames only inside sampling).

    `keyframes`, set on a positive conditioning, carries the last frame's side of a first-to-last-frame video
    (or a loop); the video flow (flow.sample) then runs the bidirectional keyframe sampler instead of the
    plain one."""

    crossattn: Tensor  # (B, 1, context_dim): the CLIP image embedding, one context token
    concat: Tensor  # (B, latent_channels, h, w): the VAE latent of the noised conditioning frame
    # the scalars of the family's vector (config.Family.vector), embedded at the UNet's widths when sampling:
    # (B, K) the same for every frame (SVD: fps_id, motion_bucket_id, cond_aug), or (B, T, K) one row per frame
    # (SV3D: cond_aug, and for SV3D_p the camera's polar and azimuth radians)
    vector: Tensor
    keyframes: Keyframes | None = None
    # SV3D: the conditioning frame in [-1, 1] (B, 3, H, W), which replaces each video's last decoded frame
    # (simple_video_sample.py: samples_x[-1:] = value_dict["cond_frames_without_noise"])
    last_frame: Tensor | None = None

    TENSORS: ClassVar[tuple[str, ...]] = ("crossattn", "concat", "vector")

    @property
    def batch_size(self) -> int:
        return int(self.crossattn.shape[0])

    @property
    def num_frames(self) -> int | None:
        """The frames a per-frame vector was made for (SV3D), else None (any number)."""
        return int(self.vector.shape[1]) if self.vector.ndim == 3 else None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        moved = {k: getattr(self, k).to(device=device, dtype=dtype) for k in self.TENSORS}
        keyframes = self.keyframes.to(device) if self.keyframes is not None else None
        last = self.last_frame.to(device=device) if self.last_frame is not None else None
        return Conditioning(**moved, keyframes=keyframes, last_frame=last)

    def select(self, index: list[int]) -> Conditioning:
        """The conditioning of the videos `index` (an index may repeat)."""
        keyframes = self.keyframes.select(index) if self.keyframes is not None else None
        last = self.last_frame[index] if self.last_frame is not None else None
        return Conditioning(**{k: getattr(self, k)[index] for k in self.TENSORS}, keyframes=keyframes,
                            last_frame=last)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """The tensors of several conditionings stacked (their keyframes and last frames are not carried over)."""
        return Conditioning(crossattn=torch.cat([c.crossattn for c in items]),
                            concat=torch.cat([c.concat for c in items]),
                            vector=torch.cat([c.vector for c in items]))


@dataclass(frozen=True)
class Keyframes:
    """The last frame's side of a first-to-last-frame video: the conditioning on the last frame, and the
    clean latents of both ends (B, C, h, w), in the sampler's space (VAE posterior mean x scale factor)."""

    end_positive: Conditioning
    end_negative: Conditioning
    start_latent: Tensor
    end_latent: Tensor
    loop: bool = False  # the last frame is the first: drop it after decoding

    @property
    def batch_size(self) -> int:
        return self.end_positive.batch_size

    def to(self, device: torch.device | str | None = None) -> Keyframes:
        return replace(self, end_positive=self.end_positive.to(device), end_negative=self.end_negative.to(device),
                       start_latent=self.start_latent.to(device), end_latent=self.end_latent.to(device))

    def select(self, index: list[int]) -> Keyframes:
        """The keyframes of the videos `index` (repeating one for several videos)."""
        return replace(self, end_positive=self.end_positive.select(index), end_negative=self.end_negative.select(index),
                       start_latent=self.start_latent[index], end_latent=self.end_latent[index])


def embed_vector(values: Tensor, embed_dim: int | Sequence[int]) -> Tensor:
    """(N, K) scalars -> (N, sum of widths) float32: each one's sinusoidal embedding, concatenated in order.
    SVD: [fps_id, motion_bucket_id, cond_aug] at `embed_dim` each (the reference's ConcatTimestepEmbedderND
    embedders 1, 2 and 4 of svd_xt_1_1.yaml, outdim 256 each; the SVD paper, section 4: micro-conditioning
    on frame rate, motion and noise augmentation). A sequence of widths gives each scalar its own (SV3D_p:
    cond_aug 256, polars_rad 512, azimuths_rad 512, sv3d_p.yaml)."""
    b, k = values.shape
    widths = (embed_dim,) * k if isinstance(embed_dim, int) else tuple(embed_dim)
    if len(widths) != k:
        raise ValueError(f"vector has {k} values per row, the UNet embeds {len(widths)}")
    if len(set(widths)) == 1:  # one width: all scalars in one call
        emb = timestep_embedding(rearrange(values.float(), "b k -> (b k)"), widths[0])  # (B*K, E)
        return rearrange(emb, "(b k) e -> b (k e)", b=b, k=k)
    return torch.cat([timestep_embedding(values[:, i].float(), w) for i, w in enumerate(widths)], dim=1)


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
    vector: Tensor | None = None,
    keep_frame: bool = False,
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
    `vector` (B, K) or (B, T, K), when given, replaces the SVD vector [fps_id, motion_bucket_id, cond_aug]
    (another family's scalars: `family_vector`); `keep_frame` keeps the frame in [-1, 1] as the positive's
    `last_frame` (SV3D).
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    b = image.shape[0]
    clip_device = execution_device(image_encoder)
    vae_device, vae_dtype = execution_device(vae), compute_dtype(vae)
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
    if vector is None:
        vector = torch.tensor([[fps_id, motion_bucket_id, cond_aug]] * b, dtype=torch.float32)
    elif vector.shape[0] != b:
        raise ValueError(f"vector holds {vector.shape[0]} rows for {b} images")
    vector = vector.to(device=crossattn.device, dtype=torch.float32)
    positive = Conditioning(crossattn=crossattn, concat=concat, vector=vector,
                            last_frame=frame.float() if keep_frame else None)
    negative = Conditioning(
        crossattn=torch.zeros_like(crossattn), concat=torch.zeros_like(concat), vector=positive.vector.clone()
    )
    return positive, negative


def clean_latents(vae: VAE, frames: Tensor) -> Tensor:
    """Frames (N, 3, H, W) in [0, 1] -> their latents (N, C, h, w) in the sampler's space: the VAE's
    posterior mean of the frame in [-1, 1], times the scale factor, float32. No augmentation noise."""
    with torch.inference_mode():
        z = vae.encode((frames.to(execution_device(vae), torch.float32) * 2.0 - 1.0).to(compute_dtype(vae)))
    return z.float() * vae.config.scale_factor


def encode_keyframes(image_encoder: ImageEncoder, vae: VAE, image: Tensor, end_image: Tensor, *, fps_id: int,
                     motion_bucket_id: int, cond_aug: float, end_aug_noise: Tensor | None = None,
                     loop: bool = False) -> Keyframes:
    """Keyframes for B first frames `image` and B last frames `end_image` (B, 3, H, W) in [0, 1]: the last
    frames are conditioned on like a start image (CLIP embedding, augmented latent, micro-conditioning)."""
    if end_image.shape != image.shape:
        raise ValueError(f"end_image has shape {tuple(end_image.shape)}; expected the image's {tuple(image.shape)} "
                         "(fit it first, e.g. with svd_core.image_ops.fit_image)")
    end_pos, end_neg = encode_conditioning(image_encoder, vae, end_image, fps_id=fps_id,
                                           motion_bucket_id=motion_bucket_id, cond_aug=cond_aug,
                                           aug_noise=end_aug_noise)
    return Keyframes(end_pos, end_neg, clean_latents(vae, image), clean_latents(vae, end_image), loop)


def family_vector(family: Family, batch: int, *, fps_id: int, motion_bucket_id: int, cond_aug: float,
                  num_frames: int, polars_rad: Sequence[float] | None = None,
                  azimuths_rad: Sequence[float] | None = None) -> Tensor | None:
    """The vector scalars of `family` for `batch` videos: None for SVD's own (encode_conditioning's default);
    for SV3D one row per frame (B, T, K): cond_aug, then for SV3D_p the camera's radians (camera.py), as the
    reference's get_batch repeats cond_aug over the frames and gives polars_rad / azimuths_rad per frame."""
    if family.vector == SVD_VECTOR:
        return None
    columns: dict[str, list[float]] = {
        "cond_aug": [float(cond_aug)] * num_frames, "fps_id": [float(fps_id)] * num_frames,
        "motion_bucket_id": [float(motion_bucket_id)] * num_frames}
    if family.camera:
        if polars_rad is None or azimuths_rad is None:
            raise ValueError(f"an {family.name} model needs the camera path (elevations_deg, azimuths_deg)")
        columns.update(polars_rad=[float(v) for v in polars_rad], azimuths_rad=[float(v) for v in azimuths_rad])
    for name in family.vector:
        if len(columns[name]) != num_frames:
            raise ValueError(f"{name} has {len(columns[name])} values for {num_frames} frames")
    # float64 -> float32 like the reference's timestep embedding (timesteps.float())
    rows = torch.tensor([[columns[name][t] for name in family.vector] for t in range(num_frames)], dtype=torch.float64)
    return rows.to(torch.float32).unsqueeze(0).expand(batch, -1, -1).clone()
