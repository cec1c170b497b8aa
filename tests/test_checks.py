"""Checks of user-given numbers (svd_core/checks.py), shared by the command line and the nodes: each message names
the input, the value and what was expected."""
from __future__ import annotations

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

