"""Speed: the one place where speed is switched on.

1. fp32 Linear layers on x86 CPUs run on oneDNN (`onednn_linears`, on by default in `build_models`).
   torch's CPU `F.linear` calls MKL's sgemm, and MKL takes a slower code path on CPUs that are not
   Intel's: on this AMD EPYC (AVX-512) it reaches about 200 GFLOP/s on two cores where oneDNN, the
   library torch already uses for every CPU convolution, reaches 400-440 on the same shapes
   (bench/cpu_speed.py prints both). The UNet spends over half its CPU time in Linear layers. oneDNN
   computes the same sums in another order: results differ from MKL's in the last bits only (a few
   float32 ulps; the parity tests hold at 1e-5). Only plain `torch.nn.Linear` modules are routed, so a
   host's own layer classes (ComfyUI's comfy.ops, which cast weights per call) are left as they are,
   and any other device, dtype, or a call that needs gradients goes to `F.linear` unchanged.
2. torch.compile of the UNet and the temporal decoder (`compile_models`).

`compile_models(models)` compiles both with fullgraph=True (they trace with no graph break) and
dynamic=False, so each new shape compiles once and is reused; on a CUDA device with mode
"reduce-overhead" (CUDA graphs; the sampling loops read nothing back from the device per step). A torch
without a working compiler (no C++ toolchain, an unsupported platform) is found by a tiny probe first; any
compiler failure later falls back to eager for that module. Either way one warning line, never a crash.
"""
from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nets.layers import execution_device
from .nets.vae import VAE

__all__ = ["compile_models", "compiler_works", "onednn_linear_available", "onednn_linears", "OneDNNLinear"]

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
    F.linear). Where oneDNN's linear is not available nothing changes. Returns how many layers it switched."""
    if enabled and not onednn_linear_available():
        return 0
    source, target = (nn.Linear, OneDNNLinear) if enabled else (OneDNNLinear, nn.Linear)
    count = 0
    for layer in module.modules():
        if type(layer) is source:
            layer.__class__ = target
            count += 1
    return count


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
    _with_fallback(models.unet, "UNet", mode)
    _with_fallback(models.vae.decoder, "temporal decoder" if models.vae.config.temporal else "image decoder", mode)
    setattr(models, _COMPILED, True)
    return True
