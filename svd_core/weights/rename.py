"""Renaming a checkpoint's tensors to our names, before a single weight is read, and back for messages.

The diffusers / transformers renamings (convert/) act on state dicts; run on shape-only (meta) tensors
they tell our name, shape and dtype of every tensor, and which file tensor each comes from. The same
trace, run backwards, tells how a file spells one of our names in an error message (`KeySpelling`).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .convert import image_encoder as convert_image_encoder
from .convert import unet as convert_unet
from .convert import vae as convert_vae
from .detect import UNET_PREFIX, Found, UNetLayout
from .layout import SINGLE_FILE_PREFIXES, Prefixes, file_name
from .safetensors import TORCH_DTYPES, CheckpointError, StoredTensor

Renaming = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]

# How the file spells one of our names, quoted (and, in a folder, which file holds it): our name -> text.
KeySpelling = Callable[[str], str]

# part -> renaming from the diffusers / transformers names; each part lives in the subfolder of its name.
FROM_FOLDER: dict[str, Renaming] = {
    convert_unet.SUBFOLDER: convert_unet.from_folder,
    convert_image_encoder.SUBFOLDER: convert_image_encoder.from_folder,
    convert_vae.SUBFOLDER: convert_vae.from_folder,
}
# part -> renaming to the diffusers / transformers names (for error messages)
TO_FOLDER: dict[str, Renaming] = {
    convert_unet.SUBFOLDER: convert_unet.to_folder,
    convert_image_encoder.SUBFOLDER: convert_image_encoder.to_folder,
    convert_vae.SUBFOLDER: convert_vae.to_folder,
}
_RENAMING_ERRORS = (KeyError, ValueError, RuntimeError, IndexError)  # what a renaming of a bad state dict raises
_FORMAT_DTYPE = {dt: name for name, dt in TORCH_DTYPES.items()}


def trace_renaming(rename: Renaming, shapes: Mapping[str, tuple[int, ...]],
                   dtypes: Mapping[str, torch.dtype] | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str | None]]:
    """Run a renaming (a convert module's from_folder / to_folder) on shape-only (meta) tensors (float32
    unless `dtypes` says): the renamed tensors, and for each new name the name it came from (the same
    tensor, or a view of it), or None where it was made from several (e.g. q, k, v stacked). The
    renaming's own errors propagate."""
    dtypes = dtypes or {}
    meta = {k: torch.empty(shape, device="meta", dtype=dtypes.get(k, torch.float32)) for k, shape in shapes.items()}
    renamed = rename(meta)
    origin = {id(v): k for k, v in meta.items()}
    sources = {k: origin.get(id(v)) or (origin.get(id(v._base)) if v._base is not None else None)
               for k, v in renamed.items()}
    return renamed, sources


def to_our_names(found: Found) -> dict[str, dict[str, StoredTensor]]:
    """Each part's tensors keyed by our names: the parts in folder names renamed on meta tensors."""
    out = {part: dict(tensors) for part, tensors in found.tensors.items()}
    for part in found.folder_named:
        out[part] = _rename_part(found.path, part, found.tensors[part])
    return out


def _rename_part(path: Path, part: str, tensors: Mapping[str, StoredTensor]) -> dict[str, StoredTensor]:
    """Our names for one part in folder names, each pointing at the file tensor it comes from."""
    try:
        ours, sources = trace_renaming(FROM_FOLDER[part], {k: t.shape for k, t in tensors.items()},
                                       {k: TORCH_DTYPES.get(t.dtype, torch.uint8) for k, t in tensors.items()})
    except _RENAMING_ERRORS as e:
        if path.is_dir():
            files = sorted(str(f.relative_to(path)) for f in {t.file for t in tensors.values()})
            raise CheckpointError(f"diffusers folder '{path}' ({', '.join(files)}) is not an SVD {part}: {e}") from e
        raise CheckpointError(f"checkpoint '{path}': its image tower is not a CLIP vision model: {e}") from e
    out: dict[str, StoredTensor] = {}
    for k, v in ours.items():
        src = sources[k]  # where each of our tensors comes from
        if src is not None:
            out[k] = dataclasses.replace(tensors[src], shape=tuple(v.shape))
        else:  # made from several tensors (e.g. q, k, v stacked): named by the part's folder, dtype as stacked
            where = path / part if path.is_dir() else path
            out[k] = StoredTensor(where, k, tuple(v.shape), _FORMAT_DTYPE.get(v.dtype, str(v.dtype)))
    return out


