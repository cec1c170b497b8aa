"""Speed: the one place where speed is switched on.

1. fp32 Linear layers on x86 CPUs take the faster of two routes on this machine: oneDNN (`OneDNNLinear`)
   or torch's own `F.linear`, which calls MKL's sgemm ("mkl"). Neither wins everywhere: MKL takes a slower
   code path on CPUs that are not Intel's, and on one AMD EPYC (AVX-512) it reached about 200 GFLOP/s on two
   cores where oneDNN, the library torch already uses for every CPU convolution, reached 400-440 (1.6x for
   the UNet, which spends over half its CPU time in Linear layers); on a Zen 3 (AVX2) F.linear was as fast
   or faster. So the route is measured: the first time a model with fp32 CPU weights is built
   (`build_models` calls `route_linears` on each part), `probe_linear_routes` times both libraries on a few
   of the UNet's own Linear shapes (`probe_shapes`: the heaviest distinct (in, out) pairs at 512 tokens, one
   pass of at most 1 GFLOP, a warm-up then the median of 5 alternating rounds: 12 GFLOP, well under 0.1 s at
   200-400 GFLOP/s, about 0.5 s on two busy cores) and logs one info line with both timings and the choice,
   which then holds for the process (`linear_route`).
   `SVD_CORE_LINEAR=onednn|mkl` (environment) or `set_linear_route` forces a route; "auto" (the default)
   measures. No probe runs where oneDNN's linear is missing (not x86-64, torch < 2.4: "mkl"), for models on
   another device, in another dtype, or on meta / fake tensors; a probe that fails means "mkl" and one
   warning. Models built on meta to be loaded later (`load_models`) take the route if it is known already,
   else their layers decide at their first fp32 CPU call (`_PendingLinear`), or when `compile_models`
   compiles them. oneDNN computes the same sums in another order: results differ from MKL's in the last bits
   only (a few float32 ulps; the parity tests hold at 1e-5). Only plain `torch.nn.Linear` modules are
   routed, so a host's own layer classes (ComfyUI's comfy.ops, which cast weights per call) are left as they
   are, and any other device, dtype, or a call that needs gradients goes to `F.linear` unchanged.
   `onednn_linears(module)` switches a module's layers to oneDNN whatever the route (bench/cpu_speed.py).
2. torch.compile of the UNet and the temporal decoder (`compile_models`).

`compile_models(models)` compiles both with fullgraph=True (they trace with no graph break) and
dynamic=False, so each new shape compiles once and is reused; on a CUDA device with mode
"reduce-overhead" (CUDA graphs; the sampling loops read nothing back from the device per step). A torch
without a working compiler (no C++ toolchain, an unsupported platform) is found by a tiny probe first; any
compiler failure later falls back to eager for that module. Either way one warning line, never a crash.
"""
from __future__ import annotations

import logging
import os
import platform
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake

from .nets.layers import execution_device
from .nets.vae import VAE

__all__ = ["LINEAR_ENV", "LinearProbe", "compile_models", "compiler_works", "linear_route", "onednn_linear_available",
           "onednn_linears", "OneDNNLinear", "probe_linear_routes", "probe_shapes", "route_linears", "set_linear_route"]

log = logging.getLogger(__name__)
_COMPILED = "svd_compiled"


