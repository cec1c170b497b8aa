"""Loading: the single-file layout (names, shapes, dtypes), and one clear error for every bad file."""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from svd_core import CheckpointError, SVDConfig, build_models, load_models, save_random_checkpoint
from svd_core.weights.layout import IGNORED_PREFIXES, SINGLE_FILE_PREFIXES, file_name, part_of
from svd_core.weights.random_weights import random_tensor

KEYS_JSON = Path(__file__).resolve().parent / "data" / "svd_xt_1_1.keys.json"  # the official file's names and shapes
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_svd.safetensors", SVDConfig.tiny(), seed=3)


def _official() -> dict:
    if not KEYS_JSON.exists():
        pytest.fail(f"{KEYS_JSON} is missing: it is part of the repository")
    return json.loads(KEYS_JSON.read_text())


def test_full_size_meta_model_has_the_official_names_and_shapes(capsys):
    official = _official()
    tensors = {k: tuple(v) for k, v in official["tensors"].items()}
    assert len(tensors) == 2446
    models = build_models(SVDConfig.svd_xt_1_1(), device="meta")
    ours: dict[str, tuple[int, ...]] = {}
    for part in SINGLE_FILE_PREFIXES:
        for name, p in getattr(models, part).state_dict().items():
            ours[file_name(part, name)] = tuple(p.shape)
    assert {k: tensors.get(k) for k in ours} == ours, "every tensor of ours is in the official file with its shape"
    unread = sorted(k for k in tensors if k not in ours)
    stray = [k for k in unread if not k.startswith(IGNORED_PREFIXES)]
    assert not stray, stray[:5]
    assert all(part_of(k) is None for k in unread)
    n_params = sum(math.prod(s) for s in ours.values())
    with capsys.disabled():
        print(f"\nfull-size SVD-XT 1.1: {n_params:,} parameters in {len(ours)} tensors used "
              f"({len(unread)} official tensors unused: text tower, embedders.3 2-D decoder, "
              "first_stage_model.encoder)")
    for part in ("unet", "image_encoder", "vae"):
        count = sum(p.numel() for p in getattr(models, part).parameters())
        log.info("%s: %d parameters", part, count)
    assert n_params == sum(math.prod(tensors[k]) for k in ours)


def test_config_from_official_shapes_is_the_preset():
    official = _official()
    shapes: dict[str, dict[str, tuple[int, ...]]] = {"unet": {}, "image_encoder": {}, "vae": {}}
    for k, v in official["tensors"].items():
        hit = part_of(k)
        if hit:
            shapes[hit[0]][hit[1]] = tuple(v)
    from svd_core import ImageEncoderConfig, UNetConfig, VAEConfig
    assert UNetConfig.from_shapes(shapes["unet"]) == SVDConfig.svd_xt_1_1().unet
    assert VAEConfig.from_shapes(shapes["vae"]) == SVDConfig.svd_xt_1_1().vae
    assert ImageEncoderConfig.from_shapes(shapes["image_encoder"]) == SVDConfig.svd_xt_1_1().image_encoder


