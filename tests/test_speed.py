"""torch.compile: no graph break in the UNet, the decoder or a whole guided sampling step; compiled equals
eager; a missing or failing compiler falls back to eager with one warning."""
from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

import svd_core
import svd_core.speed as speed
from svd_core import Conditioning, SVDConfig, build_models, decode_latents, sample_video
from svd_core.video.sample import guided_denoiser
from svd_core.weights.random_weights import random_models

T = 3


@pytest.fixture()
def models() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny(), seed=60)


@pytest.fixture(scope="module")
def cpu_compiler() -> None:
    """Skips (one line) where torch.compile's inductor cannot build code for the CPU, e.g. no C++ compiler."""
    reason = speed.compiler_works(torch.device("cpu"))  # None when a compiled probe runs and computes right
    if reason is not None:
        pytest.skip(f"torch.compile does not work on this CPU ({reason}): compiled-code checks skipped")


def _inputs(cfg: svd_core.UNetConfig) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2 * T, cfg.in_channels, 8, 8, generator=g), torch.randn(2 * T, generator=g),
            torch.randn(2 * T, 1, cfg.context_dim, generator=g), torch.randn(2 * T, cfg.adm_in_channels, generator=g))


def _cond(models: svd_core.SVDModels) -> tuple[Conditioning, Conditioning]:
    g = torch.Generator().manual_seed(1)
    pos = Conditioning(crossattn=torch.randn(1, 1, models.unet.config.context_dim, generator=g),
                       concat=torch.randn(1, 4, 8, 8, generator=g), vector=torch.tensor([[6.0, 127.0, 0.02]]))
    return pos, Conditioning(torch.zeros_like(pos.crossattn), torch.zeros_like(pos.concat), pos.vector)


