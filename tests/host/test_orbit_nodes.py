"""SV3D (StableVideoOrbitConditioning) and the image-decoder SVDs in-process: what the nodes make of them, and
what they refuse (each message naming the input, the file and what to use instead)."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
SIZE, FRAMES = 64, 3
SV3D_U_CKPT = "sv3d_u_tiny.safetensors"
IMAGE_DECODER_CKPT = "svd_xt_image_decoder_tiny.safetensors"  # 'xt' in the name: the svd_xt_image_decoder preset
OBJECT = "sv3d_example_object.png"  # image_to_orbit's input: an object on transparency


@pytest.fixture(scope="module")
def checkpoints(assets: Path) -> Path:
    """The session's tiny files (SVD, SV3D_p) plus a tiny SV3D_u and a tiny SVD-XT image decoder."""
    hostenv.write_family_checkpoint(assets / SV3D_U_CKPT, "sv3d_u", seed=3)
    hostenv.write_family_checkpoint(assets / IMAGE_DECODER_CKPT, "svd_image_decoder", seed=4)
    return assets


def _load(n: dict[str, Any], ckpt: str) -> tuple[Any, Any, Any]:
    return n["StableVideoCheckpointLoader"].execute(ckpt_name=ckpt, weight_dtype="fp32").result


def _object(n: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The template's input as the template reads it: LoadImage's RGB IMAGE and its MASK through InvertMask
    (LoadImage's mask is 1 where the picture is transparent; the orbit node's is 1 on the object)."""
    image, transparent = n["LoadImage"]().load_image(OBJECT)
    (alpha,) = n["InvertMask"]().invert(transparent)
    return image, alpha


def _orbit(n: dict[str, Any], clip: Any, vae: Any, image: torch.Tensor, **given: Any) -> tuple[Any, Any]:
    inputs = dict(clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, frames=FRAMES, elevations="",
                  azimuths="", cond_aug=1e-5, seed=0)
    return n["StableVideoOrbitConditioning"].execute(**{**inputs, **given}).result


def _run(prompt: dict[str, Any]) -> tuple[Any, Any]:
    """Validate and execute an API prompt in-process: (validation result, executor or None)."""
    import execution

    pid = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
    if not valid[0]:
        return valid, None
    executor = execution.PromptExecutor(hostenv.ServerStub(), cache_type=execution.CacheType.CLASSIC)
    executor.execute(prompt, pid, {"client_id": None}, valid[2])
    return valid, executor


def test_orbit_node_refuses_an_svd_model_pointing_to_stable_video_conditioning(
        comfy_nodes: Any, checkpoints: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    _, clip, vae = _load(n, hostenv.SVD_CKPT)
    image, alpha = _object(n)
    with pytest.raises(ValueError) as refused:
        _orbit(n, clip, vae, image, mask=alpha)
    message = str(refused.value)
    assert message.startswith("clip_vision:"), message
    assert f"'{hostenv.SVD_CKPT}' ({clip.config.name}, an svd model) is not SV3D" in message, message
    assert "Stable Video Conditioning" in message, message


def test_stable_video_conditioning_refuses_an_sv3d_model_pointing_to_the_orbit_node(
        comfy_nodes: Any, checkpoints: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    _, clip, vae = _load(n, hostenv.SV3D_P_CKPT)
    image, _ = _object(n)
    with pytest.raises(ValueError) as refused:
        n["StableVideoConditioning"].execute(
            clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
            motion_bucket_id=127, cond_aug=0.02, seed=0)
    message = str(refused.value)
    assert message.startswith("clip_vision:") and f"'{hostenv.SV3D_P_CKPT}' (sv3d_p" in message, message
    assert "Stable Video Orbit Conditioning" in message, message


@pytest.mark.parametrize("ckpt, given, expected", [
    (SV3D_U_CKPT, {"elevations": "10"}, ["elevations / azimuths:", f"'{SV3D_U_CKPT}' (sv3d_u",
                                         "takes no camera path (only SV3D_p does)"]),
    (SV3D_U_CKPT, {"azimuths": "0, 120, 240"}, ["elevations / azimuths:", "takes no camera path"]),
    (hostenv.SV3D_P_CKPT, {"frames": 21, "azimuths": "0, 72, 144, 216, 288"}, ["azimuths", "5 values; give 21"]),
    (hostenv.SV3D_P_CKPT, {"frames": 21, "elevations": "0, 10, 20"}, ["elevations", "3 values; give 1 value, or 21"]),
    (hostenv.SV3D_P_CKPT, {"elevations": "95"}, ["elevations", "[-90, 90]", "95"]),
    (hostenv.SV3D_P_CKPT, {"azimuths": "a, b"}, ["azimuths: 'a, b' is not a list of numbers"]),
])
def test_camera_path_refused_for_sv3d_u_and_bad_lists_refused_naming_the_input(
        comfy_nodes: Any, checkpoints: Path, ckpt: str, given: dict[str, Any], expected: list[str]) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    _, clip, vae = _load(n, ckpt)
    image, alpha = _object(n)
    with pytest.raises(ValueError) as refused:
        _orbit(n, clip, vae, image, mask=alpha, **given)
    message = str(refused.value)
    assert all(part in message for part in expected), message
    assert "_deg" not in message, "the node's inputs are named, not svd_core's arguments"


@pytest.mark.parametrize("ckpt", [hostenv.SV3D_P_CKPT, SV3D_U_CKPT])
def test_empty_latent_takes_21_frames_from_an_sv3d_conditioning(
        comfy_nodes: Any, checkpoints: Path, ckpt: str) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    _, clip, vae = _load(n, ckpt)
    image, alpha = _object(n)
    positive, _ = _orbit(n, clip, vae, image, mask=alpha, frames=21)
    # the widgets say 576x576 and 25 frames: the wired conditioning's size and frame count win
    (latent,) = n["StableVideoEmptyLatent"].execute(width=576, height=576, frames=25, batch_size=1,
                                                     conditioning=positive).result
    assert latent["samples"].shape == (21, 4, SIZE // 8, SIZE // 8)
    assert latent["svd_frames"] == 21


def test_orbit_ends_on_the_prepared_input_image(comfy_nodes: Any, checkpoints: Path) -> None:
    """The reference's convention (simple_video_sample.py: samples_x[-1:] = the conditioning frame): the last
    decoded view is the object centred on white, as svd_core.orbit_image prepares the RGBA input."""
    import svd_core

    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = _load(n, hostenv.SV3D_P_CKPT)
    image, alpha = _object(n)
    positive, negative = _orbit(n, clip, vae, image, mask=alpha)
    (latent,) = n["StableVideoEmptyLatent"].execute(width=SIZE, height=SIZE, frames=FRAMES, batch_size=1,
                                                     conditioning=positive).result
    (z,) = n["StableVideoSampler"].execute(
        model=model, positive=positive, negative=negative, latent=latent, seed=0, steps=2, min_cfg=1.0, max_cfg=2.5,
        guidance="triangle", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=1.0).result
    assert z["svd_last_frame"].shape == (1, 3, SIZE, SIZE)
    frames = n["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result[0]
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)

    rgba = torch.cat([image.permute(0, 3, 1, 2), alpha[:, None]], dim=1)  # (1, 4, H, W), alpha = the object
    prepared = svd_core.orbit_image(rgba, SIZE)[0].permute(1, 2, 0)  # (H, W, 3), the object centred on white
    assert prepared[0, 0].tolist() == [1.0, 1.0, 1.0]  # white where the picture was transparent
    assert (frames[-1] - prepared).abs().max().item() <= 1 / 255
    assert (frames[0] - prepared).abs().max().item() > 1 / 255  # a generated view, not a copy


def test_core_model_bridge_refuses_an_sv3d_conditioning(comfy_nodes: Any, checkpoints: Path) -> None:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = _load(n, hostenv.SV3D_P_CKPT)
    image, alpha = _object(n)
    positive, negative = _orbit(n, clip, vae, image, mask=alpha)
    with pytest.raises(ValueError) as refused:
        n["StableVideoToCoreModel"].execute(model=model, positive=positive, negative=negative, frames=FRAMES)
    message = str(refused.value)
    assert message.startswith("positive is an SV3D orbit conditioning") and "use StableVideoSampler" in message, message


def test_image_decoder_svd_runs_the_image_to_video_graph(comfy_nodes: Any, checkpoints: Path, host_root: Path) -> None:
    """The unchanged image_to_video graph (at test size) with an image-decoder SVD file in ckpt_name: the
    loader tells it by its tensors and the five nodes run it as they run SVD."""
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    model, _, _ = _load(n, IMAGE_DECODER_CKPT)
    assert (model.config.name, model.config.family) == ("svd_xt_image_decoder", "svd_image_decoder")
    prompt, frames = hostenv.shrink(hostenv.load_api("image_to_video"), "inproc_image_decoder")
    prompt["2"]["inputs"]["ckpt_name"] = IMAGE_DECODER_CKPT
    valid, executor = _run(prompt)
    assert valid[0], valid
    errors = [d.get("exception_message") for ev, d in executor.status_messages if ev == "execution_error"]
    assert executor.success, errors
    files = hostenv.written_files({"7": executor.history_result["outputs"]["7"]}, host_root / "output")
    assert len(files) == 1 and hostenv.count_frames(files[0]) == frames
