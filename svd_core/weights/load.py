"""Loading SVD / SVD-XT / SVD-XT 1.1 weights: the official single file or a diffusers folder.

Every size is read from tensor shapes, so smaller members of the family load too. Loading is
all-or-nothing: the file's header is read and checked against models built on the `meta` device
before a single weight is read, and any problem raises one `CheckpointError` naming the file and the
first offending keys. Weights are read one tensor at a time, cast to the caller's dtype and assigned
into the meta-built modules (`load_state_dict(assign=True)`), so no weight is ever held twice.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import DTYPES, PRESETS, SVDConfig, preset_for_filename
from .convert import image_encoder as convert_image_encoder
from .convert import unet as convert_unet
from .convert import vae as convert_vae
from ..nets.image_encoder import ImageEncoderConfig
from ..nets.layers import Ops, set_execution
from .layout import SINGLE_FILE_PREFIXES, file_name, part_of
from .models import PARTS, SVDModels, build_models
from ..nets.unet import UNetConfig
from ..nets.vae import VAEConfig

log = logging.getLogger(__name__)

# Storage dtypes of the UNet's matrices that load_models accepts (fp8: stored, computed in `dtype`).
WEIGHT_DTYPES = frozenset(DTYPES.values())
MAX_LISTED = 5  # offending keys listed in an error message

class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as an SVD model; the message names the file and the keys."""


# --- reading safetensors headers --------------------------------------------------------------

@dataclass(frozen=True)
class _Tensor:
    file: Path
    key: str
    shape: tuple[int, ...]
    dtype: str = "F32"
    start: int = 0  # absolute byte offsets of the tensor's data in the file
    end: int = 0


