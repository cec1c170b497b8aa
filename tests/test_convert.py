"""Renaming between the diffusers / transformers folder layout and ours (svd_core/weights/convert/)."""
from __future__ import annotations

import pytest
import torch

import svd_core


def test_convert_modules_share_one_interface_and_one_error() -> None:
    from svd_core.weights.convert import ConversionError, image_encoder, unet, vae

    configs = {unet: svd_core.UNetConfig.tiny(), vae: svd_core.VAEConfig.tiny(),
               image_encoder: svd_core.ImageEncoderConfig.tiny()}
    assert {m.SUBFOLDER for m in configs} == {"unet", "vae", "image_encoder"}
    for module, cfg in configs.items():
        for name in ("from_folder", "to_folder", "folder_config"):
            assert callable(getattr(module, name)), (module.__name__, name)
        assert isinstance(module.folder_config(cfg), dict)
        with pytest.raises(ConversionError):
            module.from_folder({"not.a.tensor.of.this.part": torch.zeros(1)})