def _onednn_linear_eager(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# Under torch.compile the kernel is one opaque call: inductor's own lowering of _linear_pointwise only
# takes weights frozen into the graph, which ours are not (the same module runs eager and compiled).
# torch.library.custom_op is torch >= 2.4; an older host torch simply keeps F.linear.
_onednn_linear_op: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None = None
if hasattr(torch.library, "custom_op") and hasattr(torch, "compiler"):
    @torch.library.custom_op("svd_core::onednn_linear", mutates_args=())
    def _onednn_linear_custom(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _onednn_linear_eager(x, weight, bias)

    @_onednn_linear_custom.register_fake
    def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    _onednn_linear_op = _onednn_linear_custom


def onednn_linear_available() -> bool:
    """Whether this torch can run fp32 Linear layers on oneDNN: an x86-64 build (torch >= 2.4) with oneDNN
    (mkldnn) and its linear kernel (`torch.ops.mkldnn._linear_pointwise`, what inductor's CPU fusions call)."""
    return (_onednn_linear_op is not None and platform.machine().lower() in ("x86_64", "amd64")
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class OneDNNLinear(nn.Linear):
    """torch.nn.Linear whose float32 CPU inference calls oneDNN; the same parameters, names and state dict
    (`onednn_linears` switches a module's class to this one and back)."""

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if (x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or w.device.type != "cpu"
                or x.dim() < 2 or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))):
            return F.linear(x, w, b)
        if torch.compiler.is_compiling():
            assert _onednn_linear_op is not None  # onednn_linears only switches layers where it exists
            return _onednn_linear_op(x, w, b)
        return _onednn_linear_eager(x, w, b)


def onednn_linears(module: nn.Module, enabled: bool = True) -> int:
    """Route every plain torch.nn.Linear inside `module` through oneDNN (enabled=False: back to torch's own
    F.linear), whatever `linear_route` says. Where oneDNN's linear is not available nothing changes. Returns how
    many layers it switched."""
    if enabled and not onednn_linear_available():
        return 0
    if enabled:
        return _switch(module, (nn.Linear, _PendingLinear), OneDNNLinear)
    return _switch(module, (OneDNNLinear, _PendingLinear), nn.Linear)


def _switch(module: nn.Module, sources: tuple[type[nn.Module], ...], target: type[nn.Module]) -> int:
    """Switch the class of the layers inside `module` whose class is exactly one of `sources` to `target`."""
    count = 0
    for layer in module.modules():
        if type(layer) in sources and type(layer) is not target:
            layer.__class__ = target
            count += 1
    return count


# --- the route: forced, or measured once per process -------------------------------------------------------

LINEAR_ENV = "SVD_CORE_LINEAR"  # auto (measure), onednn or mkl
LINEAR_ROUTES = ("onednn", "mkl")
_CHOICES = ("auto", *LINEAR_ROUTES)
Shape = tuple[int, int, int]  # (tokens, in_features, out_features) of one Linear call
PROBE_TOKENS = 512  # rows per call: compute-bound like the UNet's own calls (SVD-XT at 576x1024 has 72x128
#                     tokens a frame at its first level), small enough for a quick probe
PROBE_FLOPS = 1e9  # one pass over the probed shapes does at most this much (or just the smallest shape)
PROBE_MAX_SHAPES = 3
PROBE_ROUNDS = 5  # timed passes per route, after one warm-up pass each (oneDNN builds its primitives there)
PROBE_MARGIN = 0.95  # oneDNN is chosen when it takes under this share of F.linear's time: within noise of it,
#                      torch's own F.linear is kept
# SVD's first level (model_channels 320: GEGLU 320 -> 2560, its output 1280 -> 320, attention 320 -> 320), for a
# probe asked for before any model was built
_DEFAULT_SHAPES: tuple[Shape, ...] = ((PROBE_TOKENS, 320, 2560), (PROBE_TOKENS, 1280, 320), (PROBE_TOKENS, 320, 320))

# what each route calls, by name (tests put stubs here)
LINEAR_KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "onednn": _onednn_linear_eager, "mkl": F.linear}


@dataclass(frozen=True)
class LinearProbe:
    """What probe_linear_routes measured: the shapes of one pass and the median time of a pass per route (ms)."""

    shapes: tuple[Shape, ...]
    ms: Mapping[str, float]

    @property
    def route(self) -> str:
        """The faster route: "onednn" only when clearly faster (PROBE_MARGIN), else torch's own "mkl"."""
        return "onednn" if self.ms["onednn"] < PROBE_MARGIN * self.ms["mkl"] else "mkl"

    def gflops(self, route: str) -> float:
        return sum(2 * m * k * n for m, k, n in self.shapes) / (self.ms[route] * 1e6)

    def __str__(self) -> str:
        shapes = ", ".join(f"{k}->{n}" for _, k, n in self.shapes)
        tokens = self.shapes[0][0] if self.shapes else 0
        return (f"fp32 CPU Linear route: {self.route} (probe on {tokens} tokens x [{shapes}], median of "
                f"{PROBE_ROUNDS}: oneDNN {self.ms['onednn']:.1f} ms = {self.gflops('onednn'):.0f} GFLOP/s, "
                f"F.linear (MKL) {self.ms['mkl']:.1f} ms = {self.gflops('mkl'):.0f} GFLOP/s; "
                f"{LINEAR_ENV}=onednn|mkl forces one)")


def probe_shapes(module: nn.Module, *, tokens: int = PROBE_TOKENS, flops: float = PROBE_FLOPS,
                 limit: int = PROBE_MAX_SHAPES) -> tuple[Shape, ...]:
    """The (tokens, in, out) shapes a probe times for `module`: its distinct Linear (in, out) pairs, heaviest first
    (count x in x out: their share of its Linear work at equal tokens), as many as fit in `flops` per pass, at
    most `limit`; the smallest pair alone when none fits. Meta or fake modules have shapes too."""
    counts = Counter((m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear))
    chosen: list[Shape] = []
    total = 0.0
    for k, n in sorted(counts, key=lambda kn: (-counts[kn] * kn[0] * kn[1], kn)):
        cost = 2.0 * tokens * k * n
        if total + cost <= flops and len(chosen) < limit:
            chosen.append((tokens, k, n))
            total += cost
    if not chosen and counts:
        k, n = min(counts, key=lambda kn: (kn[0] * kn[1], kn))
        chosen.append((tokens, k, n))
    return tuple(chosen)