def read_header(path: Path) -> dict[str, _Tensor]:
    """Names and shapes of a safetensors file, after checking that it is whole and well formed."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)  # 8-byte little-endian header length, then the JSON header's "{"
            looks_safetensors = len(head) == 9 and head[8:9] == b"{"
            is_zip = head.startswith(b"PK\x03\x04")  # torch.save's zip container
            is_pickle = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")  # pickle PROTO
            if (is_zip or is_pickle) and not looks_safetensors:
                raise CheckpointError(
                    f"checkpoint '{path}' is a pickle / PyTorch .ckpt/.bin/.pt file; only .safetensors "
                    "files are loaded (pickle files can run arbitrary code)"
                )
            if not looks_safetensors:
                raise CheckpointError(
                    f"checkpoint '{path}' is not a valid safetensors file ({size} bytes, no JSON header after "
                    "the 8-byte length)"
                )
            (n,) = struct.unpack("<Q", head[:8])
            if 8 + n > size:
                raise CheckpointError(
                    f"checkpoint '{path}' is truncated: its header alone needs {8 + n} bytes, the file has {size}"
                )
            if n > 100 * 2**20:
                raise CheckpointError(f"checkpoint '{path}' is not a valid safetensors file: header length {n} is implausible")
            f.seek(8)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {e}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint '{path}' has a malformed safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint '{path}' has a malformed safetensors header: not a JSON object")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    out: dict[str, _Tensor] = {}
    for key, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint '{path}' has a malformed header entry for '{key}': {info!r}") from e
        if end > data_size:
            raise CheckpointError(
                f"checkpoint '{path}' is truncated: tensor '{key}' ends at byte {end} of the data section, "
                f"but only {data_size} bytes are present"
            )
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise CheckpointError(f"checkpoint '{path}' has a malformed header entry for '{key}': {info!r}")
        out[key] = _Tensor(path, key, shape, str(dtype), 8 + n + begin, 8 + n + end)
    return out


# --- checking what a file holds against what the models expect -------------------------------

Spell = Callable[[str], str]  # our tensor name -> how the checkpoint spells it, quoted (and where it lies)


def _spelling(path: Path, part: str, sources: Mapping[str, _Tensor], names: Mapping[str, tuple[int, ...]]) -> Spell:
    """How the checkpoint at `path` spells our names of `part`: a single file's full key (with its
    `model.diffusion_model.` / `first_stage_model.` / `conditioner.embedders.N.` prefix); in a diffusers
    folder, the folder's key and the file inside the folder that holds it. `names`: our names and
    shapes of the whole part, to rename the ones the checkpoint lacks."""
    folder_names: dict[str, list[str]] | None = None

    def spell(name: str) -> str:
        nonlocal folder_names
        t = sources.get(name)
        if not path.is_dir():
            return f"'{t.key if t is not None else file_name(part, name)}'"
        if t is not None and t.key != name:  # read from the folder: its own key and file
            return f"'{t.key}' in '{t.file.relative_to(path)}'"
        if folder_names is None:
            folder_names = _folder_names(part, names)
        theirs = " / ".join(f"'{k}'" for k in folder_names.get(name, [name]))
        files = sorted({str(t.file.relative_to(path)) for t in sources.values() if t.file.is_file()})
        where = f"'{files[0]}'" if len(files) == 1 else (f"one of {files}" if files else f"'{part}/'")
        return f"{theirs} in {where}"

    return spell


def _folder_names(part: str, names: Mapping[str, tuple[int, ...]]) -> dict[str, list[str]]:
    """Our name -> the diffusers / transformers names of the same tensor (several where one is split),
    by renaming shape-only tensors and following each back to its source."""
    try:
        _, sources = _trace_renaming(_TO_FOLDER[part], names)
    except (ValueError, KeyError, RuntimeError, IndexError):
        return {}
    out: dict[str, list[str]] = {}
    for key, src in sources.items():
        if src is not None:
            out.setdefault(src, []).append(key)
    return out


def _trace_renaming(rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                    shapes: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, torch.Tensor], dict[str, str | None]]:
    """Run a renaming (a convert module's from_folder / to_folder) on shape-only (meta) tensors: the renamed
    tensors, and for each new name the name it came from (the same tensor, or a view of it), or None where
    it was made from several (e.g. q, k, v stacked). The renaming's own errors propagate."""
    meta = {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}
    renamed = rename(meta)
    origin = {id(v): k for k, v in meta.items()}
    sources = {k: origin.get(id(v)) or (origin.get(id(v._base)) if v._base is not None else None)
               for k, v in renamed.items()}
    return renamed, sources


def _respell(message: str, part: str, spell: Spell, known: set[str]) -> str:
    """Replace every quoted name of `part` in a config's error message by the checkpoint's spelling."""

    def sub(m: re.Match[str]) -> str:
        token = m.group(1)
        if token in known or (token.endswith(".") and any(k.startswith(token) for k in known)):
            return spell(token)
        return m.group(0)

    return re.sub(r"'([A-Za-z_][\w.]*)'", sub, message)


def _check(path: Path, part: str, found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
           spell: Spell) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint '{path}' does not match the SVD {part} its shapes describe:"]
    if misshaped:
        lines.append(f"  {len(misshaped)} tensor(s) with the wrong shape, first: " + "; ".join(
            f"{spell(k)} expected {list(expected[k])}, found {list(found[k])}" for k in misshaped[:MAX_LISTED]))
    if missing:
        lines.append(f"  {len(missing)} missing tensor(s), first: " + "; ".join(
            f"{spell(k)} expected {list(expected[k])}" for k in missing[:MAX_LISTED]))
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected tensor(s), first: " + "; ".join(
            f"{spell(k)} found {list(found[k])}" for k in unexpected[:MAX_LISTED]))
    raise CheckpointError("\n".join(lines))


def _configs_from_shapes(paths: Mapping[str, Path], shapes: Mapping[str, Mapping[str, tuple[int, ...]]],
                         spells: Mapping[str, Spell]) -> tuple[UNetConfig, ImageEncoderConfig, VAEConfig]:
    readers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "unet": UNetConfig.from_shapes, "image_encoder": ImageEncoderConfig.from_shapes, "vae": VAEConfig.from_shapes}
    configs: dict[str, Any] = {}
    for part, read in readers.items():
        try:
            configs[part] = read(shapes[part])
        except (ValueError, KeyError, IndexError) as e:
            known = set(shapes[part]) | set(_probe_shapes().get(part, {}))
            raise CheckpointError(f"checkpoint '{paths[part]}' is not an SVD model: {_respell(str(e), part, spells[part], known)}") from e
    return configs["unet"], configs["image_encoder"], configs["vae"]