@pytest.mark.parametrize("file_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_single_file_loads_in_any_dtype(tmp_path, file_dtype, dtype):
    path = save_random_checkpoint(tmp_path / "svd_xt_1_1_tiny.safetensors", SVDConfig.tiny(), seed=1, dtype=file_dtype)
    models = load_models(path, dtype=dtype)
    assert models.config.unet == SVDConfig.tiny().unet
    assert models.config.name == "svd_xt_1_1"
    sd = load_file(str(path))
    for part in SINGLE_FILE_PREFIXES:
        module = getattr(models, part)
        assert all(p.dtype == dtype and p.device.type == "cpu" for p in module.parameters())
        assert not any(p.requires_grad for p in module.parameters())
        for name, p in module.state_dict().items():
            assert torch.equal(p, sd[file_name(part, name)].to(dtype)), name


def test_preset_guessed_from_file_name(tmp_path):
    for name, preset, frames in [("svd.safetensors", "svd", 14), ("svd_xt.safetensors", "svd_xt", 25),
                                 ("svd_xt_1_1.safetensors", "svd_xt_1_1", 25)]:
        path = save_random_checkpoint(tmp_path / name, SVDConfig.tiny())
        m = load_models(path, dtype=torch.float32)
        assert (m.config.name, m.config.sampling.num_frames) == (preset, frames)


def _expect(path: Path, *patterns: str) -> str:
    with pytest.raises(CheckpointError) as e:
        load_models(path)
    msg = str(e.value)
    assert str(path) in msg
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    return msg


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "svd_xt_1_1.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, path)
    _expect(path, "pickle", "safetensors")


def test_truncated_file_is_refused(tiny_file, tmp_path):
    data = tiny_file.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    _expect(path, "truncated")


@pytest.mark.parametrize("payload", [b"", b"abc", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", b"\xff" * 64])
def test_malformed_file_is_refused(tmp_path, payload):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    _expect(path, "safetensors|malformed|header")


def _sd_like_unet(prefix_extra: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A few tensors named like an SD 1.5 / SDXL checkpoint (no temporal layers)."""
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": torch.zeros(320, 320, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(512, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77),
    }
    sd.update(prefix_extra or {})
    return sd


def test_sd15_checkpoint_is_refused(tmp_path):
    path = tmp_path / "v1-5-pruned-emaonly.safetensors"
    save_file(_sd_like_unet(), str(path))
    _expect(path, "not an SVD model", "temporal")


def test_sdxl_checkpoint_is_refused(tmp_path):
    path = tmp_path / "sd_xl_base_1.0.safetensors"
    save_file(_sd_like_unet({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1280),
                             "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1280, 2816)}), str(path))
    _expect(path, "not an SVD model")


def test_other_family_is_refused(tmp_path):
    path = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(9, 3)}, str(path))
    _expect(path, "not an SVD model", "model.diffusion_model.")


def test_missing_tensor_is_named(tiny_file, tmp_path):
    sd = load_file(str(tiny_file))
    victim = "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight"
    assert victim in sd
    shape = list(sd.pop(victim).shape)
    path = tmp_path / "missing.safetensors"
    save_file(sd, str(path))
    _expect(path, "missing", re.escape(f"'{victim}' expected {shape}"))


def test_misshaped_tensor_is_named_with_both_shapes(tiny_file, tmp_path):
    sd = load_file(str(tiny_file))
    victim = "first_stage_model.decoder.conv_out.time_mix_conv.weight"
    shape = list(sd[victim].shape)
    sd[victim] = torch.zeros(shape[0], shape[1], 5, 1, 1, dtype=sd[victim].dtype)
    path = tmp_path / "misshaped.safetensors"
    save_file(sd, str(path))
    _expect(path, "wrong shape|kernel|time_mix_conv", re.escape(str(shape[0])))


def test_missing_part_is_named(tiny_file, tmp_path):
    sd = {k: v for k, v in load_file(str(tiny_file)).items() if not k.startswith("conditioner.embedders.0.")}
    path = tmp_path / "no_clip.safetensors"
    save_file(sd, str(path))
    _expect(path, "conditioner.embedders.0.open_clip.model.visual.")


def test_missing_file_says_where_to_get_it(tmp_path):
    _expect(tmp_path / "svd_xt_1_1.safetensors", "does not exist", "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
            "models/checkpoints")


@pytest.mark.slow
def test_full_size_random_single_file_loads(tmp_path):
    """A random-weight file with all 2,446 official tensors (4.78 GB in fp16) loads as fp16."""
    official = _official()
    g = torch.Generator().manual_seed(0)
    sd = {k: random_tensor(k, tuple(s), g).to(torch.float16) for k, s in official["tensors"].items()}
    path = tmp_path / "svd_xt_1_1.safetensors"
    save_file(sd, str(path))
    del sd
    models = load_models(path, dtype=torch.float16)
    assert models.config.unet == SVDConfig.svd_xt_1_1().unet
    assert models.config.image_encoder == SVDConfig.svd_xt_1_1().image_encoder
    total = sum(p.numel() for part in ("unet", "image_encoder", "vae") for p in getattr(models, part).parameters())
    assert total > 2_000_000_000


_PEAK_SCRIPT = r"""
import json, sys, torch
import svd_core

def status_kb(field):  # VmHWM is this process image's own peak (ru_maxrss would include the parent's, kept across exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

base = status_kb("VmRSS")
models = svd_core.load_models(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
peak = status_kb("VmHWM")
nets = (models.unet, models.image_encoder, models.vae)
weights = sum(p.numel() * p.element_size() for m in nets for p in m.parameters())
print(json.dumps({"growth": (peak - base) * 1024, "weights": weights}))
"""


@pytest.mark.parametrize("file_dtype, dtype", [("float16", "float32"),  # the others under -m slow (suite budget)
                                               pytest.param("float32", "float32", marks=pytest.mark.slow),
                                               pytest.param("float32", "bfloat16", marks=pytest.mark.slow)])
def test_loading_never_holds_weights_twice(tmp_path, file_dtype, dtype):
    """Peak memory while loading stays at the weights plus one tensor's worth (no mmap, no second copy)."""
    import subprocess
    import sys

    from svd_core import ImageEncoderConfig, UNetConfig, VAEConfig

    config = SVDConfig(name="small", unet=UNetConfig(model_channels=128, channel_mult=(1, 2, 2)),
                       vae=VAEConfig(ch=64, ch_mult=(1, 2, 2, 4)),
                       image_encoder=ImageEncoderConfig(width=640, layers=4))
    path = save_random_checkpoint(tmp_path / "small.safetensors", config, dtype=getattr(torch, file_dtype))
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), dtype], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # Measured 1.08x (fp16 file) to 1.15x (fp32 file): the weights, one tensor in flight and allocator
    # slack. Holding a second copy (a mapped file, or a whole state dict cast at the end) would be ~2x.
    assert r["growth"] <= 1.3 * r["weights"], r


def test_vae_dtype_can_differ(tiny_file):
    """The reference runs its VAE in fp32 while the UNet runs in half precision."""
    models = load_models(tiny_file, dtype=torch.bfloat16, vae_dtype=torch.float32)
    assert {p.dtype for p in models.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.image_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.vae.parameters()} == {torch.float32}


@pytest.mark.parametrize("victim, short", [
    ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "input_blocks.1.0.in_layers.2.weight"),
    ("model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight",
     "input_blocks.1.0.time_stack.in_layers.2.weight"),
    ("model.diffusion_model.out.2.weight", "out.2.weight"),
    ("first_stage_model.decoder.conv_in.bias", "decoder.conv_in.bias"),
    ("first_stage_model.decoder.conv_in.weight", "decoder.conv_in.weight"),
    ("conditioner.embedders.3.encoder.quant_conv.weight", "quant_conv.weight"),
    ("conditioner.embedders.0.open_clip.model.visual.class_embedding", "class_embedding"),
    ("conditioner.embedders.0.open_clip.model.visual.conv1.weight", "conv1.weight"),
])
@pytest.mark.parametrize("how", ["missing", "misshaped"])
def test_errors_name_the_tensor_as_the_file_spells_it(tiny_file, tmp_path, victim, short, how):
    sd = load_file(str(tiny_file))
    assert victim in sd
    if how == "missing":
        del sd[victim]
    else:
        sd[victim] = torch.zeros(*sd[victim].shape[:-1], sd[victim].shape[-1] + 1, dtype=sd[victim].dtype)
    path = tmp_path / f"{how}.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as e:
        load_models(path, dtype=torch.float32)
    message = str(e.value)
    assert str(path) in message and f"'{victim}'" in message, message
    assert f"'{short}'" not in message, message  # never our own name alone


@pytest.mark.parametrize("how", ["missing", "misshaped"])
def test_folder_errors_name_the_file_inside_the_folder_and_its_key(tiny_file, tmp_path, how):
    from svd_core.weights.convert.folder import save_diffusers_folder

    folder = save_diffusers_folder(load_models(tiny_file, dtype=torch.float32), tmp_path / "svd")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    victim = "down_blocks.0.resnets.0.temporal_res_block.conv1.weight"
    assert victim in sd
    if how == "missing":
        del sd[victim]
    else:
        sd[victim] = torch.zeros(*sd[victim].shape[:-1], sd[victim].shape[-1] + 1)
    save_file(sd, str(weights))
    with pytest.raises(CheckpointError) as e:
        load_models(folder, dtype=torch.float32)
    message = str(e.value)
    assert f"'{victim}' in 'unet/diffusion_pytorch_model.safetensors'" in message, message


@pytest.mark.parametrize("prefix", ["conditioner.embedders.0.open_clip.model.visual.", "clip_vision."])
def test_comfyui_saved_checkpoint_loads_and_encodes_like_comfyui(tmp_path, prefix, caplog):
    """ImageOnlyCheckpointSave's layout: first_stage_model.encoder without quant_conv, the image tower in
    clip-vision (transformers) names. Same networks as the official file; the conditioning frame is encoded
    by the first-stage encoder alone, with one warning line saying so."""
    from svd_core.weights.random_weights import comfyui_layout, random_state_dict

    sd = random_state_dict(SVDConfig.tiny(), seed=3, dtype=torch.float32)
    official, comfy = tmp_path / "official.safetensors", tmp_path / "comfy.safetensors"
    save_file(sd, str(official))
    save_file(comfyui_layout(sd, prefix), str(comfy))
    a = load_models(official, dtype=torch.float32)
    with caplog.at_level("WARNING", logger="svd_core.weights.load"):
        b = load_models(comfy, dtype=torch.float32)
    assert len([r for r in caplog.records if "ComfyUI-saved" in r.getMessage()]) == 1
    for part in ("unet", "image_encoder"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), part
    assert all(torch.equal(v, b.vae.decoder.state_dict()[k]) for k, v in a.vae.decoder.state_dict().items())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        moments = a.vae.encoder(x)  # the same encoder weights, without quant_conv
        torch.testing.assert_close(b.vae.encode(x), moments[:, :4], rtol=0, atol=1e-6)
        assert not torch.allclose(a.vae.encode(x), b.vae.encode(x))  # the reference's quant_conv differs


def test_comfyui_layout_errors_name_the_files_keys(tmp_path):
    from svd_core.weights.random_weights import comfyui_layout, random_state_dict

    sd = comfyui_layout(random_state_dict(SVDConfig.tiny(), seed=3, dtype=torch.float32))
    victim = "conditioner.embedders.0.open_clip.model.visual.vision_model.encoder.layers.0.mlp.fc1.weight"
    assert victim in sd
    sd[victim] = torch.zeros(3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as e:
        load_models(path, dtype=torch.float32)
    assert f"'{victim}'" in str(e.value), str(e.value)


def test_names_of_the_loader_stay_importable():
    """The loader is split into steps (weights/safetensors, detect, rename, shapes, dtypes); the names that
    load.py defined before stay importable from it, and CheckpointError is one class everywhere."""
    import svd_core
    from svd_core.weights import detect, dtypes, load, safetensors

    assert load.CheckpointError is safetensors.CheckpointError is svd_core.CheckpointError
    assert load.read_header is safetensors.read_header and load.read_tensors is safetensors.read_tensors
    assert load.WEIGHT_DTYPES is dtypes.WEIGHT_DTYPES and load.COMFY_CLIP_PREFIXES is detect.COMFY_CLIP_PREFIXES
    assert load.UNET_PREFIX == SINGLE_FILE_PREFIXES["unet"][""] == "model.diffusion_model."


FAMILY_KEYS = {"svd_image_decoder": "svd_image_decoder", "sv3d_u": "sv3d_u", "sv3d_p": "sv3d_p"}


@pytest.mark.parametrize("preset", sorted(FAMILY_KEYS))
def test_full_size_meta_models_of_the_family_have_their_official_names_and_shapes(preset: str) -> None:
    from svd_core.config import PRESETS
    from svd_core.weights.layout import ignored_prefixes, prefixes

    official = json.loads((KEYS_JSON.parent / f"{FAMILY_KEYS[preset]}.keys.json").read_text())
    tensors = {k: tuple(v) for k, v in official["tensors"].items()}
    assert sum(math.prod(s) for s in tensors.values()) == official["parameter_count"]
    config = PRESETS[preset]
    table = prefixes(config.family)
    models = build_models(config, device="meta")
    ours = {file_name(part, name, table): tuple(p.shape)
            for part in table for name, p in getattr(models, part).state_dict().items()}
    assert {k: tensors.get(k) for k in ours} == ours, "every tensor of ours is in the official file with its shape"
    unread = [k for k in tensors if k not in ours]
    assert not [k for k in unread if not k.startswith(ignored_prefixes(config.family))]
    assert all(part_of(k, table) is None for k in unread)


@pytest.mark.parametrize(("family", "name", "preset", "frames", "steps"), [
    ("svd_image_decoder", "svd_image_decoder.safetensors", "svd_image_decoder", 14, 25),
    ("svd_image_decoder", "svd_xt_image_decoder.safetensors", "svd_xt_image_decoder", 25, 30),
    ("sv3d_u", "orbit_u.safetensors", "sv3d_u", 21, 50),
    ("sv3d_p", "orbit_p.safetensors", "sv3d_p", 21, 50),
])
def test_the_family_files_load_with_the_references_presets(tmp_path, family, name, preset, frames, steps):
    path = save_random_checkpoint(tmp_path / name, SVDConfig.tiny(family), seed=2, dtype=torch.float32)
    models = load_models(path, dtype=torch.float32)
    s = models.config.sampling
    assert (models.config.name, models.config.family, s.num_frames, s.num_steps) == (preset, family, frames, steps)
    if family.startswith("sv3d"):  # simple_video_sample.py sv3d_*: cond_aug 1e-5, 576x576; sv3d_*.yaml triangle 2.5
        assert (s.guidance, s.min_cfg, s.max_cfg, s.cond_aug, s.width, s.height) == ("triangle", 1.0, 2.5, 1e-5,
                                                                                    576, 576)
        assert models.vae.post_quant_conv is None
    else:  # svd_image_decoder.yaml 1.0-2.5, svd_xt_image_decoder.yaml 1.5-3.0, LinearPredictionGuider
        assert s.guidance == "linear" and (s.min_cfg, s.max_cfg) == ((1.0, 2.5) if frames == 14 else (1.5, 3.0))
        assert models.vae.post_quant_conv is not None
    sd = load_file(str(path))
    from svd_core.weights.layout import prefixes
    table = prefixes(family)
    for part in table:
        for key, p in getattr(models, part).state_dict().items():
            assert torch.equal(p, sd[file_name(part, key, table)]), key