@pytest.mark.slow  # tracing the UNet, the decoder and a guided step: minutes on 2 cores
def test_unet_decoder_and_a_guided_step_trace_without_graph_breaks(models: svd_core.SVDModels) -> None:
    torch._dynamo.reset()
    with torch.no_grad():
        unet = torch._dynamo.explain(models.unet)(*_inputs(models.unet.config), num_frames=T)
        decoder = torch._dynamo.explain(models.vae.decoder)(torch.randn(T, 4, 8, 8), T)
        pos, neg = _cond(models)
        denoiser = guided_denoiser(models.unet, pos, neg, T, svd_core.guidance_scales("linear", T, 1.5, 3.0))

        def step(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
            d = denoiser(x, sigma.expand(x.shape[0]))  # EDM preconditioning, the UNet, per-frame guidance
            return x + (x - d) / sigma * (sigma_next - sigma)  # the Euler update

        whole = torch._dynamo.explain(step)(torch.randn(T, 4, 8, 8), torch.tensor(10.0), torch.tensor(8.0))
    for name, e in (("UNet", unet), ("decoder", decoder), ("guided step", whole)):
        assert e.graph_break_count == 0, (name, [str(r.reason) for r in e.break_reasons])
        assert e.graph_count == 1, (name, e.graph_count)


@pytest.mark.slow  # compiling the UNet and the decoder with inductor: minutes on 2 cores
def test_compiled_equals_eager(models: svd_core.SVDModels, cpu_compiler: None) -> None:
    """The UNet and decoder within 1e-5, and sampled, decoded frames within 1e-4 (sigma_max 10: from 700 the
    float32 spacing of x, 6e-5, makes any two implementations differ by that much whatever they compute)."""
    torch._dynamo.reset()
    args = _inputs(models.unet.config)
    z = torch.randn(1, T, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    pos, neg = _cond(models)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            u = models.unet(*args, num_frames=T)
        lat = sample_video(models.unet, pos, neg, z, num_steps=2, min_cfg=1.5, max_cfg=3.0, sigma_max=10.0)
        return u, decode_latents(models.vae, lat, decode_chunk_size=T)

    eager_u, eager_frames = run()
    assert speed.compile_models(models)
    assert speed.compile_models(models)  # idempotent
    compiled_u, compiled_frames = run()
    torch.testing.assert_close(compiled_u, eager_u, rtol=0, atol=1e-5)
    torch.testing.assert_close(compiled_frames, eager_frames, rtol=0, atol=1e-4)


def test_no_working_compiler_falls_back_to_eager_with_one_warning(
        models: svd_core.SVDModels, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(speed, "compiler_works", lambda device: "CppCompileError: no C++ compiler")
    with caplog.at_level(logging.WARNING, logger="svd_core.speed"):
        assert not speed.compile_models(models)
    assert len(caplog.records) == 1 and "running eagerly" in caplog.text
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert svd_core.generate(models, image, num_frames=T, num_steps=1, compile=True).shape == (1, T, 3, 64, 64)


def test_a_compiler_failure_at_the_first_call_falls_back_to_eager(
        models: svd_core.SVDModels, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken_compile(fn: Any, **kwargs: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise torch._dynamo.exc.TorchRuntimeError("BackendCompilerFailed: cc1plus: not found")
        return call

    monkeypatch.setattr(speed, "compiler_works", lambda device: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    assert speed.compile_models(models)
    with caplog.at_level(logging.WARNING, logger="svd_core.speed"), torch.inference_mode():
        out = models.unet(*_inputs(models.unet.config), num_frames=T)
        again = models.unet(*_inputs(models.unet.config), num_frames=T)
    assert torch.equal(out, again) and out.shape == (2 * T, 4, 8, 8)
    assert len([r for r in caplog.records if "UNet" in r.getMessage()]) == 1


def test_the_command_line_takes_compile(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    import svd_core.app.cli as cli

    ckpt = svd_core.save_random_checkpoint(tmp_path / "svd_xt_1_1.safetensors", SVDConfig.tiny(), seed=1)
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(tmp_path / "in.png")
    monkeypatch.setattr(speed, "compiler_works", lambda device: "no compiler in this test")
    with caplog.at_level(logging.WARNING):
        rc = cli.main(["generate", "--checkpoint", str(ckpt), "--image", str(tmp_path / "in.png"), "--output",
                       str(tmp_path / "o.gif"), "--width", "64", "--height", "64", "--frames", "2", "--steps", "1",
                       "--device", "cpu", "--compile", "--quiet"])
    assert rc == 0 and "running eagerly" in caplog.text


# --- fp32 Linear layers on oneDNN (speed.onednn_linears) ------------------------------------------------

needs_onednn = pytest.mark.skipif(not speed.onednn_linear_available(),
                                  reason="no oneDNN linear in this torch (x86-64 only)")


@needs_onednn
def test_build_models_routes_plain_linears_and_keeps_names(models: svd_core.SVDModels) -> None:
    linears = [m for m in models.unet.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is speed.OneDNNLinear for m in linears)
    keys = list(models.unet.state_dict())
    assert speed.onednn_linears(models.unet, enabled=False) == len(linears)
    assert all(type(m) is torch.nn.Linear for m in models.unet.modules() if isinstance(m, torch.nn.Linear))
    assert list(models.unet.state_dict()) == keys
    assert speed.onednn_linears(models.unet) == len(linears)

    class HostLinear(torch.nn.Linear):  # a host's class (e.g. comfy.ops) keeps its own forward
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 1.0

    host = torch.nn.Sequential(HostLinear(4, 4), torch.nn.Linear(4, 4))
    assert speed.onednn_linears(host) == 1 and type(host[0]) is HostLinear


@needs_onednn
def test_onednn_unet_matches_torch_linear_and_float64(models: svd_core.SVDModels) -> None:
    """The routed UNet within 1e-5 of torch's own F.linear, and as close to a float64 evaluation."""
    args = _inputs(models.unet.config)
    with torch.no_grad():
        routed = models.unet(*args, num_frames=T)
        speed.onednn_linears(models.unet, enabled=False)
        plain = models.unet(*args, num_frames=T)
        exact = models.unet.double()(*(a.double() for a in args), num_frames=T)
    assert routed.std() > 1e-3
    torch.testing.assert_close(routed, plain, rtol=0, atol=1e-5)
    err_routed, err_plain = ((y.double() - exact).abs().max().item() for y in (routed, plain))
    assert err_routed < 1e-5 and err_routed < 4 * err_plain + 1e-7, (err_routed, err_plain)


@needs_onednn
def test_onednn_linear_falls_back_where_it_does_not_apply() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    plain = torch.nn.Linear(16, 8)
    plain.load_state_dict(layer.state_dict())
    speed.onednn_linears(layer)
    assert type(layer) is speed.OneDNNLinear
    x = torch.randn(5, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(layer(x.transpose(0, 1)), plain(x.transpose(0, 1)), rtol=0, atol=1e-5)
        assert torch.equal(layer(x[0, 0]), plain(x[0, 0]))  # 1-D input: F.linear
    # gradients: F.linear itself, so autograd works
    y = layer(x).sum()
    y.backward()
    assert layer.weight.grad is not None and torch.equal(layer(x), plain(x))
    # another dtype: F.linear, bit for bit
    half = torch.nn.Sequential(torch.nn.Linear(16, 8)).bfloat16()
    ref = torch.nn.Sequential(torch.nn.Linear(16, 8)).bfloat16()
    ref.load_state_dict(half.state_dict())
    speed.onednn_linears(half)
    with torch.no_grad():
        assert torch.equal(half(x.bfloat16()), ref(x.bfloat16()))


@needs_onednn
def test_onednn_linear_copies_pickles_and_compiles(cpu_compiler: None) -> None:
    import copy
    import pickle

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
    speed.onednn_linears(net)
    x = torch.randn(2, 7, 16)
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin[0].weight.mul_(2.0)  # the copy has its own weights
        assert not torch.allclose(twin(x), net(x))
        thawed = pickle.loads(pickle.dumps(net))
        assert type(thawed[0]) is speed.OneDNNLinear and torch.equal(thawed(x), net(x))
        torch._dynamo.reset()
        explained = torch._dynamo.explain(net)(x)
        assert explained.graph_break_count == 0
        compiled = torch.compile(net, fullgraph=True, dynamic=False)
        torch.testing.assert_close(compiled(x), net(x), rtol=0, atol=1e-6)


def test_without_onednn_linear_nothing_is_switched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch without custom ops (< 2.4) or oneDNN, or another CPU architecture: layers stay torch.nn.Linear."""
    monkeypatch.setattr(speed, "_onednn_linear_op", None)
    assert not speed.onednn_linear_available()
    m = build_models(SVDConfig.tiny(), device="meta")
    assert all(type(x) is torch.nn.Linear for x in m.unet.modules() if isinstance(x, torch.nn.Linear))
    monkeypatch.undo()
    monkeypatch.setattr(speed.platform, "machine", lambda: "aarch64")
    assert not speed.onednn_linear_available() and speed.onednn_linears(torch.nn.Linear(2, 2)) == 0


# --- the Linear route: measured once per process, or forced (speed.linear_route) -------------------------

@pytest.fixture(autouse=True)
def linear_route_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh process route for each test, restored afterwards (no probe result leaks into other files);
    oneDNN forced where it exists, as the tests above expect; the route tests below set their own."""
    monkeypatch.delenv(speed.LINEAR_ENV, raising=False)
    monkeypatch.setattr(speed, "_route", speed._RouteState())
    if speed.onednn_linear_available():
        speed.set_linear_route("onednn")


def _stub_probe(monkeypatch: pytest.MonkeyPatch, onednn_ms: float, mkl_ms: float) -> list[tuple[Any, ...]]:
    """speed.probe_linear_routes replaced by one that measures nothing and records the shapes it was given."""
    calls: list[tuple[Any, ...]] = []

    def probe(shapes: Any, **kwargs: Any) -> speed.LinearProbe:
        calls.append(tuple(shapes))
        return speed.LinearProbe(tuple(shapes), {"onednn": onednn_ms, "mkl": mkl_ms})

    monkeypatch.setattr(speed, "probe_linear_routes", probe)
    return calls


def _routes(module: torch.nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize(("onednn_s", "mkl_s", "expected"), [(1.0, 2.0, "onednn"), (2.0, 1.0, "mkl"),
                                                             (1.0, 1.01, "mkl")])  # within noise: F.linear
def test_the_probe_picks_the_faster_route_on_a_stubbed_timer(monkeypatch: pytest.MonkeyPatch, onednn_s: float,
                                                             mkl_s: float, expected: str) -> None:
    clock = [0.0]

    def kernel(seconds: float) -> Any:
        def call(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            clock[0] += seconds  # every call takes `seconds` on the stubbed clock
            return x
        return call

    monkeypatch.setitem(speed.LINEAR_KERNELS, "onednn", kernel(onednn_s))
    monkeypatch.setitem(speed.LINEAR_KERNELS, "mkl", kernel(mkl_s))
    shapes = speed.probe_shapes(svd_core.UNet(SVDConfig.tiny().unet))
    probe = speed.probe_linear_routes(shapes, timer=lambda: clock[0])
    assert probe.route == expected
    assert probe.ms == pytest.approx({"onednn": 1e3 * onednn_s * len(shapes), "mkl": 1e3 * mkl_s * len(shapes)})
    assert f"route: {expected}" in str(probe) and "GFLOP/s" in str(probe)


def test_probe_shapes_are_the_unets_heaviest_within_the_budget() -> None:
    with torch.device("meta"):
        unet = svd_core.UNet(SVDConfig.svd_xt_1_1().unet)
    shapes = speed.probe_shapes(unet)
    pairs = {(m.in_features, m.out_features) for m in unet.modules() if isinstance(m, torch.nn.Linear)}
    assert 1 <= len(shapes) <= speed.PROBE_MAX_SHAPES and len(set(shapes)) == len(shapes)
    assert all(m == speed.PROBE_TOKENS and (k, n) in pairs for m, k, n in shapes)
    assert sum(2 * m * k * n for m, k, n in shapes) <= speed.PROBE_FLOPS
    assert speed.probe_shapes(unet, flops=1.0) == ((speed.PROBE_TOKENS, 320, 320),)  # none fits: the smallest


@needs_onednn
def test_build_models_probes_once_per_process_and_logs_one_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    speed.set_linear_route("auto")
    calls = _stub_probe(monkeypatch, onednn_ms=1.0, mkl_ms=2.0)
    with caplog.at_level(logging.INFO, logger="svd_core.speed"):
        first = build_models(SVDConfig.tiny())
        second = build_models(SVDConfig.tiny())
    assert calls == [speed.probe_shapes(first.unet)]  # the UNet's shapes, once
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "route: onednn" in caplog.text
    assert all(_routes(getattr(m, p)) == {speed.OneDNNLinear} for m in (first, second)
               for p in ("unet", "image_encoder"))
    assert speed.linear_route() == "onednn" and len(calls) == 1

    monkeypatch.setattr(speed, "_route", speed._RouteState())  # another process, where MKL is faster
    calls = _stub_probe(monkeypatch, onednn_ms=2.0, mkl_ms=1.0)
    assert speed.route_linears(first.unet) == "mkl" and _routes(first.unet) == {torch.nn.Linear} and len(calls) == 1


@needs_onednn
def test_meta_fake_and_other_dtype_builds_do_not_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    speed.set_linear_route("auto")
    calls = _stub_probe(monkeypatch, onednn_ms=1.0, mkl_ms=2.0)
    meta = build_models(SVDConfig.tiny(), device="meta")
    assert _routes(meta.unet) == {speed._PendingLinear}  # the route is taken at a first fp32 CPU call
    with FakeTensorMode(allow_non_fake_inputs=True):  # what bench/memory.py counts bytes under
        fake = torch.nn.Sequential(torch.nn.Linear(8, 8))
        assert speed.route_linears(fake) is None and _routes(fake) == {speed._PendingLinear}
        assert fake(torch.randn(2, 8)).shape == (2, 8)
    half = torch.nn.Sequential(torch.nn.Linear(8, 8)).bfloat16()
    assert speed.route_linears(half) is None and _routes(half) == {torch.nn.Linear} and calls == []

    layer = meta.unet.time_embed[0].to_empty(device="cpu")  # weights loaded later (load_models assigns them)
    assert isinstance(layer, torch.nn.Linear)
    with torch.no_grad():
        layer(torch.randn(2, layer.in_features))
    assert type(layer) is speed.OneDNNLinear and calls == [speed.probe_shapes(meta.unet)]  # the UNet's, at build
    later = torch.nn.Linear(4, 4, device="meta")
    assert speed.route_linears(later) == "onednn" and type(later) is speed.OneDNNLinear  # known now: no wait


@needs_onednn
def test_the_route_is_forced_by_the_environment_or_a_call_and_bad_values_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    speed.set_linear_route("auto")
    calls = _stub_probe(monkeypatch, onednn_ms=1.0, mkl_ms=2.0)
    monkeypatch.setenv(speed.LINEAR_ENV, "mkl")
    layer = torch.nn.Linear(4, 4)
    assert speed.linear_route() == "mkl" and speed.route_linears(layer) == "mkl" and type(layer) is torch.nn.Linear
    speed.set_linear_route("onednn")  # the call over the environment
    assert speed.route_linears(layer) == "onednn" and type(layer) is speed.OneDNNLinear
    speed.set_linear_route("auto")
    assert speed.linear_route() == "mkl" and calls == []
    monkeypatch.setenv(speed.LINEAR_ENV, "AUTO")
    assert speed.linear_route() == "onednn" and len(calls) == 1
    monkeypatch.setenv(speed.LINEAR_ENV, "fast")
    with pytest.raises(ValueError, match="SVD_CORE_LINEAR 'fast' is not a Linear route; expected one of auto, "
                                         "onednn, mkl"):
        speed.linear_route()
    with pytest.raises(ValueError, match="set_linear_route: route 'MKL' .* expected one of auto, onednn, mkl"):
        speed.set_linear_route("MKL")


def test_a_failing_probe_falls_back_to_mkl_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(speed, "onednn_linear_available", lambda: True)
    monkeypatch.setitem(speed.LINEAR_KERNELS, "onednn", broken)
    speed.set_linear_route("auto")
    layer = torch.nn.Linear(8, 8)
    with caplog.at_level(logging.WARNING, logger="svd_core.speed"):
        assert speed.route_linears(layer) == "mkl" and speed.linear_route() == "mkl"
    assert len(caplog.records) == 1 and "could not create a primitive" in caplog.text
    assert type(layer) is torch.nn.Linear


def test_without_onednn_linear_the_route_is_mkl_without_a_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "_onednn_linear_op", None)
    speed.set_linear_route("auto")
    calls = _stub_probe(monkeypatch, onednn_ms=1.0, mkl_ms=2.0)
    layer = torch.nn.Linear(8, 8)
    assert speed.linear_route() == "mkl" and speed.route_linears(layer) == "mkl" and calls == []
    assert type(layer) is torch.nn.Linear


@needs_onednn
def test_both_routes_give_the_same_unet_output(models: svd_core.SVDModels) -> None:
    """The tiny UNet on oneDNN and on F.linear within 1e-5 (fp32)."""
    args = _inputs(models.unet.config)
    with torch.no_grad():
        assert _routes(models.unet) == {speed.OneDNNLinear}
        onednn = models.unet(*args, num_frames=T)
        speed.set_linear_route("mkl")
        assert speed.route_linears(models.unet) == "mkl" and _routes(models.unet) == {torch.nn.Linear}
        mkl = models.unet(*args, num_frames=T)
    assert onednn.std() > 1e-3
    torch.testing.assert_close(onednn, mkl, rtol=0, atol=1e-5)
