"""Noise schedules and samplers for EDM-style denoisers (k-diffusion conventions).

A denoiser is any callable ``D(x, sigma) -> Tensor`` returning the estimate of the clean sample;
``sigma`` is passed as a float32 tensor with one value per batch element, shape (N,), which
``per_sample_sigma`` makes from a noise level. Samplers are pure functions of ``(denoiser, x, sigmas)``
plus a noise source and a callback: they never see conditioning and never modify ``x`` or ``sigmas`` in
place. ``sigmas`` runs from high to low and ends in 0 (see ``get_sigmas_karras``). Every sampler takes
``x`` already scaled to the first noise level (see ``initial_noise_scale``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

__all__ = [
    "Denoiser",
    "NoiseSampler",
    "SamplerCallback",
    "SamplerSpec",
    "StepHook",
    "SAMPLERS",
    "SCHEDULES",
    "get_sigmas_karras",
    "karras_sigmas",
    "lcm_sigmas",
    "initial_noise_scale",
    "per_sample_sigma",
    "randn_noise_sampler",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "sample_lcm",
    "schedule_length",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""D(x, sigma) -> denoised estimate of x at noise level sigma (shape (N,))."""

NoiseSampler = Callable[[Tensor], Tensor]
"""noise(x) -> a standard-normal tensor shaped like x (used for churn)."""


class SamplerCallback(Protocol):
    """Called once per step right after the step's first denoiser evaluation.

    ``step`` counts from 0 to ``total - 1``; ``x`` and ``sigma`` are exactly what the denoiser was
    given (after any churn: x at sigma_hat; sigma is a 0-dim tensor) and ``denoised`` is what it
    returned. Same triple as k-diffusion's callback dict ('x', 'sigma_hat', 'denoised').
    """

    def __call__(self, step: int, total: int, x: Tensor, denoised: Tensor, sigma: Tensor) -> None: ...


StepHook = Callable[[int, Tensor, Tensor], Tensor]
"""hook(step, x, sigma) -> x: called after each step with the new x at noise level sigma (the step's
target level, 0 after the last), and on a second-order sampler's predictor before it is evaluated;
what it returns is where sampling goes on from. The seam for holding
chosen frames to given values (continuation, keyframes); None changes nothing."""


# The EDM schedule of SVD: sigma_max 700 from scripts/sampling/configs/svd_xt_1_1.yaml (EDMDiscretization
# params); sigma_min 0.002 and rho 7 are sgm discretizer.py EDMDiscretization's defaults (also the EDM
# paper's, Karras et al. 2022 Table 1).
SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0
MAX_SCHEDULE = 10**6  # longest schedule karras_sigmas makes for a partial denoise (steps / denoise)


def get_sigmas_karras(
    n: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device: torch.device | str | None = None,
) -> Tensor:
    """Karras et al. 2022 eq. 5 schedule: n sigmas from sigma_max to sigma_min, then 0 (float32, (n+1,)).

    sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    Defaults: sigma_max 700 from scripts/sampling/configs/svd_xt_1_1.yaml (EDMDiscretization
    params); sigma_min 0.002 and rho 7 are sgm discretizer.py EDMDiscretization's defaults
    (also the EDM paper's). For n == 1 the ramp is [0], i.e. the single level sigma_max.
    """
    if n < 1:
        raise ValueError(f"number of sampling steps must be >= 1, got {n}")
    if not 0.0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float32, device=device)  # (n,)
    lo = sigma_min ** (1.0 / rho)
    hi = sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho  # (n,)
    return torch.cat([sigmas, sigmas.new_zeros(1)])  # (n+1,)


def schedule_length(num_steps: int, denoise: float) -> int:
    """How many steps the whole schedule has whose last num_steps are stepped through: num_steps, or
    max(num_steps, int(num_steps / denoise)) for a partial denoise (ComfyUI's convention). The one place of
    this rule: the schedules and the input checks (checks.schedule_errors) read it here."""
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    return num_steps if denoise == 1.0 else max(num_steps, int(num_steps / denoise))


