"""Long videos (svd_core/video/extend.py): lengths and seams, held latents, seeds per video, one step by hand."""
from __future__ import annotations

import pytest
import torch
from einops import rearrange

import svd_core
from svd_core import HeldFrames, SVDConfig, decode_latents, encode_conditioning, extend, generate
from svd_core.diffusion.sampling import initial_noise_scale, karras_sigmas
from svd_core.video.conditioning import clean_latents
from svd_core.video.sample import guided_denoiser
from svd_core.weights.random_weights import random_models

H = W = 64
T = 4



@pytest.fixture(scope="module")
def models() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny(), seed=40)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """n random RGB images on the uint8 grid (so a PIL round trip is exact), (n, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g).float() / 255.0



def _rand_images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_extend_lengths_seams_and_held_latents(models: svd_core.SVDModels) -> None:
    video = generate(models, _rand_images(1, 10), num_frames=T, num_steps=2, seed=1)
    held: list[torch.Tensor] = []
    real_hook = HeldFrames.hook

    def recording_hook(self: HeldFrames, noise: torch.Tensor):  # type: ignore[no-untyped-def]
        held.append(self.latents.clone())
        return real_hook(self, noise)

    HeldFrames.hook = recording_hook  # type: ignore[method-assign]
    try:
        out = extend(models, video, num_frames=5, overlap=2, num_clips=3, num_steps=2, seed=2, color_anchor=False)
    finally:
        HeldFrames.hook = real_hook  # type: ignore[method-assign]
    assert out.shape == (1, T + 3 * (5 - 2), 3, H, W)
    assert torch.equal(out[:, :T], video)  # the given frames first, unchanged
    for k in range(T, out.shape[1]):  # no frame appears twice at a seam
        assert not torch.equal(out[:, k], out[:, k - 1])
    assert len(held) == 3
    expected = rearrange(clean_latents(models.vae, video[0, -2:]), "(b t) c h w -> b t c h w", b=1)
    torch.testing.assert_close(held[0], expected)
    same = extend(models, video, num_frames=5, overlap=2, num_clips=3, num_steps=2, seed=2, color_anchor=False)
    assert torch.equal(out, same)
    anchored = extend(models, video, num_frames=5, overlap=2, num_clips=1, num_steps=2, seed=2)
    mean_in = video.mean(dim=(1, 3, 4))
    mean_new = anchored[:, T:].mean(dim=(1, 3, 4))
    torch.testing.assert_close(mean_new, mean_in, rtol=0, atol=2e-2)  # clamping moves it a little



def test_extend_holds_the_given_latents_exactly_and_seeds_per_video(models: svd_core.SVDModels) -> None:
    images = _rand_images(2, 11)
    video = generate(models, images, num_frames=T, num_steps=1, seed=5)
    latents = torch.randn(2, T, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    both = extend(models, video, num_frames=4, overlap=1, num_steps=1, seed=7, video_latents=latents,
                  color_anchor=False)
    alone = extend(models, video[1:], num_frames=4, overlap=1, num_steps=1, seed=8, video_latents=latents[1:],
                   color_anchor=False)
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=2e-3)  # batch-size rounding only



@pytest.mark.parametrize("overlap", [0, 5, 6, -1])
def test_overlap_of_num_frames_or_more_is_refused_naming_it(models: svd_core.SVDModels, overlap: int) -> None:
    video = torch.rand(1, T, 3, H, W, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="overlap"):
        extend(models, video, num_frames=5, overlap=overlap, num_steps=1)



def test_one_extend_step_equals_the_hand_computation(models: svd_core.SVDModels) -> None:
    """One clip of one Euler step (sigma_0 -> 0): held frames set to held + sigma_0 * noise, the guided
    estimate D, the Euler step to 0, the hook puts the held latents back; decode; drop the overlap."""
    video = torch.rand(1, T, 3, H, W, generator=torch.Generator().manual_seed(12))
    out = extend(models, video, num_frames=T, overlap=2, num_steps=1, seed=3, color_anchor=False)

    g = torch.Generator().manual_seed(3)  # the video's generator: initial noise, then augmentation noise
    noise = torch.randn((1, T, 4, H // 8, W // 8), generator=g)
    aug = torch.randn((1, 3, H, W), generator=g)
    held = rearrange(clean_latents(models.vae, video[0, -2:]), "(b t) c h w -> b t c h w", b=1)
    pos, neg = encode_conditioning(models.image_encoder, models.vae, video[:, -1], fps_id=6, motion_bucket_id=127,
                                   cond_aug=0.02, aug_noise=aug)
    s = models.config.sampling
    sigma0 = karras_sigmas(1, sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho)[0]
    x = noise * initial_noise_scale(sigma0)
    x[:, :2] = held + sigma0 * noise[:, :2]
    guided = guided_denoiser(models.unet, pos, neg, T, svd_core.guidance_scales("linear", T, s.min_cfg, s.max_cfg))
    with torch.inference_mode():
        d = rearrange(guided(rearrange(x, "b t c h w -> (b t) c h w"), sigma0.expand(T)),
                      "(b t) c h w -> b t c h w", b=1)
    z = x + (x - d) / sigma0 * (0.0 - sigma0)  # EDM Algorithm 2 line 8 as written (= D up to rounding at 700)
    z[:, :2] = held  # at sigma 0 the held frames are exactly the video's latents
    new = decode_latents(models.vae, z, decode_chunk_size=T)[:, 2:]
    torch.testing.assert_close(out[:, T:], new, rtol=0, atol=1e-5)