def unet_file_names(path: Path, tensors: dict[str, StoredTensor], layout: UNetLayout) -> dict[str, StoredTensor]:
    """A UNet-only file's tensors keyed by our names (diffusers' names renamed; the renaming passes each
    tensor through as it is)."""
    if layout != "diffusers":
        return tensors
    try:
        _, sources = trace_renaming(convert_unet.from_folder, {k: t.shape for k, t in tensors.items()})
    except _RENAMING_ERRORS as e:
        raise CheckpointError(f"unet file '{path}' is not an SVD UNet in diffusers' layout: {e}") from e
    return {name: tensors[src] for name, src in sources.items() if src is not None}


def _folder_names(part: str, names: Mapping[str, tuple[int, ...]]) -> dict[str, list[str]]:
    """Our name -> the diffusers / transformers names of the same tensor (several where one is split),
    by renaming shape-only tensors and following each back to its source."""
    try:
        _, sources = trace_renaming(TO_FOLDER[part], names)
    except _RENAMING_ERRORS:
        return {}
    out: dict[str, list[str]] = {}
    for key, src in sources.items():
        if src is not None:
            out.setdefault(src, []).append(key)
    return out


def checkpoint_spelling(path: Path, part: str, tensors: Mapping[str, StoredTensor],
                        names: Mapping[str, tuple[int, ...]], table: Prefixes = SINGLE_FILE_PREFIXES) -> KeySpelling:
    """How the checkpoint at `path` spells our names of `part`: a single file's full key (with its
    `model.diffusion_model.` / `first_stage_model.` / `conditioner.embedders.N.` prefix); in a diffusers
    folder, the folder's key and the file inside the folder that holds it. `tensors`: the part's tensors by
    our names; `names`: our names and shapes of the whole part, to rename the ones the checkpoint lacks;
    `table`: the family's prefixes (layout.prefixes)."""
    folder_names: dict[str, list[str]] | None = None

    def spell(name: str) -> str:
        nonlocal folder_names
        t = tensors.get(name)
        if not path.is_dir():
            return f"'{t.key if t is not None else file_name(part, name, table)}'"
        if t is not None and t.key != name:  # read from the folder: its own key and file
            return f"'{t.key}' in '{t.file.relative_to(path)}'"
        if folder_names is None:
            folder_names = _folder_names(part, names)
        theirs = " / ".join(f"'{k}'" for k in folder_names.get(name, [name]))
        files = sorted({str(t.file.relative_to(path)) for t in tensors.values() if t.file.is_file()})
        where = f"'{files[0]}'" if len(files) == 1 else (f"one of {files}" if files else f"'{part}/'")
        return f"{theirs} in {where}"

    return spell


def unet_file_spelling(tensors: Mapping[str, StoredTensor], layout: UNetLayout,
                       names: Mapping[str, tuple[int, ...]]) -> KeySpelling:
    """How a UNet-only file spells our names: its own key where it has the tensor, else the name its
    layout would give it."""
    folder_names: dict[str, list[str]] | None = None

    def spell(name: str) -> str:
        nonlocal folder_names
        t = tensors.get(name)
        if t is not None:
            return f"'{t.key}'"
        if layout == "diffusers":
            if folder_names is None:
                folder_names = _folder_names("unet", names)
            return " / ".join(f"'{k}'" for k in folder_names.get(name, [name]))
        return f"'{UNET_PREFIX + name if layout == 'single' else name}'"

    return spell


def respell(message: str, spell: KeySpelling, known: set[str]) -> str:
    """Replace every quoted name of a part (one of `known`, or a prefix of one) in a config's error message
    by the checkpoint's spelling."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(1)
        if token in known or (token.endswith(".") and any(k.startswith(token) for k in known)):
            return spell(token)
        return m.group(0)

    return re.sub(r"'([A-Za-z_][\w.]*)'", sub, message)