def _expected_shapes(config: SVDConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    models = build_models(config, device="meta")
    return {part: {k: tuple(v.shape) for k, v in getattr(models, part).state_dict().items()} for part in PARTS}


# --- the two layouts ---------------------------------------------------------------------------

# ComfyUI's own SVD files (ImageOnlyCheckpointSave): the UNet as ours, the first-stage VAE
# (`first_stage_model.encoder/decoder`, no `conditioner.embedders.3`), and the image tower in ComfyUI's
# clip-vision names (transformers' layout) under SVD_img2vid.clip_vision_prefix (comfy/supported_models.py),
# or under `clip_vision.` in files other tools wrote.
COMFY_CLIP_PREFIXES = ("conditioner.embedders.0.open_clip.model.visual.", "clip_vision.")
IDENTITY = "IDENTITY"  # dtype marker of a tensor the loader makes itself (no file holds it)


def _comfy_clip_prefix(header: Mapping[str, _Tensor]) -> str | None:
    """The clip-vision prefix of a ComfyUI-saved SVD file, or None for another layout."""
    if any(k.startswith("conditioner.embedders.3.") for k in header):
        return None
    for prefix in COMFY_CLIP_PREFIXES:
        if prefix + "visual_projection.weight" in header or any(k.startswith(prefix + "vision_model.") for k in header):
            return prefix
    return None


def _single_file_sources(path: Path) -> tuple[dict[str, dict[str, _Tensor]], str | None]:
    """Our names -> the file's tensors, per part; and the clip-vision prefix when the file is ComfyUI's
    own layout (its image tower is then keyed by the folder names, to be renamed when read)."""
    header = read_header(path)
    if not any(k.startswith("model.diffusion_model.") for k in header):
        raise CheckpointError(
            f"checkpoint '{path}' is not an SVD model: no tensor starts with 'model.diffusion_model.' "
            f"(found {len(header)} tensors, e.g. {sorted(header)[:3]})"
        )
    if not any(".time_stack." in k for k in header if k.startswith("model.diffusion_model.")):
        raise CheckpointError(
            f"checkpoint '{path}' is not an SVD model: its UNet has no temporal layers "
            "('model.diffusion_model.*.time_stack.*'); it looks like an image model (SD 1.x / SD 2.x / SDXL)"
        )
    sources: dict[str, dict[str, _Tensor]] = {p: {} for p in PARTS}
    comfy = _comfy_clip_prefix(header)
    if comfy is not None:
        for key, t in header.items():
            if key.startswith("model.diffusion_model."):
                sources["unet"][key[len("model.diffusion_model."):]] = t
            elif key.startswith(("first_stage_model.encoder.", "first_stage_model.decoder.")):
                sources["vae"][key[len("first_stage_model."):]] = t
            elif key.startswith(comfy):
                sources["image_encoder"][key[len(comfy):]] = t  # folder names, renamed by the caller
        if not any(k.startswith("encoder.") for k in sources["vae"]):
            raise CheckpointError(f"checkpoint '{path}' is ComfyUI's SVD layout but has no 'first_stage_model.encoder.' "
                                  "tensors (needed to encode the conditioning frame)")
        return sources, comfy
    for key, t in header.items():
        hit = part_of(key)
        if hit is not None:
            sources[hit[0]][hit[1]] = t
    for part, table in SINGLE_FILE_PREFIXES.items():
        for theirs in table.values():
            if not any(k.startswith(theirs) for k in header):
                raise CheckpointError(
                    f"checkpoint '{path}' is not a complete SVD checkpoint: no tensor starts with '{theirs}' "
                    f"(needed for the {part}); expected the official single-file layout of svd_xt_1_1.safetensors"
                )
    return sources, None


def _identity_quant_conv(path: Path, encoder_out: _Tensor) -> dict[str, _Tensor]:
    """A quant_conv that changes nothing (1x1 identity, zero bias): the VAE then encodes the conditioning
    frame with the first-stage encoder alone, as ComfyUI's SVD_img2vid_Conditioning does."""
    c = int(encoder_out.shape[0])
    return {"quant_conv.weight": _Tensor(path, "quant_conv.weight", (c, c, 1, 1), IDENTITY),
            "quant_conv.bias": _Tensor(path, "quant_conv.bias", (c,), IDENTITY)}


def _safetensors_in(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for p in folder.glob("*") if p.suffix in {".bin", ".ckpt", ".pt", ".pth"})
        hint = f" (found pickle files {others}: only .safetensors files are loaded)" if others else ""
        raise CheckpointError(f"diffusers folder '{folder}' has no .safetensors file{hint}")
    # Prefer one variant: the plain file over '.fp16' twins when both exist, unless only variants exist.
    plain = [f for f in files if len(f.name.split(".")) == 2]
    return plain or [f for f in files if f.name.split(".")[-2] == files[0].name.split(".")[-2]]


# part -> renaming to the diffusers / transformers names (for error messages)
_TO_FOLDER: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    convert_unet.SUBFOLDER: convert_unet.to_folder,
    convert_image_encoder.SUBFOLDER: convert_image_encoder.to_folder,
    convert_vae.SUBFOLDER: convert_vae.to_folder,
}


