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

The rest of the family (same script, `version` switch, and configs svd_image_decoder.yaml,
svd_xt_image_decoder.yaml, sv3d_u.yaml, sv3d_p.yaml):
- svd_image_decoder / svd_xt_image_decoder: num_frames 14 / 25, num_steps 25 / 30, LinearPredictionGuider
  1.0-2.5 / 1.5-3.0, sigma_max 700; the first stage is a plain AutoencoderKL (post_quant_conv, then a 2-D
  decoder that decodes each frame on its own).
- sv3d_u / sv3d_p: num_frames forced to 21, num_steps 50, cond_aug forced to 1e-5, images prepared at 576x576,
  TrianglePredictionGuider max_scale 2.5 (min_scale 1.0, its default), sigma_max 700; no fps_id /
  motion_bucket_id embedders (their values are ignored), and after decoding the last frame is replaced by
  the conditioning image (`samples_x[-1:] = value_dict["cond_frames_without_noise"]`). sv3d_p also embeds the
  camera: polars_rad and azimuths_rad (video/camera.py).

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
class Family:
    """What kind of SVD model a checkpoint holds: how it is conditioned and decoded (the reference's configs).

    `vector` names the scalars embedded into the UNet's vector input y, in the conditioner's order (their
    widths are the UNet's `vector_dims`); `cond_encoder` is N of `conditioner.embedders.N.encoder`, the VAE that
    encodes the conditioning frame; `temporal_decoder` tells SVD's VideoDecoder from a frame-wise 2-D decoder,
    `post_quant_conv` a first stage that is an AutoencoderKL (its post_quant_conv runs before the decoder);
    `orbit` marks SV3D (an object's orbit: the object centred on white, the last frame the input image) and
    `camera` a model that takes the camera path (elevations and azimuths)."""

    name: str
    vector: tuple[str, ...]
    cond_encoder: int
    temporal_decoder: bool
    post_quant_conv: bool = False
    orbit: bool = False

    @property
    def camera(self) -> bool:
        return "polars_rad" in self.vector

    @property
    def uses_fps_and_motion(self) -> bool:
        return "fps_id" in self.vector


