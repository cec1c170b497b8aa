"""Telling the family of an official single file by its tensors, and refusing files that mix families."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from svd_core import CheckpointError, SVDConfig, load_models
from svd_core.weights.detect import family_of
from svd_core.weights.random_weights import random_state_dict
from svd_core.weights.safetensors import read_header

FAMILIES = ("svd", "svd_image_decoder", "sv3d_u", "sv3d_p")


@functools.cache
def _stored(family: str) -> dict[str, torch.Tensor]:
    return random_state_dict(SVDConfig.tiny(family), seed=5, dtype=torch.float32)


def _state(family: str) -> dict[str, torch.Tensor]:
    """A fresh dict of one random tiny file's tensors (made once per family; the tensors are never changed)."""
    return dict(_stored(family))


def _save(tmp_path: Path, name: str, sd: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / name
    save_file(sd, str(path))
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_told_by_its_tensors_whatever_the_name(tmp_path: Path, family: str) -> None:
    path = _save(tmp_path, "model.safetensors", _state(family))
    assert family_of(path, read_header(path)) == family
    models = load_models(path, dtype=torch.float32)
    assert models.config.family == family
    assert models.config.kind.temporal_decoder == (family == "svd")


def _refused(tmp_path: Path, sd: dict[str, torch.Tensor], *names: str) -> str:
    path = _save(tmp_path, "mixed.safetensors", sd)
    with pytest.raises(CheckpointError) as info:
        load_models(path, dtype=torch.float32)
    message = str(info.value)
    assert "mixes model families" in message and str(path) in message, message
    for name in names:
        assert name in message, (name, message)
    return message


def test_an_sv3d_conditioner_with_a_temporal_decoder_is_refused(tmp_path: Path) -> None:
    svd = _state("svd")
    sd = {k: v for k, v in _state("sv3d_p").items() if not k.startswith("first_stage_model.")}
    sd.update({k: v for k, v in svd.items() if k.startswith("first_stage_model.")})
    _refused(tmp_path, sd, "conditioner.embedders.1.encoder.encoder.", "time_")


def test_an_svd_conditioner_with_an_sv3d_unet_is_refused(tmp_path: Path) -> None:
    sd = {k: v for k, v in _state("svd").items() if not k.startswith("model.diffusion_model.")}
    sd.update({k: v for k, v in _state("sv3d_p").items() if k.startswith("model.diffusion_model.")})
    _refused(tmp_path, sd, "model.diffusion_model.label_emb.0.0.weight", "[256, 1280]",
             "conditioner.embedders.3.encoder.encoder.")


def test_an_sv3d_file_with_an_svd_unet_is_refused(tmp_path: Path) -> None:
    sd = {k: v for k, v in _state("sv3d_u").items() if not k.startswith("model.diffusion_model.")}
    sd.update({k: v for k, v in _state("svd").items() if k.startswith("model.diffusion_model.")})
    _refused(tmp_path, sd, "model.diffusion_model.label_emb.0.0.weight", "48 wide")


def test_both_conditioning_encoders_are_refused(tmp_path: Path) -> None:
    sd = {**_state("svd"), **{k: v for k, v in _state("sv3d_u").items() if k.startswith("conditioner.embedders.1.")}}
    _refused(tmp_path, sd, "conditioner.embedders.1.encoder.encoder.", "conditioner.embedders.3.encoder.encoder.")


def test_a_frame_wise_decoder_without_post_quant_conv_beside_svds_conditioner_is_refused(tmp_path: Path) -> None:
    sd = {k: v for k, v in _state("svd_image_decoder").items() if not k.startswith("first_stage_model.post_quant")}
    _refused(tmp_path, sd, "post_quant_conv")


def test_an_sv3d_file_with_an_autoencoderkl_first_stage_is_refused(tmp_path: Path) -> None:
    image = _state("svd_image_decoder")
    sd = {**_state("sv3d_u"), **{k: v for k, v in image.items() if k.startswith("first_stage_model.post_quant")}}
    _refused(tmp_path, sd, "first_stage_model.post_quant_conv.")


def test_a_temporal_decoder_with_post_quant_conv_is_refused(tmp_path: Path) -> None:
    image = _state("svd_image_decoder")
    sd = {**_state("svd"), **{k: v for k, v in image.items() if k.startswith("first_stage_model.post_quant")}}
    _refused(tmp_path, sd, "first_stage_model.post_quant_conv.", "time_")


def test_a_preset_of_another_family_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, "sv3d_p.safetensors", _state("sv3d_p"))
    with pytest.raises(CheckpointError, match=r"preset 'svd_xt_1_1' is for svd models.*sv3d_p checkpoint.*'sv3d_p'"):
        load_models(path, dtype=torch.float32, preset="svd_xt_1_1")


def test_a_unet_file_cannot_replace_sv3ds(tmp_path: Path) -> None:
    path = _save(tmp_path, "sv3d_u.safetensors", _state("sv3d_u"))
    unet = _save(tmp_path, "unet.safetensors", {k[len("model.diffusion_model."):]: v for k, v in _state("svd").items()
                                                if k.startswith("model.diffusion_model.")})
    with pytest.raises(CheckpointError, match="cannot replace the UNet"):
        load_models(path, dtype=torch.float32, unet=unet)


def test_an_incomplete_sv3d_file_names_its_missing_part(tmp_path: Path) -> None:
    sd = {k: v for k, v in _state("sv3d_p").items() if not k.startswith("first_stage_model.decoder.")}
    path = _save(tmp_path, "sv3d_p.safetensors", sd)
    with pytest.raises(CheckpointError, match=r"not a complete sv3d_p checkpoint.*'first_stage_model\.decoder\.'"):
        load_models(path, dtype=torch.float32)
