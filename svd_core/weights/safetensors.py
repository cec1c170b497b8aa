"""Reading a .safetensors file: its header, checked as the format defines it, then its tensors.

The format (huggingface/safetensors, README "Format"): an 8-byte little-endian length N, N bytes of JSON
mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
"__metadata__" map of strings to strings), then the data section, in which each tensor's bytes lie at
[begin, end). `read_header` refuses every header that safetensors' own library refuses, naming the file
and the tensor as the file spells it; it reads no tensor data.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MAX_HEADER_BYTES = 100_000_000  # the limit of safetensors' own reader (MAX_HEADER_SIZE in tensor.rs)
SCRATCH_BYTES = 64 * 2**20  # smallest reusable read buffer of read_tensors


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as an SVD model; the message names the file and the keys."""


# Every dtype name of the format (safetensors' `Dtype` enum) -> bits per element. The sub-byte float
# dtypes (F4, F6_*) pack elements, so a tensor's bytes are numel x bits / 8, a whole number.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

# Format dtype -> the torch dtype that holds it, where this torch has one (the unsigned and fp8 kinds
# arrived in later torch releases; F4 / F6 have none).
TORCH_DTYPES: dict[str, torch.dtype] = {
    name: dt for name, dt in {
        "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
        "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
        "F64": torch.float64, "C64": torch.complex64,
        "U16": getattr(torch, "uint16", None), "U32": getattr(torch, "uint32", None),
        "U64": getattr(torch, "uint64", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E8M0": getattr(torch, "float8_e8m0fnu", None),
    }.items() if dt is not None
}


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies: its file, its name as the file spells it, shape, format dtype and byte span.
    `made`: no file holds it; the loader makes it (see detect.identity_quant_conv)."""

    file: Path
    key: str
    shape: tuple[int, ...]
    dtype: str = "F32"
    start: int = 0  # absolute byte offsets of the tensor's data in the file
    end: int = 0
    made: bool = False


class _JSONObject(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once (json.loads keeps the last)."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject(pairs)
    if len(obj) < len(pairs):
        obj.duplicates = tuple(k for k in obj if sum(k == other for other, _ in pairs) > 1)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: Python's json accepts them, the format does not


def _json_kind(x: Any) -> str:
    """The JSON name of a parsed value's kind."""
    kinds = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", type(None): "null"}
    return kinds.get(type(x), "object")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_header(path: Path) -> dict[str, StoredTensor]:
    """Names, shapes, dtypes and byte spans of a safetensors file, after checking that the file is whole and
    its header well formed. Raises CheckpointError naming the file (and the tensor) otherwise."""
    path = Path(path)
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
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"checkpoint '{path}' is not a valid safetensors file: header length {n} is implausible "
                    f"(at most {MAX_HEADER_BYTES})")
            f.seek(8)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {e}") from e
    try:
        header = json.loads(raw, object_pairs_hook=_object, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"checkpoint '{path}' has a malformed safetensors header: {e}") from e
    return _validate(path, header, base=8 + n, data_size=size - 8 - n)


def _validate(path: Path, header: Any, base: int, data_size: int) -> dict[str, StoredTensor]:
    """The header's tensors, each span exactly its shape x dtype, the spans tiling the data section, which
    starts at byte `base` of the file and holds `data_size` bytes."""
    where = f"checkpoint '{path}'"
    if not isinstance(header, _JSONObject):
        raise CheckpointError(f"{where} has a malformed safetensors header: a JSON {_json_kind(header)}, "
                              "expected an object mapping tensor names to their dtype, shape and data_offsets")
    if header.duplicates:
        raise CheckpointError(f"{where} has a malformed safetensors header: tensor '{header.duplicates[0]}' "
                              "is listed more than once")
    metadata = header.get("__metadata__", _JSONObject())
    if not (isinstance(metadata, _JSONObject) and all(isinstance(v, str) for v in metadata.values())) or (
            metadata.duplicates):
        raise CheckpointError(f"{where} has a malformed safetensors header: '__metadata__' is {metadata!r}, "
                              "expected a map of strings to strings")
    out: dict[str, StoredTensor] = {}
    for key, info in header.items():
        if key != "__metadata__":
            out[key] = _entry(path, key, info, base)
    # Sorted by offset, the spans must tile the data section: the first starts at 0, each starts where
    # the one before ends (no overlap, no hole), the last ends at the file's end. Trailing bytes after
    # the last span are refused, as safetensors' own reader does (MetadataIncompleteBuffer in tensor.rs).
    previous: StoredTensor | None = None
    for t in sorted(out.values(), key=lambda t: (t.start, t.end)):
        begin, end, expected = t.start - base, t.end - base, (previous.end - base if previous else 0)
        before = (f"tensor '{previous.key}' (bytes [{previous.start - base}, {expected}))" if previous
                  else "the start of the data section")
        if begin < expected:
            raise CheckpointError(f"{where}: tensor '{t.key}' (bytes [{begin}, {end})) overlaps {before} "
                                  "in the data section")
        if begin > expected:
            raise CheckpointError(f"{where}: tensor '{t.key}' starts at byte {begin} of the data section, "
                                  f"leaving a hole of {begin - expected} unused bytes after {before}")
        if end > data_size:
            raise CheckpointError(f"{where} is truncated: tensor '{t.key}' ends at byte {end} of the data "
                                  f"section, but only {data_size} bytes are present")
        previous = t
    last = previous.end - base if previous else 0
    if last != data_size:
        after = f"its last tensor '{previous.key}'" if previous else "its header (it holds no tensor)"
        raise CheckpointError(f"{where} has {data_size - last} bytes after {after}: the data section is "
                              f"{data_size} bytes, its tensors cover {last}")
    return out


