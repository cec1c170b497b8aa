"""SVD VAE: parity with diffusers' AutoencoderKLTemporalDecoder, renaming, checkpoint names, properties."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from svd_core.nets.vae import VAE, VAEConfig
from svd_core.weights.convert import ConversionError
from svd_core.weights.convert.vae import TABLE
from svd_core.weights.convert.vae import folder_config as diffusers_config
from svd_core.weights.convert.vae import from_folder as from_diffusers
from svd_core.weights.convert.vae import to_folder as to_diffusers
from svd_core.weights.random_weights import randomize_

KEYS_JSON = Path(__file__).resolve().parent / "data" / "svd_xt_1_1.keys.json"  # the official file's names and shapes
# our prefix -> checkpoint prefix
PREFIXES = {
    "encoder.": "conditioner.embedders.3.encoder.encoder.",
    "quant_conv.": "conditioner.embedders.3.encoder.quant_conv.",
    "decoder.": "first_stage_model.decoder.",
}
T = 3  # frames per video
B = 2  # videos


def _tiny_vae(seed: int = 0) -> VAE:
    vae = randomize_(VAE(VAEConfig.tiny()), seed).eval()
    # randomize_ draws mix factors near 0 (alpha ~ 0.5); spread them so that swapping the blend
    # orientation (alpha*temporal vs alpha*spatial) would show up far above the tolerance.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(1.0 + torch.rand(p.shape, generator=g) * torch.tensor(2.0))
    return vae


def _to_checkpoint_names(names: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for k, v in names.items():
        ours = next(p for p in PREFIXES if k.startswith(p))
        out[PREFIXES[ours] + k[len(ours):]] = v
    return out


def _checkpoint_vae_shapes() -> dict[str, tuple[int, ...]]:
    if not KEYS_JSON.exists():
        pytest.fail(f"{KEYS_JSON} is missing: it is part of the repository")
    tensors = json.loads(KEYS_JSON.read_text())["tensors"]
    return {k: tuple(v) for k, v in tensors.items() if k.startswith(tuple(PREFIXES.values()))}


def _from_checkpoint_names(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for k, v in shapes.items():
        ours, theirs = next((a, b) for a, b in PREFIXES.items() if k.startswith(b))
        out[ours + k[len(theirs):]] = v
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[VAE, torch.nn.Module]:
    """Our randomized tiny VAE and the same weights loaded by diffusers from a saved folder."""
    diffusers = pytest.importorskip("diffusers")
    vae = _tiny_vae()
    folder = tmp_path_factory.mktemp("svd") / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(diffusers_config(vae.config)))
    tensors = {k: v.contiguous() for k, v in to_diffusers(vae.state_dict()).items()}
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    oracle, info = diffusers.AutoencoderKLTemporalDecoder.from_pretrained(
        str(folder.parent), subfolder="vae", torch_dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return vae, oracle.eval()


def test_oracle_temporal_eps_matches_reference(pair: tuple[VAE, torch.nn.Module]) -> None:
    # The reference time_stack GroupNorm uses eps 1e-5 (openaimodel.py ResBlock -> util.py
    # normalization). diffusers' temporal decoder passes temporal_eps=1e-5 as well, so the oracle is
    # used as loaded; this guards that assumption.
    _, oracle = pair
    eps = {m.eps for n, m in oracle.decoder.named_modules() if "temporal_res_block.norm" in n}
    assert eps == {1e-5}


def test_encode_matches_diffusers(pair: tuple[VAE, torch.nn.Module]) -> None:
    vae, oracle = pair
    x = torch.rand(B, 3, 48, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ours = vae.encode(x)
        ref = oracle.encode(x).latent_dist.mode()
    assert ours.shape == (B, 4, 6, 4)  # 8x downscale
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4, diff


def test_decode_matches_diffusers(pair: tuple[VAE, torch.nn.Module]) -> None:
    vae, oracle = pair
    # (B*T, 4, h, w), frames of one video contiguous; diffusers splits z.shape[0] as (batch, frames) too
    z = torch.randn(B * T, 4, 6, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = vae.decode(z, num_frames=T)
        ref = oracle.decode(z, num_frames=T).sample
    assert ours.shape == (B * T, 3, 48, 32)
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4, diff


def test_renaming_round_trip_and_views() -> None:
    sd = _tiny_vae().state_dict()
    theirs = to_diffusers(sd)
    assert len(theirs) == len(sd)
    q = theirs["encoder.mid_block.attentions.0.to_q.weight"]
    assert q.ndim == 2 and q.data_ptr() == sd["encoder.mid.attn_1.q.weight"].data_ptr()  # a view
    top = len(VAEConfig.tiny().ch_mult) - 1  # diffusers counts decoder levels from the deepest
    assert theirs["decoder.up_blocks.0.upsamplers.0.conv.weight"] is sd[f"decoder.up.{top}.upsample.conv.weight"]
    back = from_diffusers(theirs)
    assert back.keys() == sd.keys()
    for k, v in sd.items():
        assert back[k].shape == v.shape and back[k].data_ptr() == v.data_ptr(), k
    with pytest.raises(ConversionError, match="renaming table"):
        to_diffusers({**sd, "decoder.extra.weight": torch.zeros(1)})


def test_renaming_covers_full_size_diffusers_model() -> None:
    diffusers = pytest.importorskip("diffusers")
    cfg = VAEConfig.svd_xt()
    with torch.device("meta"):
        ours = VAE(cfg).state_dict()
        theirs = diffusers.AutoencoderKLTemporalDecoder(**{
            k: v for k, v in diffusers_config(cfg).items() if not k.startswith("_")
        }).state_dict()
    mapped = to_diffusers(ours)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert len(TABLE) > 0


def test_full_config_matches_checkpoint_names_and_shapes() -> None:
    ckpt = _checkpoint_vae_shapes()
    with torch.device("meta"):
        vae = VAE(VAEConfig.svd_xt())
    assert list(vae.buffers()) == []
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert _to_checkpoint_names(ours) == ckpt
    # strict load after the prefix swap
    sd = {k: torch.empty(v, device="meta") for k, v in _from_checkpoint_names(ckpt).items()}
    vae.load_state_dict(sd, strict=True, assign=True)


def test_from_shapes() -> None:
    ckpt_shapes = _from_checkpoint_names(_checkpoint_vae_shapes())
    assert VAEConfig.from_shapes(ckpt_shapes) == VAEConfig.svd_xt()
    tiny = {k: tuple(v.shape) for k, v in VAE(VAEConfig.tiny()).state_dict().items()}
    assert VAEConfig.from_shapes(tiny) == VAEConfig.tiny()
    # a frame-wise 2-D decoder (no time_stack, mix_factor or time_mix_conv): SV3D's first stage; with a
    # post_quant_conv, the image-decoder SVDs' AutoencoderKL (the loader tells the family by the conditioner)
    temporal = ("time_stack", "mix_factor", "time_mix_conv")
    image_vae = {k: v for k, v in ckpt_shapes.items() if not any(s in k for s in temporal)}
    assert VAEConfig.from_shapes(image_vae) == VAEConfig.orbit()
    with_pq = {**image_vae, "post_quant_conv.weight": (4, 4, 1, 1), "post_quant_conv.bias": (4,)}
    assert VAEConfig.from_shapes(with_pq) == VAEConfig.image_decoder()
    with pytest.raises(ValueError, match="no tensor 'quant_conv.weight'"):
        VAEConfig.from_shapes({k: v for k, v in image_vae.items() if not k.startswith("quant_conv.")})
    # a temporal decoder with an extra or a wrongly shaped tensor
    with pytest.raises(ValueError, match="not an SVD VAE"):
        VAEConfig.from_shapes({**tiny, "decoder.up.0.attn.0.q.weight": (32, 32, 1, 1)})
    with pytest.raises(ValueError, match="wrong shape"):
        VAEConfig.from_shapes({**tiny, "decoder.mid.block_1.mix_factor": (2,)})


def test_decode_batched_equals_one_by_one() -> None:
    vae = _tiny_vae(3)
    z = torch.randn(B * T, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        both = vae.decode(z, num_frames=T)
        each = torch.cat([vae.decode(z[i * T:(i + 1) * T], num_frames=T) for i in range(B)])
    assert (both - each).abs().max().item() <= 1e-5
    # frames do interact: decoding the same latents as T single-frame videos differs
    with torch.no_grad():
        single = vae.decode(z, num_frames=1)
    assert (both - single).abs().max().item() > 1e-3


def test_encode_batched_equals_one_by_one_and_inputs_untouched() -> None:
    vae = _tiny_vae(4)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    x0 = x.clone()
    with torch.no_grad():
        both = vae.encode(x)
        each = torch.cat([vae.encode(x[i:i + 1]) for i in range(3)])
    assert torch.equal(x, x0)
    assert (both - each).abs().max().item() <= 1e-5


def test_decode_rejects_bad_frame_count() -> None:
    vae = VAE(VAEConfig.tiny())
    with pytest.raises(ValueError, match="num_frames=4"):
        vae.decode(torch.zeros(6, 4, 4, 4), num_frames=4)


def test_bfloat16_model_runs_close_to_fp32() -> None:
    # the reference runs the VAE in fp32 (disable_first_stage_autocast); a half-precision copy must
    # still run (the fp32 time_stack GroupNorm upcasts its parameters) and stay near the fp32 result
    vae = _tiny_vae(6)
    z = torch.randn(T, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    half = VAE(vae.config)
    half.load_state_dict(vae.state_dict())
    half = half.to(torch.bfloat16).eval()
    with torch.no_grad():
        ref = vae.decode(z, num_frames=T)
        out = half.decode(z.to(torch.bfloat16), num_frames=T)
    assert out.dtype == torch.bfloat16
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 0.05, rel
