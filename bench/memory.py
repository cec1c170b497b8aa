"""The memory model: bytes of every stage of SVD at any size, without a GPU.

    python bench/memory.py                              # SVD-XT 1.1, 1024x576, 25 frames, fp16, on fake CUDA
    python bench/memory.py --dtype fp32 --vae-dtype fp32 --chunk 14 --peer diffusers
    python bench/memory.py --preset sv3d_p --peer diffusers         # SV3D_p at its own 576x576, 21 frames
    python bench/memory.py --preset svd_xt_image_decoder --peer diffusers   # the frame-wise 2-D decoder
    python bench/memory.py --validate                   # against a real CPU run, see below

It builds the real modules (svd_core's, and with `--peer diffusers` diffusers' and transformers') on
fake tensors (torch's FakeTensorMode: shapes, dtypes and devices, no data, no GPU) and runs each stage
through the pack's own functions under a dispatch mode that counts the bytes of live storages. A
storage is counted from the operator that creates it until it is freed, so the peak is that of the
tensors the program holds, as torch.cuda.max_memory_allocated would see them (minus its 512-byte
rounding, and minus the scratch space some CUDA kernels take inside one call: cuDNN workspaces).

Stages, each with its weights, its activation peak and their total:
  image encoder   the CLIP tower on the conditioning image(s)
  VAE encoder     the conditioning frame(s) to latents
  UNet step       one guided denoiser call (cond + uncond in one batch) and its Euler update
  decode chunk    one chunk of frames through the preset's decoder (decode_latents): SVD's temporal
                  one, or the frame-wise 2-D one of the image-decoder SVDs and SV3D
Beside each, the estimate svd_core.memory gives (what the nodes tell ComfyUI's load_models_gpu). Size,
frames and decode chunk default to the preset's own (SV3D: 576x576, 21 frames).

diffusers has no SV3D pipeline and no frame-wise SVD pipeline; for those presets its parts stand in at the
same sizes: UNetSpatioTemporalConditionModel (SV3D's UNet is SVD's, only the vector width differs: the
added time ids are as many as that width asks for) and AutoencoderKL, whose decoder is the same 2-D
Decoder, decoding the chunk as one batch as StableVideoDiffusionPipeline.decode_latents would
(`vae.decode(latents[i:i + chunk])`; AutoencoderKL.enable_slicing would decode frame by frame instead).

--validate checks the counting against an independent measurement of the same run: a medium-size
model at a size this CPU runs, each stage in a fresh process with glibc told to map every allocation
of 64 KiB or more on its own (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the process at once and
the kernel's peak resident size (VmHWM, reset through /proc/self/clear_refs before the stage) follows
the live tensors; the activation peak is VmHWM minus the resident size before the stage. The model
(fake CPU tensors) must agree within 10 %.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import svd_core  # noqa: E402
from svd_core import Conditioning, decode_latents  # noqa: E402
from svd_core import memory as estimate  # noqa: E402
from svd_core.video.sample import guided_denoiser  # noqa: E402

log = logging.getLogger("memory")
GiB = 2**30
DTYPES = {name: svd_core.config.DTYPES[name] for name in svd_core.config.COMPUTE_DTYPES}
STAGES = ("image_encoder", "vae_encoder", "unet_step", "decode_chunk")


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of storages created under it while they live; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        # an output that shares an input's storage (a view, an in-place or out= result) is not new
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        return out

    def _track(self, t: torch.Tensor, inputs: set[int]) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self.live or key in inputs:
            return
        n = storage.nbytes()
        self.live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


@dataclass(frozen=True)
class Work:
    """What one run does: the size, frames and precisions of the stages."""

    width: int = 1024
    height: int = 576
    frames: int = 25
    videos: int = 1
    chunk: int = 14
    dtype: torch.dtype = torch.float16  # UNet and image encoder
    vae_dtype: torch.dtype = torch.float16

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _build(ctor: Callable[[], torch.nn.Module], dtype: torch.dtype, device: str) -> torch.nn.Module:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            module = ctor().eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(previous)
    # parameters made with the legacy torch.Tensor([...]) ignore the default device (diffusers' mix
    # factors): move them by re-registering (a fake parameter cannot be swapped in place)
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            if p.device != torch.device(device):
                setattr(m, name, torch.nn.Parameter(p.to(device=device, dtype=dtype), requires_grad=False))
    return module


def _measure(run: Callable[[], Any]) -> int:
    """Activation peak of run(): bytes of storages created and held during it."""
    gc.collect()
    tracker = LiveBytes()
    # inference_mode, as the pack runs: under it a fake CUDA attention call is one fused operator (the
    # flash / memory-efficient kernels a GPU runs), where no_grad would decompose it into the math path
    with torch.inference_mode(), tracker:
        result = run()
        del result
    return tracker.peak


# --- the stages, through svd_core's own functions ------------------------------------------------------

def ours_stages(config: svd_core.SVDConfig, work: Work, device: str) -> dict[str, Callable[[], Any]]:
    """Build our three modules on `device` and return a runner per stage, the weight bytes of each stage and
    the modules themselves ("modules": unet, image_encoder, vae)."""
    unet = _build(lambda: svd_core.UNet(config.unet), work.dtype, device)
    clip = _build(lambda: svd_core.ImageEncoder(config.image_encoder), work.dtype, device)
    vae = _build(lambda: svd_core.VAE(config.vae), work.vae_dtype, device)
    b, t = work.videos, work.frames
    h, w = work.latent_hw
    c = config.vae.latent_channels

    def image_encoder() -> Any:
        from svd_core.nets.image_encoder import encode_image

        return encode_image(clip, torch.rand(b, 3, work.height, work.width, device=device))

    def vae_encoder() -> Any:
        return vae.encode(torch.rand(b, 3, work.height, work.width, device=device, dtype=work.vae_dtype))

    def unet_step() -> Any:
        scalars = len(config.unet.vector_widths)  # SVD: fps_id, motion bucket, cond_aug; SV3D_p: cond_aug + camera
        vector_shape = (b, t, scalars) if config.kind.orbit else (b, scalars)  # SV3D: one row per view
        cond = Conditioning(
            crossattn=torch.randn(b, 1, config.unet.context_dim, device=device, dtype=work.dtype),
            concat=torch.randn(b, c, h, w, device=device, dtype=work.dtype),
            vector=torch.full(vector_shape, 6.0, device=device),
        )
        s = config.sampling
        denoiser = guided_denoiser(unet, cond, cond, t, svd_core.guidance_scales(s.guidance, t, s.min_cfg, s.max_cfg))
        x = torch.randn(b * t, c, h, w, device=device)
        sigma, sigma_next = torch.full((), 10.0, device=device), torch.full((), 8.0, device=device)
        denoised = denoiser(x, sigma.expand(b * t))
        return x + (x - denoised) / sigma * (sigma_next - sigma)  # the Euler update (EDM Algorithm 2 line 8)

    def decode_chunk() -> Any:
        z = torch.randn(1, work.chunk, c, h, w, device=device)
        return decode_latents(vae, z, decode_chunk_size=work.chunk)

    runners = {"image_encoder": image_encoder, "vae_encoder": vae_encoder, "unet_step": unet_step,
               "decode_chunk": decode_chunk}
    weights = {"image_encoder": _param_bytes(clip), "vae_encoder": _param_bytes(vae),
               "unet_step": _param_bytes(unet), "decode_chunk": _param_bytes(vae)}
    return {"runners": runners, "weights": weights, "modules": {"unet": unet, "image_encoder": clip, "vae": vae}}


def _diffusers_image_vae_config(cfg: svd_core.VAEConfig) -> dict[str, Any]:
    """diffusers.AutoencoderKL's arguments for the frame-wise VAE (the same 2-D Encoder and Decoder;
    AutoencoderKL's decoder levels also hold num_res_blocks + 1 blocks)."""
    levels = len(cfg.ch_mult)
    return {"in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
            "down_block_types": ("DownEncoderBlock2D",) * levels, "up_block_types": ("UpDecoderBlock2D",) * levels,
            "block_out_channels": tuple(cfg.ch * m for m in cfg.ch_mult), "layers_per_block": cfg.num_res_blocks,
            "latent_channels": cfg.latent_channels, "norm_num_groups": cfg.num_groups,
            "scaling_factor": cfg.scale_factor, "use_post_quant_conv": cfg.post_quant_conv}


