"""First-to-last frame (ViBiDSampler), seamless loops and long videos on the tiny model: one step of each
against a hand computation, the plain path unchanged, lengths and seams, seeds, bad input."""
from __future__ import annotations

import pytest
import torch
from einops import rearrange

import svd_core
from svd_core import SVDConfig, extend, generate
from svd_core.video.keyframes import clean_latents, encode_keyframes, sample_keyframes
from svd_core.video.pipeline import HeldFrames, decode_latents, encode_conditioning, guided_denoiser, sample_video, video_seeds
from svd_core.weights.random_weights import random_models
from svd_core.diffusion.sampling import initial_noise_scale, karras_sigmas

H = W = 64
T = 4


@pytest.fixture(scope="module")
def models() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny(), seed=40)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_without_end_image_loop_or_hold_generate_is_the_plain_pipeline_bit_for_bit(models: svd_core.SVDModels) -> None:
    images = _images(2, 1)
    out = generate(models, images, num_frames=T, num_steps=2, seed=9)
    # the same thing spelled out with the parts: per-video generators, latent noise then augmentation noise
    gens = [torch.Generator().manual_seed(s) for s in video_seeds(9, 2)]
    noise = torch.stack([torch.randn((T, 4, H // 8, W // 8), generator=g) for g in gens])
    aug = torch.stack([torch.randn((3, H, W), generator=g) for g in gens])
    pos, neg = encode_conditioning(models.image_encoder, models.vae, images, fps_id=6, motion_bucket_id=127,
                                   cond_aug=0.02, aug_noise=aug)
    s = models.config.sampling
    z = sample_video(models.unet, pos, neg, noise, num_steps=2, min_cfg=s.min_cfg, max_cfg=s.max_cfg)
    assert torch.equal(out, decode_latents(models.vae, z, decode_chunk_size=T))


def test_one_vibid_step_equals_the_hand_computation(models: svd_core.SVDModels) -> None:
    """One step of Algorithm 1 written out: forward CFG++ towards the last frame, re-noise, reversed step."""
    first, last = _images(1, 2), _images(1, 3)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn((1, T, 4, H // 8, W // 8), generator=g)
    pos, neg = encode_conditioning(models.image_encoder, models.vae, first, fps_id=6, motion_bucket_id=127, cond_aug=0.02,
                                   aug_noise=torch.zeros(1, 3, H, W))
    kf = encode_keyframes(models.image_encoder, models.vae, first, last, fps_id=6, motion_bucket_id=127, cond_aug=0.02,
                          end_aug_noise=torch.zeros(1, 3, H, W))
    out = sample_keyframes(models.unet, pos, neg, kf, noise, num_steps=1, cfg_scale=1.5, cfg_scale_flip=2.0,
                           generators=[torch.Generator().manual_seed(5)])

    sigmas = karras_sigmas(1, sigma_min=0.002, sigma_max=700.0, rho=7.0)
    s, s_next = sigmas[0], sigmas[1]  # 700 -> 0
    fwd = guided_denoiser(models.unet, pos, neg, T, torch.full((T,), 1.5))
    bwd = guided_denoiser(models.unet, kf.end_positive, kf.end_negative, T, torch.full((T,), 2.0))
    x = rearrange(noise, "b t c h w -> (b t) c h w") * initial_noise_scale(s)
    sig = s.expand(T)
    with torch.inference_mode():
        d_u, d_c = fwd.pair(x, sig)
        d = d_u + 1.5 * (d_c - d_u)
        d[-1] = kf.end_latent[0]  # the last frame is known
        x = d + (x - d_u) / s * s_next
        eps = torch.randn((T, 4, H // 8, W // 8), generator=torch.Generator().manual_seed(5))
        x = x + eps * (s**2 - s_next**2).sqrt()
        x = x.flip(0)  # time reversed: the first frame is now last
        d_u, d_c = bwd.pair(x, sig)
        d = d_u + 2.0 * (d_c - d_u)
        d[-1] = kf.start_latent[0]
        x = (d + (x - d_u) / s * s_next).flip(0)
    torch.testing.assert_close(out[0], x, rtol=0, atol=1e-5)
    # at sigma 0 both ends are the known frames exactly
    torch.testing.assert_close(out[0, 0], kf.start_latent[0], rtol=0, atol=1e-6)


def test_end_image_ends_the_video_and_loops_drop_the_repeated_frame(models: svd_core.SVDModels) -> None:
    image, end = _images(1, 6), _images(1, 7)
    video = generate(models, image, num_frames=T, num_steps=2, end_image=end, seed=3)
    assert video.shape == (1, T, 3, H, W)
    again = generate(models, image, num_frames=T, num_steps=2, end_image=end, seed=3)
    assert torch.equal(video, again)  # the same seed gives the same video
    assert not torch.equal(video, generate(models, image, num_frames=T, num_steps=2, end_image=end, seed=4))
    # the ends are decoded from the known latents: closer to those frames' own decodings than to the other end's
    start_frame = decode_latents(models.vae, clean_latents(models.vae, image)[:, None], decode_chunk_size=1)[0, 0]
    end_frame = decode_latents(models.vae, clean_latents(models.vae, end)[:, None], decode_chunk_size=1)[0, 0]
    assert (video[0, -1] - end_frame).abs().mean() < (video[0, -1] - start_frame).abs().mean()

    loop = generate(models, image, num_frames=T, num_steps=2, loop=True, seed=3)
    assert loop.shape == (1, T - 1, 3, H, W)  # the second copy of the first frame is gone
    assert (loop[0, -1] - loop[0, 0]).abs().max() > 1e-3  # played round, the seam shows no frame twice


def test_end_image_of_another_size_is_fitted_and_bad_combinations_refused(models: svd_core.SVDModels) -> None:
    image = _images(1, 8)
    wide = torch.rand(1, 3, 48, 160, generator=torch.Generator().manual_seed(9))
    a = generate(models, image, num_frames=T, num_steps=1, end_image=wide, resize_mode="crop")
    b = generate(models, image, num_frames=T, num_steps=1,
                 end_image=svd_core.image_ops.fit_image(wide, W, H, "crop"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="end_image and loop"):
        generate(models, image, num_frames=T, num_steps=1, end_image=image, loop=True)
    with pytest.raises(ValueError, match="end_image"):
        generate(models, image, num_frames=T, num_steps=1, end_image=torch.full((1, 3, H, W), float("nan")))


def test_extend_lengths_seams_and_held_latents(models: svd_core.SVDModels) -> None:
    video = generate(models, _images(1, 10), num_frames=T, num_steps=2, seed=1)
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
    torch.testing.assert_close(held[0], rearrange(clean_latents(models.vae, video[0, -2:]), "(b t) c h w -> b t c h w", b=1))
    same = extend(models, video, num_frames=5, overlap=2, num_clips=3, num_steps=2, seed=2, color_anchor=False)
    assert torch.equal(out, same)
    anchored = extend(models, video, num_frames=5, overlap=2, num_clips=1, num_steps=2, seed=2)
    mean_in = video.mean(dim=(1, 3, 4))
    mean_new = anchored[:, T:].mean(dim=(1, 3, 4))
    torch.testing.assert_close(mean_new, mean_in, rtol=0, atol=2e-2)  # clamping moves it a little


def test_extend_holds_the_given_latents_exactly_and_seeds_per_video(models: svd_core.SVDModels) -> None:
    images = _images(2, 11)
    video = generate(models, images, num_frames=T, num_steps=1, seed=5)
    latents = torch.randn(2, T, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    both = extend(models, video, num_frames=4, overlap=1, num_steps=1, seed=7, video_latents=latents, color_anchor=False)
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
        d = rearrange(guided(rearrange(x, "b t c h w -> (b t) c h w"), sigma0.expand(T)), "(b t) c h w -> b t c h w", b=1)
    z = x + (x - d) / sigma0 * (0.0 - sigma0)  # EDM Algorithm 2 line 8 as written (= D up to rounding at 700)
    z[:, :2] = held  # at sigma 0 the held frames are exactly the video's latents
    new = decode_latents(models.vae, z, decode_chunk_size=T)[:, 2:]
    torch.testing.assert_close(out[:, T:], new, rtol=0, atol=1e-5)