@functools.lru_cache(maxsize=1)
def _probe_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """part -> our names and shapes at full size (built on `meta`): tells tensor names in an error
    message from other quoted words, and gives the renaming a plausible shape."""
    return _expected_shapes(SVDConfig())

# part -> renaming from the diffusers / transformers names; each part lives in the subfolder of its name.
_FROM_DIFFUSERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    convert_unet.SUBFOLDER: convert_unet.from_folder,
    convert_image_encoder.SUBFOLDER: convert_image_encoder.from_folder,
    convert_vae.SUBFOLDER: convert_vae.from_folder,
}


def _diffusers_headers(folder: Path) -> dict[str, dict[str, _Tensor]]:
    out: dict[str, dict[str, _Tensor]] = {}
    for part in _FROM_DIFFUSERS:
        d = folder / part
        if not d.is_dir():
            raise CheckpointError(f"diffusers folder '{folder}' has no '{part}/' subfolder (expected unet/, vae/, image_encoder/)")
        merged: dict[str, _Tensor] = {}
        for f in _safetensors_in(d):
            merged.update(read_header(f))
        out[part] = merged
    return out


# --- a UNet-only file (AnimateLCM-SVD-xt and other fine-tunes of the UNet alone) ------------------

UNET_PREFIX = SINGLE_FILE_PREFIXES["unet"][""]  # model.diffusion_model.


def _unet_file_sources(path: Path) -> tuple[dict[str, _Tensor], str]:
    """Our UNet names -> the tensors of a UNet-only file, and its layout: "diffusers" (diffusers'
    UNetSpatioTemporalConditionModel names, how AnimateLCM-SVD-xt ships: G-U-N/AnimateLCM app.py loads it
    with pipe.unet.load_state_dict(strict=True)), "single" (the official names with their
    `model.diffusion_model.` prefix, e.g. a whole checkpoint) or "bare" (the same without the prefix).
    A file or a folder of .safetensors shards (diffusers' unet/ subfolder)."""
    if not path.exists():
        raise CheckpointError(
            f"unet file '{path}' does not exist. AnimateLCM-SVD-xt's UNets (AnimateLCM-SVD-xt.safetensors, "
            "AnimateLCM-SVD-xt-1.1.safetensors, 6.1 GB each) are published on Hugging Face "
            "(wangfuyun/AnimateLCM-SVD-xt); in ComfyUI put them in ComfyUI/models/diffusion_models/")
    header: dict[str, _Tensor] = {}
    for f in (_safetensors_in(path) if path.is_dir() else [path]):
        header.update(read_header(f))
    if any(k.startswith(UNET_PREFIX) for k in header):
        return {k[len(UNET_PREFIX):]: t for k, t in header.items() if k.startswith(UNET_PREFIX)}, "single"
    if any(k.startswith("input_blocks.") for k in header):
        return dict(header), "bare"
    if not any(k.startswith("down_blocks.") for k in header):
        raise CheckpointError(
            f"unet file '{path}' is not an SVD UNet: none of its {len(header)} tensors (e.g. {sorted(header)[:3]}) "
            f"starts with '{UNET_PREFIX}', 'input_blocks.' or diffusers' 'down_blocks.'")
    try:
        _, sources = _trace_renaming(convert_unet.from_folder, {k: t.shape for k, t in header.items()})
    except (KeyError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"unet file '{path}' is not an SVD UNet in diffusers' layout: {e}") from e
    # the UNet's renaming passes each tensor through as it is
    return {name: header[src] for name, src in sources.items() if src is not None}, "diffusers"


