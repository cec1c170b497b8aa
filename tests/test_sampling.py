"""EDM preconditioning, Karras schedule and samplers (svd_core.diffusion.edm, svd_core.diffusion.sampling).

Accuracy is checked against the exact probability-flow ODE solution for Gaussian data
x0 ~ N(mu, s_d^2 I): the ideal denoiser is D(x, sigma) = mu + s_d^2/(s_d^2+sigma^2) (x - mu) and
dx/dsigma = (x - D)/sigma has the solution x(sigma) = mu + (x_T - mu) sqrt(s_d^2+sigma^2)/sqrt(s_d^2+sigma_T^2).
Parity with diffusers' EulerDiscreteScheduler (the configuration diffusers uses for SVD) is the
independent oracle for the schedule and the v-prediction scalings.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from svd_core.diffusion.edm import VDenoiser, edm_v_scalings
from svd_core.diffusion.sampling import (
    SAMPLERS,
    get_sigmas_karras,
    initial_noise_scale,
    randn_noise_sampler,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_lcm,
)

MU, S_D = 0.3, 0.5


def noise_kwargs(name: str, seed: int = 0) -> dict[str, object]:
    """What a sampler that draws fresh noise needs (SAMPLERS[name].renoise); nothing for the others."""
    return {"noise_sampler": randn_noise_sampler(torch.Generator().manual_seed(seed))} if SAMPLERS[name].renoise else {}


def gaussian_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    s = sigma.to(x.dtype).view((-1,) + (1,) * (x.ndim - 1))
    return MU + S_D**2 / (S_D**2 + s**2) * (x - MU)


def exact_solution(x_T: Tensor, sigma_T: float, sigma: float) -> Tensor:
    return MU + (x_T - MU) * math.sqrt(S_D**2 + sigma**2) / math.sqrt(S_D**2 + sigma_T**2)


def rel_error(sampler_name: str, n: int, to_zero: bool = True, sigma_max: float = 700.0) -> float:
    """Max error at the end of the schedule relative to the size of the exact (x - mu), in float64."""
    g = torch.Generator().manual_seed(0)
    sigmas = get_sigmas_karras(n, sigma_max=sigma_max).double()
    if not to_zero:
        sigmas = sigmas[:-1]  # end at sigma_min: isolates the ODE error from the final jump to 0
    x_T = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * initial_noise_scale(sigmas[0]).double()
    out = SAMPLERS[sampler_name](gaussian_denoiser, x_T, sigmas)
    ref = exact_solution(x_T, float(sigmas[0]), float(sigmas[-1]))
    return ((out - ref).abs().max() / (ref - MU).abs().max()).item()


def diffusers_euler():  # type: ignore[no-untyped-def]
    diffusers = pytest.importorskip("diffusers")
    # the scheduler config diffusers ships for SVD-XT (scheduler/scheduler_config.json)
    return diffusers.EulerDiscreteScheduler(
        use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0, timestep_type="continuous",
        prediction_type="v_prediction", timestep_spacing="leading", num_train_timesteps=1000,
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
    )


def fake_v_network(x_in: Tensor, c_noise: Tensor) -> Tensor:
    """A nonlinear stand-in for the UNet that depends on both inputs."""
    return torch.sin(3.0 * x_in) + 0.7 * c_noise.to(x_in.dtype).view(-1, 1, 1, 1) * x_in


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize("n", [1, 2, 14, 25])
def test_karras_schedule_formula_and_shape(n: int) -> None:
    s = get_sigmas_karras(n)
    assert s.dtype == torch.float32 and s.shape == (n + 1,)
    assert s[0].item() == pytest.approx(700.0, rel=1e-6)
    assert s[-1].item() == 0.0
    if n > 1:
        assert s[-2].item() == pytest.approx(0.002, rel=1e-5)
    assert bool((s[1:] < s[:-1]).all())
    i = torch.arange(n, dtype=torch.float64)
    ramp = i / (n - 1) if n > 1 else i
    lo, hi = 0.002 ** (1 / 7), 700.0 ** (1 / 7)
    expected = (hi + ramp * (lo - hi)) ** 7  # EDM eq. 5
    # float32 ramp raised to the 7th power: measured up to 3.5e-6 relative near sigma_min
    torch.testing.assert_close(s[:-1].double(), expected, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("n", [2, 14, 25, 50])
def test_karras_schedule_matches_diffusers(n: int) -> None:
    sched = diffusers_euler()
    sched.set_timesteps(n)
    ours = get_sigmas_karras(n)
    torch.testing.assert_close(ours, sched.sigmas.float(), rtol=1e-5, atol=0.0)
    # diffusers' "leading" spacing scales the start noise by sqrt(sigma_max^2 + 1), like sgm
    assert initial_noise_scale(ours[0]).item() == pytest.approx(float(sched.init_noise_sigma), rel=1e-6)


def test_karras_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps"):
        get_sigmas_karras(0)
    with pytest.raises(ValueError, match="sigma_min"):
        get_sigmas_karras(5, sigma_min=10.0, sigma_max=1.0)


def test_initial_noise_scale() -> None:
    s = torch.tensor(700.0)
    assert initial_noise_scale(s).item() == pytest.approx(math.sqrt(1.0 + 700.0**2), rel=1e-7)
    assert initial_noise_scale(torch.tensor(0.0)).item() == 1.0


# ---------------------------------------------------------------- preconditioning


def test_edm_v_scalings_formulas_and_diffusers_timestep() -> None:
    sigma = get_sigmas_karras(25)[:-1]
    c_skip, c_out, c_in, c_noise = edm_v_scalings(sigma.half())  # computed in fp32 whatever comes in
    assert all(c.dtype == torch.float32 for c in (c_skip, c_out, c_in, c_noise))
    s = sigma.half().double()
    torch.testing.assert_close(c_skip.double(), 1 / (s**2 + 1), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(c_out.double(), -s / (s**2 + 1).sqrt(), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(c_in.double(), 1 / (s**2 + 1).sqrt(), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(c_noise.double(), s.log() / 4, rtol=1e-6, atol=1e-7)
    sched = diffusers_euler()
    sched.set_timesteps(25)
    torch.testing.assert_close(edm_v_scalings(sched.sigmas[:-1])[3], sched.timesteps.float(), rtol=1e-6, atol=1e-7)


def test_vdenoiser_equals_formula_and_casts_around_half_network() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, 5, generator=g) * 10
    sigma = torch.tensor([0.1, 3.0, 60.0])
    seen: dict[str, torch.dtype] = {}

    def net(x_in: Tensor, c_noise: Tensor) -> Tensor:
        seen["x_in"], seen["c_noise"] = x_in.dtype, c_noise.dtype
        return fake_v_network(x_in.float(), c_noise).to(x_in.dtype)

    for dtype in (torch.float32, torch.bfloat16):
        out = VDenoiser(net, dtype=dtype)(x, sigma)
        assert out.dtype == torch.float32 and seen["x_in"] == dtype and seen["c_noise"] == torch.float32
        s = sigma.view(-1, 1, 1, 1)
        x_in = (x / (s**2 + 1).sqrt()).to(dtype)  # only the network's input and output are rounded
        F_x = fake_v_network(x_in.float(), sigma.log() / 4).to(dtype).float()
        expected = x / (s**2 + 1) - s / (s**2 + 1).sqrt() * F_x  # EDM eq. 7 in float32
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # a scalar sigma is broadcast over the batch
    torch.testing.assert_close(VDenoiser(net)(x, torch.tensor(3.0)), VDenoiser(net)(x, torch.full((3,), 3.0)))


def test_vdenoiser_matches_diffusers_v_prediction_step() -> None:
    sched = diffusers_euler()
    sched.set_timesteps(6)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 3, 3, generator=g) * 5
    den = VDenoiser(fake_v_network)
    for t, sigma in zip(sched.timesteps, sched.sigmas[:-1], strict=True):
        model_in = sched.scale_model_input(x, t)  # c_in * x
        v = fake_v_network(model_in, t.expand(2))  # t = c_noise
        x0 = sched.step(v, t, x).pred_original_sample  # c_skip * x + c_out * v
        torch.testing.assert_close(den(x, sigma), x0, rtol=1e-5, atol=1e-5)


def test_euler_trajectory_matches_diffusers_pipeline_loop() -> None:
    """Our sample_euler(VDenoiser(F)) against diffusers' SVD denoising loop with the same F."""
    n = 8
    sched = diffusers_euler()
    sched.set_timesteps(n)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4, 3, 3, generator=g)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        v = fake_v_network(sched.scale_model_input(x, t), t.expand(2))
        x = sched.step(v, t, x).prev_sample
    sigmas = get_sigmas_karras(n)
    ours = sample_euler(VDenoiser(fake_v_network), noise * initial_noise_scale(sigmas[0]), sigmas)
    err = (ours - x).abs().max().item()
    assert err < 1e-4, err  # measured 0 to a few e-6 (float32; different operation order)