def karras_sigmas(num_steps: int, *, sigma_min: float, sigma_max: float, rho: float, denoise: float = 1.0) -> Tensor:
    """The sigmas actually stepped through: the Karras schedule, or its last num_steps+1 entries of a
    longer schedule when denoise < 1 (ComfyUI's convention for partial denoising)."""
    total = schedule_length(num_steps, denoise)
    if denoise == 1.0:
        return get_sigmas_karras(num_steps, sigma_min, sigma_max, rho)
    if total > MAX_SCHEDULE:
        raise ValueError(f"denoise {denoise} with {num_steps} steps needs a schedule of {total} steps "
                         f"(at most {MAX_SCHEDULE}); raise denoise")
    return get_sigmas_karras(total, sigma_min, sigma_max, rho)[-(num_steps + 1):]


# AnimateLCM-SVD-xt's consistency schedule (G-U-N/AnimateLCM, animatelcm_svd/app.py, the arguments of
# AnimateLCMSVDStochasticIterativeScheduler): num_train_timesteps 40, sigma_min 0.002, sigma_max 700, rho 7,
# sigma_data 1, s_noise 1, clip_denoised False. Its sigma_min / sigma_max / rho are SVD's own.
LCM_TRAIN_STEPS = 40


def lcm_sigmas(num_steps: int, *, sigma_min: float, sigma_max: float, rho: float, denoise: float = 1.0,
               num_train_timesteps: int = LCM_TRAIN_STEPS) -> Tensor:
    """The levels of AnimateLCM's consistency sampler, float32 (num_steps + 1,), ending in 0.

    The distillation was trained on a grid of `num_train_timesteps` Karras levels, sigma_k at ramp k / (T-1);
    N steps visit grid indices 0, r, 2r, ..., (N-1) r with r = T // N (animatelcm_scheduler.py set_timesteps:
    step_ratio = num_train_timesteps // num_inference_steps; the ramp is timesteps / (num_train_timesteps - 1)
    through _convert_to_karras), then 0. For 4 steps: 700, 128.56, 13.678, 0.49686, 0.
    denoise < 1 takes the last num_steps + 1 entries of the schedule of int(num_steps / denoise) steps, as
    `karras_sigmas` does; that schedule may not have more than `num_train_timesteps` steps.
    """
    total = schedule_length(num_steps, denoise)
    if not 0.0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if total > num_train_timesteps:
        what = f"{num_steps} steps" if denoise == 1.0 else f"{num_steps} steps at denoise {denoise} ({total} levels)"
        raise ValueError(f"the lcm sampler takes at most {num_train_timesteps} steps (the consistency model's "
                         f"training levels); got {what}")
    ratio = num_train_timesteps // total
    ramp = torch.arange(total, dtype=torch.float64) * ratio / (num_train_timesteps - 1)  # grid index / (T - 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = ((hi + ramp * (lo - hi)) ** rho).to(torch.float32)
    return torch.cat([sigmas, sigmas.new_zeros(1)])[-(num_steps + 1):]


def initial_noise_scale(sigma0: Tensor) -> Tensor:
    """Scale for unit Gaussian noise at the first level: sqrt(1 + sigma0^2), not sigma0.

    The reference scales the starting noise this way (sgm sampling.py
    BaseDiffusionSampler.prepare_sampling_loop: x *= sqrt(1 + sigmas[0]^2)); diffusers'
    EulerDiscreteScheduler.init_noise_sigma with timestep_spacing "leading" does the same.
    For sigma_max = 700 the difference from sigma0 is ~1e-6 relative.
    """
    s = torch.as_tensor(sigma0).to(torch.float32)
    return torch.sqrt(1.0 + s * s)


def randn_noise_sampler(generator: torch.Generator | None = None) -> NoiseSampler:
    """Standard-normal noise like x drawn from ``generator`` (on the generator's device)."""

    def noise(x: Tensor) -> Tensor:
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)

    return noise


