"""SV3D_u, SV3D_p and the image-decoder SVDs against Stability's reference classes, on tiny random weights.

The reference is Stability-AI/generative-models (its `sgm` package and scripts/sampling), found at $SGM_PATH;
without it (CI) the module skips with one line. Each family's model is the reference's own DiffusionEngine,
built as scripts/sampling/simple_video_sample.py's `load_model` builds it (OmegaConf.load of the family's
yaml, `instantiate_from_config`) with the sizes scaled down to `SVDConfig.tiny(family)`, attention "vanilla" /
"softmax" (no xformers), and the tensors of one random checkpoint written by `save_random_checkpoint` loaded
into it strictly. Only the OpenCLIP image tower is not the reference's (it would download ViT-H/14): its
embedding comes from our image encoder (whose parity is tests/test_image_encoder.py's) through the
reference's IdentityEncoder in the conditioner's slot 0; everything after it (the conditioner's vector and
concat, Denoiser with VScalingWithEDMcNoise, the VideoUNet, EulerEDMSampler with EDMDiscretization(sigma_max
700) and the family's guider, decode_first_stage) is the reference's code. Both sides get the same start and
augmentation noise (our seed contract, seeds.py). The script's sampling steps (get_batch, the conditioner
call, the denoiser closure, samples_x[-1:] for SV3D) are followed as written there, in fp32 without its CPU
autocast.

Tolerances, fp32. Every stage is within 1e-5: the conditioning (vector and crossattn bit for bit, concat
~4e-6), one guided denoiser call (~1e-6), the Euler sampler on a shared denoiser (bit for bit), the latents
(3.8e-6). The latents cannot come closer: at sigma 15.6 the sampler's x is ~50, whose float32 spacing is
2**-18 = 3.8e-6, and the last step's cancellation (x + dt * d, down to ~0.4) keeps that one unit; the decoder
then reads z / 0.18215, 5.5 times that. So the frames differ by up to ~2e-5 (measured 1.7e-5) and are held
to 1e-4, the pipeline tolerance of test_flow's diffusers parity. That this is rounding and no difference of
formula is shown in float64, where the frame encoder and the decoder agree to 1e-14.
"""
from __future__ import annotations

import ast
import copy
import functools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from einops import rearrange, repeat
from safetensors.torch import load_file

from svd_core import SVDConfig, VideoNoise, VideoRequest, embed_vector, generate, guidance_scales, load_models
from svd_core.diffusion.sampling import RHO, SIGMA_MAX, SIGMA_MIN, initial_noise_scale, karras_sigmas, sample_euler
from svd_core.nets.image_encoder import encode_image
from svd_core.video.camera import camera_path, camera_radians
from svd_core.video.flow import condition, fit_images, sample
from svd_core.video.sample import guided_denoiser
from svd_core.weights.layout import ignored_prefixes
from svd_core.weights.random_weights import save_random_checkpoint


def _reference_root() -> tuple[Path | None, str]:
    """The reference tree and its imports, or the one reason this module skips."""
    given = os.environ.get("SGM_PATH", "")
    if not given:
        return None, "SGM_PATH is unset: the reference tree (Stability-AI/generative-models) is needed"
    root = Path(given).expanduser()
    if not (root / "sgm").is_dir() or not (root / "scripts/sampling/simple_video_sample.py").is_file():
        return None, f"SGM_PATH={given} is not a generative-models tree (no sgm/ and scripts/sampling/)"
    if str(root) not in sys.path:
        sys.path.append(str(root))
    try:
        import omegaconf  # noqa: F401
        import sgm.models.diffusion  # noqa: F401
        import sgm.modules.diffusionmodules.guiders  # noqa: F401
    except ImportError as e:
        return None, f"the reference at SGM_PATH={given} does not import here: {e}"
    return root, ""


ROOT, WHY = _reference_root()
if ROOT is None:
    pytest.skip(WHY, allow_module_level=True)

from omegaconf import OmegaConf  # noqa: E402
from sgm.modules.diffusionmodules.guiders import LinearPredictionGuider, TrianglePredictionGuider  # noqa: E402
from sgm.util import default, instantiate_from_config  # noqa: E402

