"""svd_core vs diffusers' StableVideoDiffusionPipeline on the same random weights.

    python bench/compare.py                      # CPU, medium model (bench_cpu.sh)
    python bench/compare.py --device cuda --model full --dtype fp16 --frames 25 --width 1024 --height 576
                                                 # GPU, full-size SVD-XT 1.1 (bench_gpu.sh)

The parent process builds one set of random weights and writes it twice: as an official single-file
checkpoint (read by svd_core) and as a diffusers folder (read by diffusers). Each measurement then runs
in a fresh child process, ours and theirs alternating, so neither profits from the other's warm caches
or allocator. Both get the same image, the same initial latents and the same augmentation noise; the
parent checks that their frames agree, then prints medians and the ratios ours/theirs:
  - time per sampling step: the fastest interval between step callbacks (first step excluded; the
    minimum is the estimate least disturbed by neighbours on a shared virtual machine), as wall time
    and as the process's CPU time (both threads counted);
  - decode time (the temporal VAE decoder, 14 frames a chunk for both);
  - peak memory: on the CPU the child's peak RSS above its RSS after imports (weights + activations);
    on a GPU torch.cuda.max_memory_allocated.
CPU targets (issue 3): time ratio <= 0.9, memory ratio <= 1.0.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
log = logging.getLogger("bench")


def make_config(model: str, frames: int, width: int, height: int):  # type: ignore[no-untyped-def]
    """"full": SVD-XT 1.1; "medium": the SVD family at 128 UNet channels, every block type, real context width;
    "tiny": the tests' model (its own sampling settings)."""
    from svd_core import ImageEncoderConfig, SVDConfig, UNetConfig, VAEConfig
    from svd_core.config import SamplingConfig

    if model == "tiny":
        return SVDConfig.tiny()
    if model == "full":
        return SVDConfig.svd_xt_1_1().with_sampling(num_frames=frames, width=width, height=height)
    return SVDConfig(
        name="bench_medium",
        unet=UNetConfig(model_channels=128, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(0, 1, 2),
                        context_dim=1024, vector_embed_dim=256),
        vae=VAEConfig(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=2),
        image_encoder=ImageEncoderConfig(width=640, layers=4, patch_size=14, embed_dim=1024),
        sampling=SamplingConfig(num_frames=frames, width=width, height=height),
    )