def per_sample_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """A noise level as a denoiser takes it: float32 of shape (N,), one value per batch element of x, on
    x's device. `sigma` is a scalar (a float or a 0-dim tensor, what the samplers pass), one value for the
    whole batch (shape (1,)) or one per element (shape (N,))."""
    n = x.shape[0]
    s = torch.as_tensor(sigma, device=x.device).to(torch.float32)
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] not in (1, n)):
        raise ValueError(
            f"sigma must be a scalar or have one value per batch element ({n}), got shape {tuple(s.shape)}"
        )
    return s.expand(n)  # (N,)


def host_levels(sigmas: Tensor) -> list[float]:
    """The schedule as Python floats, read once before a sampling loop: the loop then branches on these
    and never reads a device tensor (no host sync per step, so a step can be captured as a CUDA graph)."""
    return [float(v) for v in sigmas.detach().to("cpu", torch.float64).tolist()]


def _churn_gamma(sigma: float, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """EDM Algorithm 2 line 4: gamma_i = min(S_churn/N, sqrt(2)-1) when S_tmin <= sigma_i <= S_tmax."""
    if s_tmin <= sigma <= s_tmax:
        return min(s_churn / n_steps, math.sqrt(2.0) - 1.0)
    return 0.0


def _edm_steps(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    second_order: bool,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    noise_sampler: NoiseSampler | None,
    callback: SamplerCallback | None,
    step_hook: StepHook | None,
) -> Tensor:
    """EDM Algorithm 2 with optional Heun correction; shared body of sample_euler and sample_heun."""
    if s_churn > 0 and noise_sampler is None:
        raise ValueError(f"s_churn={s_churn} > 0 adds fresh noise: pass a noise_sampler "
                         "(e.g. randn_noise_sampler(gen))")
    n_steps = len(sigmas) - 1
    levels = host_levels(sigmas)  # the schedule is known in advance: no device read inside the loop
    for i in range(n_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = _churn_gamma(levels[i], n_steps, s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (gamma + 1.0)
        if gamma > 0:
            assert noise_sampler is not None
            eps = noise_sampler(x) * s_noise
            x = x + eps * (sigma_hat**2 - sigma**2).sqrt()  # Alg. 2 line 6: raise the noise to sigma_hat
        denoised = denoiser(x, per_sample_sigma(sigma_hat, x))
        if callback is not None:
            callback(i, n_steps, x, denoised, sigma_hat)
        d = (x - denoised) / sigma_hat  # Alg. 2 line 7: dx/dsigma of the probability-flow ODE
        dt = sigma_next - sigma_hat
        x_next = x + d * dt  # Alg. 2 line 8: Euler step
        if second_order and levels[i + 1] > 0:  # Alg. 2 lines 9-11: no correction on the step to 0
            if step_hook is not None:  # the predictor is evaluated like any x at sigma_next
                x_next = step_hook(i, x_next, sigma_next)
            d_next = (x_next - denoiser(x_next, per_sample_sigma(sigma_next, x))) / sigma_next
            d_prime = (d + d_next) / 2.0  # trapezoid rule on the two slopes
            x_next = x + d_prime * dt
        x = x_next if step_hook is None else step_hook(i, x_next, sigma_next)
    return x


def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    callback: SamplerCallback | None = None,
    step_hook: StepHook | None = None,
) -> Tensor:
    """Euler with optional churn: Algorithm 2 of Karras et al. 2022 without the 2nd-order step (sgm EulerEDMSampler)."""
    return _edm_steps(
        denoiser, x, sigmas, second_order=False, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
        s_noise=s_noise, noise_sampler=noise_sampler, callback=callback, step_hook=step_hook,
    )


def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    callback: SamplerCallback | None = None,
    step_hook: StepHook | None = None,
) -> Tensor:
    """Heun: Algorithm 2 of Karras et al. 2022 (2nd-order correction except on the last step to 0;
    sgm HeunEDMSampler)."""
    return _edm_steps(
        denoiser, x, sigmas, second_order=True, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
        s_noise=s_noise, noise_sampler=noise_sampler, callback=callback, step_hook=step_hook,
    )


def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    callback: SamplerCallback | None = None,
    step_hook: StepHook | None = None,
) -> Tensor:
    """DPM-Solver++(2M): Lu et al. 2022 ("DPM-Solver++", Algorithm 2) in k-diffusion's t = -ln(sigma) form
    (sgm DPMPP2MSampler).

    With h = t_next - t = ln(sigma / sigma_next) the data-prediction exponential integrator reads
    x_next = (sigma_next/sigma) * x + (1 - sigma_next/sigma) * D', where D' = D on the first and the
    last (to sigma = 0) step and otherwise D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_prev / h.
    """
    n_steps = len(sigmas) - 1
    levels = host_levels(sigmas)
    denoised_prev: Tensor | None = None
    h_prev = 0.0
    for i in range(n_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, per_sample_sigma(sigma, x))
        if callback is not None:
            callback(i, n_steps, x, denoised, sigma)
        if levels[i + 1] == 0.0:
            x = denoised  # t_next = inf: the exponential integrator lands on the data estimate
            x = x if step_hook is None else step_hook(i, x, sigma_next)
            continue
        ratio = sigma_next / sigma  # = exp(-h)
        h = math.log(levels[i] / levels[i + 1])
        if denoised_prev is None:
            d_prime = denoised  # first step: DPM-Solver++(1), i.e. DDIM
        else:
            r = h_prev / h
            d_prime = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * denoised_prev
        x = ratio * x + (1.0 - ratio) * d_prime
        x = x if step_hook is None else step_hook(i, x, sigma_next)
        denoised_prev, h_prev = denoised, h
    return x


