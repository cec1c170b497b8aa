"""Host-free parts of the ComfyUI nodes: input checks, layout conversions, latent folding, noise.

Nothing here imports ComfyUI, so the unit tests can exercise every conversion without a host.
This file uses absolute imports only (torch, einops, svd_core) so that it can also be loaded by
file path (the tests do, because ComfyUI owns the top-level module name `nodes`).

Layouts:
- ComfyUI IMAGE: `(N, H, W, C)` float in [0, 1], C = 3 (C = 1 grayscale, 2 grayscale+alpha,
  4 RGBA are accepted here).
- svd_core images `(B, 3, H, W)` in [0, 1]; latents and frames `(B, T, ...)`.
- The pack's LATENT: ComfyUI's standard dict, `samples` `(B*T, 4, h, w)` with frames folded as
  "(b t)", in ComfyUI's convention for SD-family latents (the VAE's own latent space, i.e. NOT
  multiplied by the model's scale_factor; ComfyUI's SD15/SVD latent format applies 0.18215 on the
  way into the model). The frame count travels under FRAMES_KEY.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor

from svd_core.checks import SIZE_MULTIPLE, check_size, conditioning_errors, sampler_errors
from svd_core.config import DTYPES, STORAGE_ONLY_DTYPES, SamplingConfig
from svd_core.image_ops import RESIZE_MODES, fit_image
from svd_core.memory import image_encoder_bytes, vae_encoder_bytes
from svd_core.nets.layers import compute_dtype
from svd_core.nets.vae import VAEConfig
from svd_core.seeds import indices_from_batch_index

__all__ = [
    "DTYPE_CHOICES", "STORAGE_ONLY", "FPS_KEY", "FRAMES_KEY", "LAST_FRAME_KEY", "LOOP_KEY", "fps_of", "latent_fps",
    "LATENT_CHANNELS", "LATENT_DOWNSCALE", "RESIZE_MODES", "SIZE_MULTIPLE", "ModelHandle", "check_size",
    "conditioning_errors", "empty_latent", "encoding_bytes", "fit_image", "fps_to_fps_id", "frames_to_image",
    "image_to_bchw", "latent_to_video", "latent_video_indices", "match_batches", "parse_dtype", "preview_grid",
    "repeat_videos", "sampler_errors",
    "video_to_latent",
]

# The VAE's latent: 4 channels, 8x smaller than the image (svd_core.VAEConfig, from svd_xt_1_1.yaml); the empty
# latent node has no model to read them from.
LATENT_CHANNELS = VAEConfig.svd_xt().latent_channels
LATENT_DOWNSCALE = VAEConfig.svd_xt().downscale
# Extra key of the LATENT dict holding the number of frames per video.
FRAMES_KEY = "svd_frames"
# Extra key of the LATENT dict of a seamless loop: the decoder drops each video's last frame.
LOOP_KEY = "svd_loop"
# Extra key of the LATENT dict: the frame rate its videos were conditioned on (fps_id + 1).
FPS_KEY = "svd_fps"
# Extra key of the LATENT dict of SV3D orbits: the conditioning frames in [-1, 1] (B, 3, H, W), which the decoder
# makes each video's last frame (Conditioning.last_frame).
LAST_FRAME_KEY = "svd_last_frame"

DTYPE_CHOICES: tuple[str, ...] = ("auto", "fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2")
_DTYPES = DTYPES
# storage-only dtypes: the weights are kept in them and cast to a compute dtype at each call
STORAGE_ONLY = STORAGE_ONLY_DTYPES


@dataclass(frozen=True)
class ModelHandle:
    """What flows along an SVD_MODEL / SVD_CLIP_VISION / SVD_VAE wire: the host's model patcher
    around one svd_core module, the SVDConfig it was built from, and the file it came from (ckpt_name, for
    messages)."""

    patcher: Any
    config: Any
    source: str = ""

    def describe(self) -> str:
        """'<ckpt_name>' (<preset>, an <family> model), for messages that name the file and what it is."""
        name = f"'{self.source}' " if self.source else ""
        return f"{name}({self.config.name}, an {self.config.family} model)"

    @property
    def module(self) -> torch.nn.Module:
        """The svd_core module (the patcher holds it inside a thin holder module)."""
        return self.patcher.model.part


def encoding_bytes(clip_vision: ModelHandle, vae: ModelHandle, images: int, height: int, width: int) -> int:
    """The memory a conditioning node asks ComfyUI for: the larger of CLIP- and VAE-encoding `images` frames
    of height x width (svd_core.memory), in each part's compute dtype."""
    cfg = clip_vision.config
    return max(image_encoder_bytes(cfg.image_encoder, images, height, width, compute_dtype(clip_vision.module)),
               vae_encoder_bytes(cfg.vae, images, height, width, compute_dtype(vae.module)))


# --- input checks: each message names the input, the value and what was expected -----------------

def fps_of(conditioning: Any) -> int:
    """The frame rate a conditioning asks for: its fps_id (vector[:, 0], the same for the batch) + 1. SV3D's
    conditioning (one vector row per frame) has no fps: the reference's fps_id + 1 = 7 then."""
    if conditioning.vector.ndim != 2:
        return SamplingConfig.fps_id + 1
    return int(round(float(conditioning.vector[0, 0]))) + 1


def latent_fps(latent: dict[str, Any]) -> int:
    """The frame rate a LATENT carries, else the reference's fps_id + 1 = 7."""
    return int(latent.get(FPS_KEY, SamplingConfig.fps_id + 1))


