"""Per-frame guidance schedules and the guided denoiser (svd_core.diffusion.guidance)."""
from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import Tensor

from svd_core.diffusion.guidance import GUIDANCE_SCHEDULES, GuidedDenoiser, guidance_scales, triangle_wave
from svd_core.diffusion.sampling import SAMPLERS, get_sigmas_karras


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("linear", [1.0, 1.5, 2.0, 2.5, 3.0]),
        ("triangle", [1.0, 2.0, 3.0, 2.0, 1.0]),
        ("constant", [3.0] * 5),
    ],
)
def test_scales_for_five_frames(schedule: str, expected: list[float]) -> None:
    w = guidance_scales(schedule, 5, 1.0, 3.0)
    assert w.dtype == torch.float32 and w.shape == (5,)
    assert w.tolist() == pytest.approx(expected, abs=1e-6)


def test_svd_xt_1_1_default_linear_schedule() -> None:
    # svd_xt_1_1.yaml: LinearPredictionGuider min_scale 1.5, max_scale 3.0, 25 frames
    w = guidance_scales("linear", 25, 1.5, 3.0)
    assert w[0].item() == 1.5 and w[-1].item() == pytest.approx(3.0)
    torch.testing.assert_close(w[1:] - w[:-1], torch.full((24,), 1.5 / 24))


def test_triangle_even_frame_count_is_symmetric() -> None:
    w = guidance_scales("triangle", 14, 1.0, 3.0)
    torch.testing.assert_close(w, w.flip(0))
    assert w[0].item() == 1.0 and w[-1].item() == pytest.approx(1.0, abs=1e-6)
    assert w.max().item() < 3.0  # the peak at 0.5 falls between frames 6 and 7
    v = torch.linspace(0, 1, 14)
    torch.testing.assert_close(w, 1.0 + 2.0 * (1 - (2 * v - 1).abs()))  # triangle wave of period 1 on [0, 1]


def test_triangle_wave_values() -> None:
    v = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    assert triangle_wave(v).tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 1.0])
    assert triangle_wave(v, 2.0).tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 0.5])


@pytest.mark.parametrize("schedule,expected", [("linear", 1.5), ("triangle", 1.5), ("constant", 3.0)])
def test_single_frame(schedule: str, expected: float) -> None:
    assert guidance_scales(schedule, 1, 1.5, 3.0).tolist() == [expected]  # linspace(a, b, 1) == [a]


def test_unknown_schedule_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'cosine'") as info:
        guidance_scales("cosine", 5, 1.0, 3.0)
    for name in GUIDANCE_SCHEDULES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="num_frames"):
        guidance_scales("linear", 0, 1.0, 3.0)


class FakeBatchedDenoiser:
    """Uncond half -> sin(x) * sigma-term, cond half -> cos(x) + 1; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls.append((tuple(x.shape), tuple(sigma.shape)))
        x_u, x_c = x.chunk(2)
        s_u, s_c = sigma.chunk(2)
        assert torch.equal(x_u, x_c) and torch.equal(s_u, s_c)
        return torch.cat([self.uncond(x_u, s_u), self.cond(x_c)])

    @staticmethod
    def uncond(x: Tensor, sigma: Tensor) -> Tensor:
        return torch.sin(x) * (1 + sigma.view(-1, 1, 1, 1))

    @staticmethod
    def cond(x: Tensor) -> Tensor:
        return torch.cos(x) + 1.0


@pytest.mark.parametrize("schedule", GUIDANCE_SCHEDULES)
def test_guided_denoiser_per_frame_formula(schedule: str) -> None:
    b, t = 2, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b * t, 3, 4, 4, generator=g)
    sigma = torch.rand(b * t, generator=g) + 0.5
    x0, s0 = x.clone(), sigma.clone()
    inner = FakeBatchedDenoiser()
    w = guidance_scales(schedule, t, 1.0, 3.0)
    out = GuidedDenoiser(inner, w)(x, sigma)
    assert inner.calls == [((2 * b * t, 3, 4, 4), (2 * b * t,))]  # one doubled batch per evaluation
    assert torch.equal(x, x0) and torch.equal(sigma, s0)
    d_u, d_c = FakeBatchedDenoiser.uncond(x, sigma), FakeBatchedDenoiser.cond(x)
    for n in range(b * t):  # row n of "(b t)" is frame n % t
        expected = d_u[n] + w[n % t] * (d_c[n] - d_u[n])
        torch.testing.assert_close(out[n], expected)


def test_guided_denoiser_scalar_sigma_and_frame_layout() -> None:
    b, t = 3, 4
    x = torch.randn(b * t, 2, 3, 3)
    w = guidance_scales("linear", t, 1.0, 2.5)
    guided = GuidedDenoiser(FakeBatchedDenoiser(), w)
    out = guided(x, torch.tensor(2.0))
    torch.testing.assert_close(out, guided(x, torch.full((b * t,), 2.0)))
    # the same frame index across videos gets the same scale: check via the "b t" unfolding
    d_u = rearrange(FakeBatchedDenoiser.uncond(x, torch.full((b * t,), 2.0)), "(b t) c h w -> b t c h w", t=t)
    d_c = rearrange(FakeBatchedDenoiser.cond(x), "(b t) c h w -> b t c h w", t=t)
    expected = rearrange(d_u + w.view(1, t, 1, 1, 1) * (d_c - d_u), "b t c h w -> (b t) c h w")
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="frames"):
        guided(torch.randn(5, 2, 3, 3), torch.tensor(2.0))


def test_unit_scale_returns_conditional_prediction() -> None:
    x = torch.randn(6, 2, 3, 3)
    out = GuidedDenoiser(FakeBatchedDenoiser(), guidance_scales("constant", 3, 1.0, 1.0))(x, torch.tensor(1.0))
    torch.testing.assert_close(out, FakeBatchedDenoiser.cond(x))


@pytest.mark.parametrize("name,evals", [("euler", 4), ("heun", 7), ("dpmpp_2m", 4)])
def test_samplers_call_inner_denoiser_once_per_evaluation(name: str, evals: int) -> None:
    inner = FakeBatchedDenoiser()
    guided = GuidedDenoiser(inner, guidance_scales("linear", 3, 1.0, 3.0))
    SAMPLERS[name](guided, torch.randn(6, 2, 3, 3), get_sigmas_karras(4, sigma_max=10.0))
    assert inner.calls == [((12, 2, 3, 3), (12,))] * evals
