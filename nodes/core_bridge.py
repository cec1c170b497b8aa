"""StableVideoToCoreModel: the pack's exact UNet as a core ComfyUI MODEL, with core CONDITIONING and LATENT.

The MODEL is core's own SVD model class (comfy.model_base.SVD_img2vid: EDM v-prediction, sigmas 0.002 to
700, conditioning keys `concat_latent_image`, `fps`, `motion_bucket_id`, `augmentation_level`) whose
diffusion model is this pack's UNet behind core's call signature. Core samplers (KSampler,
SamplerCustomAdvanced), guidance patches (VideoLinearCFGGuidance) and context windows then run our UNet
under ComfyUI's model management.
"""
from __future__ import annotations

import logging
from typing import Any

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep
from comfy_api.latest import io

import svd_core
from svd_core.nets.layers import compute_dtype

from . import schema
from .adapters import FPS_KEY, FRAMES_KEY, ModelHandle, fps_of

log = logging.getLogger(__name__)


class CoreUNet(torch.nn.Module):
    """svd_core's UNet with the signature core's BaseModel calls its diffusion model with:
    (x, timesteps, context, control, transformer_options, y, num_video_frames, ...)."""

    def __init__(self, unet: svd_core.UNet) -> None:
        super().__init__()
        self.unet = unet

    @property
    def dtype(self) -> torch.dtype:
        return compute_dtype(self.unet)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control: Any = None, transformer_options: Any = None,
                num_video_frames: int | None = None, **kwargs: Any) -> torch.Tensor:
        if control is not None:
            raise ValueError("model: this pack's UNet takes no ControlNet input (control); use ComfyUI's own SVD "
                             "model with a ControlNet")
        if context is None or y is None or num_video_frames is None:
            raise ValueError("model: core's SVD conditioning (cross_attn, y, num_video_frames) is missing; make the "
                             "conditioning with StableVideoToCoreModel")
        return self.unet(x, timesteps, context, y, num_frames=int(num_video_frames))


def core_model(handle: ModelHandle) -> Any:
    """A ModelPatcher around core's SVD model class with our UNet inside (no second copy of the weights)."""
    cfg = handle.config.unet
    unet_config = {"disable_unet_model_creation": True, "in_channels": cfg.in_channels,
                   "model_channels": cfg.model_channels, "context_dim": cfg.context_dim,
                   "adm_in_channels": cfg.adm_in_channels}
    model_config = comfy.supported_models.SVD_img2vid(unet_config)
    model_config.sampling_settings = {"sigma_max": handle.config.sampling.sigma_max,
                                      "sigma_min": handle.config.sampling.sigma_min}
    base = comfy.model_base.SVD_img2vid(model_config, device=handle.patcher.load_device)
    base.diffusion_model = CoreUNet(handle.module)
    base.embedder = Timestep(cfg.vector_embed_dim)  # 256 for SVD, as core's; smaller family members differ
    return comfy.model_patcher.ModelPatcher(base, load_device=handle.patcher.load_device,
                                            offload_device=handle.patcher.offload_device)


def core_conditioning(cond: Any, name: str) -> list[list[Any]]:
    """Core's CONDITIONING for one video: [[cross_attn (1, 1, D), {concat_latent_image, fps, motion_bucket_id,
    augmentation_level}]], the keys core's SVD model reads (model_base.SVD_img2vid.extra_conds)."""
    if cond.batch_size != 1:
        raise ValueError(f"{name} holds {cond.batch_size} images; core's SVD model samples one video at a time: "
                         "give one image (split a batch with ImageFromBatch)")
    if getattr(cond, "keyframes", None) is not None:
        raise ValueError(f"{name} has an end_image or loop: core samplers cannot run the keyframe sampler; use "
                         "StableVideoSampler")
    if cond.vector.ndim != 2 or cond.vector.shape[1] != 3:
        raise ValueError(f"{name} is an SV3D orbit conditioning: core's SVD model has no camera or per-frame "
                         "conditioning; use StableVideoSampler")
    fps_id, motion, aug = (float(v) for v in cond.vector[0])
    return [[cond.crossattn.float(), {"concat_latent_image": cond.concat.float(), "fps": fps_of(cond),
                                      "motion_bucket_id": int(round(motion)), "augmentation_level": aug}]]


class StableVideoToCoreModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoToCoreModel",
            display_name="Stable Video to Core Model (exact)",
            category=schema.CATEGORY,
            description="Hands this pack's exact UNet and conditioning to core ComfyUI nodes: a core MODEL with "
                        "the semantics of core's SVD model (EDM v-prediction, sigmas 0.002 to 700), its positive "
                        "and negative CONDITIONING, and an empty LATENT. Core KSampler, SamplerCustomAdvanced, "
                        "VideoLinearCFGGuidance and context windows then run it. One video at a time.",
            inputs=[
                schema.SVDModel.Input("model", tooltip="Video UNet from the Stable Video checkpoint loader."),
                schema.SVDConditioning.Input("positive",
                                             tooltip="Positive conditioning from Stable Video Conditioning."),
                schema.SVDConditioning.Input("negative",
                                             tooltip="Negative conditioning from Stable Video Conditioning."),
                schema.number("frames", schema.REFERENCE.num_frames, "Frames of the empty LATENT (SVD-XT: 25)."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="Core MODEL running this pack's UNet."),
                io.Conditioning.Output(display_name="positive", tooltip="Core CONDITIONING (the image)."),
                io.Conditioning.Output(display_name="negative", tooltip="Core CONDITIONING (zeroed image parts)."),
                io.Latent.Output(display_name="latent",
                                 tooltip="Empty latent (frames, 4, H/8, W/8) for core samplers."),
            ],
        )

    @classmethod
    def execute(cls, model: ModelHandle, positive: Any, negative: Any, frames: int) -> io.NodeOutput:
        pos, neg = core_conditioning(positive, "positive"), core_conditioning(negative, "negative")
        h, w = positive.concat.shape[-2:]
        latent = torch.zeros(frames, model.config.vae.latent_channels, h, w, device=mm.intermediate_device())
        # the frame count and fps ride along (core samplers keep a LATENT's other keys): StableVideoDecode reads them
        return io.NodeOutput(core_model(model), pos, neg,
                             {"samples": latent, FRAMES_KEY: frames, FPS_KEY: fps_of(positive)})


BRIDGE_NODES: list[type[io.ComfyNode]] = [StableVideoToCoreModel]