def _unet_spelling(sources: Mapping[str, _Tensor], layout: str, names: Mapping[str, tuple[int, ...]]) -> Spell:
    """How a UNet-only file spells our names: its own key where it has the tensor, else the name its
    layout would give it."""
    folder_names: dict[str, list[str]] | None = None

    def spell(name: str) -> str:
        nonlocal folder_names
        t = sources.get(name)
        if t is not None:
            return f"'{t.key}'"
        if layout == "diffusers":
            if folder_names is None:
                folder_names = _folder_names("unet", names)
            return " / ".join(f"'{k}'" for k in folder_names.get(name, [name]))
        return f"'{UNET_PREFIX + name if layout == 'single' else name}'"

    return spell


def _check_unet_fits(path: Path, unet: UNetConfig, clip: ImageEncoderConfig, vae: VAEConfig) -> None:
    """A UNet from another file must take the checkpoint's latents and image embedding."""
    wrong = []
    if unet.in_channels != 2 * vae.latent_channels or unet.out_channels != vae.latent_channels:
        wrong.append(f"it takes {unet.in_channels} input / {unet.out_channels} output channels, the VAE's latents "
                     f"need {2 * vae.latent_channels} / {vae.latent_channels}")
    if unet.context_dim != clip.embed_dim:
        wrong.append(f"its context_dim is {unet.context_dim}, the image encoder's embedding has {clip.embed_dim}")
    if wrong:
        raise CheckpointError(f"unet file '{path}' does not fit the checkpoint's other parts: " + "; ".join(wrong))


# --- public entry point --------------------------------------------------------------------------

