"""Checks of user-given numbers (svd_core/checks.py), shared by the command line and the nodes: each message names
the input, the value and what was expected."""
from __future__ import annotations

from typing import Any

import pytest

from svd_core.checks import check_size, conditioning_errors, sampler_errors


@pytest.mark.parametrize("value", [100, 0, 32, -64, 65])
def test_size_check_names_input(value: int) -> None:
    msg = check_size("width", value)
    assert msg is not None and msg.startswith("width") and str(value) in msg and "64" in msg



def test_size_check_accepts_multiples() -> None:
    assert check_size("height", 576) is None and check_size("width", 1024) is None



def test_conditioning_errors_name_each_bad_input() -> None:
    assert conditioning_errors(1024, 576, 7, 127, 0.02) == []
    errs = conditioning_errors(100, 576, 7, 127, float("nan"))
    assert len(errs) == 2
    assert errs[0].startswith("width") and "100" in errs[0]
    assert errs[1].startswith("cond_aug") and "nan" in errs[1]
    assert conditioning_errors(64, 64, 7, 127, float("inf"))[0].startswith("cond_aug")
    assert conditioning_errors(64, 64, 0, 127, 0.0)[0].startswith("fps")



def test_sampler_errors() -> None:
    assert sampler_errors(30, 1.5, 3.0, 0.002, 700.0, 7.0, 1.0) == []
    errs = sampler_errors(30, float("nan"), 3.0, 0.002, 700.0, 7.0, 1.0)
    assert len(errs) == 1 and errs[0].startswith("min_cfg")
    errs = sampler_errors(30, 1.5, 3.0, 800.0, 700.0, 7.0, 1.0)
    assert errs and "sigma_min" in errs[0]
    assert sampler_errors(30, 1.5, 3.0, 0.002, 700.0, 7.0, 0.0)[0].startswith("denoise")



def test_check_number_rejects_nan_everywhere() -> None:
    assert sampler_errors(30, 1.5, float("inf"), 0.002, 700.0, 7.0, 1.0)[0].startswith("max_cfg")



# --- devices and dtypes: refused before loading, naming the option and what the device runs -------------------

def _fake_cuda_cards(monkeypatch: pytest.MonkeyPatch, capabilities: list[tuple[int, int]]) -> None:
    """torch.cuda as a machine with these cards (compute capabilities) would answer."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(capabilities))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capabilities[i])
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda i=0: f"card {i} sm_{capabilities[i][0]}{capabilities[i][1]}")


def test_device_errors_accept_what_the_machine_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from svd_core.checks import device_errors

    assert device_errors("cpu", {"dtype": "fp32", "vae_dtype": "bf16"}) == []
    _fake_cuda_cards(monkeypatch, [(8, 6), (7, 5)])
    assert device_errors("cuda", {"dtype": "bf16"}) == []  # Ampere runs bf16
    assert device_errors("cuda:1", {"dtype": "fp16", "vae_dtype": "fp32"}) == []


def test_device_errors_name_the_option_and_what_the_device_supports(monkeypatch: pytest.MonkeyPatch) -> None:
    from svd_core.checks import device_errors

    def option(name: str) -> str:
        return "--" + name.replace("_", "-")

    (bad,) = device_errors("gpu0", {"dtype": "fp16"}, option)
    assert bad.startswith("--device") and "'gpu0'" in bad and "cuda:N" in bad
    _fake_cuda_cards(monkeypatch, [])
    (none,) = device_errors("cuda", {"dtype": "fp16"}, option)
    assert "--device 'cuda'" in none and "no CUDA device" in none and "use cpu" in none
    _fake_cuda_cards(monkeypatch, [(7, 5)])  # a Turing card: fp16, no bf16
    (past,) = device_errors("cuda:2", {"dtype": "fp16"}, option)
    assert "1 CUDA device(s), cuda:0 to cuda:0" in past
    (bf16,) = device_errors("cuda", {"dtype": "bf16", "vae_dtype": "fp32"}, option)
    assert bf16.startswith("--dtype is bf16") and "sm_75" in bf16 and "runs fp32, fp16" in bf16
    (fp8,) = device_errors("cpu", {"vae_dtype": "fp8_e4m3fn"}, option)
    assert fp8.startswith("--vae-dtype is fp8_e4m3fn, a storage dtype") and "fp32, fp16, bf16" in fp8


def test_load_models_refuses_a_device_before_reading_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import torch

    import svd_core

    _fake_cuda_cards(monkeypatch, [(6, 1)])  # a Pascal card
    missing = tmp_path / "not_there.safetensors"  # never opened: the device is refused first
    with pytest.raises(ValueError, match=r"dtype is bf16, which device 'cuda' \(card 0 sm_61\) cannot run"):
        svd_core.load_models(missing, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="storage dtype"):
        svd_core.load_models(missing, dtype=torch.float8_e4m3fn, device="cpu")
