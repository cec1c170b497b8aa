"""svd_core: Stable Video Diffusion (SVD, SVD-XT, SVD-XT 1.1) in plain PyTorch, exact to the reference
implementation (Stability-AI/generative-models). No ComfyUI import anywhere in this package."""
from __future__ import annotations

from . import moved

from .config import PRESETS, SamplingConfig, SVDConfig
from .diffusion.guidance import GUIDANCE_SCHEDULES, guidance_scales
from .nets.image_encoder import ImageEncoder, ImageEncoderConfig
from .nets.pieces import Plan, use_plan
from .weights.load import CheckpointError, load_models
from .weights.models import SVDModels, build_models
from .video.pipeline import (
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
from .video.extend import extend
from .video.generate import generate
from .video.keyframes import Keyframes, encode_keyframes, sample_keyframes
from .diffusion.sampling import karras_sigmas, lcm_sigmas
from .weights.random_weights import randomize_, save_random_checkpoint
from .nets.unet import UNet, UNetConfig
from .nets.vae import VAE, VAEConfig

__all__ = [
    "PRESETS", "SamplingConfig", "SVDConfig", "GUIDANCE_SCHEDULES", "guidance_scales", "ImageEncoder",
    "ImageEncoderConfig", "CheckpointError", "SVDModels", "build_models", "load_models", "SAMPLER_NAMES",
    "Conditioning", "HeldFrames", "decode_chunk", "decode_latents", "embed_vector", "encode_conditioning", "generate", "karras_sigmas", "lcm_sigmas",
    "sample_video", "video_seeds", "Keyframes", "encode_keyframes", "sample_keyframes", "extend", "Plan", "use_plan", "randomize_", "save_random_checkpoint", "UNet", "UNetConfig", "VAE", "VAEConfig",
]

moved.install()