def probe_linear_routes(shapes: Sequence[Shape], *, timer: Callable[[], float] = time.perf_counter,
                        rounds: int = PROBE_ROUNDS) -> LinearProbe:
    """Time one pass of fp32 Linear calls of `shapes` on each route (LINEAR_KERNELS) on this CPU: a warm-up pass
    each, then `rounds` timed passes in alternating order; the median per route."""
    if not shapes:
        raise ValueError("probe_linear_routes needs at least one (tokens, in, out) shape, got none")
    g = torch.Generator().manual_seed(0)
    calls = [(torch.randn(m, k, generator=g, device="cpu"), torch.randn(n, k, generator=g, device="cpu") / k**0.5,
              torch.randn(n, generator=g, device="cpu")) for m, k, n in shapes]
    kernels = {route: LINEAR_KERNELS[route] for route in LINEAR_ROUTES}
    times: dict[str, list[float]] = {route: [] for route in LINEAR_ROUTES}
    with torch.no_grad():
        for route in LINEAR_ROUTES:
            for x, w, b in calls:
                kernels[route](x, w, b)
        for i in range(rounds):
            for route in LINEAR_ROUTES[:: 1 if i % 2 == 0 else -1]:
                start = timer()
                for x, w, b in calls:
                    kernels[route](x, w, b)
                times[route].append(timer() - start)
    return LinearProbe(tuple(shapes), {route: statistics.median(t) * 1e3 for route, t in times.items()})


@dataclass
class _RouteState:
    """The process's route: forced by set_linear_route, or measured once (guarded by lock)."""

    forced: str | None = None
    chosen: str | None = None
    probe: LinearProbe | None = None
    shapes: tuple[Shape, ...] = ()  # the first UNet's, recorded where it was built on meta
    warned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_route = _RouteState()


def _check(value: str, what: str) -> str:
    if value not in _CHOICES:
        raise ValueError(f"{what} {value!r} is not a Linear route; expected one of {', '.join(_CHOICES)}")
    return value


def _forced() -> str | None:
    """set_linear_route's route, else SVD_CORE_LINEAR's; None: measure."""
    if _route.forced is not None:
        return _route.forced
    env = os.environ.get(LINEAR_ENV, "").strip().lower() or "auto"
    return None if _check(env, LINEAR_ENV) == "auto" else env


def set_linear_route(route: str) -> None:
    """Force the route of fp32 CPU Linear layers built from now on: "onednn" or "mkl"; "auto" hands the choice
    back to SVD_CORE_LINEAR, else to the probe. Layers built already keep theirs (onednn_linears switches them)."""
    _route.forced = None if _check(route, "set_linear_route: route") == "auto" else route


def linear_route(module: nn.Module | None = None) -> str:
    """This process's route for fp32 CPU Linear layers, "onednn" or "mkl": forced (set_linear_route, then
    SVD_CORE_LINEAR), else measured once per process (probe_linear_routes on the shapes of `module`, else of the
    first UNet built on meta, else SVD's first level; a failing probe: "mkl" and one warning); "mkl" where
    oneDNN's linear is not available."""
    forced = _forced()
    if not onednn_linear_available():
        if forced == "onednn" and not _route.warned:
            _route.warned = True
            log.warning("%s asks for oneDNN's linear, which this torch does not have (x86-64, torch >= 2.4): "
                        "using torch's F.linear", LINEAR_ENV if _route.forced is None else "set_linear_route")
        return "mkl"
    if forced is not None:
        return forced
    if _route.chosen is None:
        with _route.lock:
            if _route.chosen is None:
                shapes = (probe_shapes(module) if module is not None else ()) or _route.shapes or _DEFAULT_SHAPES
                _route.chosen = _measure(shapes)
    return _route.chosen


def _measure(shapes: Sequence[Shape]) -> str:
    try:
        probe = probe_linear_routes(shapes)
    except Exception as e:  # any failure of the probe means: torch's own F.linear
        log.warning("the fp32 Linear probe failed (%s: %s): using torch's F.linear (MKL)", type(e).__name__,
                    str(e).splitlines()[0][:200] if str(e) else "")
        return "mkl"
    _route.probe = probe
    log.info("%s", probe)
    return probe.route


