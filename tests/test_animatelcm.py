"""AnimateLCM-SVD-xt: its UNet file as it ships, its preset, and its consistency sampler checked by hand.

Facts about the published model (G-U-N/AnimateLCM, animatelcm_svd/app.py and animatelcm_scheduler.py;
weights wangfuyun/AnimateLCM-SVD-xt): each file holds a UNet alone, in diffusers'
UNetSpatioTemporalConditionModel names without a prefix, fp32, loaded with load_state_dict(strict=True)
into an SVD-XT pipeline; the sampler is consistency multistep sampling on a 40-level Karras grid with
sigma_data 1; guidance is applied to the network's raw output, per frame from 1.0 to 1.2.
"""
from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange, repeat
from PIL import Image
from safetensors.torch import load_file, save_file

from svd_core import CheckpointError, SVDConfig, embed_vector, encode_conditioning, generate, load_models, sample_video
from svd_core.nets.unet import UNetConfig
from svd_core.weights.convert.unet import folder_config
from svd_core.weights.random_weights import save_random_checkpoint, save_random_unet

REPO = Path(__file__).resolve().parents[1]
H = W = 64
T = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("animatelcm")
    ckpt = save_random_checkpoint(d / "svd_xt.safetensors", SVDConfig.tiny(), seed=3)
    unet = save_random_unet(d / "AnimateLCM-SVD-xt-1.1.safetensors", SVDConfig.tiny(), seed=4)
    return ckpt, unet, d


@pytest.fixture(scope="module")
def models(files):
    ckpt, unet, _ = files
    return load_models(ckpt, dtype=torch.float32, unet=unet)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


# --- the file ------------------------------------------------------------------------------------

def test_the_file_loads_as_animatelcm_ships_it(files, models):
    """The random file is in the published layout (diffusers loads it strictly, as app.py does), it picks the
    animatelcm_svd_xt preset by its name, and our UNet computes what diffusers' computes from it."""
    diffusers = pytest.importorskip("diffusers")
    _, unet_file, _ = files
    sd = load_file(str(unet_file))
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert not any(k.startswith(("model.diffusion_model.", "input_blocks.")) for k in sd)
    oracle = diffusers.UNetSpatioTemporalConditionModel(**{
        k: v for k, v in folder_config(models.config.unet, num_frames=T).items() if not k.startswith("_")}).eval()
    result = oracle.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for name, module in oracle.named_modules():  # the reference's GroupNorm eps (see test_unet.py)
        if isinstance(module, torch.nn.GroupNorm) and ("spatial_res_block" in name or "temporal_res_block" in name):
            module.eps = 1e-5

    assert models.config.name == "animatelcm_svd_xt"
    s = models.config.sampling
    assert (s.num_steps, s.min_cfg, s.max_cfg, s.motion_bucket_id, s.fps_id, s.decode_chunk_size, s.sampler) == \
        (4, 1.0, 1.2, 80, 6, 4, "lcm")
    cfg = models.config.unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, cfg.in_channels, 8, 8, generator=g)
    c_noise = torch.tensor([0.25 * math.log(13.678)])
    context = torch.randn(1, 1, cfg.context_dim, generator=g)
    ids = torch.tensor([[6.0, 80.0, 0.02]])
    with torch.no_grad():
        expected = oracle(x, c_noise, context, added_time_ids=ids).sample
        got = models.unet(rearrange(x, "b t c h w -> (b t) c h w"), c_noise.expand(T), context.expand(T, 1, -1),
                          repeat(embed_vector(ids, cfg.vector_embed_dim), "b d -> (b t) d", t=T), num_frames=T)
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(rearrange(got, "(b t) c h w -> b t c h w", t=T), expected, rtol=1e-4, atol=1e-4)


def test_every_unet_layout_gives_the_same_weights(files, models, tmp_path):
    ckpt, unet_file, _ = files
    sd = {k: v for k, v in models.unet.state_dict().items()}
    bare = save_random_unet(tmp_path / "AnimateLCM-bare.safetensors", SVDConfig.tiny(), seed=4, layout="bare")
    whole = save_random_checkpoint(tmp_path / "whole.safetensors", SVDConfig.tiny(), seed=9, dtype=torch.float32)
    for path, same in ((bare, True), (whole, False)):
        other = load_models(ckpt, dtype=torch.float32, unet=path).unet.state_dict()
        assert set(other) == set(sd)
        assert all(torch.equal(other[k], sd[k]) for k in sd) == same
    base = load_models(ckpt, dtype=torch.float32)
    assert base.config.name == "svd_xt" and base.config.sampling.sampler == "euler"
    assert not all(torch.equal(base.unet.state_dict()[k], sd[k]) for k in sd)  # the file's UNet replaced the base's
    for k, v in base.image_encoder.state_dict().items():  # the other parts are the checkpoint's
        assert torch.equal(models.image_encoder.state_dict()[k], v)
    assert load_models(ckpt, dtype=torch.float32, unet=unet_file, preset="svd_xt").config.name == "svd_xt"


