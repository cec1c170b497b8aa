"""Train the miniature SVD: the pack's own UNet, VAE (with its temporal decoder) and image encoder at a small size,
on the synthetic clips of data.py, with the reference's objective; save it as an official single-file checkpoint.

    python tools/train_miniature.py --out miniature_svd.safetensors               # anywhere
    python tools/train_miniature.py --overwrite                                    # replace the shipped file

A run can be split (a machine's time limit): `--unet-steps 0 --out vae.safetensors`, then
`--init vae.safetensors --vae-steps 0` trains the same UNet as one run does; `--init` with steps continues training.
The shipped file (tests/data/miniature_svd.safetensors) is written only with --overwrite; any other --out that
exists is refused too. Sizes the networks cannot take are refused naming the option (--size not a multiple of
the VAE's factor times the UNet's, --frames under MIN_FRAMES).

The objective, stage by stage:
1. VAE: encoder + quant_conv -> a diagonal Gaussian posterior; a latent drawn from it is decoded by the temporal
   decoder over the clip's frames. Loss: L1 + L2 reconstruction plus KL_WEIGHT * KL to N(0, 1) (the reference's
   first stage is a KL autoencoder; its LPIPS and GAN terms are left out at this size). Then the latent is
   rescaled exactly (quant_conv's mean rows times k, decoder.conv_in's weights over k) so that the posterior
   means of the data have standard deviation 1 / scale_factor: the checkpoint carries no scale factor, the
   loader uses SVD's 0.18215 (VAEConfig), so the latents must fit it, as SD's did when 0.18215 was measured.
2. UNet, EDM with SVD's v-prediction preconditioning (Karras et al. 2022, eq. 2, 7, 8 and Table 1; the
   reference's StandardDiffusionLoss in sgm/modules/diffusionmodules/loss.py): x = x0 + sigma * n, one sigma per
   video for all its frames; D(x; sigma) is the pack's own denoiser (svd_core.video.sample's VDenoiser around
   the UNet on its conditioning: the very function the samplers call); loss = lambda(sigma) * |D - x0|^2 with
   lambda = (sigma^2 + 1) / sigma^2 (EDMWeighting at sigma_data = 1, the reference's VWeighting,
   loss_weighting.py). ln sigma ~ N(P_MEAN, P_STD^2) (EDMSampling, sigma_sampling.py, whose defaults -1.2 / 1.2
   are EDM's image values; the SVD paper moves video training toward more noise, and generative-models ships no
   SVD training config, so 0.7 / 1.6 here are our choice in that direction).
   The conditioning goes through svd_core.video.conditioning.encode_conditioning, as at inference: the clean
   first frame's image embedding (one context token), the VAE latent of the first frame plus cond_aug noise
   (unscaled), and the vector [fps_id, motion_bucket_id, cond_aug]. cond_aug is drawn per video,
   ln cond_aug ~ N(COND_AUG_MEAN, COND_AUG_STD^2) (median 0.05; inference uses 0.02); motion_bucket_id is the
   clip's true speed (data.motion_bucket); fps_id is always FPS_ID (SVD-XT 1.1 was fine-tuned at fixed fps 6
   too). For classifier-free guidance, UNCOND_P of the videos see the negative conditioning the sampler uses
   (image embedding and conditioning latent zeroed, encode_conditioning's negative).
The image encoder is not trained: the reference's is frozen (FrozenOpenCLIPImagePredictionEmbedder) and a
pretrained CLIP cannot be had here, so it stays at its seeded random initialisation, a fixed feature of the
first frame; the UNet learns to read it like the real one reads CLIP's.

The pack's networks compute in place to save memory (svd_core.nets.pieces), which autograd refuses; training runs
inside `trainable()`, which makes every tensor autograd saves a copy taken when it is saved, so later in-place
updates cannot change it (the gradients match finite differences: tests/test_train_miniature.py).

Reproducibility: everything is drawn from --seed (model initialisation inside torch.random.fork_rng, data from
numpy generators keyed by seed and step, noise from torch generators); with the same torch version and thread
count the same file results. Other torch versions or thread counts change the rounding and so the weights.

Measured so far (this machine: 2 cores shared with other jobs at a load of 6-10, the run at nice 19, torch 2.14.1):
    python tools/train_miniature.py --out vae64.safetensors --vae-steps 120 --unet-steps 0 --batch 2
took 1327 s (6-18 s a step), VAE loss 0.64 -> 0.50 (mean of the first / last 25 steps), reconstruction error
0.126 (mean |x - decode(encode(x))| in [0, 1]): far too little, the decoded clips have the wrong colours and
blurred objects. A UNet probe on that VAE,
    python tools/train_miniature.py --init vae64.safetensors --vae-steps 0 --unet-steps 40 --batch 4
brought the UNet loss from 0.88 to 0.67 (first / last 25 steps; 1.02 -> 0.37-0.60 by pairs of steps): the stage
learns. A UNet step of 4 clips took 0.3-0.7 s while the machine was free and up to 110 s while it was not.
No weights are shipped yet. The default step counts below are a
guess (an autoencoder this small usually needs thousands of steps), not a measured recipe.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor

from svd_core.config import SamplingConfig, SVDConfig
from svd_core.nets.image_encoder import ImageEncoderConfig
from svd_core.nets.unet import UNetConfig
from svd_core.nets.vae import VAE, VAEConfig
from svd_core.video.conditioning import Conditioning, encode_conditioning
from svd_core.video.sample import _preconditioned
from svd_core.weights.layout import file_name, part_of, prefixes
from svd_core.weights.models import PARTS, SVDModels, build_models

from .data import ClipSpec, batch

log = logging.getLogger("miniature")

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "tests" / "data" / "miniature_svd.safetensors"

MIN_FRAMES = 3  # a first frame, a last frame and one between (keyframes); also the temporal kernel's width
FPS_ID = 6
P_MEAN, P_STD = 0.7, 1.6  # ln sigma ~ N(P_MEAN, P_STD^2): see the module docstring
COND_AUG_MEAN, COND_AUG_STD = -3.0, 0.5  # ln cond_aug ~ N(., .^2)
UNCOND_P = 0.1  # share of videos trained on the negative conditioning (classifier-free guidance)
KL_WEIGHT = 1e-4


def miniature_config(size: int = 64, frames: int = 8) -> SVDConfig:
    """The miniature's networks: the pack's classes at a small size (loadable by load_models like any checkpoint:
    head widths 64 and 80 and 32 groups, which the loader assumes, are kept).
    UNet: two levels of 32 and 64 channels, attention on the second and the middle (64 = one head of 64);
    VAE: four levels of 32, 32, 64, 64 channels (SVD's factor 8: 64x64 frames are 8x8 latents), one res-block
    each, 4 latent channels as SVD's;
    image encoder: a one-layer ViT of width 80 on size x size pixels in patches of size / 4, 32-wide embedding."""
    return SVDConfig(
        name="miniature",
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                        context_dim=32, vector_embed_dim=16),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
        image_encoder=ImageEncoderConfig(image_size=size, patch_size=max(1, size // 4), width=80, layers=1,
                                         embed_dim=32),
        sampling=SamplingConfig(num_frames=frames, num_steps=25, min_cfg=1.0, max_cfg=2.5, width=size, height=size,
                                decode_chunk_size=frames),
    )


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    size: int = 64  # the pack's video flow takes sides that are multiples of 64 (checks.SIZE_MULTIPLE)
    frames: int = 8
    vae_steps: int = 2000  # a guess, not measured (module docstring)
    unet_steps: int = 3000  # a guess, not measured
    batch: int = 8
    vae_lr: float = 2e-3
    unet_lr: float = 1e-3
    threads: int = 2
    out: str = str(SHIPPED)
    overwrite: bool = False
    init: str | None = None  # start every network from this miniature file instead of the seeded initialisation
    log_every: int = 25


def factor(config: SVDConfig) -> int:
    """What a frame side must be a multiple of: the VAE's downscale times the UNet's (2 per level below the top)."""
    return config.vae.downscale * 2 ** (len(config.unet.channel_mult) - 1)


def check_settings(s: Settings) -> None:
    """Refuse what cannot be trained, naming the option."""
    f = factor(miniature_config())  # the sizes' factor does not depend on --size
    if s.size < f or s.size % f:
        raise ValueError(f"--size {s.size} is not a positive multiple of {f} (the VAE's factor "
                         f"{miniature_config().vae.downscale} times the UNet's 2)")
    if s.frames < MIN_FRAMES:
        raise ValueError(f"--frames {s.frames} is too few: the miniature needs at least {MIN_FRAMES} (a first, a last "
                         "and a frame between)")
    for name in ("vae_steps", "unet_steps"):
        if getattr(s, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(s, name)}")
    for name in ("batch", "threads"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(s, name)}")
    out = Path(s.out)
    if out.exists() and not s.overwrite:
        raise FileExistsError(f"--out '{out}' exists; pass --overwrite to replace it"
                              + (" (it is the shipped miniature)" if out.resolve() == SHIPPED.resolve() else ""))
    if s.init is not None and not Path(s.init).is_file():
        raise FileNotFoundError(f"--init '{s.init}' is not a file")


@contextlib.contextmanager
def trainable() -> Iterator[None]:
    """Autograd through the pack's in-place networks: every tensor saved for backward is a copy taken then."""
    def pack(t: Tensor) -> Tensor:  # parameters are never changed in place while the graph lives: no copy
        return t if isinstance(t, torch.nn.Parameter) else t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def clips(settings: Settings, stage: int, step: int) -> tuple[Tensor, Tensor]:
    """The batch of `step` in `stage`: frames (B, T, 3, S, S) in [0, 1] and motion buckets (B,)."""
    frames, buckets, _ = batch(settings.seed * 1_000_003 + stage * 100_003 + step, settings.batch,
                               ClipSpec(size=settings.size, frames=settings.frames))
    return frames, buckets


def posterior(vae: VAE, frames01: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, logvar) of the VAE's posterior for frames (N, 3, S, S) in [0, 1] (VAE.encode keeps only the mean)."""
    moments = vae.quant_conv(vae.encoder(frames01 * 2.0 - 1.0))
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)