# Each family's conditioner (the `emb_models` of its config): svd*.yaml embed fps_id, motion_bucket_id and
# cond_aug (outdim 256 each) and encode the frame with embedders.3; sv3d_u.yaml embeds cond_aug (256) and
# encodes with embedders.1; sv3d_p.yaml adds polars_rad and azimuths_rad (outdim 512 each).
SVD_VECTOR = ("fps_id", "motion_bucket_id", "cond_aug")
FAMILIES: dict[str, Family] = {
    "svd": Family("svd", SVD_VECTOR, cond_encoder=3, temporal_decoder=True),
    "svd_image_decoder": Family("svd_image_decoder", SVD_VECTOR, cond_encoder=3, temporal_decoder=False,
                                post_quant_conv=True),
    "sv3d_u": Family("sv3d_u", ("cond_aug",), cond_encoder=1, temporal_decoder=False, orbit=True),
    "sv3d_p": Family("sv3d_p", ("cond_aug", "polars_rad", "azimuths_rad"), cond_encoder=1, temporal_decoder=False,
                     orbit=True),
}
# SV3D's vector widths, fixed by its configs (ConcatTimestepEmbedderND outdim): they tell sv3d_u (256) from
# sv3d_p (256 + 512 + 512 = 1280) by the shape of label_emb.0.0.weight.
SV3D_VECTOR_DIMS: dict[str, tuple[int, ...]] = {"sv3d_u": (256,), "sv3d_p": (256, 512, 512)}


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
    guidance: str = "linear"  # LinearPredictionGuider; "triangle" for SV3D (TrianglePredictionGuider)

    def overridden(self, **values: Any) -> SamplingConfig:
        """These settings with every value given that is not None put in place (a caller's unset
        arguments fall back to the preset)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


SV3D_COND_AUG = 1e-5  # simple_video_sample.py forces cond_aug = 1e-5 for sv3d_u and sv3d_p
SV3D_SAMPLING = SamplingConfig(num_frames=21, num_steps=50, min_cfg=1.0, max_cfg=2.5, cond_aug=SV3D_COND_AUG,
                               width=576, height=576, guidance="triangle")


@dataclass(frozen=True)
class SVDConfig:
    name: str = "svd_xt_1_1"
    unet: UNetConfig = field(default_factory=UNetConfig.svd_xt)
    vae: VAEConfig = field(default_factory=VAEConfig.svd_xt)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig.vit_h14)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    family: str = "svd"  # a key of FAMILIES

    @property
    def kind(self) -> Family:
        """The model family (FAMILIES[family])."""
        return FAMILIES[self.family]

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
    def svd_image_decoder(cls) -> SVDConfig:
        """SVD with the frame-wise image decoder (14 frames): svd_image_decoder.yaml, version "svd_image_decoder"."""
        return cls(name="svd_image_decoder", vae=VAEConfig.image_decoder(), family="svd_image_decoder",
                   sampling=SamplingConfig(num_frames=14, num_steps=25, min_cfg=1.0, max_cfg=2.5))

    @classmethod
    def svd_xt_image_decoder(cls) -> SVDConfig:
        """SVD-XT with the frame-wise image decoder (25 frames): svd_xt_image_decoder.yaml."""
        return cls(name="svd_xt_image_decoder", vae=VAEConfig.image_decoder(), family="svd_image_decoder")

    @classmethod
    def sv3d_u(cls) -> SVDConfig:
        """SV3D_u: 21 orbital views at 576x576, no camera input (sv3d_u.yaml, version "sv3d_u")."""
        return cls(name="sv3d_u", unet=UNetConfig.sv3d("sv3d_u"), vae=VAEConfig.orbit(), family="sv3d_u",
                   sampling=SV3D_SAMPLING)

    @classmethod
    def sv3d_p(cls) -> SVDConfig:
        """SV3D_p: 21 views along a given camera path at 576x576 (sv3d_p.yaml, version "sv3d_p")."""
        return cls(name="sv3d_p", unet=UNetConfig.sv3d("sv3d_p"), vae=VAEConfig.orbit(), family="sv3d_p",
                   sampling=SV3D_SAMPLING)

    @classmethod
    def tiny(cls, family: str = "svd") -> SVDConfig:
        """Tiny random-weight family member for tests: 64x64, 4 frames, 2 steps, runs on a CPU in a second;
        `family` picks the member (FAMILIES): SV3D's vector widths stay its real ones (they tell u from p)."""
        kind = FAMILIES[family]
        unet = UNetConfig.tiny()
        if family in SV3D_VECTOR_DIMS:
            unet = replace(unet, vector_dims=SV3D_VECTOR_DIMS[family])
        vae = VAEConfig.tiny()
        if not kind.temporal_decoder:
            vae = replace(vae, temporal=False, post_quant_conv=kind.post_quant_conv)
        sampling = SamplingConfig(num_frames=4, num_steps=2, width=64, height=64, decode_chunk_size=14)
        if kind.orbit:
            sampling = replace(sampling, guidance="triangle", min_cfg=1.0, max_cfg=2.5, cond_aug=SV3D_COND_AUG)
        return cls(name="tiny" if family == "svd" else f"tiny_{family}", unet=unet, vae=vae,
                   image_encoder=ImageEncoderConfig.tiny(), sampling=sampling, family=family)

    def with_sampling(self, **changes: object) -> SVDConfig:
        return replace(self, sampling=replace(self.sampling, **changes))  # type: ignore[arg-type]


PRESETS: dict[str, SVDConfig] = {
    "svd": SVDConfig.svd(),
    "svd_xt": SVDConfig.svd_xt(),
    "svd_xt_1_1": SVDConfig.svd_xt_1_1(),
    "animatelcm_svd_xt": SVDConfig.animatelcm_svd_xt(),
    "svd_image_decoder": SVDConfig.svd_image_decoder(),
    "svd_xt_image_decoder": SVDConfig.svd_xt_image_decoder(),
    "sv3d_u": SVDConfig.sv3d_u(),
    "sv3d_p": SVDConfig.sv3d_p(),
}


def presets_of(family: str) -> list[str]:
    """The presets whose models are of `family`."""
    return [name for name, config in PRESETS.items() if config.family == family]


def preset_for(family: str, name: str) -> str:
    """The preset of a checkpoint of `family` (told by its tensors) named `name`: sv3d_u and sv3d_p by their
    tensors alone; the two image-decoder files share every shape, so 'xt' in the name picks
    svd_xt_image_decoder; the SVD files likewise by name (`preset_for_filename`)."""
    if family in ("sv3d_u", "sv3d_p"):
        return family
    n = name.lower().replace("-", "_")
    if family == "svd_image_decoder":
        return "svd_xt_image_decoder" if "xt" in n else "svd_image_decoder"
    return preset_for_filename(name)


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
