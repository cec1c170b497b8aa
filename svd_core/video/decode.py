"""Latents to frames: SVD's temporal VAE decoder in fixed chunks of frames (the reference's decode_first_stage with
en_and_decode_n_samples_a_time = decoding_t, simple_video_sample.py)."""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from ..config import SamplingConfig
from ..nets.layers import compute_dtype, execution_device
from ..nets.vae import VAE

__all__ = ["decode_chunk", "decode_latents"]

log = logging.getLogger(__name__)

def decode_chunk(decode_chunk_size: int | None, num_frames: int,
                 default: int = SamplingConfig.decode_chunk_size) -> int:
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
    device, dtype = execution_device(vae), compute_dtype(vae)
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