def _entry(path: Path, key: str, info: Any, base: int) -> StoredTensor:
    """One header entry, checked: known dtype, a shape of non-negative integers, integer offsets
    0 <= begin <= end spanning exactly numel x the dtype's size. `base`: where the data section starts."""
    where = f"checkpoint '{path}': tensor '{key}'"
    if not isinstance(info, _JSONObject):
        raise CheckpointError(f"{where} has a malformed header entry {info!r}; expected a JSON object with "
                              "dtype, shape and data_offsets")
    missing = [field for field in ("dtype", "shape", "data_offsets") if field not in info]
    if missing or info.duplicates:
        what = f"no {', '.join(missing)}" if missing else f"'{info.duplicates[0]}' given twice"
        raise CheckpointError(f"{where} has a malformed header entry ({what}): {info!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not (isinstance(dtype, str) and dtype in DTYPE_BITS):
        raise CheckpointError(f"{where} has dtype {dtype!r}; expected a safetensors dtype, one of "
                              f"{', '.join(DTYPE_BITS)}")
    if not (isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape)):
        raise CheckpointError(f"{where} has shape {shape!r}; expected a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where} has data_offsets {offsets!r}; expected two integers [begin, end] "
                              "with 0 <= begin <= end")
    begin, end = offsets
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or end - begin != bits // 8:
        need = f"{bits // 8} bytes" if bits % 8 == 0 else f"{bits} bits, not a whole number of bytes"
        raise CheckpointError(f"{where} spans {end - begin} bytes (data_offsets [{begin}, {end}]), but its "
                              f"shape {shape} of {dtype} needs {need}")
    return StoredTensor(path, key, tuple(shape), dtype, base + begin, base + end)


def torch_dtype(t: StoredTensor) -> torch.dtype:
    """The torch dtype that holds the file's tensor `t` as it is stored."""
    if t.dtype not in TORCH_DTYPES:
        raise CheckpointError(f"checkpoint '{t.file}': tensor '{t.key}' has dtype {t.dtype}, which torch "
                              f"{torch.__version__} cannot hold")
    return TORCH_DTYPES[t.dtype]


def read_tensors(tensors: Mapping[str, StoredTensor], dtype: torch.dtype,
                 device: str | torch.device) -> dict[str, torch.Tensor]:
    """Read tensors straight from their files into fresh CPU memory, one at a time, then cast floating ones
    to `dtype` and move them to `device`; other tensors (e.g. integer position ids) stay as stored on the CPU.

    No memory map: a mapped file's pages would count twice beside the weights while loading, and a
    cast of a whole state dict would too. Peak memory is the weights in `dtype` plus one tensor.
    safetensors stores little-endian data, as every platform torch runs on does.
    """
    out: dict[str, torch.Tensor] = {}
    handles: dict[Path, Any] = {}
    scratch: torch.Tensor | None = None  # one reusable buffer for tensors that change dtype or device
    try:
        for name, t in tensors.items():
            file_dtype, nbytes = torch_dtype(t), t.end - t.start
            f = handles.get(t.file)
            if f is None:
                f = handles[t.file] = open(t.file, "rb", buffering=0)
            direct = (file_dtype == dtype or not file_dtype.is_floating_point) and torch.device(device).type == "cpu"
            if direct:  # read straight into the final tensor
                raw = torch.empty(nbytes, dtype=torch.uint8)
            else:  # read into the scratch buffer, then cast / move into a tensor of exactly the final size
                if scratch is None or scratch.numel() < nbytes:
                    scratch = torch.empty(max(nbytes, SCRATCH_BYTES), dtype=torch.uint8)
                raw = scratch[:nbytes]
            f.seek(t.start)
            if f.readinto(raw.numpy().data) != nbytes:
                raise CheckpointError(f"checkpoint '{t.file}' is truncated: tensor '{t.key}' could not be read whole")
            value = raw.view(file_dtype).reshape(t.shape)
            if not file_dtype.is_floating_point:
                out[name] = value if direct else value.clone()
            else:
                out[name] = value if direct else value.to(device=device, dtype=dtype, copy=True)
    finally:
        for f in handles.values():
            f.close()
    return out
