"""Behaviour snapshot: every way of making a video, on tiny random models, saved to one file and compared.

    python tools/snapshot.py save before.pt      # on the tree before a change
    python tools/snapshot.py compare before.pt   # on the tree after it: every output, bit for bit

A refactoring that must keep the frames runs `save` before and `compare` after. Only public entry points are
called (svd_core's names, `python -m svd_core generate`, and the nodes inside a real ComfyUI when one is found
through COMFYUI_PATH), so the script runs unchanged on both trees. One CPU thread: results do not depend on
the machine's thread count.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
log = logging.getLogger("snapshot")

import svd_core  # noqa: E402

SIZE = 64


def _random_models(config: Any, seed: int) -> Any:
    try:
        from svd_core import random_models  # type: ignore[attr-defined]
    except ImportError:
        from svd_core.random_weights import random_models
    return random_models(config, seed=seed)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def core_cases() -> dict[str, Callable[[], Any]]:
    tiny = svd_core.SVDConfig.tiny()
    models = _random_models(tiny, 10)
    lcm = _random_models(svd_core.PRESETS["animatelcm_svd_xt"].__class__(
        name="animatelcm_svd_xt", unet=tiny.unet, vae=tiny.vae, image_encoder=tiny.image_encoder,
        sampling=svd_core.PRESETS["animatelcm_svd_xt"].sampling.__class__(
            num_frames=4, num_steps=4, min_cfg=1.0, max_cfg=1.2, motion_bucket_id=80, width=64, height=64,
            decode_chunk_size=4, sampler="lcm")), 11)
    images = _images(2, 1)
    ends = _images(2, 2)
    first = svd_core.generate(models, images, seed=3)
    return {
        "generate": lambda: first,
        "generate_heun_triangle": lambda: svd_core.generate(models, images, seed=4, sampler="heun", guidance="triangle",
                                                            num_steps=3, min_cfg=1.0, max_cfg=2.0),
        "generate_dpmpp_constant": lambda: svd_core.generate(models, images[:1], seed=5, sampler="dpmpp_2m",
                                                             guidance="constant", num_frames=5, decode_chunk_size=2),
        "generate_scale_one": lambda: svd_core.generate(models, images[:1], seed=6, min_cfg=1.0, max_cfg=1.0),
        "generate_conditioning": lambda: svd_core.generate(models, images[:1], seed=7, fps_id=3, motion_bucket_id=40,
                                                           cond_aug=0.1),
        "generate_noise": lambda: svd_core.generate(models, images[:1], seed=8, noise=torch.randn(
            1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(9))),
        "generate_end_image": lambda: svd_core.generate(models, images, seed=12, end_image=ends, num_steps=2),
        "generate_end_image_fitted": lambda: svd_core.generate(
            models, images[:1], seed=13, num_steps=2,
            end_image=torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(22))),
        "generate_loop": lambda: svd_core.generate(models, images, seed=14, loop=True, num_frames=5, num_steps=2),
        "generate_lcm": lambda: svd_core.generate(lcm, images, seed=15),
        "extend_pixels": lambda: svd_core.extend(models, first, num_frames=4, overlap=2, num_clips=2, seed=16),
        "extend_latents": lambda: svd_core.extend(
            models, first[:1], num_frames=4, overlap=1, seed=17, color_anchor=False,
            video_latents=torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(18))),
        "extend_lcm": lambda: svd_core.extend(lcm, first[:1], num_frames=4, overlap=2, seed=19),
    }


def cli_cases(tmp: Path) -> dict[str, Callable[[], Any]]:
    ckpt = Path(svd_core.save_random_checkpoint(tmp / "svd_xt_tiny.safetensors", svd_core.SVDConfig.tiny(), seed=0,
                                                dtype=torch.float16))
    image = tmp / "in.png"
    end = tmp / "end.png"
    from PIL import Image

    for path, seed in ((image, 20), (end, 21)):
        arr = (_images(1, seed)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(arr).resize((80, 72)).save(path)

    def run(name: str, *extra: str) -> bytes:
        out = tmp / f"{name}.png"
        cmd = [sys.executable, "-m", "svd_core", "generate", "--checkpoint", str(ckpt), "--image", str(image),
               "--output", str(out), "--width", "64", "--height", "64", "--frames", "4", "--steps", "2",
               "--preset", "svd_xt", "--threads", "1", "--quiet", "--dtype", "fp32", *extra]
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
        return out.read_bytes()

    def loaded() -> dict[str, torch.Tensor]:
        models = svd_core.load_models(ckpt, dtype=torch.float32)
        return {f"{p}.{k}": v for p in ("unet", "image_encoder", "vae")
                for k, v in getattr(models, p).state_dict().items()}

    return {
        "cli_plain": lambda: run("plain", "--seed", "3"),
        "cli_end_image": lambda: run("end", "--end-image", str(end), "--resize", "pad"),
        "cli_loop": lambda: run("loop", "--loop", "--frames", "5", "--fps", "9"),
        "cli_sampler": lambda: run("heun", "--sampler", "heun", "--min-cfg", "1.2", "--guidance", "triangle"),
        "load_models": loaded,
    }


def node_cases(tmp: Path) -> dict[str, Callable[[], Any]]:
    sys.path.insert(0, str(REPO / "tests" / "host"))
    import hostenv  # type: ignore[import-not-found]

    if not hostenv.HAVE_COMFY:
        log.warning("%s: node cases left out", hostenv.SKIP_REASON)
        return {}
    root = tmp / "host"
    comfy_nodes = hostenv.start_inprocess_host(root)
    hostenv.write_svd_checkpoint(root / "checkpoints" / hostenv.SVD_CKPT)
    hostenv.write_lcm_unet(root / "diffusion_models" / hostenv.LCM_UNET)
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    images = torch.rand(2, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(30))
    ends = torch.rand(1, 48, 80, 3, generator=torch.Generator().manual_seed(31))

    def videos(**kw: Any) -> dict[str, Any]:
        out = hostenv.node_videos(nodes, images, size=SIZE, frames=4, **kw)
        return {"latent": out["latent"]["samples"], "frames": out["frames"]}

    def extend() -> Any:
        base = hostenv.node_videos(nodes, images[:1], size=SIZE, frames=4, cond_seed=5, sample_seed=6)
        return nodes["StableVideoExtend"].execute(
            model=base["model"], clip_vision=base["clip"], vae=base["vae"], images=base["frames"],
            latent=base["latent"], frames=4, overlap=2, clips=2, seed=7, steps=2, min_cfg=1.5, max_cfg=3.0, fps=7,
            motion_bucket_id=127, cond_aug=0.02, color_anchor=True, frames_per_chunk=0).result[0]

    def lcm() -> Any:
        model, clip, vae = nodes["StableVideoCheckpointLoader"].execute(
            ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32", unet_name=hostenv.LCM_UNET).result
        pos, neg = nodes["StableVideoConditioning"].execute(
            clip_vision=clip, vae=vae, image=images[:1], width=SIZE, height=SIZE, resize_mode="crop", fps=7,
            motion_bucket_id=80, cond_aug=0.02, seed=8).result
        (latent,) = nodes["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=6, batch_size=1).result
        (z,) = nodes["StableVideoSampler"].execute(
            model=model, positive=pos, negative=neg, latent=latent, seed=9, steps=4, min_cfg=1.0, max_cfg=1.2,
            guidance="linear", sampler="lcm", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=1.0).result
        frames = nodes["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result[0]
        return {"latent": z["samples"], "frames": frames}

    return {
        "nodes_lcm": lcm,
        "nodes_plain": lambda: videos(cond_seed=1, sample_seed=2),
        "nodes_pick": lambda: videos(cond_seed=1, sample_seed=2, videos=3, pick=2),
        "nodes_end_image": lambda: videos(cond_seed=3, sample_seed=4, end_image=ends),
        "nodes_loop": lambda: videos(cond_seed=3, sample_seed=4, loop=True),
        "nodes_extend": extend,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return value


def collect() -> dict[str, Any]:
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for group in (core_cases, lambda: cli_cases(tmp), lambda: node_cases(tmp)):
            for name, case in group().items():
                out[name] = _plain(case())
                log.info("%s done", name)
    return out


def _differences(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{where}: keys differ {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        return found + [d for k in sorted(set(a) & set(b)) for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"]
        if not torch.equal(a, b):
            return [f"{where}: max difference {float((a.double() - b.double()).abs().max()):.3g}"]
        return []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("save", "compare"))
    p.add_argument("file", type=Path)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    now = collect()
    if args.action == "save":
        torch.save(now, args.file)
        log.info("saved %d outputs to %s", len(now), args.file)
        return 0
    before = torch.load(args.file)
    diffs = _differences(before, now, "snapshot")
    for d in diffs:
        log.error("%s", d)
    log.info("%d outputs compared: %s", len(set(before) & set(now)),
             "all identical" if not diffs else f"{len(diffs)} differ")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
