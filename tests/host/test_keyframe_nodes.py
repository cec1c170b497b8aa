"""The keyframe, loop and extend nodes in-process: what they return, and what they refuse."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
SIZE, FRAMES = 64, 4


def _start(comfy_nodes: Any, **cond: Any) -> tuple[Any, ...]:
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(1))
    r = hostenv.node_videos(comfy_nodes.NODE_CLASS_MAPPINGS, image, size=SIZE, frames=FRAMES, **cond)
    return r["model"], r["clip"], r["vae"], r["positive"], r["latent"], r["frames"]


def test_end_image_of_another_size_and_loops_through_the_nodes(comfy_nodes: Any, assets: Path) -> None:
    end = torch.rand(1, 48, 80, 3, generator=torch.Generator().manual_seed(2))  # another size: fitted
    _, _, _, pos, _, frames = _start(comfy_nodes, end_image=end)
    assert pos.keyframes is not None and not pos.keyframes.loop
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    _, _, _, pos, z, frames = _start(comfy_nodes, loop=True)
    assert pos.keyframes.loop and z["svd_loop"]
    assert frames.shape == (FRAMES - 1, SIZE, SIZE, 3)  # the repeated first frame is dropped
    assert (frames[-1] - frames[0]).abs().max() > 1e-3


def test_loop_with_end_image_and_keyframes_with_denoise_are_refused_naming_them(comfy_nodes: Any, assets: Path) -> None:
    end = torch.rand(1, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="end_image and loop exclude each other"):
        _start(comfy_nodes, end_image=end, loop=True)
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae, pos, z, _ = _start(comfy_nodes, loop=True)
    neg = pos  # any negative: refused before use
    with pytest.raises(ValueError, match="denoise"):
        n["StableVideoSampler"].execute(
            model=model, positive=pos, negative=neg, latent=z, seed=0, steps=2, min_cfg=1.5, max_cfg=3.0,
            guidance="linear", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=0.5)


def test_extend_from_images_or_from_the_latent(comfy_nodes: Any, assets: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae, _, z, frames = _start(comfy_nodes)
    common = dict(model=model, clip_vision=clip, vae=vae, frames=3, overlap=1, clips=2, seed=0, steps=1, min_cfg=1.5,
                  max_cfg=3.0, fps=7, motion_bucket_id=127, cond_aug=0.02, color_anchor=True, frames_per_chunk=0)
    (from_images,) = n["StableVideoExtend"].execute(images=frames, latent=z, **common).result
    assert from_images.shape == (FRAMES + 2 * (3 - 1), SIZE, SIZE, 3)
    assert torch.equal(from_images[:FRAMES], frames)
    (from_latent,) = n["StableVideoExtend"].execute(latent=z, **common).result
    torch.testing.assert_close(from_latent, from_images, rtol=0, atol=1e-5)  # the decoded latent is the frames
    (images_only,) = n["StableVideoExtend"].execute(images=frames, **common).result
    assert images_only.shape == from_images.shape
    assert n["StableVideoExtend"].validate_inputs(frames=3, overlap=3) != True  # noqa: E712
    assert "overlap" in n["StableVideoExtend"].validate_inputs(frames=3, overlap=5)
    with pytest.raises(ValueError, match="images, video and latent"):
        n["StableVideoExtend"].execute(**common)


def test_decode_returns_a_core_video_at_the_conditionings_fps(comfy_nodes: Any, assets: Path, tmp_path: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    pos, neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=12,
        motion_bucket_id=127, cond_aug=0.02, seed=0).result
    (latent,) = n["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=FRAMES, batch_size=1).result
    (z,) = n["StableVideoSampler"].execute(
        model=model, positive=pos, negative=neg, latent=latent, seed=0, steps=1, min_cfg=1.5, max_cfg=3.0,
        guidance="linear", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=1.0).result
    assert z["svd_fps"] == 12
    images, video = n["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result
    parts = video.get_components()
    assert parts.frame_rate == 12 and torch.equal(parts.images, images)
    out = tmp_path / "v.mp4"
    video.save_to(str(out), format="mp4", codec="h264")  # what core's SaveVideo calls
    assert hostenv.count_frames(out) == FRAMES


def test_the_loader_node_loads_a_comfyui_saved_checkpoint(comfy_nodes: Any, assets: Path) -> None:
    import svd_core

    name = "svd_tiny_comfyui_saved.safetensors"
    svd_core.save_random_checkpoint(assets / name, svd_core.SVDConfig.tiny(), seed=0, layout="comfyui")
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=name, weight_dtype="fp32").result
    official = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    ours, theirs = model.module.state_dict(), official[0].module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(vae.module.quant_conv.weight.flatten(1), torch.eye(8))  # ComfyUI's encoding: no quant_conv


def test_the_empty_latent_takes_its_size_from_a_wired_conditioning(comfy_nodes: Any, assets: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    image = torch.rand(1, 100, 150, 3)
    pos, _ = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=128, height=64, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.02, seed=0).result
    (latent,) = n["StableVideoEmptyLatent"].execute(width=1024, height=576, frames=2, batch_size=1,
                                                     conditioning=pos).result
    assert latent["samples"].shape == (2, 4, 64 // 8, 128 // 8)  # the widgets' 1024x576 is ignored
    (plain,) = n["StableVideoEmptyLatent"].execute(width=192, height=64, frames=2, batch_size=1).result
    assert plain["samples"].shape == (2, 4, 8, 24)
