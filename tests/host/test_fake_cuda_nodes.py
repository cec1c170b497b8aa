"""The nodes' own calls on a CUDA device that is not there (bench/fake_cuda.py): the conditioning, sampler and
decoder nodes with the UNet's weights in fp16, and stored in fp8 (e4m3fn) computed in fp16 through ComfyUI's
casting layers, as the loader sets them up on a GPU. ComfyUI's loading is stood in for (the models already sit
on the device), and so are its previews: with previews on, ComfyUI itself reads one preview a step from the
device (latent_preview), its choice for every sampler; the pack's own calls must read nothing inside a step.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fake_cuda import FakeCuda  # noqa: E402

SIZE, FRAMES = 64, 14  # one decode chunk (tests/test_fake_cuda.py runs 25 frames)


def _handles(nodes: dict[str, Any], storage: torch.dtype) -> tuple[Any, Any, Any]:
    """The loader's three outputs for the tiny model on fake CUDA: layers from comfy.ops.pick_operations, the
    UNet's matrices stored in `storage`, computing in fp16 (set_execution), each in a ModelPatcher."""
    import comfy.ops

    import svd_core
    from svd_core.nets.layers import set_execution

    pack = sys.modules[nodes["StableVideoSampler"].__module__]  # the pack's nodes.svd_nodes, as ComfyUI named it

    cuda, half = torch.device("cuda"), torch.float16
    config = svd_core.SVDConfig.tiny()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(half)  # Module.to cannot swap fake parameters: they are made in the dtype instead
    try:
        models = svd_core.build_models(config, device=cuda, ops=comfy.ops.pick_operations(storage, half,
                                                                                          load_device=cuda))
    finally:
        torch.set_default_dtype(previous)
    if storage != half:  # the loader's weight_dtype: matrices stored in fp8, norms and biases in fp16
        for module in models.unet.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                if p.ndim >= 2:
                    setattr(module, name, torch.nn.Parameter(p.to(storage), requires_grad=False))
    for part in (models.unet, models.image_encoder, models.vae):
        set_execution(part, device=cuda, dtype=half)
    return tuple(pack.ModelHandle(pack._patcher(part, cuda, torch.device("cpu")), config, "svd_tiny.safetensors")
                 for part in (models.unet, models.image_encoder, models.vae))


@pytest.mark.parametrize("storage", [torch.float16, torch.float8_e4m3fn], ids=["fp16", "fp8_e4m3fn"])
def test_sampler_and_decoder_nodes_on_fake_cuda(comfy_nodes: Any, storage: torch.dtype,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.model_management as mm
    import latent_preview

    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    monkeypatch.setattr(mm, "load_models_gpu", lambda *args, **kwargs: None)  # the models are on the device
    monkeypatch.setattr(latent_preview, "get_previewer", lambda *args, **kwargs: None)
    with FakeCuda(compute=torch.float16, storage=(storage,)) as run:
        model, clip, vae = _handles(nodes, storage)
        run.watch(type("Parts", (), {"unet": model.module, "image_encoder": clip.module, "vae": vae.module}))
        stored = {p.dtype for p in model.module.parameters()}
        assert storage in stored
        image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
        pos, neg = nodes["StableVideoConditioning"].execute(
            clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
            motion_bucket_id=127, cond_aug=0.02, seed=0).result
        (latent,) = nodes["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=FRAMES,
                                                            batch_size=1).result
        (z,) = nodes["StableVideoSampler"].execute(
            model=model, positive=pos, negative=neg, latent=latent, seed=0, steps=2, min_cfg=1.5, max_cfg=3.0,
            guidance="linear", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=1.0).result
        images = nodes["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result[0]
    assert tuple(images.shape) == (FRAMES, SIZE, SIZE, 3)
    bad = run.kinds("device", "dtype", "float64") + [f for f in run.kinds("host_read") if f.in_step]
    assert not bad, run.report()
    # outside steps only: each node hands its outputs to ComfyUI's intermediate device (the CPU) as ComfyUI's own
    # nodes do (the conditioning's tensors, the latent, the frames), and the sampler reads its schedule once;
    # nothing grows with the 25 frames or the steps
    assert len(run.kinds("host_read")) <= 12, run.report()
    assert run.cuda_ops > 1000


def test_the_loader_refuses_a_dtype_the_card_cannot_run(comfy_nodes: Any, assets: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 weights on a Turing card (compute capability 7.5): refused before the file is read, naming the
    widget and what the card runs."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA GeForce RTX 2080")
    read: list[str] = []
    monkeypatch.setattr("svd_core.load_models", lambda *args, **kwargs: read.append("read"))
    loader = comfy_nodes.NODE_CLASS_MAPPINGS["StableVideoCheckpointLoader"]
    with pytest.raises(ValueError, match=r"weight_dtype is bf16, which device 'cuda:0' \(NVIDIA GeForce RTX 2080\) "
                                         r"cannot run; it runs fp32, fp16"):
        loader.execute(ckpt_name=hostenv.SVD_CKPT, weight_dtype="bf16")
    assert not read
