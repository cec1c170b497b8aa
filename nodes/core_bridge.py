"""StableVideoToCoreModel: the pack's exact UNet as a core ComfyUI MODEL, with core CONDITIONING and LATENT.

The MODEL is core's own SVD model class (comfy.model_base.SVD_img2vid: EDM v-prediction, sigmas 0.002 to
700, conditioning keys `concat_latent_image`, `fps`, `motion_bucket_id`, `augmentation_level`) whose
diffusion model is this pack's UNet behind core's call signature. Core samplers (KSampler,
SamplerCustomAdvanced) and the core patches that work outside a UNet's blocks then run our UNet under
ComfyUI's model management: VideoLinearCFGGuidance, ContextWindowsManual (frames, dim 0), LazyCache, and
EasyCache (its diffusion-model wrapper runs around our UNet). Patches inside core's UNet blocks
(transformer_options `patches` / `patches_replace`: FreeU, HyperTile, ToMe, SAG, PAG, ...) have no hook in
our UNet and are refused with a ValueError, as are context-window settings that cannot run on frames.

Why a wrapper for context windows: ComfyUI 0.3.64's IndexListContextHandler.set_step finds the step by
comparing the schedule (steps + 1 sigmas) with the model call's timestep, which for SVD has one entry per
frame (the frames are the batch). The two only broadcast when steps + 1 equals the frame count, so any other
step count fails with "The size of tensor a (steps + 1) must match the size of tensor b (frames)", on core's
own SVD model too. This MODEL hands core a copy of the handler whose step lookup reads one sigma.
"""
from __future__ import annotations

import copy
import logging
import types
from typing import Any, cast

import comfy.context_windows
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep
from comfy_api.latest import io

import svd_core
from svd_core.nets.layers import compute_dtype

from . import schema
from .adapters import FPS_KEY, FRAMES_KEY, ModelHandle, fps_of

log = logging.getLogger(__name__)

WRAPPER_KEY = "comfyui-svd-exact"  # key of the sampling wrapper this MODEL carries (ModelPatcher.wrappers)
CONCAT_KWARG = "svd_concat"  # the conditioning-frame channels, beside x, through diffusion-model wrappers


def refuse_unet_patches(transformer_options: dict[str, Any]) -> None:
    """Core's block patches and attention replacements run inside core's UNetModel; ours has no such hooks,
    so a patch there would be silently ignored (or fail inside the patch): refuse it by name."""
    found = [f"{kind}[{name!r}]" for kind in ("patches", "patches_replace")
             for name, entries in (transformer_options.get(kind) or {}).items() if entries]
    if found:
        raise ValueError(
            f"model: transformer_options {', '.join(found)} patch the blocks of core's UNet (FreeU, HyperTile, "
            "ToMe, SelfAttentionGuidance, PerturbedAttentionGuidance, PatchModelAddDownscale, hypernetworks "
            "set these); this pack's UNet has no such hooks and would ignore them: remove that node, or use "
            "ComfyUI's own SVD model for it")


class CoreUNet(torch.nn.Module):
    """svd_core's UNet with the signature core's BaseModel calls its diffusion model with:
    (x, timesteps, context, control, transformer_options, y, num_video_frames, ...).

    Like core's own diffusion models it runs the DIFFUSION_MODEL wrappers of transformer_options (EasyCache
    is one) around the UNet, with x the noisy-latent channels only and the conditioning-frame channels
    beside it, so that a wrapper sees an x of the output's shape; and one conditioning at a time, each call
    with transformer_options' uuids and cond_or_uncond narrowed to it, because a wrapper may keep state per
    conditioning (core 0.3.64's EasyCache adds each one's cached residual to the whole batch, which fails when
    a conditioning has several rows, as SVD's frames are)."""

    def __init__(self, unet: svd_core.UNet) -> None:
        super().__init__()
        self.unet = unet

    @property
    def dtype(self) -> torch.dtype:
        return compute_dtype(self.unet)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                y: torch.Tensor | None = None, control: Any = None, transformer_options: Any = None,
                **kwargs: Any) -> torch.Tensor:
        options = transformer_options if isinstance(transformer_options, dict) else {}
        refuse_unet_patches(options)  # per call too: PerturbedAttentionGuidance adds its patch inside a CFG step
        latent = self.unet.config.out_channels  # x (B*T, in_channels, h, w): noisy latent, then the image's
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            options)
        if not wrappers:
            return self._forward(x, timesteps, context, y, control, options, **kwargs)
        uuids = list(options.get("uuids") or [])
        if len(uuids) < 2 or x.shape[0] % len(uuids):
            groups = [(slice(None), options)]
        else:  # the batch is len(uuids) equal groups of rows, one per conditioning (samplers._calc_cond_batch)
            rows, which = x.shape[0] // len(uuids), list(options.get("cond_or_uncond") or [])
            groups = [(slice(i * rows, (i + 1) * rows),
                       {**options, "uuids": [u], "cond_or_uncond": which[i:i + 1]}) for i, u in enumerate(uuids)]
        out = []
        for part, opts in groups:
            def cut(t: Any, part: slice = part) -> Any:
                return t[part] if isinstance(t, torch.Tensor) else t
            run = comfy.patcher_extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers)
            out.append(run.execute(x[part, :latent], cut(timesteps), cut(context), cut(y), control, opts,
                                   **{CONCAT_KWARG: x[part, latent:]}, **kwargs))
        return out[0] if len(out) == 1 else torch.cat(out)

    def _forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                 y: torch.Tensor | None = None, control: Any = None, transformer_options: Any = None,
                 num_video_frames: int | None = None, **kwargs: Any) -> torch.Tensor:
        if control is not None:
            raise ValueError("model: this pack's UNet takes no ControlNet input (control); use ComfyUI's own SVD "
                             "model with a ControlNet")
        if context is None or y is None or num_video_frames is None:
            raise ValueError("model: core's SVD conditioning (cross_attn, y, num_video_frames) is missing; make the "
                             "conditioning with StableVideoToCoreModel")
        concat = kwargs.get(CONCAT_KWARG)
        if concat is not None and concat.shape[1]:
            x = torch.cat([x, concat.to(x)], dim=1)  # (B*T, in_channels, h, w), as core's BaseModel made it
        return self.unet(x, timesteps, context, y, num_frames=int(num_video_frames))


