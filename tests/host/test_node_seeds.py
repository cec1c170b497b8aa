"""A seed per video in the nodes, in-process: video i of a batch is the video its image gives alone with
seed + i (both the augmentation and the latent noise), and ComfyUI's batch_index picks the same seed."""
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


def _nodes(comfy_nodes: Any) -> dict[str, Any]:
    return comfy_nodes.NODE_CLASS_MAPPINGS


def _videos(comfy_nodes: Any, images: torch.Tensor, cond_seed: int, sample_seed: int, videos: int = 1,
            pick: int | None = None) -> torch.Tensor:
    """images (B, H, W, 3) -> frames (B*T, H, W, 3) through the pack's nodes; `pick` selects one video of
    the empty latent with core's LatentFromBatch (which writes batch_index) before sampling."""
    return hostenv.node_videos(_nodes(comfy_nodes), images, size=SIZE, frames=FRAMES, cond_seed=cond_seed,
                               sample_seed=sample_seed, videos=videos, pick=pick)["frames"]


def test_video_i_of_a_batch_is_its_image_alone_with_seed_plus_i(comfy_nodes: Any, assets: Path) -> None:
    images = torch.rand(3, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    batch = _videos(comfy_nodes, images, cond_seed=10, sample_seed=20).reshape(3, FRAMES, SIZE, SIZE, 3)
    for i in range(3):
        alone = _videos(comfy_nodes, images[i:i + 1], cond_seed=10 + i, sample_seed=20 + i)
        torch.testing.assert_close(batch[i], alone, rtol=0, atol=2e-3)  # batch-size rounding only
    other = _videos(comfy_nodes, images[1:2], cond_seed=10, sample_seed=20)
    assert (other - batch[1]).abs().max() > 1e-2


def test_batch_index_of_latent_from_batch_keeps_the_videos_seed(comfy_nodes: Any, assets: Path) -> None:
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(4))
    three = _videos(comfy_nodes, image, cond_seed=1, sample_seed=30, videos=3).reshape(3, FRAMES, SIZE, SIZE, 3)
    picked = _videos(comfy_nodes, image, cond_seed=1, sample_seed=30, videos=3, pick=2)
    torch.testing.assert_close(picked, three[2], rtol=0, atol=2e-3)  # batch-size rounding only
    assert (three[0] - three[2]).abs().max() > 1e-2


def test_a_latent_input_renoised_with_denoise_below_one(comfy_nodes: Any, assets: Path) -> None:
    """The sampler node on the LATENT of an earlier run, denoise 0.5: the same as svd_core.sample_video on
    that latent (times the scale factor) with the node's seeded noise, and unlike a full denoise."""
    import svd_core

    n = _nodes(comfy_nodes)
    model, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(6))
    pos, neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.02, seed=0).result
    (empty,) = n["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=FRAMES, batch_size=1).result
    common = dict(model=model, positive=pos, negative=neg, steps=2, min_cfg=1.5, max_cfg=3.0, guidance="linear",
                  sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0)
    (first,) = n["StableVideoSampler"].execute(latent=empty, seed=1, denoise=1.0, **common).result
    (again,) = n["StableVideoSampler"].execute(latent=first, seed=2, denoise=0.5, **common).result
    (full,) = n["StableVideoSampler"].execute(latent=first, seed=2, denoise=1.0, **common).result
    scale = model.config.vae.scale_factor
    start = first["samples"].reshape(1, FRAMES, *first["samples"].shape[1:]) * scale
    noise = torch.randn(start.shape[1:], generator=torch.Generator().manual_seed(2))[None]
    expected = svd_core.sample_video(model.module, pos, neg, noise, num_steps=2, min_cfg=1.5, max_cfg=3.0,
                                     denoise=0.5, latent=start) / scale
    torch.testing.assert_close(again["samples"], expected.reshape(again["samples"].shape), rtol=0, atol=1e-6)
    assert again["svd_frames"] == FRAMES
    assert (again["samples"] - full["samples"]).abs().max() > 1e-3