def vae_loss(vae: VAE, frames: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """Reconstruction (L1 + L2 in [-1, 1]) + KL_WEIGHT * KL of one batch of clips (B, T, 3, S, S)."""
    t = frames.shape[1]
    x = rearrange(frames, "b t c h w -> (b t) c h w")
    mean, logvar = posterior(vae, x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
    rec = vae.decode(z, num_frames=t)
    target = x * 2.0 - 1.0
    l1, l2 = (rec - target).abs().mean(), (rec - target).square().mean()
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
    return l1 + l2 + KL_WEIGHT * kl, {"l1": l1.item(), "l2": l2.item(), "kl": kl.item()}


@torch.no_grad()
def rescale_latents_(vae: VAE, frames: Tensor) -> float:
    """Rescale the latent exactly so that the posterior means of `frames` (N, 3, S, S) have standard deviation
    1 / scale_factor; returns the factor k applied (mean rows of quant_conv times k, decoder.conv_in over k)."""
    mean, _ = posterior(vae, frames)
    k = (1.0 / vae.config.scale_factor) / float(mean.std())
    c = vae.config.latent_channels
    vae.quant_conv.weight[:c] *= k
    vae.quant_conv.bias[:c] *= k
    vae.quant_conv.bias[c:] += 2.0 * math.log(k)  # the variance scales with k^2
    vae.decoder.conv_in.weight /= k
    return k


def unet_loss(models: SVDModels, frames: Tensor, buckets: Tensor, generator: torch.Generator) -> Tensor:
    """EDM loss of one batch (module docstring, stage 2). frames (B, T, 3, S, S) in [0, 1], buckets (B,)."""
    b, t = frames.shape[:2]
    vae = models.vae
    with torch.no_grad():
        x0 = vae.encode(rearrange(frames, "b t c h w -> (b t) c h w") * 2.0 - 1.0) * vae.config.scale_factor
    cond_aug = torch.exp(COND_AUG_MEAN + COND_AUG_STD * torch.randn(b, generator=generator))
    aug = cond_aug.view(b, 1, 1, 1) * torch.randn(frames[:, 0].shape, generator=generator)
    vector = torch.stack([torch.full((b,), float(FPS_ID)), buckets, cond_aug], dim=1)
    # cond_aug=1: the per-video strengths are in aug_noise; the vector carries them per video
    pos, neg = encode_conditioning(models.image_encoder, vae, frames[:, 0], fps_id=FPS_ID, motion_bucket_id=0,
                                   cond_aug=1.0, aug_noise=aug, vector=vector)
    drop = (torch.rand(b, generator=generator) < UNCOND_P).view(b, 1, 1)
    cond = Conditioning(crossattn=torch.where(drop, neg.crossattn, pos.crossattn).clone(),
                        concat=torch.where(drop.view(b, 1, 1, 1), neg.concat, pos.concat).clone(),
                        vector=pos.vector.clone())
    sigma = torch.exp(P_MEAN + P_STD * torch.randn(b, generator=generator)).repeat_interleave(t)  # (B*T,)
    noise = torch.randn(x0.shape, generator=generator)
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    denoised = _preconditioned(models.unet, [cond], t)(x, sigma)
    weight = (sigma**2 + 1.0) / sigma**2  # EDM lambda(sigma) at sigma_data = 1
    return (weight.view(-1, 1, 1, 1) * (denoised - x0).square()).mean()


def _schedule(step: int, total: int, warmup: int = 50) -> float:
    """Learning-rate factor: linear warm-up, then cosine down to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, p)))


def _fit(name: str, params: list[torch.nn.Parameter], steps: int, lr: float, loss_of: object,
         every: int) -> list[float]:
    """AdamW with gradient clipping 1.0; `loss_of(step)` -> (loss, parts). Returns the loss of every step."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses: list[float] = []
    start = time.monotonic()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * _schedule(step, steps)
        with trainable():
            loss, parts = loss_of(step)  # type: ignore[operator]
            opt.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{name} loss is {losses[-1]} at step {step}")
        if (step + 1) % every == 0 or step + 1 == steps:
            recent = float(np.mean(losses[-every:]))
            log.info("%s step %d/%d loss %.4f (mean of last %d) %s %.0f s", name, step + 1, steps, recent,
                     min(every, len(losses)), {k: round(v, 4) for k, v in parts.items()}, time.monotonic() - start)
    return losses


def state_dict_file(models: SVDModels, dtype: torch.dtype = torch.float16) -> dict[str, Tensor]:
    """The three networks under the official single-file names (layout.prefixes, the loader's own table)."""
    table = prefixes(models.config.family)
    return {file_name(part, k, table): v.detach().to(dtype).contiguous()
            for part in PARTS for k, v in getattr(models, part).state_dict().items()}


def load_parts_(models: SVDModels, path: str | Path, parts: Sequence[str]) -> None:
    """Put `parts` of a miniature file into `models` (strict, float32)."""
    table = prefixes(models.config.family)
    found: dict[str, dict[str, Tensor]] = {p: {} for p in parts}
    for key, value in load_file(str(path)).items():
        hit = part_of(key, table)
        if hit is not None and hit[0] in found:
            found[hit[0]][hit[1]] = value.float()
    for part in parts:
        getattr(models, part).load_state_dict(found[part], strict=True)


def train(settings: Settings) -> tuple[SVDModels, dict[str, object]]:
    """Both stages; returns the models (float32, eval mode) and the figures of the run."""
    check_settings(settings)
    torch.set_num_threads(settings.threads)
    config = miniature_config(settings.size, settings.frames)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        models = build_models(config)
        torch.nn.init.zeros_(models.unet.out[2].weight)  # the reference zero-initialises the output conv
        torch.nn.init.zeros_(models.unet.out[2].bias)
    models.image_encoder.eval().requires_grad_(False)
    figures: dict[str, object] = {"settings": asdict(settings), "torch": torch.__version__}
    start = time.monotonic()

    if settings.init is not None:
        load_parts_(models, settings.init, PARTS)
        log.info("started from '%s'", settings.init)
    if settings.vae_steps:
        vae = models.vae.train()
        g = torch.Generator().manual_seed(settings.seed)

        def vae_step(step: int) -> tuple[Tensor, dict[str, float]]:
            return vae_loss(vae, clips(settings, 1, step)[0], g)

        losses = _fit("vae", list(vae.parameters()), settings.vae_steps, settings.vae_lr, vae_step, settings.log_every)
        figures["vae_loss_first_last"] = _ends(losses)
        frames = rearrange(clips(settings, 3, 0)[0], "b t c h w -> (b t) c h w")
        figures["latent_rescale"] = rescale_latents_(vae, frames)
    for part in PARTS:  # as a file holds them (float16): --init FILE --vae-steps 0 then trains the same UNet
        module = getattr(models, part)
        module.load_state_dict({k: v.half().float() for k, v in module.state_dict().items()})
    figures["vae_seconds"] = round(time.monotonic() - start, 1)
    models.vae.eval().requires_grad_(False)
    figures["vae_reconstruction_l1"] = reconstruction_error(models.vae, clips(settings, 4, 0)[0])

    unet = models.unet.train()
    g = torch.Generator().manual_seed(settings.seed + 1)

    def unet_step(step: int) -> tuple[Tensor, dict[str, float]]:
        frames, buckets = clips(settings, 2, step)
        return unet_loss(models, frames, buckets, g), {}

    losses = _fit("unet", list(unet.parameters()), settings.unet_steps, settings.unet_lr, unet_step,
                  settings.log_every)
    figures["unet_loss_first_last"] = _ends(losses)
    unet.eval().requires_grad_(False)
    figures["seconds"] = round(time.monotonic() - start, 1)
    return models, figures


def _ends(losses: list[float], n: int = 25) -> list[float]:
    """Mean loss of the first and of the last n steps."""
    if not losses:
        return []
    return [round(float(np.mean(losses[:n])), 5), round(float(np.mean(losses[-n:])), 5)]


@torch.no_grad()
def reconstruction_error(vae: VAE, frames: Tensor) -> float:
    """Mean absolute error in [0, 1] of encode (posterior mean) + temporal decode, over clips (B, T, 3, S, S)."""
    t = frames.shape[1]
    x = rearrange(frames, "b t c h w -> (b t) c h w")
    rec = (vae.decode(vae.encode(x * 2.0 - 1.0), num_frames=t).clamp(-1.0, 1.0) + 1.0) / 2.0
    return round(float((rec - x).abs().mean()), 5)


def save(models: SVDModels, settings: Settings, figures: dict[str, object]) -> Path:
    """Write the checkpoint (float16, official single-file names); refuses to replace a file without --overwrite."""
    check_settings(settings)  # again: a file may have appeared while training
    out = Path(settings.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "svd_core": "miniature SVD trained by tools/train_miniature.py",
            "figures": repr(figures)}
    save_file(state_dict_file(models), str(out), metadata=meta)
    return out


def parse(argv: Sequence[str] | None = None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(prog="train_miniature", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--size", type=int, default=d.size, help="frame side in pixels")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per training clip")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--unet-steps", type=int, default=d.unet_steps)
    p.add_argument("--batch", type=int, default=d.batch, help="clips per step")
    p.add_argument("--vae-lr", type=float, default=d.vae_lr)
    p.add_argument("--unet-lr", type=float, default=d.unet_lr)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", default=d.out, help="where to write the checkpoint (default: the shipped file)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--init", default=None, help="start from this miniature file's weights (e.g. to continue a run in "
                   "parts: --unet-steps 0, then --init FILE --vae-steps 0)")
    p.add_argument("--log-every", type=int, default=d.log_every)
    a = p.parse_args(argv)
    return Settings(**{k.replace("-", "_"): v for k, v in vars(a).items()})


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = parse(argv)
    try:
        check_settings(settings)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    models, figures = train(settings)
    path = save(models, settings, figures)
    log.info("wrote %s (%.1f MB): %s", path, path.stat().st_size / 1e6, figures)
    return 0
