"""The safetensors header check: a real random-weight file, its header rewritten in every way the format
forbids; each is refused with a CheckpointError naming the file and the tensor as the file spells it."""
from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import svd_core
from svd_core import CheckpointError, load_models
from svd_core.weights.load import read_header

Header = dict[str, Any]
Mutation = Callable[[Header, bytes], tuple[Header | str, bytes, str | None]]  # -> header (or raw JSON), data, key


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("st") / "svd_xt_1_1.safetensors"
    return svd_core.save_random_checkpoint(path, svd_core.SVDConfig.tiny(), seed=0)  # F16 tensors


def _split(path: Path) -> tuple[Header, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header: Header | str, data: bytes) -> Path:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _by_offset(header: Header) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])


def _unet_victim(header: Header) -> tuple[str, str]:
    """A UNet tensor in the middle of the data section, and the one before it."""
    order = _by_offset(header)
    i = next(i for i, k in enumerate(order) if i > 0 and k.startswith("model.diffusion_model.")
             and header[k]["data_offsets"][1] - header[k]["data_offsets"][0] > 8)
    return order[i], order[i - 1]


def _set(field: str, value: Callable[[Any], Any]) -> Mutation:
    def mutate(h: Header, data: bytes) -> tuple[Header, bytes, str]:
        key, _ = _unet_victim(h)
        h[key][field] = value(h[key][field])
        return h, data, key
    return mutate


def _overlap(h: Header, data: bytes) -> tuple[Header, bytes, str]:
    key, _ = _unet_victim(h)
    b, e = h[key]["data_offsets"]
    h[key]["data_offsets"] = [b - 2, e - 2]  # the same length, its first two bytes inside the tensor before
    return h, data, key


def _hole(h: Header, data: bytes) -> tuple[Header, bytes, str]:
    key = _by_offset(h)[-1]
    b, e = h[key]["data_offsets"]
    h[key]["data_offsets"] = [b + 8, e + 8]  # 8 unused bytes before it; the data section grows by as much
    return h, data + bytes(8), key


def _shift_all(h: Header, data: bytes) -> tuple[Header, bytes, str]:
    """Every span 4 bytes later, 4 unused bytes at the start of the data section."""
    for k in _by_offset(h):
        h[k]["data_offsets"] = [o + 4 for o in h[k]["data_offsets"]]
    return h, bytes(4) + data, _by_offset(h)[0]


def _entry(value: Callable[[Any], Any]) -> Mutation:
    def mutate(h: Header, data: bytes) -> tuple[Header, bytes, str]:
        key, _ = _unet_victim(h)
        h[key] = value(h[key])
        return h, data, key
    return mutate


def _duplicate(h: Header, data: bytes) -> tuple[str, bytes, str]:
    key, _ = _unet_victim(h)
    entries = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in h.items()]
    return "{" + ", ".join([*entries, f"{json.dumps(key)}: {json.dumps(h[key])}"]) + "}", data, key


MUTATIONS: dict[str, Mutation] = {
    "offsets as strings": _set("data_offsets", lambda o: [str(x) for x in o]),
    "float offsets": _set("data_offsets", lambda o: [float(x) for x in o]),
    "bool offsets": _set("data_offsets", lambda o: [False, True]),
    "negative offset": _set("data_offsets", lambda o: [-2, o[1]]),
    "reversed offsets": _set("data_offsets", lambda o: [o[1], o[0]]),
    "three offsets": _set("data_offsets", lambda o: [*o, o[1]]),
    "span shorter than shape x dtype": _set("data_offsets", lambda o: [o[0], o[1] - 2]),
    "span longer than shape x dtype": _set("data_offsets", lambda o: [o[0], o[1] + 2]),
    "dtype wider than span": _set("dtype", lambda d: "F32"),
    "unknown dtype": _set("dtype", lambda d: "F17"),
    "dtype not a string": _set("dtype", lambda d: 16),
    "dtype a list": _set("dtype", lambda d: [d]),
    "first span not at 0": lambda h, data: _shift_all(h, data),
    "negative shape": _set("shape", lambda s: [-s[0], *s[1:]]),
    "non-integer shape": _set("shape", lambda s: [float(s[0]), *s[1:]]),
    "shape not a list": _set("shape", lambda s: s[0]),
    "overlapping spans": _overlap,
    "hole between spans": _hole,
    "entry not an object": _entry(lambda info: [info["dtype"], info["shape"], info["data_offsets"]]),
    "missing data_offsets": _entry(lambda info: {k: v for k, v in info.items() if k != "data_offsets"}),
    "missing dtype": _entry(lambda info: {k: v for k, v in info.items() if k != "dtype"}),
    "duplicate tensor": _duplicate,
    "truncated data": lambda h, data: (h, data[:-10], _by_offset(h)[-1]),
    "trailing bytes": lambda h, data: (h, data + bytes(16), _by_offset(h)[-1]),  # refused, as safetensors does
    "header not an object": lambda h, data: ("[1, 2, 3]", data, None),
    "metadata not strings": lambda h, data: ({**h, "__metadata__": {"format": 1}}, data, None),
    "NaN offset": lambda h, data: (json.dumps(h).replace(f"[0, {_first_end(h)}]", f"[NaN, {_first_end(h)}]"),
                                   data, None),
}


