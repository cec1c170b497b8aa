"""svd_core: Stable Video Diffusion (SVD, SVD-XT, SVD-XT 1.1, the image-decoder SVDs, SV3D) in plain PyTorch,
exact to the reference implementation (Stability-AI/generative-models). No ComfyUI import anywhere in this package.

The parts, each importing only those listed after it:
- app/        the programs: command line, one request to one video file, the Ray batch job;
- video/      the video flow: a request, conditioning, sampling (plain, keyframes, loops), decoding, extend,
              keyframe sequences;
- weights/    files to models: read and validate, detect the layout, rename, build; random weights;
- nets/       the networks (UNet, image encoder, VAE), their attribute names mirroring the checkpoint keys;
- diffusion/  EDM preconditioning, schedules and samplers, per-frame guidance;
- config.py, checks.py, seeds.py, memory.py, speed.py, image_ops.py, resize.py: small and shared.
"""
from __future__ import annotations

from . import moved
from .config import FAMILIES, PRESETS, Family, SamplingConfig, SVDConfig
from .diffusion.guidance import GUIDANCE_SCHEDULES, guidance_scales
from .diffusion.sampling import karras_sigmas, lcm_sigmas
from .image_ops import orbit_image
from .nets.image_decoder import ImageDecoder
from .nets.image_encoder import ImageEncoder, ImageEncoderConfig
from .nets.pieces import PieceSizes, Plan, use_piece_sizes, use_plan
from .nets.unet import UNet, UNetConfig
from .nets.vae import VAE, VAEConfig
from .seeds import VideoNoise, video_seeds
from .video.camera import camera_path, camera_radians
from .video.conditioning import Conditioning, Keyframes, embed_vector, encode_conditioning, encode_keyframes
from .video.decode import decode_chunk, decode_latents
from .video.extend import extend
from .video.flow import make_video
from .video.generate import generate
from .video.keyframes import sample_keyframes
from .video.request import VideoRequest
from .video.sample import SAMPLER_NAMES, HeldFrames, sample_video
from .video.sequence import generate_keyframes
from .weights.load import CheckpointError, load_models
from .weights.models import SVDModels, build_models
from .weights.random_weights import random_models, randomize_, save_random_checkpoint

__all__ = [
    "PRESETS", "SamplingConfig", "SVDConfig", "GUIDANCE_SCHEDULES", "guidance_scales", "karras_sigmas",
    "lcm_sigmas", "ImageEncoder", "ImageEncoderConfig", "PieceSizes", "use_piece_sizes", "Plan", "use_plan", "UNet",
    "UNetConfig", "VAE",
    "VAEConfig", "VideoNoise", "video_seeds", "Conditioning", "Keyframes", "embed_vector", "encode_conditioning",
    "encode_keyframes", "decode_chunk", "decode_latents", "extend", "make_video", "generate", "sample_keyframes",
    "generate_keyframes", "VideoRequest", "SAMPLER_NAMES", "HeldFrames", "sample_video", "CheckpointError",
    "load_models", "SVDModels",
    "build_models", "random_models", "randomize_", "save_random_checkpoint", "FAMILIES", "Family", "orbit_image",
    "ImageDecoder", "camera_path", "camera_radians",
]

moved.install()
