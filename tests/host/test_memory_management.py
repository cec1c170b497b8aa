"""The pack under ComfyUI's model management, in-process on the CPU: partial (low-VRAM) loading of the
UNet with ComfyUI's casting layers, fp8 weight storage, and the memory each node asks for."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
log = logging.getLogger(__name__)
SIZE, FRAMES = 64, 3


def _video(comfy_nodes: Any, weight_dtype: str = "auto", seed: int = 0) -> tuple[torch.Tensor, Any]:
    """The five main nodes called one after the other (ComfyUI's loading runs inside them): (frames, model)."""
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = nodes["StableVideoCheckpointLoader"].execute(
        ckpt_name=hostenv.SVD_CKPT, weight_dtype=weight_dtype).result
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(7))
    pos, neg = nodes["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.02, seed=seed).result
    (latent,) = nodes["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=FRAMES, batch_size=1).result
    (z,) = nodes["StableVideoSampler"].execute(
        model=model, positive=pos, negative=neg, latent=latent, seed=seed, steps=2, min_cfg=1.5, max_cfg=3.0,
        guidance="linear", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=1.0).result
    frames = nodes["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result[0]
    return frames, model


def _is_our_unet(patcher: Any) -> bool:
    import svd_core

    return type(patcher.model).__name__ == "_Held" and isinstance(patcher.model.part, svd_core.UNet)


def test_unet_loaded_partially_under_a_small_budget_gives_the_same_video(
        comfy_nodes: Any, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.model_management as mm
    import comfy.ops

    mm.unload_all_models()
    full, model = _video(comfy_nodes)
    assert model.patcher.model.model_lowvram is False
    assert model.patcher.loaded_size() == model.patcher.model_size()

    # A GPU with little free memory: ComfyUI's model_load gets a weight budget of a third of the UNet,
    # as load_models_gpu computes it in low-VRAM mode (the CPU path never does, so it is forced here).
    budget = model.patcher.model_size() // 3
    real_load = mm.LoadedModel.model_load

    def small_budget(self: Any, lowvram_model_memory: int = 0, force_patch_weights: bool = False) -> Any:
        if _is_our_unet(self.model):
            lowvram_model_memory = budget
        return real_load(self, lowvram_model_memory, force_patch_weights)

    casts: list[str] = []
    real_cast = comfy.ops.cast_bias_weight

    def counting_cast(s: Any, *args: Any, **kwargs: Any) -> Any:
        casts.append(type(s).__name__)
        return real_cast(s, *args, **kwargs)

    monkeypatch.setattr(mm.LoadedModel, "model_load", small_budget)
    monkeypatch.setattr(comfy.ops, "cast_bias_weight", counting_cast)
    mm.unload_all_models()
    partial, model = _video(comfy_nodes)
    patcher = model.patcher
    assert patcher.model.model_lowvram is True  # ModelPatcher: "loaded partially"
    assert 0 < patcher.loaded_size() < patcher.model_size()
    lowvram_layers = [n for n, m in model.module.named_modules() if getattr(m, "comfy_cast_weights", False)]
    assert lowvram_layers, "no layer was left to cast its weights at each call"
    assert casts, "no layer cast its weights during sampling"
    log.info("partial load: %d of %d bytes loaded, %d layers cast per call, %d casts",
             patcher.loaded_size(), patcher.model_size(), len(lowvram_layers), len(casts))
    torch.testing.assert_close(partial, full, rtol=0, atol=0)
    monkeypatch.undo()
    mm.unload_all_models()


def test_fp8_weights_run_and_stay_close_to_fp16(comfy_nodes: Any, assets: Path) -> None:
    import comfy.model_management as mm

    mm.unload_all_models()
    f16, _ = _video(comfy_nodes, "fp16")
    f8, model = _video(comfy_nodes, "fp8_e4m3fn")
    other_seed, _ = _video(comfy_nodes, "fp16", seed=1)
    stored = {p.dtype for p in model.module.parameters()}
    assert torch.float8_e4m3fn in stored, stored
    matrices = [p for p in model.module.parameters() if p.ndim >= 2]
    assert all(p.dtype == torch.float8_e4m3fn for p in matrices)
    d8 = (f8 - f16).abs()
    d_seed = (other_seed - f16).abs()
    print(f"\nfp8_e4m3fn vs fp16 weights (tiny random model): max {d8.max():.4f}, mean {d8.mean():.4f}; "
          f"another seed: mean {d_seed.mean():.4f}")
    assert torch.isfinite(f8).all()
    # 3 mantissa bits cost a random tiny model far more than trained weights (whose fp8 use is common);
    # the bound only says that fp8 keeps the video: much nearer fp16's than another seed's video is
    assert d8.mean() < 0.5 * d_seed.mean()
    mm.unload_all_models()


def test_each_node_tells_comfyui_the_memory_its_work_needs(
        comfy_nodes: Any, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.model_management as mm

    import svd_core
    from svd_core import memory

    asked: list[tuple[str, int]] = []
    real = mm.load_models_gpu

    def spy(models: Any, memory_required: int = 0, *args: Any, **kwargs: Any) -> Any:
        asked.append((type(models[0].model.part).__name__, memory_required))
        return real(models, memory_required, *args, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", spy)
    _video(comfy_nodes)
    cfg = svd_core.SVDConfig.tiny()
    fp32 = torch.float32
    expected = {
        "ImageEncoder": max(memory.image_encoder_bytes(cfg.image_encoder, 1, SIZE, SIZE, fp32),
                            memory.vae_encoder_bytes(cfg.vae, 1, SIZE, SIZE, fp32)),
        "UNet": memory.unet_step_bytes(cfg.unet, 1, FRAMES, SIZE, SIZE, fp32),
        "VAE": memory.decode_bytes(cfg.vae, FRAMES, SIZE, SIZE, fp32),
    }
    assert dict(asked) == expected, asked
    assert all(v > 0 for v in expected.values())


# --- the rest of the family: SV3D_p and the image-decoder SVD (frame-wise 2-D decoder) ---------------------

# tiny random members written by this module (not the session's assets: other modules own those names)
FAMILY_CKPTS = {"sv3d_p": "sv3d_p_tiny_lowvram.safetensors",
                "svd_image_decoder": "svd_image_decoder_tiny_lowvram.safetensors"}


@pytest.fixture(scope="module")
def family_ckpts(assets: Path) -> dict[str, str]:
    from svd_core import SVDConfig
    from svd_core.weights.random_weights import save_random_checkpoint

    for family, name in FAMILY_CKPTS.items():
        if not (assets / name).exists():
            save_random_checkpoint(assets / name, SVDConfig.tiny(family), seed=3)
    return FAMILY_CKPTS


def _family_video(comfy_nodes: Any, ckpt: str, seed: int = 0) -> tuple[torch.Tensor, Any, Any]:
    """Loader, conditioning, empty latent, sampler and decoder for a family member: (frames, model, vae). SV3D
    is conditioned by svd_core.video.flow directly (StableVideoConditioning is for SVD's image-to-video)."""
    import comfy.model_management as mm

    from svd_core.seeds import VideoNoise
    from svd_core.video import flow
    from svd_core.video.request import VideoRequest

    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = nodes["StableVideoCheckpointLoader"].execute(ckpt_name=ckpt, weight_dtype="auto").result
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(7))
    orbit = model.config.kind.orbit
    if orbit:
        request = VideoRequest.build(model.config, width=SIZE, height=SIZE, num_frames=FRAMES, seed=seed)
        fitted, _ = flow.fit_images(request, image.movedim(-1, 1))
        start = VideoNoise.for_batch(seed, 1).start(latent=flow.latent_shape(vae.module, request),
                                                    image=tuple(fitted.shape[1:]))
        mm.load_models_gpu([clip.patcher, vae.patcher])
        pos, neg = flow.condition(clip.module, vae.module, request, fitted, None, start)
    else:
        pos, neg = nodes["StableVideoConditioning"].execute(
            clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
            motion_bucket_id=127, cond_aug=0.02, seed=seed).result
    (latent,) = nodes["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=FRAMES, batch_size=1).result
    (z,) = nodes["StableVideoSampler"].execute(
        model=model, positive=pos, negative=neg, latent=latent, seed=seed, steps=2, min_cfg=1.0, max_cfg=2.5,
        guidance="triangle" if orbit else "linear", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0,
        denoise=1.0).result
    frames = nodes["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result[0]
    return frames, model, vae


def _is_ours(patcher: Any) -> bool:
    import svd_core

    return type(patcher.model).__name__ == "_Held" and isinstance(patcher.model.part, (svd_core.UNet, svd_core.VAE))


@pytest.mark.parametrize("family", list(FAMILY_CKPTS))
def test_family_member_loads_and_runs_partially_loaded_with_the_same_frames(
        comfy_nodes: Any, family_ckpts: dict[str, str], family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SV3D_p and the image-decoder SVD through the loader, sampler and decoder: the frame-wise VAE is told
    image_decode_bytes, and with the UNet and the VAE both loaded partially (a third of their weights, as on a
    small GPU) the frames are bit for bit those of the full load."""
    import comfy.model_management as mm
    import comfy.ops

    import svd_core
    from svd_core import memory
    from svd_core.nets.image_decoder import ImageDecoder

    asked: dict[str, int] = {}
    real_gpu = mm.load_models_gpu

    def spy(models: Any, memory_required: int = 0, *args: Any, **kwargs: Any) -> Any:
        asked[type(models[0].model.part).__name__] = memory_required
        return real_gpu(models, memory_required, *args, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", spy)
    mm.unload_all_models()
    full, model, vae = _family_video(comfy_nodes, family_ckpts[family])
    assert model.config.family == family and vae.config.family == family
    assert isinstance(vae.module.decoder, ImageDecoder)
    assert (vae.module.post_quant_conv is not None) == (family == "svd_image_decoder")
    assert model.module.config.adm_in_channels == svd_core.SVDConfig.tiny(family).unet.adm_in_channels
    assert model.patcher.model.model_lowvram is False and vae.patcher.model.model_lowvram is False
    assert full.shape == (FRAMES, SIZE, SIZE, 3) and torch.isfinite(full).all()
    chunk = min(FRAMES, model.config.sampling.decode_chunk_size)
    assert asked["VAE"] == memory.image_decode_bytes(vae.config.vae, SIZE, SIZE, torch.float32, frames=chunk)
    assert asked["VAE"] == memory.decode_bytes(vae.config.vae, chunk, SIZE, SIZE, torch.float32)

    # a GPU with little free memory: a weight budget of a third of the UNet, and of the VAE (the existing test's
    # approach: load_models_gpu never computes one on the CPU, so model_load is given it)
    real_load = mm.LoadedModel.model_load

    def small_budget(self: Any, lowvram_model_memory: int = 0, force_patch_weights: bool = False) -> Any:
        if _is_ours(self.model):
            lowvram_model_memory = self.model.model_size() // 3
        return real_load(self, lowvram_model_memory, force_patch_weights)

    casts: list[str] = []
    real_cast = comfy.ops.cast_bias_weight

    def counting_cast(s: Any, *args: Any, **kwargs: Any) -> Any:
        casts.append(type(s).__name__)
        return real_cast(s, *args, **kwargs)

    monkeypatch.setattr(mm.LoadedModel, "model_load", small_budget)
    monkeypatch.setattr(comfy.ops, "cast_bias_weight", counting_cast)
    mm.unload_all_models()
    partial, model, vae = _family_video(comfy_nodes, family_ckpts[family])
    for handle in (model, vae):
        patcher = handle.patcher
        assert patcher.model.model_lowvram is True, type(handle.module).__name__
        assert 0 < patcher.loaded_size() < patcher.model_size()
    cast_layers = [n for n, m in vae.module.decoder.named_modules() if getattr(m, "comfy_cast_weights", False)]
    assert cast_layers, "no layer of the 2-D decoder was left to cast its weights at each call"
    assert casts, "no layer cast its weights during sampling and decoding"
    log.info("%s partial load: UNet %d of %d bytes, VAE %d of %d bytes, %d decoder layers cast per call", family,
             model.patcher.loaded_size(), model.patcher.model_size(), vae.patcher.loaded_size(),
             vae.patcher.model_size(), len(cast_layers))
    torch.testing.assert_close(partial, full, rtol=0, atol=0)
    monkeypatch.undo()
    mm.unload_all_models()
