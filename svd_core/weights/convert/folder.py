"""Write loaded models as a diffusers folder (the layout `load_models` also reads).

Used to hand the same weights to an independent implementation (tests, benchmarks) and to export.
The scheduler and feature-extractor files describe the reference's sampling setup in diffusers'
terms, so `StableVideoDiffusionPipeline.from_pretrained(folder)` reproduces it: EDM Karras sigmas
from 0.002 to 700 (svd_xt_1_1.yaml / sgm EDMDiscretization), v-prediction, continuous timesteps
c_noise = ln(sigma)/4, init sigma sqrt(1 + sigma_max^2) ("leading" spacing), CLIP mean / std.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from ...diffusion.sampling import SIGMA_MAX, SIGMA_MIN
from ...nets.image_encoder import CLIP_MEAN, CLIP_STD
from . import image_encoder as convert_image_encoder
from . import unet as convert_unet
from . import vae as convert_vae

if TYPE_CHECKING:
    from ..models import SVDModels

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "num_train_timesteps": 1000,  # only shapes the unused discrete table; sigmas below are EDM's
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "interpolation_type": "linear",
    "use_karras_sigmas": True,
    "sigma_min": SIGMA_MIN,
    "sigma_max": SIGMA_MAX,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "steps_offset": 1,
}

FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": list(CLIP_MEAN),  # OpenAI CLIP normalisation
    "image_processor_type": "CLIPImageProcessor",
    "image_std": list(CLIP_STD),
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableVideoDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}


def _write(folder: Path, config: dict[str, Any], weights: dict[str, torch.Tensor], config_name: str,
           weights_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / config_name).write_text(json.dumps(config, indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(folder / weights_name))


def save_diffusers_folder(models: SVDModels, folder: str | os.PathLike[str], *, pipeline_files: bool = True) -> Path:
    """Write unet/, vae/, image_encoder/ (and, with `pipeline_files`, scheduler/, feature_extractor/ and
    model_index.json) so that diffusers' StableVideoDiffusionPipeline loads the same weights."""
    root = Path(folder)
    unet_cfg = {"_class_name": "UNetSpatioTemporalConditionModel", **convert_unet.folder_config(models.unet.config)}
    _write(root / convert_unet.SUBFOLDER, unet_cfg, convert_unet.to_folder(models.unet.state_dict()),
           "config.json", "diffusion_pytorch_model.safetensors")
    vae_cfg = {"_class_name": "AutoencoderKLTemporalDecoder", **convert_vae.folder_config(models.vae.config)}
    _write(root / convert_vae.SUBFOLDER, vae_cfg, convert_vae.to_folder(models.vae.state_dict()),
           "config.json", "diffusion_pytorch_model.safetensors")
    _write(root / convert_image_encoder.SUBFOLDER, convert_image_encoder.folder_config(models.image_encoder.config),
           convert_image_encoder.to_folder(models.image_encoder.state_dict()), "config.json", "model.safetensors")
    if pipeline_files:
        (root / "scheduler").mkdir(parents=True, exist_ok=True)
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=1))
        (root / "feature_extractor").mkdir(parents=True, exist_ok=True)
        preprocessor = json.dumps(FEATURE_EXTRACTOR_CONFIG, indent=1)
        (root / "feature_extractor" / "preprocessor_config.json").write_text(preprocessor)
        (root / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=1))
    return root