# ---------------------------------------------------------------- samplers: accuracy


@pytest.mark.parametrize(
    "name,n,tol",
    [
        # measured relative errors (float64, sigma_max 700): euler 200 steps 2.1e-2,
        # heun 50 steps 1.34e-2, dpmpp_2m 50 steps 1.45e-2 (euler at 50 steps: 8.2e-2)
        ("euler", 200, 3e-2),
        ("heun", 50, 2e-2),
        ("dpmpp_2m", 50, 2e-2),
    ],
)
def test_sampler_reaches_exact_solution(name: str, n: int, tol: float) -> None:
    err = rel_error(name, n)
    assert err < tol, (name, n, err)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m"])
def test_second_order_beats_euler_at_equal_steps(name: str) -> None:
    assert rel_error(name, 50) < rel_error("euler", 50) / 4  # measured ratio ~6


@pytest.mark.parametrize("name,n,order", [("euler", 80, 1), ("heun", 160, 2), ("dpmpp_2m", 160, 2)])
def test_order_of_convergence(name: str, n: int, order: int) -> None:
    """Halving the step (n -> 2n) divides the error by ~2^order (measured 1.97, 4.07, 4.23)."""
    ratio = rel_error(name, n, to_zero=False) / rel_error(name, 2 * n, to_zero=False)
    assert 0.85 * 2**order < ratio < 1.2 * 2**order, (name, ratio)


