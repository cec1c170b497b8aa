"""Whole-model configuration: the three part configs plus the sampling defaults, with named presets.

Every sampling constant comes from Stability-AI/generative-models:
- scripts/sampling/simple_video_sample.py (`sample()` defaults and `version` switch):
  svd: num_frames 14, num_steps 25; svd_xt / svd_xt_1_1: num_frames 25, num_steps 30;
  fps_id 6, motion_bucket_id 127, cond_aug 0.02, decoding_t 14; images resized to 1024x576.
- scripts/sampling/configs/{svd,svd_xt,svd_xt_1_1}.yaml, sampler_config:
  guider LinearPredictionGuider min_scale/max_scale 1.0/2.5 (svd) and 1.5/3.0 (svd_xt, svd_xt_1_1);
  EDMDiscretization sigma_max 700.0 (sigma_min 0.002 and rho 7.0 are that class's defaults in
  sgm/modules/diffusionmodules/discretizer.py).
SVD-XT 1.1 was fine-tuned at fixed fps 6 and motion bucket 127 (its model card), which is why those are
the defaults for every preset.

AnimateLCM-SVD-xt (Wang et al. 2024, "AnimateLCM: Computation-Efficient Personalized Style Video Generation
without Personalized Video Data"; weights wangfuyun/AnimateLCM-SVD-xt) is a consistency-distilled SVD-XT
UNet. Its constants come from G-U-N/AnimateLCM, animatelcm_svd/app.py: the scheduler
AnimateLCMSVDStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=700.0,
sigma_data=1.0, s_noise=1.0, rho=7, clip_denoised=False) and `sample()`'s defaults num_inference_steps 4,
min_guidance_scale 1, max_guidance_scale 1.2, motion_bucket_id 80, decoding_t 4, width 1024, height 576.
It leaves the pipeline's fps 7 (fps_id = fps - 1 = 6, animatelcm_svd/pipeline.py; its fps_id 8 only names
the mp4's frame rate), noise_aug_strength 0.02 and num_frames 25 (the SVD-XT base) as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .diffusion.sampling import RHO, SIGMA_MAX, SIGMA_MIN
from .nets.image_encoder import ImageEncoderConfig
from .nets.unet import UNetConfig
from .nets.vae import VAEConfig

# The one table of precisions by name (command line, nodes, benchmarks). fp8 is a storage format only:
# weights are kept in it and cast to a compute dtype at each call.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
    "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
}
COMPUTE_DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16")
STORAGE_ONLY_DTYPES: frozenset[torch.dtype] = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


@dataclass(frozen=True)
class SamplingConfig:
    num_frames: int = 25
    num_steps: int = 30
    min_cfg: float = 1.5
    max_cfg: float = 3.0
    fps_id: int = 6
    motion_bucket_id: int = 127
    cond_aug: float = 0.02
    width: int = 1024
    height: int = 576
    decode_chunk_size: int = 14  # simple_video_sample.py decoding_t
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    sampler: str = "euler"  # the reference's EulerEDMSampler; "lcm" for consistency-distilled UNets

    def overridden(self, **values: Any) -> SamplingConfig:
        """These settings with every value given that is not None put in place (a caller's unset
        arguments fall back to the preset)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class SVDConfig:
    name: str = "svd_xt_1_1"
    unet: UNetConfig = field(default_factory=UNetConfig.svd_xt)
    vae: VAEConfig = field(default_factory=VAEConfig.svd_xt)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig.vit_h14)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @classmethod
    def svd(cls) -> SVDConfig:
        """SVD (14 frames): svd.yaml + simple_video_sample.py version "svd"."""
        return cls(name="svd", sampling=SamplingConfig(num_frames=14, num_steps=25, min_cfg=1.0, max_cfg=2.5))

    @classmethod
    def svd_xt(cls) -> SVDConfig:
        """SVD-XT 1.0 (25 frames): svd_xt.yaml."""
        return cls(name="svd_xt")

    @classmethod
    def svd_xt_1_1(cls) -> SVDConfig:
        """SVD-XT 1.1 (25 frames, fine-tuned at fps_id 6, motion bucket 127): svd_xt_1_1.yaml."""
        return cls(name="svd_xt_1_1")

    @classmethod
    def animatelcm_svd_xt(cls) -> SVDConfig:
        """AnimateLCM-SVD-xt (1.0 and 1.1 files): SVD-XT's networks, its consistency sampler and defaults
        (module docstring)."""
        return cls(name="animatelcm_svd_xt", sampling=SamplingConfig(
            num_steps=4, min_cfg=1.0, max_cfg=1.2, motion_bucket_id=80, decode_chunk_size=4, sampler="lcm"))

    @classmethod
    def tiny(cls) -> SVDConfig:
        """Tiny random-weight family member for tests: 64x64, 4 frames, 2 steps, runs on a CPU in a second."""
        return cls(
            name="tiny",
            unet=UNetConfig.tiny(),
            vae=VAEConfig.tiny(),
            image_encoder=ImageEncoderConfig.tiny(),
            sampling=SamplingConfig(num_frames=4, num_steps=2, width=64, height=64, decode_chunk_size=14),
        )

    def with_sampling(self, **changes: object) -> SVDConfig:
        return replace(self, sampling=replace(self.sampling, **changes))  # type: ignore[arg-type]


PRESETS: dict[str, SVDConfig] = {
    "svd": SVDConfig.svd(),
    "svd_xt": SVDConfig.svd_xt(),
    "svd_xt_1_1": SVDConfig.svd_xt_1_1(),
    "animatelcm_svd_xt": SVDConfig.animatelcm_svd_xt(),
}


def preset_for_filename(name: str) -> str:
    """Guess the preset from a checkpoint's file or folder name (the official files share every tensor
    shape, so the name is the only hint): 'AnimateLCM-SVD-xt...' (either version) -> animatelcm_svd_xt,
    'svd_xt_1_1...' -> svd_xt_1_1, 'svd_xt...' -> svd_xt, 'svd...' / 'stable-video-diffusion-img2vid'
    (no 'xt') -> svd; anything else -> svd_xt_1_1."""
    n = name.lower().replace("-", "_")
    if "animatelcm" in n or "animate_lcm" in n:
        return "animatelcm_svd_xt"
    if "xt" in n:
        return "svd_xt_1_1" if ("1_1" in n or "1.1" in n) else "svd_xt"
    if "svd" in n or "img2vid" in n or "video_diffusion" in n:
        return "svd"
    return "svd_xt_1_1"
