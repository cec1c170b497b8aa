"""Seconds per guided sampling step on a device: ours eager and compiled beside diffusers' eager, and the
attention kernel each one actually runs.

    python bench/gpu_speed.py                      # full-size SVD-XT 1.1, 1024x576, 25 frames, fp16, cuda
    python bench/gpu_speed.py --device cpu --model tiny --width 64 --height 64 --frames 4   # smoke run

One step is what the sampler does per level: the guided denoiser (cond and uncond in one UNet batch,
per-frame scales) and the Euler update, ours through svd_core's own functions, diffusers' as its
StableVideoDiffusionPipeline loop body. Weights are random, made on the device (time does not depend on the
values; bench/compare.py checks that the two implementations agree on the same weights). "compiled" is
svd_core.speed.compile_models (fullgraph; mode reduce-overhead, i.e. CUDA graphs, on a GPU): its first calls
(compiling, recording) are timed apart. The attention kernel is read from the aten operators one step
dispatches (torch.profiler): flash / efficient / cudnn / math, or the CPU's flash kernel.
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import svd_core  # noqa: E402
import svd_core.speed  # noqa: E402
from compare import add_gpu_bench_arguments, make_config  # noqa: E402
from svd_core.config import DTYPES  # noqa: E402
from svd_core.video.conditioning import Conditioning  # noqa: E402
from svd_core.video.sample import guided_denoiser  # noqa: E402

log = logging.getLogger("gpu_speed")

# aten operator -> the attention kernel it is (torch's scaled_dot_product_attention dispatch)
KERNELS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_efficient_attention_forward": "efficient",
    "aten::_flash_attention_forward": "flash",
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fill_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random finite weights drawn on the module's own device: N(0, 1/fan_in) matrices, 1 for norm
    scales, 0.01 N(0, 1) for the rest."""
    for name, p in module.named_parameters():
        g = torch.Generator(device=p.device).manual_seed(seed)
        seed += 1
        with torch.no_grad():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(max(1, p[0].numel())), generator=g)
            elif name.endswith("weight") and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.01, generator=g)
    return module.eval().requires_grad_(False)


