"""Our exact UNet inside core ComfyUI graphs: StableVideoToCoreModel's MODEL under core KSampler against
ComfyUI's own SVD model (its own UNet class) on the same random weights and conditioning."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
SIZE, FRAMES = 64, 3


def _comfy_own_svd_model(path: Path) -> Any:
    """ComfyUI's SVD model class with its own UNetModel, built from the file's UNet weights (the tiny
    config is read by ComfyUI's own detect_unet_config; the loader node would only accept full size)."""
    import comfy.model_base
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep

    sd = comfy.utils.load_torch_file(str(path))
    sd = {k: v.float() for k, v in sd.items()}
    unet_config = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
    model_config = comfy.supported_models.SVD_img2vid(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SVD_img2vid(model_config, device=mm.get_torch_device())
    model.load_model_weights(sd, "model.diffusion_model.")
    model.embedder = Timestep(unet_config["adm_in_channels"] // 3)  # core hard-codes 256, SVD's width
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def test_core_ksampler_runs_our_unet_like_comfyuis_own_svd_model(comfy_nodes: Any, assets: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2))
    pos, neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.0, seed=0).result  # augmentation level 0, as ComfyUI's node defaults to
    core_model, core_pos, core_neg, latent = n["StableVideoToCoreModel"].execute(
        model=model, positive=pos, negative=neg, frames=FRAMES).result
    assert latent["samples"].shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    assert set(core_pos[0][1]) == {"concat_latent_image", "fps", "motion_bucket_id", "augmentation_level"}

    theirs = _comfy_own_svd_model(assets / hostenv.SVD_CKPT)
    ksampler = n["KSampler"]()
    kw = dict(seed=3, steps=2, cfg=2.5, sampler_name="euler", scheduler="karras", positive=core_pos,
              negative=core_neg, latent_image=latent, denoise=1.0)
    (ours,) = ksampler.sample(core_model, **kw)
    (ref,) = ksampler.sample(theirs, **kw)
    diff = (ours["samples"] - ref["samples"]).abs().max().item()
    scale = ref["samples"].abs().max().item()
    print(f"\ncore KSampler (euler, karras, 2 steps): our UNet vs ComfyUI's own SVD UNet, max abs latent difference "
          f"{diff:.2e} (latent scale {scale:.2f})")
    # The two UNets agree to 3e-7 on the first call; the next input differs by float32's spacing at the
    # scale of x at sigma 700 (6e-5), and random weights carry that on: a few 1e-4 after two steps.
    assert diff <= 1e-3 * max(1.0, scale)
    # the frames through our decoder
    assert ours["svd_frames"] == FRAMES  # kept by core's KSampler: our decoder reads the LATENT as is
    frames = [n["StableVideoDecode"].execute(vae=vae, latent=s, frames_per_chunk=0).result[0] for s in (ours, ref)]
    print(f"frames: max abs difference {(frames[0] - frames[1]).abs().max().item():.2e}")
    torch.testing.assert_close(frames[0], frames[1], rtol=0, atol=1e-3)
    # core patches on this MODEL (guidance, context windows, caches, refusals): test_core_patches.py


def test_a_core_model_that_is_not_ours_or_a_batch_is_refused_naming_the_input(comfy_nodes: Any, assets: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    images = torch.rand(2, SIZE, SIZE, 3)
    pos, neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=images, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.0, seed=0).result
    with pytest.raises(ValueError, match="positive"):
        n["StableVideoToCoreModel"].execute(model=model, positive=pos, negative=neg, frames=FRAMES)
    one_pos, one_neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=images[:1], width=SIZE, height=SIZE, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.0, seed=0, loop=True).result
    with pytest.raises(ValueError, match="positive"):
        n["StableVideoToCoreModel"].execute(model=model, positive=one_pos, negative=one_neg, frames=FRAMES)