SIZE = 64  # pixels; the tiny VAE keeps the real 8x downscale
T = 4
STEPS = 3
SEED = 7
ATOL = 1e-5  # fp32, each stage (conditioning, one denoiser call, the sampler, the latents)
FRAMES_ATOL = 1e-4  # fp32 frames: test_flow's pipeline parity with diffusers (see the module docstring)
SCRIPT = "scripts/sampling/simple_video_sample.py"

# each checkpoint file's name (its preset, the script's `version` and its yaml) -> the family its tensors make it
FILES = {"sv3d_u": "sv3d_u", "sv3d_p": "sv3d_p", "svd_image_decoder": "svd_image_decoder",
         "svd_xt_image_decoder": "svd_image_decoder"}


def _ddconfig(ddconfig: Any, config: SVDConfig) -> None:
    v = config.vae
    ddconfig.update(ch=v.ch, ch_mult=list(v.ch_mult), num_res_blocks=v.num_res_blocks, z_channels=v.latent_channels,
                    in_channels=v.in_channels, out_ch=v.out_channels, attn_type="vanilla")


def reference_engine(version: str, config: SVDConfig, num_frames: int, num_steps: int) -> torch.nn.Module:
    """The reference's DiffusionEngine for `version` (its yaml) at `config`'s tiny sizes, built as load_model
    builds it; the OpenCLIP embedder (slot 0) replaced by IdentityEncoder, fed our image embedding."""
    cfg = OmegaConf.load(ROOT / "scripts/sampling/configs" / f"{version}.yaml")
    p = cfg.model.params
    p.ckpt_path = None
    u = config.unet
    p.network_config.params.update(
        model_channels=u.model_channels, channel_mult=list(u.channel_mult), num_res_blocks=u.num_res_blocks,
        attention_resolutions=[2 ** level for level in u.attention_levels], num_head_channels=u.num_head_channels,
        transformer_depth=u.transformer_depth, context_dim=u.context_dim, adm_in_channels=u.adm_in_channels,
        in_channels=u.in_channels, out_channels=u.out_channels, spatial_transformer_attn_type="softmax",
        use_checkpoint=False)
    vector_keys = []
    emb_models = p.conditioner_config.params.emb_models
    for n, emb in enumerate(emb_models):
        target = emb.target.rsplit(".", 1)[-1]
        if emb.input_key == "cond_frames_without_noise":
            assert n == 0 and target == "FrozenOpenCLIPImagePredictionEmbedder"
            emb_models[n] = OmegaConf.create({"target": "sgm.modules.encoders.modules.IdentityEncoder",
                                              "input_key": emb.input_key, "is_trainable": False})
        elif target == "ConcatTimestepEmbedderND":
            emb.params.outdim = u.vector_widths[len(vector_keys)]
            vector_keys.append(emb.input_key)
        elif target == "VideoPredictionEmbedderWithEncoder":
            assert n == config.kind.cond_encoder, f"{version}: the frame encoder is embedders.{n}"
            _ddconfig(emb.params.encoder_config.params.ddconfig, config)
    assert tuple(vector_keys) == config.kind.vector, f"{version}: the conditioner embeds {vector_keys}"
    first = p.first_stage_config
    _ddconfig(first.params.ddconfig if "ddconfig" in first.params else first.params.decoder_config.params, config)
    sampler = p.sampler_config.params
    sampler.update(num_steps=num_steps, device="cpu", verbose=False)
    sampler.guider_config.params.num_frames = num_frames
    engine = instantiate_from_config(cfg.model).eval()
    engine.en_and_decode_n_samples_a_time = 14  # simple_video_sample.py decoding_t
    return engine


def load_checkpoint_strictly(engine: torch.nn.Module, path: Path, family: str) -> list[str]:
    """The checkpoint's tensors into `engine` by a strict load_state_dict; returns the engine's own tensors that
    the file does not hold, which must all be parts no one reads (layout.ignored_prefixes: the frame encoder's
    decoder, the first stage's encoder). The image tower's tensors are the only ones of the file left out."""
    tower = "conditioner.embedders.0.open_clip."
    file = {k: v for k, v in load_file(str(path)).items() if not k.startswith(tower)}
    own = engine.state_dict()
    assert not file.keys() - own.keys(), sorted(file.keys() - own.keys())[:5]
    unread = sorted(own.keys() - file.keys())
    assert all(k.startswith(ignored_prefixes(family)) for k in unread), [
        k for k in unread if not k.startswith(ignored_prefixes(family))][:5]
    engine.load_state_dict({**own, **file}, strict=True)
    return unread