def time_it(run: Callable[[], Any], device: str, repeats: int, warmup: int) -> tuple[float, float]:
    """(seconds of the warm-up calls together, median seconds of `repeats` timed calls)."""
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(warmup):
            run()
        _sync(device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def attention_kernel(run: Callable[[], Any], device: str) -> str:
    """The attention kernels one call dispatches, with their counts."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.inference_mode(), torch.profiler.profile(activities=activities) as prof:
        run()
        _sync(device)
    seen = Counter(KERNELS[e.key] for e in prof.key_averages() for _ in range(e.count) if e.key in KERNELS)
    return ", ".join(f"{k} x{n}" for k, n in seen.most_common()) or "none found"


def ours_step(config: svd_core.SVDConfig, dtype: torch.dtype, device: str, b: int, t: int, h: int,
              w: int) -> tuple[svd_core.SVDModels, Callable[[], Any]]:
    models = svd_core.build_models(config, device=device, dtype=dtype)
    fill_(models.unet, 0)
    c = config.vae.latent_channels
    g = torch.Generator(device=device).manual_seed(1)
    cond = Conditioning(crossattn=torch.randn(b, 1, config.unet.context_dim, device=device, generator=g),
                        concat=torch.randn(b, c, h, w, device=device, generator=g),
                        vector=torch.tensor([[6.0, 127.0, 0.02]] * b, device=device))
    unc = Conditioning(crossattn=torch.zeros_like(cond.crossattn), concat=torch.zeros_like(cond.concat),
                       vector=cond.vector)
    x = torch.randn(b * t, c, h, w, device=device, generator=g)
    sigma, sigma_next = torch.tensor(10.0, device=device), torch.tensor(8.0, device=device)

    def step() -> Any:
        denoiser = guided_denoiser(models.unet, cond, unc, t, svd_core.guidance_scales("linear", t, 1.5, 3.0))
        denoised = denoiser(x, sigma.expand(b * t))
        return x + (x - denoised) / sigma * (sigma_next - sigma)  # EDM Algorithm 2 line 8

    return models, step


def diffusers_step(config: svd_core.SVDConfig, dtype: torch.dtype, device: str, b: int, t: int, h: int,
                   w: int) -> Callable[[], Any]:
    import diffusers

    from svd_core.weights.convert.unet import folder_config

    with torch.device(device):
        unet = diffusers.UNetSpatioTemporalConditionModel(
            **{k: v for k, v in folder_config(config.unet, num_frames=t).items() if not k.startswith("_")})
    fill_(unet.to(device=device, dtype=dtype), 0)
    c = config.vae.latent_channels
    g = torch.Generator(device=device).manual_seed(1)
    latents = torch.randn(b, t, c, h, w, device=device, generator=g, dtype=dtype)
    image_latents = torch.randn(2 * b, t, c, h, w, device=device, generator=g, dtype=dtype)
    embeddings = torch.randn(2 * b, 1, config.unet.context_dim, device=device, generator=g, dtype=dtype)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]] * (2 * b), device=device, dtype=dtype)
    scale = torch.linspace(1.5, 3.0, t, device=device, dtype=dtype).view(1, t, 1, 1, 1)
    sigma, sigma_next = 10.0, 8.0

    def step() -> Any:  # StableVideoDiffusionPipeline.__call__'s loop body with EulerDiscreteScheduler.step
        model_in = torch.cat([torch.cat([latents] * 2) / math.sqrt(sigma**2 + 1), image_latents], dim=2)
        pred = unet(model_in, torch.tensor(0.25 * math.log(sigma), device=device), encoder_hidden_states=embeddings,
                    added_time_ids=time_ids, return_dict=False)[0]
        uncond, cond = pred.chunk(2)
        pred = uncond + scale * (cond - uncond)
        denoised = pred * (-sigma / math.sqrt(sigma**2 + 1)) + latents / (sigma**2 + 1)
        return latents + (latents - denoised) / sigma * (sigma_next - sigma)

    return step


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gpu_bench_arguments(ap)
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled run")
    args = ap.parse_args()
    config = make_config(args.model, args.frames, args.width, args.height)
    dtype, device, b, t = DTYPES[args.dtype], args.device, 1, args.frames
    f = config.vae.downscale
    h, w = args.height // f, args.width // f
    rows: list[tuple[str, float, float, str]] = []

    models, step = ours_step(config, dtype, device, b, t, h, w)
    first, median = time_it(step, device, args.repeats, warmup=1)
    rows.append(("ours eager", median, first, attention_kernel(step, device)))
    if not args.no_compile:
        if svd_core.speed.compile_models(models):
            first, median = time_it(step, device, args.repeats, warmup=3)  # compile, then CUDA-graph recording
            rows.append(("ours compiled", median, first, attention_kernel(step, device)))
        else:
            log.info("ours compiled: torch.compile does not work here (see the warning above)")
    del models, step
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    if args.peer == "diffusers":
        theirs = diffusers_step(config, dtype, device, b, t, h, w)
        first, median = time_it(theirs, device, args.repeats, warmup=1)
        rows.append(("diffusers eager", median, first, attention_kernel(theirs, device)))

    where = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    log.info("%s, %s, torch %s; %dx%d, %d frames, %s, one guided step (cond + uncond batch of %d)", config.name, where,
             torch.__version__, args.width, args.height, t, args.dtype, 2 * b * t)
    peer = next((r[1] for r in rows if r[0] == "diffusers eager"), None)
    log.info("%-16s %10s %12s %10s  %s", "", "s/step", "warm-up s", "vs peer", "attention kernel")
    for name, median, first, kernel in rows:
        ratio = f"{median / peer:.2f}" if peer else "-"
        log.info("%-16s %10.4f %12.2f %10s  %s", name, median, first, ratio, kernel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
