"""Each stage of SVD on a real device: time and peak memory, ours beside diffusers', beside the memory model.

    python bench/gpu_stages.py                     # full-size SVD-XT 1.1, 1024x576, 25 frames, fp16, cuda
    python bench/gpu_stages.py --device cpu --model tiny --width 64 --height 64 --frames 4   # smoke run

The stages are bench/memory.py's (image encoder, VAE encoder, one guided UNet step, one decode chunk),
run through the same functions, on random weights made on the device (time and memory do not depend on
the values; bench/compare.py checks that the two implementations agree on the same weights). For each:
the median time of `--repeats` runs after a warm-up, torch.cuda.max_memory_allocated above what was
allocated before the stage, and the memory model's count for the same work (fake tensors, no GPU) and
svd_core.memory's estimate. On a CPU only times are printed.
"""
from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory as memory_model  # noqa: E402
from compare import add_gpu_bench_arguments, make_config  # noqa: E402

log = logging.getLogger("gpu_stages")
GiB = 2**30


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_stage(run: Callable[[], Any], device: str, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of `repeats` timed runs after `warmup` untimed ones, and the peak bytes above the start."""
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        _sync(device)
        gc.collect()
        base = 0
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = run()
            _sync(device)
            times.append(time.perf_counter() - t0)
            del out
        peak = torch.cuda.max_memory_allocated() - base if device.startswith("cuda") else float("nan")
    return {"seconds": statistics.median(times), "peak": peak}


def attention_backend(device: str) -> str:
    """Which fused attention kernels torch may use here (the first enabled one that applies wins)."""
    if not device.startswith("cuda"):
        return "cpu"
    b = torch.backends.cuda
    return ", ".join(n for n, on in (("flash", b.flash_sdp_enabled()), ("efficient", b.mem_efficient_sdp_enabled()),
                                      ("cudnn", b.cudnn_sdp_enabled()), ("math", b.math_sdp_enabled())) if on)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gpu_bench_arguments(ap)
    ap.add_argument("--chunk", type=int, default=14)
    ap.add_argument("--dtype", choices=tuple(memory_model.DTYPES), default="fp16")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.chunk < 1 or args.chunk > args.frames:
        ap.error(f"--chunk must be between 1 and --frames ({args.frames}), got {args.chunk}")
    config = make_config(args.model, args.frames, args.width, args.height)
    dtype = memory_model.DTYPES[args.dtype]
    work = memory_model.Work(width=args.width, height=args.height, frames=args.frames, chunk=args.chunk,
                             dtype=dtype, vae_dtype=dtype)
    fake_device = "cuda" if args.device.startswith("cuda") else "cpu"
    modelled = memory_model.model(config, work, device=fake_device)["svd_core"]
    estimate = memory_model.formula(config, work)

    builders = {"svd_core": memory_model.ours_stages}
    if args.peer == "diffusers":
        builders["diffusers"] = memory_model.diffusers_stages
    measured: dict[str, dict[str, dict[str, float]]] = {}
    for name, build in builders.items():
        parts = build(config, work, args.device)
        measured[name] = {s: run_stage(parts["runners"][s], args.device, args.repeats) for s in memory_model.STAGES}
        del parts
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    log.info("%s, %s, torch %s, attention kernels allowed: %s", config.name, where, torch.__version__,
             attention_backend(args.device))
    log.info("%dx%d, %d frames, decode chunk %d, %s; activation peaks in GiB", args.width, args.height, args.frames,
             args.chunk, args.dtype)
    head = f"{'stage':<14}{'ours s':>9}{'ours peak':>11}{'modelled':>10}{'estimate':>10}"
    if "diffusers" in measured:
        head += f"{'diffusers s':>13}{'their peak':>12}{'time ratio':>12}{'mem ratio':>11}"
    log.info(head)
    for s in memory_model.STAGES:
        ours = measured["svd_core"][s]
        row = (f"{s:<14}{ours['seconds']:>9.3f}{ours['peak'] / GiB:>11.2f}{modelled[s]['activations'] / GiB:>10.2f}"
               f"{estimate[s] / GiB:>10.2f}")
        if "diffusers" in measured:
            theirs = measured["diffusers"][s]
            row += (f"{theirs['seconds']:>13.3f}{theirs['peak'] / GiB:>12.2f}"
                    f"{ours['seconds'] / theirs['seconds']:>12.2f}"
                    f"{ours['peak'] / theirs['peak'] if theirs['peak'] else float('nan'):>11.2f}")
        log.info(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
