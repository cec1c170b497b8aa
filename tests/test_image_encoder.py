"""The OpenCLIP ViT image tower: parity with transformers' CLIPVisionModelWithProjection, checkpoint
names and shapes, config from shapes, and the reference's preprocessing."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from svd_core.nets.image_encoder import (
    CLIP_MEAN,
    CLIP_STD,
    ImageEncoder,
    ImageEncoderConfig,
    SelfAttention,
    encode_image,
    preprocess,
)
from svd_core.weights.convert.image_encoder import folder_config as transformers_config
from svd_core.weights.convert.image_encoder import from_folder as from_transformers
from svd_core.weights.convert.image_encoder import to_folder as to_transformers
from svd_core.weights.random_weights import randomize_

log = logging.getLogger(__name__)

KEYS_JSON = Path(__file__).resolve().parent / "data" / "svd_xt_1_1.keys.json"  # the official file's names and shapes
PREFIX = "conditioner.embedders.0.open_clip.model.visual."


def _tiny_encoder(seed: int = 0) -> ImageEncoder:
    return randomize_(ImageEncoder(ImageEncoderConfig.tiny()), seed).eval()


def _pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def _save_transformers_folder(encoder: ImageEncoder, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(transformers_config(encoder.config), indent=1))
    theirs = {k: v.detach().contiguous() for k, v in to_transformers(encoder.state_dict()).items()}
    save_file(theirs, str(folder / "model.safetensors"))


def test_parity_with_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    encoder = _tiny_encoder()
    folder = tmp_path / "image_encoder"
    _save_transformers_folder(encoder, folder)
    ref = transformers.CLIPVisionModelWithProjection.from_pretrained(
        str(folder), attn_implementation="eager", torch_dtype=torch.float32
    ).eval()
    assert ref.config.hidden_act == "gelu"
    pixels = _pixels(3, encoder.config.image_size)
    with torch.no_grad():
        ours = encoder(pixels)
        theirs = ref(pixel_values=pixels).image_embeds
    assert ours.shape == theirs.shape == (3, encoder.config.embed_dim)
    diff = (ours - theirs).abs().max().item()
    log.info("max |ours - CLIPVisionModelWithProjection| = %.3g (scale %.3g)", diff, theirs.abs().max().item())
    assert diff <= 1e-4
    # the comparison is not vacuous: outputs differ between images
    assert (ours[0] - ours[1]).abs().max() > 1e-2


def test_attention_matches_torch_multihead_attention() -> None:
    # the official in_proj_weight is nn.MultiheadAttention's (q, k, v stacked), which open_clip uses
    width, heads = 160, 2
    ours = randomize_(SelfAttention(width, heads), seed=3)
    mha = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    mha.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 11, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, _ = mha(x, x, x, need_weights=False)
        diff = (ours(x) - expected).abs().max().item()
    log.info("max |ours - nn.MultiheadAttention| = %.3g", diff)
    assert diff <= 1e-5


def test_renaming_round_trip() -> None:
    sd = _tiny_encoder(seed=1).state_dict()
    theirs = to_transformers(sd)
    cfg = ImageEncoderConfig.tiny()
    # 7 top-level + per layer 16 (3 split projections x weight/bias) + visual_projection
    assert len(theirs) == 7 + 16 * cfg.layers + 1
    assert theirs["visual_projection.weight"].shape == (cfg.embed_dim, cfg.width)
    assert theirs["vision_model.encoder.layers.1.self_attn.k_proj.weight"].shape == (cfg.width, cfg.width)
    back = from_transformers(theirs)
    assert set(back) == set(sd)
    for name, value in sd.items():
        assert torch.equal(back[name], value), name
    # transformers' position_ids buffer is tolerated, anything else is an error
    from_transformers({**theirs, "vision_model.embeddings.position_ids": torch.arange(50)[None]})
    with pytest.raises(ValueError, match="text_model"):
        from_transformers({**theirs, "text_model.foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="proj"):
        to_transformers({k: v for k, v in sd.items() if k != "proj"})


def test_full_config_matches_checkpoint_names_and_shapes() -> None:
    if not KEYS_JSON.is_file():
        pytest.fail(f"{KEYS_JSON} is missing: it is part of the repository")
    tensors = json.loads(KEYS_JSON.read_text())["tensors"]
    expected = {k[len(PREFIX):]: tuple(v) for k, v in tensors.items() if k.startswith(PREFIX)}
    assert len(expected) == 392  # 8 top-level + 12 per block x 32 blocks
    with torch.device("meta"):
        encoder = ImageEncoder(ImageEncoderConfig.vit_h14())
    ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert ours == expected
    assert not list(encoder.buffers())
    assert ImageEncoderConfig.from_shapes(expected) == ImageEncoderConfig.vit_h14()


def test_from_shapes_round_trips_tiny_and_reads_tensors() -> None:
    encoder = _tiny_encoder()
    assert ImageEncoderConfig.from_shapes(encoder.state_dict()) == ImageEncoderConfig.tiny()
    cfg = ImageEncoderConfig.tiny()
    assert (cfg.heads, cfg.grid) == (2, 7)
    h14 = ImageEncoderConfig.vit_h14()
    assert (h14.heads, h14.grid, h14.mlp_width) == (16, 16, 5120)


def test_from_shapes_rejects_non_vit() -> None:
    unet_like = {"input_blocks.0.0.weight": (320, 8, 3, 3), "out.2.weight": (4, 320, 3, 3)}
    with pytest.raises(ValueError, match="not an OpenCLIP ViT image tower"):
        ImageEncoderConfig.from_shapes(unet_like)
    shapes = {k: tuple(v.shape) for k, v in _tiny_encoder().state_dict().items()}
    with pytest.raises(ValueError, match="conv1.weight"):
        ImageEncoderConfig.from_shapes({**shapes, "conv1.weight": (160, 4, 32, 32)})
    with pytest.raises(ValueError, match="grid"):
        ImageEncoderConfig.from_shapes({**shapes, "positional_embedding": (51, 160)})


def test_forward_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="224"):
        _tiny_encoder()(_pixels(1, 192))


def test_batched_equals_one_by_one() -> None:
    encoder = _tiny_encoder()
    pixels = _pixels(3, 224, seed=5)
    with torch.no_grad():
        batched = encoder(pixels)
        single = torch.cat([encoder(pixels[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 256, 448), (1, 3, 200, 576), (1, 3, 64, 96)],
    ids=["down both axes", "down width only", "up both axes"],
)
def test_preprocess_matches_diffusers_conditioning_path(shape: tuple[int, ...]) -> None:
    svd = pytest.importorskip("diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion")
    transformers = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(7)
    image = torch.rand(shape, generator=g) * 2 - 1  # [-1, 1], as the reference feeds it
    before = image.clone()
    # StableVideoDiffusionPipeline._encode_image: resize in [-1, 1], back to [0, 1], CLIPImageProcessor
    resized01 = (svd._resize_with_antialiasing(image, (224, 224)) + 1.0) / 2.0
    processor = transformers.CLIPImageProcessor(image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    expected = processor(
        images=resized01, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
        return_tensors="pt",
    ).pixel_values
    ours = preprocess(image)
    assert ours.shape == expected.shape == (shape[0], 3, 224, 224)
    diff = (ours - expected).abs().max().item()
    log.info("%s: max |preprocess - diffusers| = %.3g", shape, diff)
    assert diff <= 1e-5
    assert torch.equal(image, before)


def test_preprocess_matches_kornia_reference_ops() -> None:
    kornia = pytest.importorskip("kornia")
    image = torch.rand(1, 3, 300, 500, generator=torch.Generator().manual_seed(2)) * 2 - 1
    x = kornia.geometry.resize(image, (224, 224), interpolation="bicubic", align_corners=True, antialias=True)
    expected = kornia.enhance.normalize((x + 1.0) / 2.0, torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD))
    diff = (preprocess(image) - expected).abs().max().item()
    log.info("max |preprocess - kornia ops of FrozenOpenCLIPImageEmbedder.preprocess| = %.3g", diff)
    assert diff <= 1e-6


def test_encode_image_maps_01_to_reference_input() -> None:
    encoder = _tiny_encoder()
    image01 = torch.rand(2, 3, 96, 160, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = encode_image(encoder, image01)
        expected = encoder(preprocess(image01 * 2 - 1))
    assert ours.shape == (2, 32) and ours.dtype == torch.float32
    assert torch.equal(ours, expected)


def test_encode_image_in_encoder_dtype() -> None:
    encoder = _tiny_encoder()
    image01 = torch.rand(1, 3, 240, 320, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = encode_image(encoder, image01)
        half = encode_image(encoder.to(torch.bfloat16), image01.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    rel = ((half.float() - ref).abs().max() / ref.abs().max()).item()
    log.info("bfloat16 tower relative max diff = %.3g", rel)
    assert rel < 0.1
