"""The one-call `generate` (svd_core/video/generate.py): seeds, shapes, the noise and callback seams, bad
input, precision."""
from __future__ import annotations

import re

import pytest
import torch

import svd_core
from svd_core import SVDConfig, generate, load_models, video_seeds
from svd_core.weights.random_weights import random_models

H = W = 64
T = 4



@pytest.fixture(scope="module")
def models() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny(), seed=10)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """n random RGB images on the uint8 grid (so a PIL round trip is exact), (n, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g).float() / 255.0



def test_generate_same_seed_same_video_and_shapes(models):
    image = _images(1, seed=11)
    a = generate(models, image, num_frames=T, num_steps=2, min_cfg=1.0, max_cfg=2.5, seed=42)
    b = generate(models, image, num_frames=T, num_steps=2, min_cfg=1.0, max_cfg=2.5, seed=42)
    c = generate(models, image, num_frames=T, num_steps=2, min_cfg=1.0, max_cfg=2.5, seed=43)
    assert a.shape == (1, T, 3, H, W) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)



def test_video_i_of_a_batch_is_its_image_alone_with_seed_plus_i(models):
    images = _images(3, seed=13)
    batch = generate(models, images, num_frames=T, num_steps=2, min_cfg=1.0, max_cfg=2.5, seed=100)
    for i in range(3):
        alone = generate(models, images[i:i + 1], num_frames=T, num_steps=2, min_cfg=1.0, max_cfg=2.5, seed=100 + i)
        # same noise exactly; batch-size rounding only (see test_batch_of_two_equals_one_by_one)
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=0, atol=2e-3)
    other_seed = generate(models, images[1:2], num_frames=T, num_steps=2, min_cfg=1.0, max_cfg=2.5, seed=100)
    assert (other_seed - batch[1:2]).abs().max() > 1e-2
    assert video_seeds(2**64 - 1, 2) == [2**64 - 1, 0]



def test_generate_noise_replaces_first_draw_only(models):
    image = _images(1, seed=12)
    f = 2 ** (len(models.vae.config.ch_mult) - 1)
    g = torch.Generator().manual_seed(42)
    first = torch.randn((1, T, 4, H // f, W // f), generator=g)
    same = generate(models, image, num_frames=T, num_steps=2, seed=42, noise=first)
    plain = generate(models, image, num_frames=T, num_steps=2, seed=42)
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    other = generate(models, image, num_frames=T, num_steps=2, seed=42, noise=torch.zeros_like(first))
    assert not torch.equal(other, plain)



def test_generate_callback_sees_every_step(models):
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    generate(models, _images(1), num_frames=T, num_steps=3, seed=0,
             callback=lambda step, total, d: seen.append((step, total, tuple(d.shape))))
    f = 2 ** (len(models.vae.config.ch_mult) - 1)
    assert seen == [(i, 3, (1, T, 4, H // f, W // f)) for i in (1, 2, 3)]



@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 3, 100, 64), "multiples of 64"),
    (torch.rand(1, 4, 64, 64), "(B, 3, H, W)"),
    (torch.full((1, 3, 64, 64), 2.0), "[0, 1]"),
    (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
])
def test_generate_refuses_bad_images(models, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(models, bad, num_frames=T, num_steps=1)



def test_generate_with_half_unet_and_fp32_vae(tmp_path):
    """The reference's precision split: UNet and image encoder in half precision, VAE in fp32."""
    from svd_core import save_random_checkpoint

    path = save_random_checkpoint(tmp_path / "svd_xt_1_1.safetensors", SVDConfig.tiny(), seed=2)
    full = load_models(path, dtype=torch.float32)
    mixed = load_models(path, dtype=torch.bfloat16, vae_dtype=torch.float32)
    image = _images(1, seed=13)
    a = generate(full, image, num_frames=T, num_steps=2, seed=1)
    b = generate(mixed, image, num_frames=T, num_steps=2, seed=1)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert (a - b).abs().mean() < 0.05  # bf16 rounding only