def _first_end(h: Header) -> int:
    return int(h[_by_offset(h)[0]]["data_offsets"][1])


@pytest.mark.parametrize("how", list(MUTATIONS))
def test_malformed_header_is_refused_naming_file_and_tensor(original: Path, tmp_path: Path, how: str) -> None:
    header, data, key = MUTATIONS[how](*_split(original))
    path = _write(tmp_path / "svd_xt_1_1.safetensors", header, data)
    for read in (read_header, load_models):
        with pytest.raises(CheckpointError) as e:
            read(path)
        message = str(e.value)
        assert f"'{path}'" in message, message
        if key is not None:
            assert f"tensor '{key}'" in message, message


# Refused here, accepted by the safetensors library (0.8): it reads a struct from a JSON array too, and its
# JSON parser keeps the last of duplicate keys. The format describes an entry as an object, names as keys.
STRICTER_THAN_THE_LIBRARY = {"entry not an object", "duplicate tensor"}


@pytest.mark.parametrize("how", sorted(set(MUTATIONS) - STRICTER_THAN_THE_LIBRARY))
def test_the_safetensors_library_refuses_them_too(original: Path, tmp_path: Path, how: str) -> None:
    safetensors = pytest.importorskip("safetensors")
    header, data, _ = MUTATIONS[how](*_split(original))
    path = _write(tmp_path / "svd_xt_1_1.safetensors", header, data)
    with pytest.raises(Exception, match="header|metadata|offset|JSON"):
        with safetensors.safe_open(str(path), "pt") as f:
            f.keys()


def test_rewritten_unchanged_file_loads(original: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "svd_xt_1_1.safetensors", *_split(original))
    assert {k: (t.shape, t.dtype, t.end - t.start) for k, t in read_header(path).items()} == {
        k: (t.shape, t.dtype, t.end - t.start) for k, t in read_header(original).items()}
    models = load_models(path, dtype=torch.float32)
    assert models.config.unet == svd_core.SVDConfig.tiny().unet


def test_empty_and_zero_size_tensors_are_valid(tmp_path: Path) -> None:
    """Spans of zero bytes (a dimension of 0) sit anywhere a span may start; a header without tensors and
    without data is a valid (if useless) file."""
    path = _write(tmp_path / "a.safetensors", {"a": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
                                                "b": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                                                "c": {"dtype": "BOOL", "shape": [0], "data_offsets": [2, 2]}}, b"ab")
    assert {k: t.shape for k, t in read_header(path).items()} == {"a": (0, 3), "b": (2,), "c": (0,)}
    assert read_header(_write(tmp_path / "b.safetensors", {"__metadata__": {"x": "y"}}, b"")) == {}


def test_sub_byte_dtypes_need_whole_bytes(tmp_path: Path) -> None:
    ok = _write(tmp_path / "ok.safetensors", {"x": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"ab")
    assert read_header(ok)["x"].shape == (4,)
    bad = _write(tmp_path / "bad.safetensors", {"x": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"ab")
    with pytest.raises(CheckpointError, match="tensor 'x'.*12 bits"):
        read_header(bad)


def test_weights_of_a_non_float_dtype_are_refused_with_one_rule(original: Path, tmp_path: Path) -> None:
    """A weight stored as an integer is a valid safetensors tensor, but not a weight the models read."""
    header, data = _split(original)
    key, _ = _unet_victim(header)
    header[key]["dtype"] = "I16"  # the same width as F16: the header itself stays valid
    path = _write(tmp_path / "svd_xt_1_1.safetensors", header, data)
    assert read_header(path)[key].dtype == "I16"
    with pytest.raises(CheckpointError, match=f"'{path}': tensor '{key}' has dtype I16; expected F32, F16, BF16"):
        load_models(path)