def diffusers_stages(config: svd_core.SVDConfig, work: Work, device: str) -> dict[str, Any]:
    """The same work for diffusers' StableVideoDiffusionPipeline parts (its step and decode loop); for the
    frame-wise presets, AutoencoderKL in place of the temporal VAE (module docstring). Returns what
    ours_stages returns, the modules being diffusers' and transformers' own."""
    import diffusers
    import transformers

    from svd_core.weights.convert.image_encoder import folder_config as transformers_config
    from svd_core.weights.convert.unet import folder_config as unet_config
    from svd_core.weights.convert.vae import folder_config as vae_config

    unet = _build(lambda: diffusers.UNetSpatioTemporalConditionModel(**unet_config(config.unet)), work.dtype, device)
    vae: Any
    if config.vae.temporal:
        vae = _build(lambda: diffusers.AutoencoderKLTemporalDecoder(**vae_config(config.vae)), work.vae_dtype, device)
    else:
        vae = _build(lambda: diffusers.AutoencoderKL(**_diffusers_image_vae_config(config.vae)), work.vae_dtype,
                     device)
    clip_cfg = transformers.CLIPVisionConfig(**transformers_config(config.image_encoder))
    clip = _build(lambda: transformers.CLIPVisionModelWithProjection(clip_cfg), work.dtype, device)
    b, t = work.videos, work.frames
    h, w = work.latent_hw
    c = config.vae.latent_channels

    def image_encoder() -> Any:
        size = config.image_encoder.image_size
        return clip(pixel_values=torch.rand(b, 3, size, size, device=device, dtype=work.dtype)).image_embeds

    def vae_encoder() -> Any:
        image = torch.rand(b, 3, work.height, work.width, device=device, dtype=work.vae_dtype)
        return vae.encode(image).latent_dist.mode()

    def unet_step() -> Any:  # StableVideoDiffusionPipeline.__call__'s loop body with EulerDiscreteScheduler
        latents = torch.randn(b, t, c, h, w, device=device, dtype=work.dtype)
        image_latents = torch.randn(2 * b, t, c, h, w, device=device, dtype=work.dtype)
        embeddings = torch.randn(2 * b, 1, config.unet.context_dim, device=device, dtype=work.dtype)
        # one added time id per addition_time_embed_dim-wide slice of the vector (SVD 3, SV3D_p 5, SV3D_u 1)
        time_ids = torch.full((2 * b, config.unet.adm_in_channels // config.unet.vector_embed_dim), 6.0,
                              device=device, dtype=work.dtype)
        sigma = 10.0
        model_in = torch.cat([latents] * 2) / (sigma**2 + 1) ** 0.5
        model_in = torch.cat([model_in, image_latents], dim=2)
        noise_pred = unet(model_in, torch.full((), 0.25 * 2.3, device=device), encoder_hidden_states=embeddings,
                          added_time_ids=time_ids, return_dict=False)[0]
        uncond, cond = noise_pred.chunk(2)
        scale = torch.linspace(1.5, 3.0, t, device=device, dtype=work.dtype).view(1, t, 1, 1, 1)
        noise_pred = uncond + scale * (cond - uncond)
        sample = latents.float()
        denoised = noise_pred.float() * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        return (sample + (sample - denoised) / sigma * (8.0 - sigma)).to(work.dtype)

    def decode_chunk() -> Any:  # decode_latents with decode_chunk_size = chunk
        z = torch.randn(work.chunk, c, h, w, device=device, dtype=work.vae_dtype) / config.vae.scale_factor
        if not config.vae.temporal:  # AutoencoderKL: the chunk as one batch of images
            return vae.decode(z).sample.float()
        return vae.decode(z, num_frames=work.chunk).sample.float()

    runners = {"image_encoder": image_encoder, "vae_encoder": vae_encoder, "unet_step": unet_step,
               "decode_chunk": decode_chunk}
    weights = {"image_encoder": _param_bytes(clip), "vae_encoder": _param_bytes(vae),
               "unet_step": _param_bytes(unet), "decode_chunk": _param_bytes(vae)}
    return {"runners": runners, "weights": weights, "modules": {"unet": unet, "image_encoder": clip, "vae": vae}}


def model(config: svd_core.SVDConfig, work: Work, *, device: str = "cuda", peer: str | None = None,
          stages: tuple[str, ...] = STAGES) -> dict[str, dict[str, dict[str, int]]]:
    """{implementation: {stage: {weights, activations}}} in bytes, counted on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    out: dict[str, dict[str, dict[str, int]]] = {}
    builders: dict[str, Callable[..., dict[str, Any]]] = {"svd_core": ours_stages}
    if peer == "diffusers":
        builders["diffusers"] = diffusers_stages
    for name, build in builders.items():
        with FakeTensorMode(allow_non_fake_inputs=True):
            parts = build(config, work, device)
            out[name] = {s: {"weights": parts["weights"][s], "activations": _measure(parts["runners"][s])}
                         for s in stages}
        del parts
        gc.collect()
    return out


def formula(config: svd_core.SVDConfig, work: Work) -> dict[str, int]:
    """svd_core.memory's estimate of the activation peak of each stage."""
    videos, height, width = work.videos, work.height, work.width
    return {
        "image_encoder": estimate.image_encoder_bytes(config.image_encoder, videos, height, width, work.dtype),
        "vae_encoder": estimate.vae_encoder_bytes(config.vae, videos, height, width, work.vae_dtype),
        "unet_step": estimate.unet_step_bytes(config.unet, videos, work.frames, height, width, work.dtype),
        "decode_chunk": estimate.decode_bytes(config.vae, work.chunk, height, width, work.vae_dtype),
    }


# Issue 7's targets (weights + activations, GiB) at 1024x576, 25 frames, decode chunk 14:
# (stage, VAE dtype or None for any) -> limit
TARGETS = {("unet_step", torch.float16): 6.0, ("decode_chunk", torch.float16): 4.0,
           ("decode_chunk", torch.bfloat16): 4.0, ("decode_chunk", torch.float32): 8.0}


def print_table(config: svd_core.SVDConfig, work: Work, result: dict[str, dict[str, dict[str, int]]]) -> None:
    est = formula(config, work)
    names = list(result)
    decoder = "temporal decoder" if config.vae.temporal else "frame-wise 2-D decoder"
    log.info("%s, %dx%d, %d frames x %d video(s), decode chunk %d (%s), weights %s, VAE %s (GiB)", config.name,
             work.width, work.height, work.frames, work.videos, work.chunk, decoder, str(work.dtype)[6:],
             str(work.vae_dtype)[6:])
    head = f"{'stage':<14}" + "".join(f"{n + ' weights':>20}{n + ' act.':>18}{n + ' total':>18}" for n in names)
    log.info("%s%18s", head, "estimate (act.)")
    for stage in STAGES:
        if stage not in result[names[0]]:
            continue
        row = f"{stage:<14}"
        for n in names:
            r = result[n][stage]
            total = r["weights"] + r["activations"]
            row += f"{r['weights'] / GiB:>20.2f}{r['activations'] / GiB:>18.2f}{total / GiB:>18.2f}"
        log.info("%s%18.2f", row, est[stage] / GiB)
    full_size = ((work.width, work.height, work.frames, work.chunk) == (1024, 576, 25, 14)
                 and config.name.startswith("svd"))
    for (stage, dtype), limit in TARGETS.items():
        if not full_size or stage not in result["svd_core"]:
            continue
        if dtype != (work.dtype if stage == "unet_step" else work.vae_dtype):
            continue
        r = result["svd_core"][stage]
        total = (r["weights"] + r["activations"]) / GiB
        log.info("target %s <= %.0f GiB: %.2f GiB, %s", stage, limit, total, "met" if total <= limit else "NOT MET")


# --- validation against the kernel's count of resident memory ---------------------------------------

VALIDATION_WORK = Work(width=512, height=320, frames=8, videos=1, chunk=8, dtype=torch.float32, vae_dtype=torch.float32)
# the encoders see a batch of 8 conditioning images, so that their activations stand well above the
# kernels' own scratch memory (a few tens of MiB on this CPU)
ENCODER_VIDEOS = 8


def _validation_work(stage: str, width: int | None = None, height: int | None = None) -> Work:
    work = replace(VALIDATION_WORK, width=width or VALIDATION_WORK.width, height=height or VALIDATION_WORK.height)
    if stage in ("image_encoder", "vae_encoder"):
        return replace(work, videos=ENCODER_VIDEOS)
    return work


def validation_config(image_decoder: bool = False) -> svd_core.SVDConfig:
    """The medium model of bench/compare.py: every block type, 132 M parameters; `image_decoder`: with the
    frame-wise 2-D decoder and post_quant_conv of the image-decoder SVDs instead of the temporal one."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare import make_config

    config = make_config("medium", VALIDATION_WORK.frames, VALIDATION_WORK.width, VALIDATION_WORK.height)
    if image_decoder:
        config = replace(config, vae=replace(config.vae, temporal=False, post_quant_conv=True))
    return config


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def rss_child(stage: str, width: int | None = None, height: int | None = None, *,
              image_decoder: bool = False) -> dict[str, int]:
    """In a fresh process: real CPU tensors, activation peak as the kernel counts it (and as LiveBytes does)."""
    torch.manual_seed(0)
    config, work = validation_config(image_decoder), _validation_work(stage, width, height)
    parts = ours_stages(config, work, "cpu")
    run = parts["runners"][stage]
    with torch.inference_mode():
        run()  # warm-up: one-time allocations (thread pools, kernel caches) happen here
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        result = run()
    peak = _status_kib("VmHWM")
    del result
    tracked = _measure(run)
    return {"rss_bytes": (peak - before) * 1024, "tracked_bytes": tracked}


def validate() -> bool:
    config, work = validation_config(), VALIDATION_WORK
    predicted = {s: model(config, _validation_work(s), device="cpu", stages=(s,))["svd_core"][s] for s in STAGES}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024), MALLOC_TRIM_THRESHOLD_="0", MALLOC_ARENA_MAX="1")
    ok = True
    log.info("validation: medium model, %dx%d, %d frames (encoders: %d images), fp32, CPU; activation peak in MiB",
             work.width, work.height, work.frames, ENCODER_VIDEOS)
    log.info("%-14s %12s %12s %8s", "stage", "model", "kernel RSS", "ratio")
    image_config = validation_config(image_decoder=True)
    predicted["decode (2-D)"] = model(image_config, _validation_work("decode_chunk"), device="cpu",
                                      stages=("decode_chunk",))["svd_core"]["decode_chunk"]
    for stage in (*STAGES, "decode (2-D)"):
        child = ["--rss-child", stage] if stage in STAGES else ["--rss-child", "decode_chunk", "--rss-image-decoder"]
        out = subprocess.run([sys.executable, __file__, *child], capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{stage} child failed:\n{out.stderr[-3000:]}")
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        m, r = predicted[stage]["activations"], measured["rss_bytes"]
        ratio = m / r if r else float("inf")
        good = abs(ratio - 1.0) <= 0.10
        ok &= good
        log.info("%-14s %12.1f %12.1f %8.3f %s", stage, m / 2**20, r / 2**20, ratio,
                 "ok" if good else "OFF BY MORE THAN 10%")
    return ok


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="svd_xt_1_1", choices=sorted(svd_core.PRESETS))
    ap.add_argument("--width", type=int, default=None, help="default: the preset's (SVD 1024, SV3D 576)")
    ap.add_argument("--height", type=int, default=None, help="default: the preset's (SVD 576, SV3D 576)")
    ap.add_argument("--frames", type=int, default=None, help="default: the preset's (14, 21 or 25)")
    ap.add_argument("--videos", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=None,
                    help="frames decoded together (default: the preset's, the reference's 14, at most --frames)")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp16", help="UNet and image encoder")
    ap.add_argument("--vae-dtype", choices=tuple(DTYPES), default=None, help="default: --dtype")
    ap.add_argument("--device", default="cuda", help="the fake device (no GPU needed)")
    ap.add_argument("--peer", choices=("diffusers",), default=None)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--rss-child", choices=STAGES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rss-image-decoder", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:  # the validation's own size unless set
        measured = rss_child(args.rss_child, args.width, args.height, image_decoder=args.rss_image_decoder)
        sys.stdout.write(json.dumps(measured) + "\n")
        return 0
    if args.validate:
        return 0 if validate() else 1
    config = svd_core.PRESETS[args.preset]
    sampling = config.sampling
    frames = args.frames or sampling.num_frames
    chunk = args.chunk if args.chunk is not None else min(sampling.decode_chunk_size, frames)
    if chunk < 1 or chunk > frames:
        ap.error(f"--chunk must be between 1 and --frames ({frames}), got {chunk}")
    work = Work(width=args.width or sampling.width, height=args.height or sampling.height, frames=frames,
                videos=args.videos, chunk=chunk, dtype=DTYPES[args.dtype],
                vae_dtype=DTYPES[args.vae_dtype or args.dtype])
    stages = tuple(s for s in args.stages.split(",") if s)
    result = model(config, work, device=args.device, peer=args.peer, stages=stages)
    print_table(config, work, result)
    if args.json:
        settings = {k: str(v) for k, v in work.__dict__.items()}
        args.json.write_text(json.dumps({"work": settings, "result": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