# ---------------------------------------------------------------- samplers: mechanics


def test_one_euler_step_by_hand() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 2, 2, generator=g)
    sigmas = torch.tensor([2.0, 0.5])
    d = (x - gaussian_denoiser(x, torch.tensor([2.0, 2.0]))) / 2.0
    torch.testing.assert_close(sample_euler(gaussian_denoiser, x, sigmas), x + d * (0.5 - 2.0))
    # to sigma = 0 a single Euler step lands on the denoised estimate
    torch.testing.assert_close(
        sample_euler(gaussian_denoiser, x, torch.tensor([2.0, 0.0])), gaussian_denoiser(x, torch.tensor([2.0, 2.0]))
    )


def test_one_heun_and_dpmpp_step_by_hand() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 2, 2, generator=g)
    s0, s1, s2 = 2.0, 0.5, 0.1

    def D(v: Tensor, s: float) -> Tensor:
        return gaussian_denoiser(v, torch.full((2,), s))

    d0 = (x - D(x, s0)) / s0
    x_e = x + d0 * (s1 - s0)
    d1 = (x_e - D(x_e, s1)) / s1
    torch.testing.assert_close(sample_heun(gaussian_denoiser, x, torch.tensor([s0, s1])), x + (d0 + d1) / 2 * (s1 - s0))
    # DPM-Solver++(2M): first step is DDIM, second uses the two-point extrapolation
    x1 = (s1 / s0) * x + (1 - s1 / s0) * D(x, s0)
    r = math.log(s0 / s1) / math.log(s1 / s2)
    d_prime = (1 + 1 / (2 * r)) * D(x1, s1) - 1 / (2 * r) * D(x, s0)
    x2 = (s2 / s1) * x1 + (1 - s2 / s1) * d_prime
    torch.testing.assert_close(sample_dpmpp_2m(gaussian_denoiser, x, torch.tensor([s0, s1, s2])), x2)