def test_a_core_model_fed_where_ours_is_expected_is_refused_naming_the_input(comfy_nodes: Any, assets: Path) -> None:
    import asyncio
    import uuid

    import execution

    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "core_model_refused")
    prompt["9"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": hostenv.SD_CKPT}}
    prompt["5"]["inputs"]["model"] = ["9", 0]  # an SD 1.5 core MODEL into the SVD sampler
    valid = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    assert not valid[0]
    text = str(valid[3].get("5", {}).get("errors", valid))
    assert "model" in text and "MODEL" in text and "SVD_MODEL" in text, text


def test_an_empty_video_is_refused_naming_the_input(comfy_nodes: Any, assets: Path) -> None:
    from fractions import Fraction

    from comfy_api.latest import InputImpl, Types

    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    empty = InputImpl.VideoFromComponents(Types.VideoComponents(images=torch.zeros(0, SIZE, SIZE, 3), audio=None,
                                                                frame_rate=Fraction(7)))
    with pytest.raises(ValueError, match="video"):
        n["StableVideoExtend"].execute(model=model, clip_vision=clip, vae=vae, video=empty, frames=3, overlap=1,
                                       clips=1, seed=0, steps=1, min_cfg=1.5, max_cfg=3.0, fps=7, motion_bucket_id=127,
                                       cond_aug=0.02, color_anchor=True, frames_per_chunk=0)


@pytest.mark.slow
def test_core_ksampler_matches_comfyuis_own_svd_nodes_at_full_size(comfy_nodes: Any, assets: Path) -> None:
    """ComfyUI's own pipeline (ImageOnlyCheckpointLoader, SVD_img2vid_Conditioning, KSampler) on a full-size
    random SVD-XT file, against core KSampler on StableVideoToCoreModel's MODEL with the same CONDITIONING
    (ComfyUI's; the conditioning conventions then agree by construction). Prints the difference."""
    import gc

    import comfy.model_management as mm
    from safetensors.torch import save_file

    import svd_core
    from svd_core.weights.random_weights import random_state_dict

    name = "svd_xt_full_random.safetensors"
    sd = random_state_dict(svd_core.SVDConfig.svd_xt_1_1(), seed=0, dtype=torch.float16)
    enc = "conditioner.embedders.3.encoder.encoder."
    for k in [k for k in sd if k.startswith(enc)]:  # core's loader needs first_stage_model.encoder
        sd["first_stage_model.encoder." + k[len(enc):]] = sd[k].clone()
    save_file(sd, str(assets / name))
    del sd
    gc.collect()
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(5))
    c_model, c_clip, c_vae = n["ImageOnlyCheckpointLoader"]().load_checkpoint(name)
    pos, neg, latent = n["SVD_img2vid_Conditioning"]().encode(c_clip, image, c_vae, SIZE, SIZE, FRAMES, 127, 6, 0.0)
    ksampler = n["KSampler"]()
    kw = dict(seed=3, steps=2, cfg=2.5, sampler_name="euler", scheduler="karras", positive=pos, negative=neg,
              latent_image=latent, denoise=1.0)
    (ref,) = ksampler.sample(c_model, **kw)
    del c_model, c_clip, c_vae
    mm.unload_all_models()
    gc.collect()
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=name, weight_dtype="fp32").result
    our_pos, our_neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=6,
        motion_bucket_id=127, cond_aug=0.0, seed=0).result
    core, _, _, _ = n["StableVideoToCoreModel"].execute(model=model, positive=our_pos, negative=our_neg,
                                                          frames=FRAMES).result
    (ours,) = ksampler.sample(core, **kw)  # the same CONDITIONING and LATENT as ComfyUI's run
    diff = (ours["samples"] - ref["samples"]).abs().max().item()
    print(f"\nfull size, core KSampler: ComfyUI's own SVD nodes vs our UNet as a core MODEL, max abs latent "
          f"difference {diff:.2e} (latent scale {ref['samples'].abs().max().item():.2f})")
    assert diff <= 1e-3 * max(1.0, ref["samples"].abs().max().item())
    (assets / name).unlink()
