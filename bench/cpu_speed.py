"""Time per sampling step on this CPU: our UNet eager and compiled, beside diffusers' and ComfyUI's own SVD
UNet, all on the same random weights, in one process with alternating rounds.

    python bench/cpu_speed.py            # medium model, 8 frames at 128x128, fp32 (bench_cpu.sh)

A step is one guided UNet call (cond + uncond in one batch: 2 x frames rows), what every sampling step
costs. Each round times every implementation once (the fastest of `--calls` calls), in an order that
rotates from round to round; the table gives the median over rounds and the ratio to the fastest peer
(diffusers or ComfyUI) in eager fp32. On a CPU with bf16 instructions (AVX512-BF16 / AMX), ours also runs
in bf16, eager and compiled, with its largest difference from fp32 relative to the output's scale.
Target (issue 12): ours compiled <= 0.8 x the fastest peer's eager time in fp32.

Ours runs its fp32 Linear layers on oneDNN (svd_core/speed.py onednn_linears); the row "ours eager, F.linear" is
the same UNet on torch's own F.linear (MKL's sgemm), the path every peer takes. The header prints both
libraries' GFLOP/s on one of the UNet's matrix shapes and the route build_models takes on this machine
(speed.linear_route: its probe's line, or what SVD_CORE_LINEAR forces).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import svd_core  # noqa: E402
import svd_core.speed as speed  # noqa: E402
from compare import make_config  # noqa: E402
from svd_core.weights.random_weights import randomize_  # noqa: E402

log = logging.getLogger("cpu_speed")


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def inputs(cfg: svd_core.UNetConfig, frames: int, size: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n, hw = 2 * frames, size // 8
    return {"x": torch.randn(n, cfg.in_channels, hw, hw, generator=g).to(dtype), "t": torch.randn(n, generator=g),
            "context": torch.randn(n, 1, cfg.context_dim, generator=g).to(dtype),
            "y": torch.randn(n, cfg.adm_in_channels, generator=g).to(dtype)}


def build(frames: int, size: int) -> tuple[svd_core.UNet, dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]]:
    """Our UNet and a runner per implementation, all with the same weights."""
    cfg = make_config("medium", frames, size, size).unet
    ours = randomize_(svd_core.UNet(cfg), 0).eval().requires_grad_(False)
    plain = randomize_(svd_core.UNet(cfg), 0).eval().requires_grad_(False)  # torch's own F.linear
    speed.onednn_linears(ours)  # oneDNN whatever the route (build_models takes the probe's, printed)
    runners: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
        "ours eager": lambda a: ours(a["x"], a["t"], a["context"], a["y"], num_frames=frames),
        "ours eager, F.linear": lambda a: plain(a["x"], a["t"], a["context"], a["y"], num_frames=frames)}
    try:
        import diffusers

        from svd_core.weights.convert.unet import folder_config, to_folder

        theirs = diffusers.UNetSpatioTemporalConditionModel(**folder_config(cfg)).eval().requires_grad_(False)
        theirs.load_state_dict(to_folder(ours.state_dict()))

        def run_diffusers(a: dict[str, torch.Tensor]) -> torch.Tensor:
            # diffusers takes (B, T, C, H, W), the raw added time ids and embeds them itself; the time
            # embedding's extra work is a few rows, negligible beside the UNet
            x = a["x"].unflatten(0, (2, frames))
            ids = torch.tensor([[6.0, 127.0, 0.02]] * 2, dtype=x.dtype)
            return theirs(x, a["t"][::frames], a["context"][::frames], added_time_ids=ids).sample

        runners["diffusers eager"] = run_diffusers
    except ImportError:
        log.info("diffusers is not installed: no diffusers column")
    comfy = Path(os.environ.get("COMFYUI_PATH", "~/ComfyUI")).expanduser()
    if (comfy / "comfy" / "model_detection.py").is_file():
        sys.path.insert(0, str(comfy))
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        import comfy.model_base
        import comfy.model_detection
        import comfy.supported_models

        sd = {"model.diffusion_model." + k: v for k, v in ours.state_dict().items()}
        unet_config = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
        model_config = comfy.supported_models.SVD_img2vid(unet_config)
        model_config.set_inference_dtype(torch.float32, None)
        base = comfy.model_base.SVD_img2vid(model_config)
        base.load_model_weights(sd, "model.diffusion_model.")
        theirs_comfy = base.diffusion_model.eval().requires_grad_(False)
        runners["ComfyUI eager"] = lambda a: theirs_comfy(a["x"], a["t"], context=a["context"], y=a["y"],
                                                          num_video_frames=frames)
    else:
        log.info("no ComfyUI checkout at %s: no ComfyUI column", comfy)
    return ours, runners


def gemm_rates(m: int, k: int, n: int) -> tuple[float, float]:
    """GFLOP/s of one (m x k) @ (k x n) + bias in fp32: torch's F.linear (MKL) and oneDNN's linear."""
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    layer = torch.nn.Linear(k, n)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
        mkl = time_call(lambda: F.linear(x, w, b), 10)
        speed.onednn_linears(layer)
        dnn = time_call(lambda: layer(x), 10)
    return 2 * m * k * n / mkl / 1e9, 2 * m * k * n / dnn / 1e9


def time_call(fn: Callable[[], Any], calls: int) -> float:
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours, runners = build(args.frames, args.size)
    a32 = inputs(ours.config, args.frames, args.size, torch.float32)
    with torch.inference_mode():
        reference = runners["ours eager"](a32)
        compiled = torch.compile(ours, fullgraph=True, dynamic=False)
        runners["ours compiled"] = lambda a: compiled(a["x"], a["t"], a["context"], a["y"], num_frames=args.frames)
        log.info("compiling (first calls)...")
        errors: dict[str, float] = {
            "ours compiled": (runners["ours compiled"](a32) - reference).abs().max().item(),
            "ours eager, F.linear": (runners["ours eager, F.linear"](a32) - reference).abs().max().item()}
        if "ComfyUI eager" in runners:  # same inputs, same weights: the difference is the implementation's
            errors["ComfyUI eager"] = (runners["ComfyUI eager"](a32) - reference).abs().max().item()
        cases: dict[str, tuple[Callable[..., Any], dict[str, torch.Tensor]]] = {n: (r, a32) for n, r in runners.items()}
        if cpu_has_bf16():
            bf16 = svd_core.UNet(ours.config).eval().requires_grad_(False)  # bf16 linear: torch's oneDNN already
            bf16.load_state_dict(ours.state_dict())
            bf16 = bf16.to(torch.bfloat16)
            a16 = inputs(ours.config, args.frames, args.size, torch.bfloat16)
            compiled16 = torch.compile(bf16, fullgraph=True, dynamic=False)
            cases["ours eager bf16"] = (lambda a: bf16(a["x"], a["t"], a["context"], a["y"], num_frames=args.frames),
                                        a16)
            cases["ours compiled bf16"] = (lambda a: compiled16(a["x"], a["t"], a["context"], a["y"],
                                                                num_frames=args.frames), a16)
            for name in ("ours eager bf16", "ours compiled bf16"):
                fn, a = cases[name]
                errors[name] = (fn(a).float() - reference).abs().max().item()
        names = list(cases)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                fn, a = cases[name]
                times[name].append(time_call(lambda fn=fn, a=a: fn(a), args.calls))
    med = {n: statistics.median(v) for n, v in times.items()}
    peers = [n for n in ("diffusers eager", "ComfyUI eager") if n in med]
    fastest = min((med[n] for n in peers), default=med["ours eager"])
    scale = reference.abs().max().item()
    log.info("medium UNet (%.0f M parameters), %d frames at %dx%d, cond + uncond, %d threads, torch %s",
             sum(p.numel() for p in ours.parameters()) / 1e6, args.frames, args.size, args.size, args.threads,
             torch.__version__)
    tokens, width = 2 * args.frames * (args.size // 8) ** 2, ours.config.model_channels
    if speed.onednn_linear_available():
        mkl, dnn = gemm_rates(tokens, width, 8 * width)  # the first feed-forward's GEGLU projection
        log.info("fp32 linear %dx%d -> %d: F.linear (MKL) %.0f GFLOP/s, oneDNN %.0f GFLOP/s (%.2fx)", tokens, width,
                 8 * width, mkl, dnn, dnn / mkl)
        route = speed.linear_route(ours)  # the probe logs its own line (unless SVD_CORE_LINEAR forces a route)
        log.info("build_models' fp32 Linear route on this machine: %s", route)
    log.info("%-22s %12s %16s %22s", f"median of {args.rounds} rounds", "ms / step", "vs fastest peer",
             "max diff vs ours fp32")
    for n in names:
        if n == "ours eager" or n in errors:
            diff = errors.get(n, 0.0)
            note = f"{diff:14.2e} ({diff / scale:.1e} rel)"
        else:  # diffusers embeds its own added_time_ids: other inputs, no difference to report
            note = f"{'n/a':>14}"
        log.info("%-22s %12.1f %16.2f %s", n, med[n] * 1e3, med[n] / fastest, note)
    ratio = med["ours compiled"] / fastest
    log.info("target: ours compiled <= 0.8 x the fastest peer's eager fp32: %.2f, %s", ratio,
             "met" if ratio <= 0.8 else "NOT MET")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