def script_camera(num_frames: int, elevations_deg: Any, azimuths_deg: Any) -> tuple[list, list]:
    """polars_rad and azimuths_rad as simple_video_sample.py's `version == "sv3d_p"` branch computes them: its own
    lines, read from the script and run here (the script itself imports cv2 and rembg), all but its
    `num_frames = 21`, so that the tiny models' 4 frames can be given."""
    tree = ast.parse((ROOT / SCRIPT).read_text())
    sample = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sample")
    branch = next(n for n in ast.walk(sample) if isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
                  and isinstance(n.test.comparators[0], ast.Constant) and n.test.comparators[0].value == "sv3d_p")
    forced = [n for n in branch.body if isinstance(n, ast.Assign) and ast.unparse(n) == "num_frames = 21"]
    assert len(forced) == 1, "the sv3d_p branch no longer forces num_frames = 21: update this test"
    body = [n for n in branch.body if n is not forced[0]]
    scope: dict[str, Any] = {"np": np, "default": default, "num_steps": None, "output_folder": None,
                             "num_frames": num_frames, "elevations_deg": elevations_deg, "azimuths_deg": azimuths_deg}
    exec(compile(ast.Module(body=body, type_ignores=[]), SCRIPT, "exec"), scope)  # noqa: S102
    return scope["polars_rad"], scope["azimuths_rad"]


@dataclass
class Pair:
    name: str  # the checkpoint file's name (its preset)
    ours: Any  # SVDModels, loaded from the file
    engine: torch.nn.Module  # the reference's DiffusionEngine, the same tensors
    image: torch.Tensor  # (1, 3, H, W) in [0, 1] on the uint8 grid (what ToTensor makes of an image file)
    camera: dict[str, list[float]]  # SV3D_p's camera path, in degrees
    unread: list[str]  # the engine's tensors the file does not hold (load_checkpoint_strictly)

    @functools.cached_property
    def start(self) -> Any:
        return start_noise(self)

    @functools.cached_property
    def theirs(self) -> tuple[dict, dict, dict]:
        return reference_conditioning(self, self.start.augmentation)

    @functools.cached_property
    def ours_cond(self) -> tuple[Any, Any, VideoRequest]:
        return our_conditioning(self, self.start)