@pytest.mark.parametrize("name,calls", [("euler", 6), ("heun", 11), ("dpmpp_2m", 6)])
def test_denoiser_calls_callback_and_sigma_shape(name: str, calls: int) -> None:
    seen: list[tuple[int, ...]] = []

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        assert sigma.shape == (x.shape[0],) and sigma.dtype == torch.float32
        seen.append(tuple(x.shape))
        return gaussian_denoiser(x, sigma)

    steps: list[tuple[int, int, float]] = []

    def cb(step: int, total: int, x: Tensor, denoised: Tensor, sigma: Tensor) -> None:
        assert x.shape == denoised.shape == (3, 2, 4, 4) and sigma.ndim == 0
        torch.testing.assert_close(denoised, gaussian_denoiser(x, sigma.expand(3)))
        steps.append((step, total, float(sigma)))

    sigmas = get_sigmas_karras(6, sigma_max=80.0)
    SAMPLERS[name](D, torch.randn(3, 2, 4, 4), sigmas, callback=cb)
    assert len(seen) == calls  # heun: no correction on the last step to 0
    assert [s[:2] for s in steps] == [(i, 6) for i in range(6)]
    assert [s[2] for s in steps] == pytest.approx(sigmas[:-1].tolist())


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_do_not_mutate_inputs(name: str) -> None:
    x = torch.randn(2, 3, 4, 4)
    sigmas = get_sigmas_karras(5, sigma_max=80.0)
    x0, s0 = x.clone(), sigmas.clone()
    out = SAMPLERS[name](gaussian_denoiser, x, sigmas, **noise_kwargs(name))
    assert torch.equal(x, x0) and torch.equal(sigmas, s0)
    assert not torch.equal(out, x)


def test_euler_churn_uses_noise_sampler() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 4, 4, generator=g) * 80.0
    sigmas = get_sigmas_karras(4, sigma_max=80.0)
    drawn: list[Tensor] = []
    inner = randn_noise_sampler(torch.Generator().manual_seed(7))

    def noise(v: Tensor) -> Tensor:
        eps = inner(v)
        drawn.append(eps)
        return eps

    churned = sample_euler(gaussian_denoiser, x, sigmas, s_churn=1.0, noise_sampler=noise)
    plain = sample_euler(gaussian_denoiser, x, sigmas)
    assert len(drawn) == 4 and drawn[0].shape == x.shape
    assert (churned - plain).abs().max().item() > 1e-3

    # first step by hand: gamma = min(S_churn / N, sqrt(2) - 1) = 0.25 (EDM Algorithm 2)
    drawn.clear()
    inner = randn_noise_sampler(torch.Generator().manual_seed(7))
    one = sample_euler(gaussian_denoiser, x, sigmas[:2], s_churn=0.25, s_noise=1.1, noise_sampler=noise)
    s, s_next = sigmas[0], sigmas[1]
    s_hat = s * 1.25
    x_hat = x + drawn[0] * 1.1 * (s_hat**2 - s**2).sqrt()
    expected = x_hat + (x_hat - gaussian_denoiser(x_hat, s_hat.expand(2))) / s_hat * (s_next - s_hat)
    torch.testing.assert_close(one, expected)

    # s_tmin/s_tmax restrict churn to a sigma range: none of these sigmas is in [1000, inf)
    drawn.clear()
    torch.testing.assert_close(
        sample_heun(gaussian_denoiser, x, sigmas, s_churn=1.0, s_tmin=1000.0, noise_sampler=noise),
        sample_heun(gaussian_denoiser, x, sigmas),
    )
    assert not drawn


def test_churn_without_noise_sampler_raises() -> None:
    with pytest.raises(ValueError, match="noise_sampler"):
        sample_euler(gaussian_denoiser, torch.randn(1, 1, 2, 2), get_sigmas_karras(3), s_churn=1.0)