def test_bad_unet_files_are_refused_naming_file_and_tensor(files, tmp_path):
    ckpt, unet_file, _ = files
    sd = load_file(str(unet_file))
    key = "down_blocks.0.resnets.0.spatial_res_block.conv1.weight"
    missing = tmp_path / "AnimateLCM-missing.safetensors"
    save_file({k: v for k, v in sd.items() if k != key}, str(missing))
    with pytest.raises(CheckpointError, match=rf"'{missing}'(.|\n)*'{key}'"):
        load_models(ckpt, dtype=torch.float32, unet=missing)
    other = tmp_path / "not_a_unet.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(2, 3, 3, 3)}, str(other))
    with pytest.raises(CheckpointError, match="is not an SVD UNet"):
        load_models(ckpt, dtype=torch.float32, unet=other)
    with pytest.raises(CheckpointError, match="wangfuyun/AnimateLCM-SVD-xt"):
        load_models(ckpt, dtype=torch.float32, unet=tmp_path / "AnimateLCM-SVD-xt.safetensors")
    wide = replace(SVDConfig.tiny(), unet=replace(UNetConfig.tiny(), context_dim=48))
    mismatched = save_random_unet(tmp_path / "AnimateLCM-wide.safetensors", wide)
    with pytest.raises(CheckpointError, match="context_dim is 48"):
        load_models(ckpt, dtype=torch.float32, unet=mismatched)


# --- the sampler, by hand ----------------------------------------------------------------------

def test_lcm_sampling_by_hand(models):
    """Four steps written out from the scheduler's definitions, one UNet call per conditioning: the levels,
    c_in = 1/sqrt(s^2+1), c_noise = ln(s)/4, guidance w_t on the raw v (1.0 to 1.2 over the frames),
    D = x/(s^2+1) - s/sqrt(s^2+1) v, then x = D + s_next z with z from the video's generator."""
    unet = models.unet
    pos, neg = encode_conditioning(models.image_encoder, models.vae, _images(1), fps_id=6, motion_bucket_id=80,
                                   cond_aug=0.02, generator=torch.Generator().manual_seed(1))
    shape = (1, T, 4, H // 8, W // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    out = sample_video(unet, pos, neg, noise, num_steps=4, min_cfg=1.0, max_cfg=1.2, sampler="lcm",
                       generator=[torch.Generator().manual_seed(3)])

    lo, hi = 0.002 ** (1 / 7), 700.0 ** (1 / 7)
    levels = [(hi + (k * 10 / 39) * (lo - hi)) ** 7 for k in range(4)] + [0.0]
    g = torch.Generator().manual_seed(3)
    w = torch.linspace(1.0, 1.2, T).view(T, 1, 1, 1)
    vector = repeat(embed_vector(pos.vector, unet.config.vector_embed_dim), "b d -> (b t) d", t=T)

    def v_of(cond, x_in: torch.Tensor, s: float) -> torch.Tensor:
        c_noise = torch.full((T,), 0.25 * math.log(s))
        return unet(torch.cat([x_in, repeat(cond.concat, "b c h w -> (b t) c h w", t=T)], dim=1), c_noise,
                    repeat(cond.crossattn, "b n d -> (b t) n d", t=T), vector, num_frames=T)

    x = noise[0] * math.sqrt(700.0**2 + 1)  # (T, C, h, w)
    with torch.no_grad():
        for s, s_next in zip(levels[:-1], levels[1:], strict=True):
            x_in = x / math.sqrt(s * s + 1)
            v_u, v_c = v_of(neg, x_in, s), v_of(pos, x_in, s)
            v = v_u + w * (v_c - v_u)
            d = x / (s * s + 1) - s / math.sqrt(s * s + 1) * v
            x = d + s_next * torch.randn(shape[1:], generator=g) if s_next > 0 else d
    assert x.abs().max() > 1e-2
    torch.testing.assert_close(out[0], x, rtol=1e-5, atol=1e-5)


def test_generate_follows_the_preset_and_keeps_a_seed_per_video(models, monkeypatch):
    calls: list[int] = []
    forward = type(models.unet).forward

    def counting(self, x, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(x.shape[0])
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(type(models.unet), "forward", counting)
    images = _images(2, seed=5)
    both = generate(models, images, num_frames=T, seed=11)
    assert calls == [2 * 2 * T] * 4  # the preset's 4 steps, guided (max_cfg 1.2): cond and uncond together
    calls.clear()
    alone = generate(models, images[1:], num_frames=T, seed=12)
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=1e-5)  # video i is its image alone with seed + i
    assert (both[0] - generate(models, images[:1], num_frames=T, seed=13)).abs().max() > 1e-3

    calls.clear()
    unguided = generate(models, images[:1], num_frames=T, seed=11, min_cfg=1.0, max_cfg=1.0)
    assert calls == [T] * 4  # scale 1 everywhere: the unconditional half is skipped
    calls.clear()
    guided = generate(models, images[:1], num_frames=T, seed=11, min_cfg=1.0, max_cfg=1.0 + 1e-7)
    assert calls == [2 * T] * 4
    torch.testing.assert_close(unguided, guided, rtol=0, atol=1e-5)


def test_the_command_line_takes_the_unet_file(files):
    ckpt, unet_file, d = files
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4 % 256, y * 4 % 256, (x + y) % 256], -1).astype(np.uint8)).save(d / "in.png")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "svd_core", "generate", "--checkpoint", str(ckpt),
                               "--unet", str(unet_file), "--image", str(d / "in.png"), "--width", "64", "--height",
                               "64", "--frames", "3", "--device", "cpu", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    r = run("--output", str(d / "lcm.webp"))
    assert r.returncode == 0, r.stderr
    assert "animatelcm_svd_xt" in r.stderr and "4 steps" in r.stderr and "4/4" in r.stderr
    r = run("--output", str(d / "long.webp"), "--steps", "41")
    assert r.returncode == 2 and "--steps must be at most 40 for the lcm sampler" in r.stderr
    assert not (d / "long.webp").exists()