@pytest.fixture(scope="module", params=list(FILES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    name = request.param
    family = FILES[name]
    config = SVDConfig.tiny(family)
    path = save_random_checkpoint(tmp_path_factory.mktemp(name) / f"{name}.safetensors", config, seed=5,
                                  dtype=torch.float32)
    ours = load_models(path, dtype=torch.float32)
    assert (ours.config.name, ours.config.family) == (name, family)
    engine = reference_engine(name, config, T, STEPS)
    unread = load_checkpoint_strictly(engine, path, family)
    g = torch.Generator().manual_seed(11)
    image = torch.randint(0, 256, (1, 3, SIZE, SIZE), generator=g).float() / 255.0
    # elevations of several heights and azimuths out of order (the script keeps their order)
    camera = {"elevations_deg": [5.0, 10.0, 20.0, -10.0], "azimuths_deg": [300.0, 90.0, 180.0, 45.0]} \
        if config.kind.camera else {}
    return Pair(name, ours, engine, image, camera, unread)


def start_noise(p: Pair) -> Any:
    """Our seed contract's first draws for one video of seed SEED: latent noise (1, T, C, h, w), then the
    augmentation noise (1, 3, H, W); the reference is given the same numbers for its randn / randn_like."""
    f = p.ours.vae.config.downscale
    return VideoNoise.for_batch(SEED, 1).start(latent=(T, p.ours.vae.config.latent_channels, SIZE // f, SIZE // f),
                                               image=(3, SIZE, SIZE))


def reference_conditioning(p: Pair, augmentation: torch.Tensor) -> tuple[dict, dict, dict]:
    """(c, uc, additional_model_inputs) of simple_video_sample.py for our image: value_dict and get_batch's batch
    (N = [1, num_frames]), the conditioner's get_unconditional_conditioning with the script's
    force_uc_zero_embeddings, crossattn and concat repeated over the frames."""
    engine, kind, s = p.engine, p.ours.config.kind, p.ours.config.sampling
    image = p.image * 2.0 - 1.0  # ToTensor()(input_image) * 2.0 - 1.0
    n = [1, T]
    batch: dict[str, Any] = {
        # FrozenOpenCLIPImagePredictionEmbedder's output, from our tower (the slot holds IdentityEncoder)
        "cond_frames_without_noise": rearrange(encode_image(p.ours.image_encoder, p.image), "b d -> b 1 d"),
        "cond_frames": image + s.cond_aug * augmentation,  # value_dict["cond_frames"], randn_like(image) given
        "cond_aug": repeat(torch.tensor([s.cond_aug]), "1 -> b", b=math.prod(n)),
        "fps_id": torch.tensor([s.fps_id]).repeat(math.prod(n)),
        "motion_bucket_id": torch.tensor([s.motion_bucket_id]).repeat(math.prod(n)),
    }
    if kind.camera:
        polars_rad, azimuths_rad = script_camera(T, p.camera["elevations_deg"], p.camera["azimuths_deg"])
        batch["polars_rad"] = torch.tensor(polars_rad).repeat(n[0])
        batch["azimuths_rad"] = torch.tensor(azimuths_rad).repeat(n[0])
    keys = {e.input_key for e in engine.conditioner.embedders}  # get_unique_embedder_keys_from_conditioner
    batch = {k: v for k, v in batch.items() if k in keys}
    batch["num_video_frames"] = T
    batch_uc = {k: torch.clone(v) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        c, uc = engine.conditioner.get_unconditional_conditioning(
            batch, batch_uc=batch_uc, force_uc_zero_embeddings=["cond_frames", "cond_frames_without_noise"])
    for k in ["crossattn", "concat"]:
        uc[k] = rearrange(repeat(uc[k], "b ... -> b t ...", t=T), "b t ... -> (b t) ...", t=T)
        c[k] = rearrange(repeat(c[k], "b ... -> b t ...", t=T), "b t ... -> (b t) ...", t=T)
    additional = {"image_only_indicator": torch.zeros(2, T), "num_video_frames": batch["num_video_frames"]}
    return c, uc, additional


def reference_denoiser(p: Pair, additional: dict) -> Any:
    """The script's `denoiser(input, sigma, c)` closure around the engine's Denoiser and network."""

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        return p.engine.denoiser(p.engine.model, x, sigma, cond, **additional)

    return denoiser


def reference_video(p: Pair, latent: torch.Tensor, augmentation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples_z (T, C, h, w), frames (T, 3, H, W) in [0, 1]) as simple_video_sample.py makes them, in fp32:
    `latent` (T, C, h, w) is its randn(shape), `augmentation` (1, 3, H, W) its randn_like(image)."""
    c, uc, additional = reference_conditioning(p, augmentation)
    with torch.no_grad():
        samples_z = p.engine.sampler(reference_denoiser(p, additional), latent.clone(), cond=c, uc=uc)
        samples_x = p.engine.decode_first_stage(samples_z)
        if p.ours.config.kind.orbit:
            samples_x[-1:] = p.image * 2.0 - 1.0  # value_dict["cond_frames_without_noise"]
        return samples_z, torch.clamp((samples_x + 1.0) / 2.0, min=0.0, max=1.0)


def our_conditioning(p: Pair, start: Any) -> tuple[Any, Any, VideoRequest]:
    """(positive, negative, request) of our flow for the pair's image, as generate makes them."""
    request = VideoRequest.build(p.ours.config, width=SIZE, height=SIZE, num_frames=T, num_steps=STEPS, seed=SEED,
                                 **p.camera)
    image, _ = fit_images(request, p.image)
    positive, negative = condition(p.ours.image_encoder, p.ours.vae, request, image, None, start)
    return positive, negative, request


def test_guider_scales_are_the_references() -> None:
    for t in (4, 21):
        triangle = TrianglePredictionGuider(max_scale=2.5, num_frames=t).scale[0]  # sv3d_*.yaml (min_scale 1.0)
        assert torch.equal(guidance_scales("triangle", t, 1.0, 2.5), triangle)
        for lo, hi in ((1.0, 2.5), (1.5, 3.0)):  # svd_image_decoder.yaml, svd_xt_image_decoder.yaml
            linear = LinearPredictionGuider(max_scale=hi, min_scale=lo, num_frames=t).scale[0]
            assert torch.equal(guidance_scales("linear", t, lo, hi), linear)


@pytest.mark.parametrize(("num_frames", "elevations_deg", "azimuths_deg"), [
    (21, 10.0, None),  # the script's defaults: 10 degrees on the even orbit
    (21, 30, None),  # an int elevation
    (21, [float(e) for e in np.linspace(-20, 40, 21)], [float(a) for a in np.linspace(0, 360, 22)[1:][::-1] % 360]),
    (4, [5.0, 10.0, 20.0, -10.0], [300.0, 90.0, 180.0, 45.0]),  # out of order: the script keeps the order
    (4, [0.0, 0.0, 0.0, 0.0], [10.0, 370.0, -30.0, 725.5]),  # outside [0, 360): the % 360 of the script
])
def test_camera_radians_are_the_script_lines(num_frames: int, elevations_deg: Any, azimuths_deg: Any) -> None:
    elevations, azimuths = camera_path(num_frames, elevations_deg, azimuths_deg)
    ours = camera_radians(elevations, azimuths)
    theirs = script_camera(num_frames, elevations_deg, azimuths_deg)
    assert ours[0] == [float(v) for v in theirs[0]]
    assert ours[1] == [float(v) for v in theirs[1]]


def test_the_checkpoint_loads_into_the_reference_strictly(pair: Pair) -> None:
    # What the file lacks (taken from the engine's own initialisation) is what no one reads: the frame
    # encoder's decoder and post_quant_conv (AutoencoderKLModeOnly), and for the image decoders the first
    # stage's encoder and quant_conv (AutoencoderKL); SV3D's first stage has no encoder.
    prefix = f"conditioner.embedders.{pair.ours.config.kind.cond_encoder}.encoder."
    expected = {prefix + "decoder.", prefix + "post_quant_conv."}
    if pair.ours.config.kind.post_quant_conv:
        expected |= {"first_stage_model.encoder.", "first_stage_model.quant_conv."}
    assert {p for p in expected if any(k.startswith(p) for k in pair.unread)} == expected
    assert all(k.startswith(tuple(expected)) for k in pair.unread)


def test_the_conditioning_matches_the_reference(pair: Pair) -> None:
    c, uc, _ = pair.theirs
    positive, negative, _ = pair.ours_cond
    widths = pair.ours.unet.config.vector_widths
    for ours, theirs in ((positive, c), (negative, uc)):
        rows = rearrange(ours.vector, "b t k -> (b t) k") if ours.vector.ndim == 3 else \
            repeat(ours.vector, "b k -> (b t) k", t=T)
        assert torch.equal(embed_vector(rows, widths), theirs["vector"]), "the embedded vector y"
        assert torch.equal(repeat(ours.crossattn, "b n d -> (b t) n d", t=T), theirs["crossattn"])
        concat = repeat(ours.concat, "b c h w -> (b t) c h w", t=T)
        diff = (concat - theirs["concat"]).abs().max().item()
        print(f"{pair.name}: concat max |ours - reference| {diff:.2e}")
        assert diff <= ATOL, diff


@pytest.mark.parametrize("level", [0, 1, 2])
def test_one_guided_denoiser_call_matches_the_reference(pair: Pair, level: int) -> None:
    """D(x, sigma) with the family's guidance at one of the schedule's levels (sigma_max 700, 15.6, 0.002)."""
    start = pair.start
    c, uc, additional = pair.theirs
    positive, negative, request = pair.ours_cond
    sigmas = pair.engine.sampler.discretization(STEPS, device="cpu")
    sigma = sigmas[level] * torch.ones(T)  # s_in * sigmas[i]
    x = rearrange(start.latent, "b t c h w -> (b t) c h w") * torch.sqrt(1.0 + sigma[0] ** 2)
    scales = guidance_scales(request.guidance, T, request.min_cfg, request.max_cfg)
    with torch.no_grad():
        theirs = pair.engine.sampler.denoise(x.clone(), reference_denoiser(pair, additional), sigma, c, uc)
        ours = guided_denoiser(pair.ours.unet, positive, negative, T, scales)(x.clone(), sigma)
    diff = (ours - theirs).abs().max().item()
    print(f"{pair.name}: D(x, {sigma[0].item():.4g}) max |ours - reference| {diff:.2e} of {theirs.abs().max():.3g}")
    assert diff <= ATOL, diff


def test_the_euler_sampler_matches_the_reference_on_a_shared_denoiser(pair: Pair) -> None:
    """Our sample_euler and the reference's EulerEDMSampler, both driving the reference's guided denoiser."""
    start = pair.start
    c, uc, additional = pair.theirs
    den = reference_denoiser(pair, additional)
    noise = rearrange(start.latent, "b t c h w -> (b t) c h w")
    with torch.no_grad():
        theirs = pair.engine.sampler(den, noise.clone(), cond=c, uc=uc)
        sigmas = karras_sigmas(STEPS, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO)
        assert torch.equal(sigmas, pair.engine.sampler.discretization(STEPS, device="cpu"))
        ours = sample_euler(lambda x, sigma: pair.engine.sampler.denoise(x, den, sigma, c, uc),
                            noise * initial_noise_scale(sigmas[0]), sigmas)
    diff = (ours - theirs).abs().max().item()
    print(f"{pair.name}: Euler on the reference's denoiser, max |ours - reference| {diff:.2e}")
    assert diff <= ATOL, diff


def test_the_first_stage_agrees_in_float64(pair: Pair) -> None:
    """Frame encoder and decoder in float64, where rounding cannot hide a difference of formula (an eps, an
    order of operations): ours and the reference's agree to 1e-12 (fp32 differs by ~5e-6, rounding)."""
    g = torch.Generator().manual_seed(2)
    kind = pair.ours.config.kind
    vae = copy.deepcopy(pair.ours.vae).double()
    first_stage = copy.deepcopy(pair.engine.first_stage_model).double()
    frame_encoder = copy.deepcopy(pair.engine.conditioner.embedders[kind.cond_encoder].encoder).double()
    f = pair.ours.vae.config.downscale
    z = torch.randn(2, 4, SIZE // f, SIZE // f, generator=g, dtype=torch.float64) / pair.ours.vae.config.scale_factor
    frames = torch.rand(2, 3, SIZE, SIZE, generator=g, dtype=torch.float64) * 2.0 - 1.0
    with torch.no_grad():
        decoded = (vae.decode(z, 2) - first_stage.decode(z)).abs().max().item()
        encoded = (vae.encode(frames) - frame_encoder.encode(frames)).abs().max().item()
    print(f"{pair.name}: float64 decoder {decoded:.1e}, frame encoder {encoded:.1e}")
    assert decoded <= 1e-12 and encoded <= 1e-12, (decoded, encoded)


def test_the_video_matches_the_reference_frame_by_frame(pair: Pair) -> None:
    start = pair.start
    samples_z, theirs = reference_video(pair, start.latent[0], start.augmentation)
    ours = generate(pair.ours, pair.image, num_frames=T, num_steps=STEPS, seed=SEED, width=SIZE, height=SIZE,
                    **pair.camera)[0]
    positive, negative, request = pair.ours_cond
    z = sample(pair.ours.unet, request, positive, negative, start.latent, VideoNoise.for_batch(SEED, 1))[0]
    latents = (z - samples_z).abs().max().item()
    assert ours.shape == theirs.shape == (T, 3, SIZE, SIZE)
    frames = [(ours[t] - theirs[t]).abs().max().item() for t in range(T)]
    print(f"{pair.name}: latents max |ours - reference| {latents:.2e}; frames {[f'{d:.2e}' for d in frames]}")
    assert latents <= ATOL, latents
    assert max(frames) <= FRAMES_ATOL, frames
    if pair.ours.config.kind.orbit:
        assert torch.equal(ours[-1], theirs[-1]), "the last view is the input image, on both sides"