def test_randn_noise_sampler_is_reproducible() -> None:
    x = torch.zeros(2, 3)
    a = randn_noise_sampler(torch.Generator().manual_seed(0))(x)
    b = randn_noise_sampler(torch.Generator().manual_seed(0))(x)
    assert torch.equal(a, b) and a.shape == x.shape and a.std() > 0.1


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_the_sampling_loop_reads_no_tensor_value_on_the_host(name: str) -> None:
    """The schedule is known in advance: host reads (item / bool of a tensor) do not grow with the number
    of steps, so a step never waits for the device (and can be captured as a CUDA graph)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from svd_core.diffusion.sampling import get_sigmas_karras

    class CountReads(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
                self.reads += 1
            return func(*args, **(kwargs or {}))

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1.0 + sigma.view(-1, 1, 1, 1) ** 2)

    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    reads = []
    for steps in (2, 6):
        sigmas = get_sigmas_karras(steps, 0.002, 80.0, 7.0)
        with CountReads() as mode:
            SAMPLERS[name](denoiser, x * 80.0, sigmas, **noise_kwargs(name))
        reads.append(mode.reads)
    assert reads[0] == reads[1], reads


# --- the consistency sampler of AnimateLCM-SVD-xt ----------------------------------------------------

def test_lcm_sigmas_are_the_consistency_grid() -> None:
    """The levels by their definition (G-U-N/AnimateLCM animatelcm_scheduler.py set_timesteps, computed here
    in float64): grid indices k * (40 // N) of 40 Karras levels at ramp index / 39, then 0."""
    from svd_core.diffusion.sampling import lcm_sigmas

    def grid(n: int) -> list[float]:
        lo, hi = 0.002 ** (1 / 7), 700.0 ** (1 / 7)
        return [(hi + (k * (40 // n) / 39) * (lo - hi)) ** 7 for k in range(n)] + [0.0]

    for n in (1, 2, 3, 4, 6, 8, 25, 40):
        got = lcm_sigmas(n, sigma_min=0.002, sigma_max=700.0, rho=7.0)
        assert got.dtype == torch.float32 and got.shape == (n + 1,)
        torch.testing.assert_close(got.double(), torch.tensor(grid(n), dtype=torch.float64), rtol=1e-6, atol=0)
    # the published 4-step levels (700, 128.56, 13.678, 0.4969) and the last level 40 steps reach: sigma_min
    torch.testing.assert_close(lcm_sigmas(4, sigma_min=0.002, sigma_max=700.0, rho=7.0)[:4],
                               torch.tensor([700.0, 128.564, 13.678, 0.49688]), rtol=5e-5, atol=0)
    assert lcm_sigmas(40, sigma_min=0.002, sigma_max=700.0, rho=7.0)[-2].item() == pytest.approx(0.002, rel=1e-5)
    # a partial denoise: the last levels of the longer schedule
    torch.testing.assert_close(lcm_sigmas(2, sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=0.5),
                               lcm_sigmas(4, sigma_min=0.002, sigma_max=700.0, rho=7.0)[-3:])
    with pytest.raises(ValueError, match="at most 40 steps"):
        lcm_sigmas(41, sigma_min=0.002, sigma_max=700.0, rho=7.0)
    with pytest.raises(ValueError, match="denoise 0.1"):
        lcm_sigmas(5, sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=0.1)


def test_lcm_step_by_hand() -> None:
    """x_{i+1} = D(x_i, sigma_i) + s_noise * sigma_{i+1} * z_i, with no noise on the step to 0."""
    from svd_core.diffusion.sampling import lcm_sigmas

    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 700.0
    sigmas = lcm_sigmas(3, sigma_min=0.002, sigma_max=700.0, rho=7.0)
    drawn: list[Tensor] = []
    inner = randn_noise_sampler(torch.Generator().manual_seed(2))

    def noise(like: Tensor) -> Tensor:
        drawn.append(inner(like))
        return drawn[-1]

    out = sample_lcm(gaussian_denoiser, x, sigmas, noise_sampler=noise, s_noise=0.9)
    assert len(drawn) == 2  # none for the step to 0
    expected = x
    for i in range(3):
        d = gaussian_denoiser(expected, sigmas[i].expand(2))
        expected = d + 0.9 * sigmas[i + 1] * drawn[i] if i < 2 else d
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # one step is the consistency function itself and needs no noise
    torch.testing.assert_close(sample_lcm(gaussian_denoiser, x, sigmas[[0, -1]]),
                               gaussian_denoiser(x, sigmas[0].expand(2)))
    with pytest.raises(ValueError, match="noise_sampler"):
        sample_lcm(gaussian_denoiser, x, sigmas)
