"""Property-based tests of the command line's input checks (hypothesis, test-only).

One option at a time takes a random value (NaN, infinities, negatives, huge numbers, and the cheap
valid ones); every other option keeps a small valid value. Each run either succeeds and writes its
video (tiny model), or stops before loading anything with exit code 2 and a message naming the option;
no value ends in a bare torch error.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import svd_core.app.cli as cli
import svd_core.app.render as render
from svd_core import SVDConfig, save_random_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _huge_or_bad_ints(valid: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return st.one_of(valid, st.integers(-(10**12), 0), st.integers(10**4, 10**15))


def _floats() -> st.SearchStrategy[float]:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3), st.just(float("nan")),
                     st.just(float("inf")), st.just(-float("inf")), st.floats(1e20, 1e300))


OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "--width": st.one_of(st.just(64), st.integers(-(10**6), 10**6), st.integers(10**6, 10**15)),
    "--height": st.one_of(st.just(64), st.integers(-(10**6), 10**6), st.integers(10**6, 10**15)),
    "--frames": _huge_or_bad_ints(st.integers(1, 3)),
    "--steps": _huge_or_bad_ints(st.integers(1, 2)),
    "--fps": st.one_of(st.integers(-(10**6), 10**6), st.integers(10**6, 10**15)),
    "--fps-id": st.one_of(st.integers(-(10**6), 10**6), st.integers(10**6, 10**15)),
    "--motion-bucket-id": st.one_of(st.integers(-(10**6), 10**6), st.integers(10**6, 10**15)),
    "--cond-aug": _floats(),
    "--min-cfg": _floats(),
    "--max-cfg": _floats(),
    "--seed": st.one_of(st.integers(-(10**30), 10**30)),
    "--decode-chunk-size": _huge_or_bad_ints(st.integers(1, 5)),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("fuzz")
    ckpt = save_random_checkpoint(d / "svd_xt_1_1.safetensors", SVDConfig.tiny(), seed=3)
    img = d / "in.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(img)
    return ckpt, img, d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_option_value_runs_or_is_refused_naming_it(files: tuple[Path, Path, Path], data: st.DataObject,
                                                          caplog: pytest.LogCaptureFixture,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, img, d = files
    option = data.draw(st.sampled_from(sorted(OPTIONS)), label="option")
    value = data.draw(OPTIONS[option], label="value")
    out = d / "out.gif"
    out.unlink(missing_ok=True)
    base = {"--width": 64, "--height": 64, "--frames": 2, "--steps": 1, "--device": "cpu", "--quiet": None}
    base[option] = value
    argv = ["generate", "--checkpoint", str(ckpt), "--image", str(img), "--output", str(out)]
    for k, v in base.items():
        argv += [k] if v is None else [f"{k}={v}"]  # "=": a value such as -inf is not read as an option
    loads: list[Any] = []
    real_load = render.load_models  # what the command line's open_models calls

    def counting(*a: Any, **k: Any) -> Any:
        loads.append(a)
        return real_load(*a, **k)

    caplog.clear()
    render.load_models = counting  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.INFO):
            try:
                rc = cli.main(argv)
            except SystemExit as e:  # argparse: a value of the wrong type
                rc = int(e.code) if isinstance(e.code, int) else 2
    finally:
        render.load_models = real_load  # type: ignore[assignment]
    said = caplog.text + capsys.readouterr().err
    event("ran" if rc == 0 else "refused")
    if rc == 0:
        assert out.exists() and out.stat().st_size > 0
        with Image.open(out) as im:  # (Pillow merges identical neighbouring frames into one)
            assert 1 <= im.n_frames <= (value if option == "--frames" else 2)
        return
    assert rc == 2, said
    assert option in said, (option, value, said)
    assert not loads, f"{option}={value!r} was refused only after the checkpoint was loaded"
    if isinstance(value, float) and not math.isfinite(value):
        assert "finite" in said or "invalid" in said


def test_nan_guidance_is_refused_before_loading(files: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, img, d = files
    loads: list[Any] = []
    monkeypatch.setattr(render, "load_models", lambda *a, **k: loads.append(a))
    out = d / "nan.gif"
    with caplog.at_level(logging.ERROR):
        rc = cli.main(["generate", "--checkpoint", str(ckpt), "--image", str(img), "--output", str(out),
                       "--min-cfg", "nan"])
    assert rc == 2 and "--min-cfg must be a finite number" in caplog.text
    assert not loads, "--min-cfg=nan was refused only after the checkpoint was loaded"
    assert not out.exists()
