"""Sampling a video's latents (svd_core/video/sample.py): sample_video's seams (denoiser wrapper, held frames),
each sampler's declared noise needs, partial denoising from a latent, churn."""
from __future__ import annotations

import inspect

import pytest
import torch
from einops import rearrange

import svd_core
from svd_core import HeldFrames, SVDConfig, build_models, sample_video
from svd_core.diffusion.sampling import SAMPLERS, initial_noise_scale, karras_sigmas, randn_noise_sampler, sample_euler
from svd_core.video.conditioning import Conditioning
from svd_core.video.sample import guided_denoiser
from svd_core.weights.random_weights import randomize_

B, T, C, HW = 2, 4, 4, 8


@pytest.fixture(scope="module")
def unet() -> svd_core.UNet:
    return randomize_(build_models(SVDConfig.tiny(), dtype=torch.float32).unet, 21).eval()


def _cond(unet: svd_core.UNet, seed: int) -> tuple[Conditioning, Conditioning]:
    g = torch.Generator().manual_seed(seed)
    pos = Conditioning(crossattn=torch.randn(B, 1, unet.config.context_dim, generator=g),
                       concat=torch.randn(B, C, HW, HW, generator=g),
                       vector=torch.tensor([[6.0, 127.0, 0.02]] * B))
    neg = Conditioning(crossattn=torch.zeros_like(pos.crossattn), concat=torch.zeros_like(pos.concat),
                       vector=pos.vector)
    return pos, neg


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(B, T, C, HW, HW, generator=torch.Generator().manual_seed(seed))


def test_denoise_below_one_starts_from_the_latent_on_the_tail_of_a_longer_schedule(unet: svd_core.UNet) -> None:
    pos, neg = _cond(unet, 1)
    noise, latent = _noise(2), _noise(3) * 0.5
    out = sample_video(unet, pos, neg, noise, num_steps=2, min_cfg=1.5, max_cfg=3.0, denoise=0.5, latent=latent)
    # by hand: sigmas are the last 3 of a 4-step schedule; start at latent + noise * sigma_0 (EDM), Euler
    sigmas = karras_sigmas(4, sigma_min=0.002, sigma_max=700.0, rho=7.0)[-3:]
    torch.testing.assert_close(karras_sigmas(2, sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=0.5), sigmas)
    denoiser = guided_denoiser(unet, pos, neg, T, svd_core.guidance_scales("linear", T, 1.5, 3.0))
    x = rearrange(latent + noise * sigmas[0], "b t c h w -> (b t) c h w")
    with torch.inference_mode():
        expected = sample_euler(denoiser, x, sigmas)
    torch.testing.assert_close(out, rearrange(expected, "(b t) c h w -> b t c h w", t=T), rtol=0, atol=1e-6)
    full = sample_video(unet, pos, neg, noise, num_steps=2, min_cfg=1.5, max_cfg=3.0)
    assert not torch.allclose(out, full)


def test_churn_adds_seeded_noise_through_sample_video(unet: svd_core.UNet) -> None:
    pos, neg = _cond(unet, 4)
    noise = _noise(5)
    kw = dict(num_steps=3, min_cfg=1.5, max_cfg=3.0)
    plain = sample_video(unet, pos, neg, noise, **kw)
    churn = [sample_video(unet, pos, neg, noise, s_churn=1.0, generator=torch.Generator().manual_seed(9), **kw)
             for _ in range(2)]
    torch.testing.assert_close(churn[0], churn[1], rtol=0, atol=0)  # the generator decides
    assert (churn[0] - plain).abs().max() > 1e-3
    # the same as Algorithm 2 by hand: gamma = min(S_churn / N, sqrt(2) - 1) on every step here
    sigmas = karras_sigmas(3, sigma_min=0.002, sigma_max=700.0, rho=7.0)
    denoiser = guided_denoiser(unet, pos, neg, T, svd_core.guidance_scales("linear", T, 1.5, 3.0))
    x = rearrange(noise, "b t c h w -> (b t) c h w") * initial_noise_scale(sigmas[0])
    with torch.inference_mode():
        expected = sample_euler(denoiser, x, sigmas, s_churn=1.0,
                                noise_sampler=randn_noise_sampler(torch.Generator().manual_seed(9)))
    torch.testing.assert_close(churn[0], rearrange(expected, "(b t) c h w -> b t c h w", t=T), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="s_churn"):
        sample_video(unet, pos, neg, noise, sampler="dpmpp_2m", s_churn=1.0, **kw)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_held_frames_are_held_exactly_at_every_step(unet: svd_core.UNet, sampler: str) -> None:
    pos, neg = _cond(unet, 6)
    noise = _noise(7)
    held = torch.randn(B, 2, C, HW, HW, generator=torch.Generator().manual_seed(8))
    frames = (0, 2)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(denoiser: svd_core.diffusion.sampling.Denoiser) -> svd_core.diffusion.sampling.Denoiser:
        def d(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            seen.append((x.clone(), sigma[0].clone()))
            return denoiser(x, sigma)
        return d

    out = sample_video(unet, pos, neg, noise, num_steps=3, min_cfg=1.5, max_cfg=3.0, sampler=sampler,
                       hold=HeldFrames(frames, held), denoiser_wrapper=recording)
    assert torch.equal(out[:, list(frames)], held)  # exactly the given latents at the end
    for x, sigma in seen:
        video = rearrange(x, "(b t) c h w -> b t c h w", t=T)
        torch.testing.assert_close(video[:, list(frames)], held + sigma * noise[:, list(frames)], rtol=0, atol=0)
    free = sample_video(unet, pos, neg, noise, num_steps=3, min_cfg=1.5, max_cfg=3.0, sampler=sampler)
    assert not torch.allclose(out[:, [1, 3]], free[:, [1, 3]])  # the free frames follow the held ones


def test_denoiser_wrapper_that_passes_through_changes_nothing(unet: svd_core.UNet) -> None:
    pos, neg = _cond(unet, 10)
    noise = _noise(11)
    kw = dict(num_steps=2, min_cfg=1.5, max_cfg=3.0)
    calls: list[int] = []

    def passing(denoiser: svd_core.diffusion.sampling.Denoiser) -> svd_core.diffusion.sampling.Denoiser:
        def d(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return denoiser(x, sigma)
        return d

    assert torch.equal(sample_video(unet, pos, neg, noise, denoiser_wrapper=passing, **kw),
                       sample_video(unet, pos, neg, noise, **kw))
    assert calls == [B * T, B * T]


def test_bad_holds_are_refused_naming_them(unet: svd_core.UNet) -> None:
    pos, neg = _cond(unet, 12)
    noise = _noise(13)
    for hold, what in ((HeldFrames((T,), torch.zeros(B, 1, C, HW, HW)), "hold.frames"),
                       (HeldFrames((0, 0), torch.zeros(B, 2, C, HW, HW)), "hold.frames"),
                       (HeldFrames((0,), torch.zeros(B, 2, C, HW, HW)), "hold.latents")):
        with pytest.raises(ValueError, match=what):
            sample_video(unet, pos, neg, noise, num_steps=1, min_cfg=1.0, max_cfg=1.0, hold=hold)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_declares_its_noise_needs(name: str) -> None:
    spec = SAMPLERS[name]
    params = inspect.signature(spec.fn).parameters
    assert ("s_churn" in params and "s_tmin" in params and "s_tmax" in params) == spec.churn
    assert ("noise_sampler" in params and "s_noise" in params) == spec.needs_noise
    assert spec.schedule in svd_core.diffusion.sampling.SCHEDULES
    assert "callback" in params and "step_hook" in params
