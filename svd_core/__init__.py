"""svd_core: Stable Video Diffusion (SVD, SVD-XT, SVD-XT 1.1) in plain PyTorch, exact to the reference
implementation (Stability-AI/generative-models). No ComfyUI import anywhere in this package."""
from __future__ import annotations

from .config import PRESETS, SamplingConfig, SVDConfig
from .guidance import GUIDANCE_SCHEDULES, guidance_scales
from .image_encoder import ImageEncoder, ImageEncoderConfig
from .lean import Plan, use_plan
from .load import CheckpointError, load_models
from .models import SVDModels, build_models
from .pipeline import (
    SAMPLER_NAMES,
    Conditioning,
    HeldFrames,
    decode_chunk,
    decode_latents,
    embed_vector,
    encode_conditioning,
    sample_video,
    video_seeds,
)
from .extend import extend
from .generate import generate
from .keyframes import Keyframes, encode_keyframes, sample_keyframes
from .sampling import karras_sigmas, lcm_sigmas
from .random_weights import randomize_, save_random_checkpoint
from .unet import UNet, UNetConfig
from .vae import VAE, VAEConfig

__all__ = [
    "PRESETS", "SamplingConfig", "SVDConfig", "GUIDANCE_SCHEDULES", "guidance_scales", "ImageEncoder",
    "ImageEncoderConfig", "CheckpointError", "SVDModels", "build_models", "load_models", "SAMPLER_NAMES",
    "Conditioning", "HeldFrames", "decode_chunk", "decode_latents", "embed_vector", "encode_conditioning", "generate", "karras_sigmas", "lcm_sigmas",
    "sample_video", "video_seeds", "Keyframes", "encode_keyframes", "sample_keyframes", "extend", "Plan", "use_plan", "randomize_", "save_random_checkpoint", "UNet", "UNetConfig", "VAE", "VAEConfig",
]