def sample_lcm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    s_noise: float = 1.0,
    callback: SamplerCallback | None = None,
    step_hook: StepHook | None = None,
) -> Tensor:
    """Consistency multistep sampling (Song et al. 2023, "Consistency Models", Algorithm 1), as AnimateLCM
    runs it (animatelcm_scheduler.py step): at each level the model's clean estimate D(x, sigma_i), then fresh
    noise at the next level, x = D + s_noise * sigma_{i+1} * z, z ~ N(0, I). The step to 0 adds none (the
    scheduler's z * 0; no noise is drawn then, so one step draws none, like its one-step case).
    Meant for consistency-distilled models on `lcm_sigmas`; an ordinary diffusion model gives blurry frames.
    """
    n_steps = len(sigmas) - 1
    levels = host_levels(sigmas)
    if noise_sampler is None and any(v > 0 for v in levels[1:]):
        raise ValueError("the lcm sampler adds fresh noise at every step but the last: pass a noise_sampler "
                         "(e.g. randn_noise_sampler(gen))")
    for i in range(n_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, per_sample_sigma(sigma, x))
        if callback is not None:
            callback(i, n_steps, x, denoised, sigma)
        if levels[i + 1] > 0:
            assert noise_sampler is not None
            x = denoised + noise_sampler(denoised) * (s_noise * sigma_next)
        else:
            x = denoised
        x = x if step_hook is None else step_hook(i, x, sigma_next)
    return x


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler and what it needs besides (denoiser, x, sigmas): `churn` samplers take EDM's churn settings
    (s_churn, s_tmin, s_tmax, s_noise) and a noise_sampler; `renoise` samplers draw fresh noise at every step
    and take a noise_sampler and s_noise; the others take none. Every sampler takes `callback` and
    `step_hook`. `schedule` names its levels in SCHEDULES. Calling the spec calls the sampler."""

    fn: Callable[..., Tensor]
    churn: bool = False
    renoise: bool = False
    schedule: str = "karras"

    @property
    def needs_noise(self) -> bool:
        return self.churn or self.renoise

    def __call__(self, denoiser: Denoiser, x: Tensor, sigmas: Tensor, **kwargs: object) -> Tensor:
        return self.fn(denoiser, x, sigmas, **kwargs)


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec(sample_euler, churn=True),
    "heun": SamplerSpec(sample_heun, churn=True),
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m),
    "lcm": SamplerSpec(sample_lcm, renoise=True, schedule="lcm"),
}

ScheduleFn = Callable[..., Tensor]
"""schedule(num_steps, *, sigma_min, sigma_max, rho, denoise) -> sigmas (num_steps + 1,), ending in 0."""

SCHEDULES: dict[str, ScheduleFn] = {"karras": karras_sigmas, "lcm": lcm_sigmas}