def load_models(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device = "cpu",
    preset: str | None = None,
    vae_dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
    ops: Ops = torch.nn,
    compile: bool = False,
    unet: str | os.PathLike[str] | None = None,
) -> SVDModels:
    """Load an SVD checkpoint: the official single .safetensors file, or a diffusers folder.

    `dtype` is the compute dtype of the models (fp32, fp16 or bf16, whatever the file stores);
    `vae_dtype`, when given, that of the VAE alone (the reference runs its VAE in fp32:
    disable_first_stage_autocast / disable_encoder_autocast in svd_xt_1_1.yaml);
    `weight_dtype`, when given, the storage dtype of the UNet's matrices (the weights of its linear and
    convolution layers, 99.9 % of its bytes; norms, biases and mix factors stay in `dtype`): e.g.
    torch.float8_e4m3fn, which `ops` must then cast per call (ComfyUI's comfy.ops.manual_cast does);
    `ops`, the namespace the layers are made from (torch.nn; a host's casting layers);
    `preset` picks the sampling defaults (svd / svd_xt / svd_xt_1_1; guessed from the name when None);
    `compile` compiles the UNet and the temporal decoder (speed.compile_models; eager where it cannot);
    `unet`, a UNet-only file (or folder of shards) used instead of the checkpoint's UNet, which is then not
    read: e.g. AnimateLCM-SVD-xt, in diffusers' names as it ships (see `_unet_file_sources`); the preset is
    then guessed from its name (AnimateLCM-SVD-xt*.safetensors -> animatelcm_svd_xt).
    Raises CheckpointError, naming the file and the first offending keys, for anything else.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist. The official SVD-XT 1.1 file (svd_xt_1_1.safetensors, 4.78 GB) "
            "is published by Stability AI on Hugging Face (stabilityai/stable-video-diffusion-img2vid-xt-1-1); "
            "in ComfyUI put it in ComfyUI/models/checkpoints/"
        )
    comfy_prefix: str | None = None
    if path.is_dir():
        tensors = _diffusers_headers(path)
        renamed = _rename_meta(path, tensors)
    else:
        renamed, comfy_prefix = _single_file_sources(path)
        if comfy_prefix is not None:
            tensors = {"image_encoder": renamed["image_encoder"]}
            renamed["image_encoder"] = _rename_meta(path, tensors, parts=("image_encoder",))["image_encoder"]
            if "encoder.conv_out.weight" in renamed["vae"]:
                renamed["vae"].update(_identity_quant_conv(path, renamed["vae"]["encoder.conv_out.weight"]))
            log.warning("'%s' is a ComfyUI-saved SVD checkpoint: the conditioning frame is encoded like ComfyUI does "
                        "(first-stage encoder, no quant_conv), not like the reference", path.name)
    paths = {part: path for part in PARTS}
    unet_layout: str | None = None
    if unet is not None:
        paths["unet"] = Path(unet)
        renamed["unet"], unet_layout = _unet_file_sources(paths["unet"])
    shapes = {part: {k: t.shape for k, t in src.items()} for part, src in renamed.items()}
    probe = _probe_shapes()  # full-size names: enough to spell what a config reader complains about

    def spelling(part: str, names: Mapping[str, tuple[int, ...]]) -> Spell:
        if part == "unet" and unet_layout is not None:
            return _unet_spelling(renamed["unet"], unet_layout, names)
        return _spelling(path, part, renamed[part], names)

    spells = {part: spelling(part, probe[part]) for part in PARTS}
    unet_cfg, clip_cfg, vae_cfg = _configs_from_shapes(paths, shapes, spells)
    if unet is not None:
        _check_unet_fits(paths["unet"], unet_cfg, clip_cfg, vae_cfg)
    name = preset or preset_for_filename(paths["unet"].name if unet is not None else path.name)
    if name not in PRESETS:
        raise CheckpointError(f"preset '{name}' is unknown; expected one of {sorted(PRESETS)}")
    config = SVDConfig(name=name, unet=unet_cfg, vae=vae_cfg, image_encoder=clip_cfg, sampling=PRESETS[name].sampling)
    expected = _expected_shapes(config)
    for part in PARTS:
        _check(paths[part], part, shapes[part], expected[part], spelling(part, expected[part]))
        bad = [t for t in renamed[part].values() if t.dtype not in ("F32", "F16", "BF16", "F64", IDENTITY)]
        if bad:
            raise CheckpointError(
                f"checkpoint '{bad[0].file}': tensor '{bad[0].key}' has dtype {bad[0].dtype}; expected F32, F16 or BF16"
            )

    if weight_dtype is not None and weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype} is not supported; expected one of {sorted(map(str, WEIGHT_DTYPES))}")
    models = build_models(config, device="meta", ops=ops)
    for part in PARTS:
        part_dtype = vae_dtype if (part == "vae" and vae_dtype is not None) else dtype
        if part == "unet" and unet_layout is not None:  # renamed tensors, read as they are
            sd = read_tensors(renamed[part], part_dtype, device)
        elif path.is_dir() or (comfy_prefix is not None and part == "image_encoder"):
            sd = _load_diffusers_part(path, part, tensors[part], part_dtype, device)
        else:
            made = {k: t for k, t in renamed[part].items() if t.dtype == IDENTITY}
            sd = read_tensors({k: t for k, t in renamed[part].items() if k not in made}, part_dtype, device)
            for k, t in made.items():  # an identity 1x1 convolution: eye weight, zero bias
                sd[k] = (torch.eye(t.shape[0]).view(t.shape) if len(t.shape) == 4 else torch.zeros(t.shape)).to(
                    device=device, dtype=part_dtype)
        if part == "unet" and weight_dtype is not None and weight_dtype != part_dtype:
            for k in [k for k, v in sd.items() if v.ndim >= 2]:  # one tensor at a time: no second copy
                sd[k] = sd[k].to(weight_dtype)
        module = getattr(models, part)
        module.load_state_dict(sd, strict=True, assign=True)
        module.eval().requires_grad_(False)
        set_execution(module, dtype=part_dtype)
        del sd
    log.info("loaded %s from '%s'%s as %s (VAE %s) on %s", config.name, path,
             f" with the UNet of '{paths['unet']}'" if unet is not None else "", dtype, vae_dtype or dtype, device)
    if compile:
        from ..speed import compile_models

        compile_models(models)
    return models


def _rename_meta(folder: Path, tensors: dict[str, dict[str, _Tensor]],
                 parts: tuple[str, ...] = PARTS) -> dict[str, dict[str, _Tensor]]:
    """Run each part's renaming on shape-only (meta) tensors to learn our names and shapes first."""
    out: dict[str, dict[str, _Tensor]] = {}
    for part in parts:
        try:
            ours, sources = _trace_renaming(_FROM_DIFFUSERS[part], {k: t.shape for k, t in tensors[part].items()})
        except (KeyError, ValueError, RuntimeError, IndexError) as e:
            if folder.is_dir():
                files = sorted(str(f.relative_to(folder)) for f in {t.file for t in tensors[part].values()})
                raise CheckpointError(f"diffusers folder '{folder}' ({', '.join(files)}) is not an SVD {part}: {e}") from e
            raise CheckpointError(f"checkpoint '{folder}': its image tower is not a CLIP vision model: {e}") from e
        out[part] = {}
        for k, v in ours.items():
            src = sources[k]  # where each of our tensors comes from
            if src is not None:
                out[part][k] = _Tensor(tensors[part][src].file, tensors[part][src].key, tuple(v.shape))
            else:  # made from several tensors (e.g. q, k, v stacked)
                out[part][k] = _Tensor(folder / part, k, tuple(v.shape))
    return out