def _measurable(*tensors: Tensor) -> bool:
    """Real (not meta, not fake) float32 CPU tensors, outside any fake mode: what a probe's result applies to."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 and not is_fake(t) for t in tensors)
            and torch._guards.detect_fake_mode() is None)


class _PendingLinear(nn.Linear):
    """torch.nn.Linear whose route was not known where it was built (on meta, or under a fake mode): its first
    fp32 CPU call outside torch.compile takes the process's route and switches the layer's class to it; every
    other call is F.linear."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() or not _measurable(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        _switch(self, (_PendingLinear,), OneDNNLinear if linear_route() == "onednn" else nn.Linear)
        return self.forward(x)


def route_linears(module: nn.Module, *, probe_on: nn.Module | None = None) -> str | None:
    """Put the plain torch.nn.Linear layers inside `module` (and those on a route already) on this process's route:
    what build_models does for each part; `probe_on`: the model whose shapes a first probe times, the UNet. Real
    fp32 CPU weights: the route (measured now if need be), returned. Meta or fake weights: the route if known,
    else the layers decide at their first fp32 CPU call (None). Another device or dtype: nothing changes (None).
    Without oneDNN's linear: "mkl", no probe."""
    if not onednn_linear_available():
        return "mkl"
    ours = (nn.Linear, _PendingLinear, OneDNNLinear)
    w = next((m.weight for m in module.modules() if isinstance(m, nn.Linear) and type(m) in ours), None)
    if w is None:
        return None
    route: str | None
    if _measurable(w):
        route = linear_route(probe_on if probe_on is not None else module)
    elif w.is_meta or is_fake(w) or torch._guards.detect_fake_mode() is not None:
        route = _forced() or _route.chosen
        if route is None:
            _route.shapes = _route.shapes or probe_shapes(probe_on if probe_on is not None else module)
            _switch(module, (nn.Linear,), _PendingLinear)
            return None
    else:
        return None
    _switch(module, ours, OneDNNLinear if route == "onednn" else nn.Linear)
    return route


def _settle_pending(module: nn.Module) -> None:
    """Layers still pending in a module with real fp32 CPU weights take the route now (before it is traced)."""
    pending = [m for m in module.modules() if isinstance(m, _PendingLinear)]
    if pending and _measurable(pending[0].weight):
        _switch(module, (_PendingLinear,), OneDNNLinear if linear_route() == "onednn" else nn.Linear)


def compiler_works(device: torch.device) -> str | None:
    """None when torch.compile (inductor) compiles and runs a tiny function on `device`, else the reason."""
    try:
        probe = torch.compile(lambda x: torch.nn.functional.silu(x) * 2.0 + 1.0, fullgraph=True, dynamic=False)
        out = probe(torch.linspace(-1.0, 1.0, 8, device=device))
        expected = torch.nn.functional.silu(torch.linspace(-1.0, 1.0, 8)) * 2.0 + 1.0
        if not torch.allclose(out.cpu(), expected, atol=1e-5):
            return "the compiled probe computed a wrong result"
    except Exception as e:  # any failure of the toolchain means: not here
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def _with_fallback(module: torch.nn.Module, name: str, mode: str | None) -> None:
    """Compile module.forward; on a compiler failure warn once and run eager from then on."""
    eager: Callable[..., Any] = module.forward
    compiled = torch.compile(eager, fullgraph=True, dynamic=False, mode=mode)
    state = {"fn": compiled}

    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return state["fn"](*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:
            if state["fn"] is eager:
                raise
            log.warning("compiling the %s failed (%s): running it eagerly", name, str(e).splitlines()[0][:200])
            state["fn"] = eager
            return eager(*args, **kwargs)

    module.forward = forward  # type: ignore[method-assign]


class Compilable(Protocol):
    """What compile_models compiles: weights.models.SVDModels (named by its parts, so that this module, which
    build_models uses, never imports the weights package back)."""

    @property
    def unet(self) -> nn.Module: ...

    @property
    def vae(self) -> VAE: ...


def compile_models(models: Compilable, *, mode: str | None = None) -> bool:
    """Compile the UNet and the temporal decoder once (idempotent). Returns whether they were compiled."""
    if getattr(models, _COMPILED, False):
        return True
    device = execution_device(models.unet)
    reason = compiler_works(device)
    if reason is not None:
        log.warning("torch.compile does not work here (%s): running eagerly", reason)
        return False
    mode = mode if mode is not None else ("reduce-overhead" if device.type == "cuda" else None)
    for module in (models.unet, models.vae.decoder):
        _settle_pending(module)
    _with_fallback(models.unet, "UNet", mode)
    _with_fallback(models.vae.decoder, "temporal decoder" if models.vae.config.temporal else "image decoder", mode)
    setattr(models, _COMPILED, True)
    return True
