"""First-to-last frame (ViBiDSampler) and seamless loops (svd_core/video/keyframes.py) on the tiny model: one
step against a hand computation, the ends, lengths, fitting and refusals."""
from __future__ import annotations

import pytest
import torch
from einops import rearrange

import svd_core
from svd_core import SVDConfig, decode_latents, encode_conditioning, encode_keyframes, generate, sample_keyframes
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


def test_one_vibid_step_equals_the_hand_computation(models: svd_core.SVDModels) -> None:
    """One step of Algorithm 1 written out: forward CFG++ towards the last frame, re-noise, reversed step."""
    first, last = _rand_images(1, 2), _rand_images(1, 3)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn((1, T, 4, H // 8, W // 8), generator=g)
    pos, neg = encode_conditioning(models.image_encoder, models.vae, first, fps_id=6, motion_bucket_id=127,
                                   cond_aug=0.02, aug_noise=torch.zeros(1, 3, H, W))
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
    image, end = _rand_images(1, 6), _rand_images(1, 7)
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
    image = _rand_images(1, 8)
    wide = torch.rand(1, 3, 48, 160, generator=torch.Generator().manual_seed(9))
    a = generate(models, image, num_frames=T, num_steps=1, end_image=wide, resize_mode="crop")
    b = generate(models, image, num_frames=T, num_steps=1,
                 end_image=svd_core.image_ops.fit_image(wide, W, H, "crop"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="end_image and loop"):
        generate(models, image, num_frames=T, num_steps=1, end_image=image, loop=True)
    with pytest.raises(ValueError, match="end_image"):
        generate(models, image, num_frames=T, num_steps=1, end_image=torch.full((1, 3, H, W), float("nan")))