def fps_to_fps_id(fps: int) -> int:
    """The model's fps conditioning is fps_id = fps - 1: the reference's simple_video_sample.py
    conditions on fps_id (default 6) and writes its video at fps_id + 1 frames per second."""
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    return int(fps) - 1


def parse_dtype(name: str) -> torch.dtype | None:
    """'fp16' / 'bf16' / 'fp32' / 'fp8_e4m3fn' / 'fp8_e5m2' -> torch dtype; 'auto' -> None (the host decides)."""
    if name == "auto":
        return None
    if name not in _DTYPES:
        raise ValueError(f"weight_dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    return _DTYPES[name]


# --- layout conversions ----------------------------------------------------------------------------

def image_to_bchw(image: Tensor, name: str = "image") -> Tensor:
    """ComfyUI IMAGE `(N, H, W, C)` -> `(N, 3, H, W)` float32 in [0, 1].

    Alpha is dropped, not composited: the reference opens an RGBA file and calls PIL's
    `convert("RGB")`, which discards alpha (simple_video_sample.py). Grayscale is repeated to RGB.
    """
    if not isinstance(image, Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an IMAGE batch (N, H, W, C), got {shape}")
    channels = image.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"{name} must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, got {channels}")
    if image.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    x = rearrange(image.float(), "n h w c -> n c h w")
    if channels in (1, 2):
        x = repeat(x[:, :1], "n 1 h w -> n c h w", c=3)
    else:
        x = x[:, :3]
    return x.clamp(0.0, 1.0).contiguous()


def frames_to_image(frames: Tensor) -> Tensor:
    """svd_core frames `(B, T, 3, H, W)` -> ComfyUI IMAGE `(B*T, H, W, 3)`, videos one after another."""
    if frames.ndim != 5:
        raise ValueError(f"frames must be (B, T, C, H, W), got {tuple(frames.shape)}")
    return rearrange(frames, "b t c h w -> (b t) h w c").contiguous()


def empty_latent(width: int, height: int, frames: int, batch_size: int) -> dict[str, Any]:
    """A zero LATENT for `batch_size` videos of `frames` frames: samples `(B*T, 4, H/8, W/8)`."""
    for name, value in (("width", width), ("height", height)):
        err = check_size(name, value)
        if err:
            raise ValueError(err)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    samples = torch.zeros(batch_size * frames, LATENT_CHANNELS, height // LATENT_DOWNSCALE, width // LATENT_DOWNSCALE)
    return {"samples": samples, FRAMES_KEY: frames}


def latent_to_video(latent: dict[str, Any], name: str = "latent") -> Tensor:
    """LATENT dict -> `(B, T, C, h, w)`, unfolding "(b t)" with the stored frame count."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{name} must be a LATENT dict with 'samples'")
    samples = latent["samples"]
    if samples.ndim != 4:
        raise ValueError(f"{name} samples must be (B*T, C, h, w), got {tuple(samples.shape)}")
    if FRAMES_KEY not in latent:
        raise ValueError(f"{name} carries no frame count: make it with StableVideoEmptyLatent "
                         f"(or a node that keeps its '{FRAMES_KEY}' entry)")
    t = int(latent[FRAMES_KEY])
    if t < 1 or samples.shape[0] % t != 0:
        raise ValueError(f"{name} holds {samples.shape[0]} frames in total, not a whole number of {t}-frame videos")
    return rearrange(samples, "(b t) c h w -> b t c h w", t=t)


def video_to_latent(z: Tensor, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """`(B, T, C, h, w)` -> LATENT dict, keeping the other entries of `like` (a new dict)."""
    out = {k: v for k, v in (like or {}).items() if k not in ("samples", "noise_mask", "batch_index", LOOP_KEY)}
    out["samples"] = rearrange(z, "b t c h w -> (b t) c h w").contiguous()
    out[FRAMES_KEY] = z.shape[1]
    return out


def match_batches(num_images: int, num_latent_videos: int) -> int:
    """How many videos to make from B conditioning images and a latent of L videos:
    B == L, or either one is 1 (it is repeated)."""
    if num_images == num_latent_videos or num_latent_videos == 1 or num_images == 1:
        return max(num_images, num_latent_videos)
    raise ValueError(f"positive holds {num_images} images but latent holds {num_latent_videos} videos: "
                     f"use the same batch size, or 1 on either side")


def repeat_videos(x: Tensor, n: int) -> Tensor:
    """Repeat a one-video batch `(1, ...)` to `(n, ...)`; return `x` when it already has n."""
    if x.shape[0] == n:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"cannot repeat a batch of {x.shape[0]} to {n}")
    return repeat(x, "1 ... -> n ...", n=n)


def latent_video_indices(latent: dict[str, Any], num_videos: int, name: str = "latent") -> list[int]:
    """Which video of its original batch each video of a LATENT is (svd_core.seeds.indices_from_batch_index of
    ComfyUI's `batch_index`), for the seed contract: video j draws from seed + its index."""
    index = latent.get("batch_index") if isinstance(latent, dict) else None
    return indices_from_batch_index(index, num_videos, int(latent.get(FRAMES_KEY, 1)), name)


def preview_grid(x0: Tensor) -> Tensor:
    """Every frame of every video `(B, T, C, h, w)` tiled into one near-square latent `(1, C, R*h, K*w)`,
    row by row, so a latent-to-RGB previewer shows all frames at once."""
    frames = rearrange(x0, "b t c h w -> (b t) c h w")
    n = frames.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    if rows * cols > n:
        pad = frames.new_zeros((rows * cols - n, *frames.shape[1:]))
        frames = torch.cat([frames, pad])
    return rearrange(frames, "(r k) c h w -> 1 c (r h) (k w)", r=rows, k=cols)
