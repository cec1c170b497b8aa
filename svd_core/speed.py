"""Speed: torch.compile of the UNet and the temporal decoder, the one place it is switched on.

`compile_models(models)` compiles both with fullgraph=True (they trace with no graph break) and
dynamic=False, so each new shape compiles once and is reused; on a CUDA device with mode
"reduce-overhead" (CUDA graphs; the sampling loops read nothing back from the device per step). A torch
without a working compiler (no C++ toolchain, an unsupported platform) is found by a tiny probe first; any
compiler failure later falls back to eager for that module. Either way one warning line, never a crash.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .layers import execution_device
from .models import SVDModels

__all__ = ["compile_models", "compiler_works"]

log = logging.getLogger(__name__)
_COMPILED = "svd_compiled"


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


def compile_models(models: SVDModels, *, mode: str | None = None) -> bool:
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
    _with_fallback(models.vae.decoder, "temporal decoder", mode)
    setattr(models, _COMPILED, True)
    return True