def _load_diffusers_part(folder: Path, part: str, tensors: Mapping[str, _Tensor], dtype: torch.dtype, device: str | torch.device) -> dict[str, torch.Tensor]:
    return _FROM_DIFFUSERS[part](read_tensors(tensors, dtype, device))


# safetensors dtype names (the format's spec) -> torch dtypes
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def read_tensors(tensors: Mapping[str, _Tensor], dtype: torch.dtype, device: str | torch.device) -> dict[str, torch.Tensor]:
    """Read tensors straight from their files into fresh CPU memory, one at a time, then cast / move each.

    No memory map: a mapped file's pages would count twice beside the weights while loading, and a
    cast of a whole state dict would too. Peak memory is the weights in `dtype` plus one tensor.
    safetensors stores little-endian data, as every platform torch runs on does.
    """
    out: dict[str, torch.Tensor] = {}
    handles: dict[Path, Any] = {}
    scratch: torch.Tensor | None = None  # one reusable buffer for tensors that change dtype or device
    try:
        for name, t in tensors.items():
            if t.dtype not in _ST_DTYPES:
                raise CheckpointError(f"checkpoint '{t.file}': tensor '{t.key}' has dtype {t.dtype}; expected F32, F16 or BF16")
            file_dtype, nbytes = _ST_DTYPES[t.dtype], t.end - t.start
            f = handles.get(t.file)
            if f is None:
                f = handles[t.file] = open(t.file, "rb", buffering=0)
            direct = (file_dtype == dtype or not file_dtype.is_floating_point) and torch.device(device).type == "cpu"
            if direct:  # read straight into the final tensor
                raw = torch.empty(nbytes, dtype=torch.uint8)
            else:  # read into the scratch buffer, then cast / move into a tensor of exactly the final size
                if scratch is None or scratch.numel() < nbytes:
                    scratch = torch.empty(max(nbytes, 64 * 2**20), dtype=torch.uint8)
                raw = scratch[:nbytes]
            f.seek(t.start)
            if f.readinto(raw.numpy().data) != nbytes:
                raise CheckpointError(f"checkpoint '{t.file}' is truncated: tensor '{t.key}' could not be read whole")
            value = raw.view(file_dtype).reshape(t.shape)
            if not file_dtype.is_floating_point:
                out[name] = value
            else:
                out[name] = value if direct else value.to(device=device, dtype=dtype, copy=True)
    finally:
        for f in handles.values():
            f.close()
    return out