def add_gpu_bench_arguments(ap: argparse.ArgumentParser) -> None:
    """The options the GPU benches share: where, which model, what size."""
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", choices=("full", "medium", "tiny"), default="full")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=576)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--peer", choices=("diffusers", "none"), default="diffusers")


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process image. (ru_maxrss would not do: Linux keeps the parent's peak
    across fork + exec, so every child would start with the parent's high-water mark.)"""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


from svd_core.config import COMPUTE_DTYPES  # noqa: E402  (names of svd_core.config.DTYPES)


def _sync(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def child(kind: str, d: Path, steps: int, device: str, dtype_name: str) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from svd_core.config import DTYPES

    dtype = DTYPES[dtype_name]
    inputs = torch.load(d / "inputs.pt")
    base = _rss_mb()
    stamps: list[float] = []
    cpu_stamps: list[float] = []
    decode_s = 0.0

    def stamp() -> None:
        stamps.append(_sync(device))
        cpu_stamps.append(time.process_time())

    compile_s = 0.0
    if kind in ("ours", "ours_compiled"):
        import svd_core
        import svd_core.speed

        models = svd_core.load_models(d / "bench.safetensors", dtype=dtype, device=device)

        def run(on_step: object = None) -> tuple[object, float]:
            pos, neg = svd_core.encode_conditioning(models.image_encoder, models.vae, inputs["image"], fps_id=6,
                                                    motion_bucket_id=127, cond_aug=0.02, aug_noise=inputs["aug"])
            z = svd_core.sample_video(models.unet, pos, neg, inputs["latents"], num_steps=steps, min_cfg=1.5,
                                      max_cfg=3.0, callback=on_step)  # type: ignore[arg-type]
            t_dec = _sync(device)
            out = svd_core.decode_latents(models.vae, z, decode_chunk_size=14)
            return out, _sync(device) - t_dec

        if kind == "ours_compiled":  # the first call compiles (and records CUDA graphs): timed apart
            svd_core.speed.compile_models(models)
            t_c = _sync(device)
            run()
            compile_s = _sync(device) - t_c
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        frames, decode_s = run(lambda i, n, x: stamp())
    else:
        from diffusers import StableVideoDiffusionPipeline
        from PIL import Image

        pipe = StableVideoDiffusionPipeline.from_pretrained(str(d / "diffusers"), torch_dtype=dtype).to(device)
        pipe.set_progress_bar_config(disable=True)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        plain_decode = pipe.decode_latents

        def timed_decode(*a, **k):  # type: ignore[no-untyped-def]
            nonlocal decode_s
            t = _sync(device)
            out = plain_decode(*a, **k)
            decode_s = _sync(device) - t
            return out

        pipe.decode_latents = timed_decode
        img = Image.fromarray((inputs["image"][0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        h, w = inputs["image"].shape[-2:]
        g = torch.Generator().manual_seed(0)  # a CPU generator: same draws as ours on any device
        g.set_state(inputs["aug_generator_state"])  # diffusers draws the augmentation noise first

        def on_step(p, i, t, kw):  # type: ignore[no-untyped-def]
            stamp()
            return kw

        t0 = time.perf_counter()
        frames = pipe(img, height=h, width=w, num_frames=inputs["latents"].shape[1], num_inference_steps=steps,
                      min_guidance_scale=1.5, max_guidance_scale=3.0, fps=7, motion_bucket_id=127,
                      noise_aug_strength=0.02, decode_chunk_size=14, generator=g, latents=inputs["latents"].clone(),
                      output_type="pt", callback_on_step_end=on_step).frames
    total = _sync(device) - t0
    torch.save(frames.float().cpu(), d / f"frames_{kind}.pt")
    intervals = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    cpu_intervals = [b - a for a, b in zip(cpu_stamps, cpu_stamps[1:], strict=False)]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _peak_mb() - base
    return {"step_s": min(intervals), "step_cpu_s": min(cpu_intervals), "decode_s": decode_s, "total_s": total,
            "peak_mb": peak, "compile_s": compile_s}


def prepare(d: Path, model: str, frames: int, width: int, height: int, dtype_name: str, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    import svd_core
    from svd_core.weights.convert.folder import save_diffusers_folder
    from svd_core.weights.random_weights import random_state_dict

    config = make_config(model, frames, width, height)
    from svd_core.config import DTYPES

    dtype = DTYPES[dtype_name]
    sd = random_state_dict(config, seed=seed, dtype=dtype)
    save_file(sd, str(d / "bench.safetensors"))
    del sd
    models = svd_core.load_models(d / "bench.safetensors", dtype=dtype)
    save_diffusers_folder(models, d / "diffusers")
    n = sum(p.numel() for part in ("unet", "image_encoder", "vae") for p in getattr(models, part).parameters())
    del models
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1, 3, height, width), generator=g).float() / 255.0
    f = 2 ** (len(config.vae.ch_mult) - 1)
    latents = torch.randn((1, frames, 4, height // f, width // f), generator=g)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    state = aug_gen.get_state()
    aug = torch.randn((1, 3, height, width), generator=aug_gen)
    torch.save({"image": image, "latents": latents, "aug": aug, "aug_generator_state": state}, d / "inputs.pt")
    log.info("%s model: %.1f M parameters, %d frames at %dx%d, %s", model, n / 1e6, frames, width, height, dtype_name)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--model", choices=("medium", "full"), default="medium")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=COMPUTE_DTYPES, default="fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true",
                    help="also run ours with svd_core.speed.compile_models (its first call, compiling, timed apart)")
    ap.add_argument("--child", choices=("ours", "ours_compiled", "theirs"))
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(child(args.child, args.dir, args.steps, args.device, args.dtype)) + "\n")
        return 0

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prepare(d, args.model, args.frames, args.width, args.height, args.dtype, args.seed)
        kinds = ("ours", "ours_compiled", "theirs") if args.compile else ("ours", "theirs")
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                cmd = [sys.executable, __file__, "--child", kind, "--dir", str(d), "--steps", str(args.steps),
                       "--device", args.device, "--dtype", args.dtype]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{kind} child failed:\n{out.stderr[-4000:]}")
                results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
                log.info("round %d %-6s %s", r, kind, results[kind][-1])
        ours, theirs = torch.load(d / "frames_ours.pt"), torch.load(d / "frames_theirs.pt")
        diff = (ours - theirs).abs().max().item()
        if args.compile:
            diff = max(diff, (torch.load(d / "frames_ours_compiled.pt") - theirs).abs().max().item())
    metrics = ("step_s", "step_cpu_s", "decode_s", "total_s", "peak_mb", "compile_s")
    med = {k: {m: statistics.median(x[m] for x in v) for m in metrics} for k, v in results.items()}
    tol = 1e-3 if args.dtype == "fp32" else 2e-2
    log.info("frames agree: max abs difference %.2e (%s, tolerance %.0e)", diff, "ok" if diff <= tol else "MISMATCH",
             tol)
    log.info("%-22s %12s %12s %8s", f"median of {args.rounds} rounds", "svd_core", "diffusers", "ratio")
    rows = (("step_s", "time per step (ms)", 1e3), ("step_cpu_s", "CPU time per step (ms)", 1e3),
            ("decode_s", "decode (s)", 1.0), ("total_s", "whole call (s)", 1.0), ("peak_mb", "peak memory (MB)", 1.0))
    for m, label, scale in rows:
        a, b = med["ours"][m] * scale, med["theirs"][m] * scale
        log.info("%-22s %12.1f %12.1f %8.3f", label, a, b, a / b)
    if args.compile:
        log.info("%-22s %12s %12s %8s", "ours compiled", "svd_core", "diffusers", "ratio")
        for m, label, scale in rows:
            a, b = med["ours_compiled"][m] * scale, med["theirs"][m] * scale
            log.info("%-22s %12.1f %12.1f %8.3f", label, a, b, a / b)
        log.info("first compiled call (compiling): %.1f s", med["ours_compiled"]["compile_s"])
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    log.info("device: %s, torch %s; CPU targets: time ratio <= 0.9, memory ratio <= 1.0", where, torch.__version__)
    return 0 if diff <= tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