def _set_step_from_one_sigma(handler: Any, timestep: torch.Tensor, model_options: dict[str, Any]) -> None:
    """IndexListContextHandler.set_step for a timestep with one entry per frame (all equal under core
    samplers): the step is the first schedule entry within 1e-4 (relative) of its first sigma. A sigma
    between two steps (Heun's, DPM-2's intermediate evaluations) keeps the last step's windows."""
    sigmas = model_options["transformer_options"]["sample_sigmas"]
    hits = torch.nonzero(torch.isclose(sigmas, timestep.reshape(-1)[:1].to(sigmas), rtol=1e-4)).flatten()
    if hits.numel():
        handler._step = int(hits[0])


def check_context_windows(handler: comfy.context_windows.IndexListContextHandler, frames: int) -> None:
    """Refuse, before sampling, context-window settings that cannot run on this MODEL's LATENT
    (frames, 4, H/8, W/8), naming the ContextWindowsManual input."""
    cw = comfy.context_windows
    length, overlap = handler.context_length, handler.context_overlap
    if handler.dim != 0:
        raise ValueError(
            f"ContextWindowsManual: dim={handler.dim}, expected 0: this model's LATENT is (frames, 4, height/8, "
            "width/8) and its windows run over frames, dim 0 (WanContextWindowsManual always uses dim 2: use "
            "ContextWindowsManual)")
    if frames <= length:
        return  # one window holds the whole video: core samples without windows
    schedule, fuse = handler.context_schedule.name, handler.fuse_method.name
    if schedule != cw.ContextSchedules.BATCHED and overlap >= length:
        raise ValueError(
            f"ContextWindowsManual: context_overlap={overlap} with context_length={length}: the {schedule} "
            "schedule needs an overlap smaller than the length (it steps by length - overlap)")
    if fuse == cw.ContextFuseMethods.OVERLAP_LINEAR:
        shortest = min(len(w) for w in handler.context_schedule.func(frames, handler, {}))
        if not 1 <= overlap <= shortest:
            raise ValueError(
                f"ContextWindowsManual: fuse_method {fuse} with context_overlap={overlap}: it ramps the first and "
                f"last `overlap` frames of each window, so it needs an overlap from 1 to the shortest window "
                f"({shortest} frames of {frames} here)")


def _bridge_outer_sample(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """OUTER_SAMPLE wrapper of this MODEL (CFGGuider.outer_sample; args: noise, latent_image, sampler,
    sigmas, ...): refuses what our UNet cannot run before the first step and gives core's context-window
    handler a per-frame step lookup for this one run."""
    guider = executor.class_obj
    options = guider.model_options
    refuse_unet_patches(options.get("transformer_options", {}))
    if any("control" in c for conds in guider.conds.values() for c in conds):
        raise ValueError("positive/negative: a ControlNet is applied to the conditioning; this pack's UNet takes "
                         "no ControlNet input: use ComfyUI's own SVD model with a ControlNet")
    handler = options.get("context_handler")
    if not isinstance(handler, comfy.context_windows.IndexListContextHandler):
        return executor(*args, **kwargs)
    noise = args[0] if args else kwargs["noise"]
    check_context_windows(handler, int(noise.shape[0]))
    cache = options.get("transformer_options", {}).get("easycache")
    if getattr(cache, "name", None) == "EasyCache" and noise.shape[0] > handler.context_length:
        raise ValueError("EasyCache with ContextWindowsManual: EasyCache keeps one cached residual per "
                         "conditioning, not per window, and would add one window's residual to another's frames; "
                         "use LazyCache (it caches the whole step, after the windows are fused)")
    own = copy.copy(handler)  # the patched model's handler stays as core made it
    own.set_step = types.MethodType(_set_step_from_one_sigma, own)
    guider.model_options = comfy.model_patcher.create_model_options_clone(options)
    guider.model_options["context_handler"] = own
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = options


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
    base.diffusion_model = CoreUNet(cast(svd_core.UNet, handle.module))  # an SVD_MODEL holds a UNet
    base.embedder = Timestep(cfg.vector_embed_dim)  # 256 for SVD, as core's; smaller family members differ
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=handle.patcher.load_device,
                                               offload_device=handle.patcher.offload_device)
    # ModelPatcher.clone copies its wrappers: every patched copy of this MODEL keeps the checks
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _bridge_outer_sample)
    return patcher


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
            **schema.aliases("svd to core model", "core model", "ksampler"),
            description="Hands this pack's exact UNet and conditioning to core ComfyUI nodes: a core MODEL with "
                        "the semantics of core's SVD model (EDM v-prediction, sigmas 0.002 to 700), its positive "
                        "and negative CONDITIONING, and an empty LATENT. Core KSampler, SamplerCustomAdvanced, "
                        "VideoLinearCFGGuidance, context windows over frames (dim 0), EasyCache and LazyCache "
                        "then run it; patches inside core's UNet blocks (FreeU, HyperTile, ToMe, SAG, PAG) are "
                        "refused. One video at a time.",
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
