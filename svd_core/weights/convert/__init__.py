"""Renaming between the diffusers / transformers folder layout and ours (the official names).

Each part's module (`unet`, `vae`, `image_encoder`) has the same interface:
  SUBFOLDER            the part's subfolder in a diffusers folder;
  from_folder(sd)      a state dict in the folder's names -> ours;
  to_folder(sd)        ours -> the folder's names;
  folder_config(cfg)   the config.json the folder's library needs to build the part;
and raises one error type, ConversionError, naming the tensors it could not place.
"""
from __future__ import annotations


class ConversionError(ValueError):
    """A state dict that does not fit a part's renaming table."""
