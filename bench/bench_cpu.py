"""svd_core vs diffusers' StableVideoDiffusionPipeline on the same random medium-size model, on the CPU.

    python bench/bench_cpu.py [--rounds 3] [--steps 5] [--frames 8] [--size 128]

The parent process builds one set of random weights and writes it twice: as an official single-file
checkpoint (read by svd_core) and as a diffusers folder (read by diffusers). Each measurement then runs
in a fresh child process, ours and theirs alternating, so neither profits from the other's warm caches
or allocator. Both get the same image, the same initial latents and the same augmentation noise; the
parent checks that their frames agree, then prints medians and the ratios ours/theirs:
  - time per sampling step (median interval between step callbacks, first step excluded);
  - peak memory: the child's peak RSS above its RSS after imports (weights + activations).
Targets (issue 3): time ratio <= 0.9, memory ratio <= 1.0.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
log = logging.getLogger("bench")


def medium_config(frames: int, size: int):  # type: ignore[no-untyped-def]
    """A model of the SVD family at about 1/20 of the UNet's width: every block type, real context width."""
    from svd_core import ImageEncoderConfig, SVDConfig, UNetConfig, VAEConfig
    from svd_core.config import SamplingConfig

    return SVDConfig(
        name="bench_medium",
        unet=UNetConfig(model_channels=128, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(0, 1, 2),
                        context_dim=1024, vector_embed_dim=256),
        vae=VAEConfig(ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=2),
        image_encoder=ImageEncoderConfig(width=640, layers=4, patch_size=14, embed_dim=1024),
        sampling=SamplingConfig(num_frames=frames, width=size, height=size),
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(kind: str, d: Path, steps: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    inputs = torch.load(d / "inputs.pt")
    base = _rss_mb()
    stamps: list[float] = []
    if kind == "ours":
        import svd_core

        models = svd_core.load_models(d / "bench.safetensors", dtype=torch.float32)
        t0 = time.perf_counter()
        pos, neg = svd_core.encode_conditioning(models.image_encoder, models.vae, inputs["image"], fps_id=6,
                                                motion_bucket_id=127, cond_aug=0.02, aug_noise=inputs["aug"])
        z = svd_core.sample_video(models.unet, pos, neg, inputs["latents"], num_steps=steps, min_cfg=1.5, max_cfg=3.0,
                                  callback=lambda i, n, x: stamps.append(time.perf_counter()))
        frames = svd_core.decode_latents(models.vae, z, decode_chunk_size=14)
    else:
        from diffusers import StableVideoDiffusionPipeline
        from PIL import Image

        pipe = StableVideoDiffusionPipeline.from_pretrained(str(d / "diffusers"), torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        img = Image.fromarray((inputs["image"][0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        h, w = inputs["image"].shape[-2:]
        g = torch.Generator().manual_seed(0)
        g.set_state(inputs["aug_generator_state"])  # diffusers draws the augmentation noise first

        def on_step(p, i, t, kw):  # type: ignore[no-untyped-def]
            stamps.append(time.perf_counter())
            return kw

        t0 = time.perf_counter()
        frames = pipe(img, height=h, width=w, num_frames=inputs["latents"].shape[1], num_inference_steps=steps,
                      min_guidance_scale=1.5, max_guidance_scale=3.0, fps=7, motion_bucket_id=127,
                      noise_aug_strength=0.02, decode_chunk_size=14, generator=g, latents=inputs["latents"].clone(),
                      output_type="pt", callback_on_step_end=on_step).frames
    total = time.perf_counter() - t0
    torch.save(frames, d / f"frames_{kind}.pt")
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"step_s": statistics.median(intervals), "total_s": total, "peak_mb": _peak_mb() - base}


def prepare(d: Path, frames: int, size: int, seed: int) -> None:
    import torch

    import svd_core
    from svd_core.convert.folder import save_diffusers_folder
    from svd_core.random_weights import random_state_dict

    config = medium_config(frames, size)
    sd = random_state_dict(config, seed=seed, dtype=torch.float32)
    from safetensors.torch import save_file

    save_file(sd, str(d / "bench.safetensors"))
    models = svd_core.load_models(d / "bench.safetensors", dtype=torch.float32)
    save_diffusers_folder(models, d / "diffusers")
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1, 3, size, size), generator=g).float() / 255.0
    f = 2 ** (len(config.vae.ch_mult) - 1)
    latents = torch.randn((1, frames, 4, size // f, size // f), generator=g)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    state = aug_gen.get_state()
    aug = torch.randn((1, 3, size, size), generator=aug_gen)
    torch.save({"image": image, "latents": latents, "aug": aug, "aug_generator_state": state}, d / "inputs.pt")
    n = sum(p.numel() for part in ("unet", "image_encoder", "vae") for p in getattr(models, part).parameters())
    log.info("medium model: %.1f M parameters, %d frames at %dx%d", n / 1e6, frames, size, size)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=("ours", "theirs"))
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(child(args.child, args.dir, args.steps)) + "\n")
        return 0

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prepare(d, args.frames, args.size, args.seed)
        results: dict[str, list[dict]] = {"ours": [], "theirs": []}
        for r in range(args.rounds):
            for kind in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
                out = subprocess.run([sys.executable, __file__, "--child", kind, "--dir", str(d), "--steps", str(args.steps)],
                                     capture_output=True, text=True, check=True)
                results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
                log.info("round %d %-6s %s", r, kind, results[kind][-1])
        ours, theirs = torch.load(d / "frames_ours.pt"), torch.load(d / "frames_theirs.pt")
        diff = (ours - theirs).abs().max().item()
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("step_s", "total_s", "peak_mb")} for k, v in results.items()}
    log.info("frames agree: max abs difference %.2e (%s)", diff, "ok" if diff <= 1e-3 else "MISMATCH")
    log.info("%-22s %12s %12s %8s", "median of %d rounds" % args.rounds, "svd_core", "diffusers", "ratio")
    for m, label, scale in (("step_s", "time per step (ms)", 1e3), ("total_s", "whole call (s)", 1.0), ("peak_mb", "peak memory (MB)", 1.0)):
        a, b = med["ours"][m] * scale, med["theirs"][m] * scale
        log.info("%-22s %12.1f %12.1f %8.3f", label, a, b, a / b)
    log.info("targets: time ratio <= 0.9, memory ratio <= 1.0 (machine: %d cores, torch %s)", os.cpu_count(), torch.__version__)
    return 0 if diff <= 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
